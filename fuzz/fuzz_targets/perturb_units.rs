//! perturb's unit results: the partial result of a `--shard` run (what `perturb merge` reads)
//! and, unit by unit, the files of a `--resume` directory. Any bytes give checked results or
//! an input error, never a panic; whatever passes the checks gives a finite G.
#![no_main]
use libfuzzer_sys::fuzz_target;
use perturb::store::{combine, Partial};

fuzz_target!(|data: &[u8]| {
    let Ok(part) = clado::io::json_from_bytes::<Partial>("part.json", data) else {
        return;
    };
    // The checks `--resume` runs on each unit and FP file it reads.
    if part.job.problem().is_none() {
        for u in &part.units {
            let _ = u.problem(&part.job);
        }
        for (b, fp) in &part.fp {
            if *b < part.job.batches() {
                let _ = fp.problem(*b, &part.job);
            }
        }
    }
    if let Ok(c) = combine(&["part.json".to_string()], &[part]) {
        assert!(c.g.iter().all(|x| x.is_finite()), "G is not finite");
        assert!(c.se.iter().all(|x| x.is_finite() && *x >= 0.0), "standard errors");
        assert!(
            c.fp.loss.is_finite() && (0.0..=100.0).contains(&c.fp.top1),
            "FP reference"
        );
    }
});
