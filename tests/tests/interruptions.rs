//! Interruptions: a killed `perturb` leaves no output and resumes to the same result; a solve
//! cut short by `--time-limit` still answers, with its gap; a reader that closes the pipe
//! early (`| head -1`) ends a tool quietly.

use clado_tests::{alloc_of, bin, choice, fixture_checkpoint, run_in};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a killed run may take to show its first finished unit (a debug build on a busy
/// 2-core machine loads Fashion-MNIST in about a second).
const FIRST_UNIT_TIMEOUT: Duration = Duration::from_secs(120);

/// A measurement of 4 batches × 5 layers × 3 options = 60 units.
fn perturb_args(resume: Option<&str>) -> Vec<String> {
    let mut a: Vec<String> = [
        "--weights",
        &fixture_checkpoint(),
        "--samples",
        "16",
        "--batch-size",
        "4",
        "--options",
        "w2a8,w4a8,w8a8",
        "--layers",
        "conv1,layer1.0.conv1,layer2.0.downsample.0,layer3.1.conv1,fc",
        "-o",
        "G.npy",
        "--index",
        "index.json",
        "--se",
        "G.se.npy",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(dir) = resume {
        a.extend(["--resume".to_string(), dir.to_string()]);
    }
    a
}

/// index.json without its wall-clock field (`diagnostics.seconds`), the one value that differs
/// between two runs of the same job.
fn index_without_clock(dir: &Path) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    v["diagnostics"]
        .as_object_mut()
        .expect("perturb writes diagnostics")
        .remove("seconds");
    v
}

fn finished_units(work: &Path) -> usize {
    std::fs::read_dir(work).map_or(0, |entries| {
        entries
            .filter_map(|e| e.ok())
            .filter(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.starts_with("unit-") && name.ends_with(".json")
            })
            .count()
    })
}

/// Start `perturb --resume work`, wait for its first finished unit, kill it with `signal`, and
/// check that it left no output.
fn kill_mid_run(dir: &Path, signal: &str) {
    kill_run_after_first_unit(
        dir,
        signal,
        &perturb_args(Some("work")),
        &["G.npy", "index.json", "G.se.npy"],
        60,
    );
}

/// Start `perturb args` (with `--resume work`), wait for its first finished unit, kill it with
/// `signal`, and check that it left none of `outputs` and fewer than `units` unit files.
fn kill_run_after_first_unit(dir: &Path, signal: &str, args: &[String], outputs: &[&str], units: usize) {
    let mut child = Command::new(bin("perturb"))
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start perturb");
    let started = Instant::now();
    while finished_units(&dir.join("work")) == 0 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "perturb ended before its first unit was saved"
        );
        assert!(
            started.elapsed() < FIRST_UNIT_TIMEOUT,
            "no unit saved after {FIRST_UNIT_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let killed = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(!status.success(), "perturb was killed ({signal}): {status:?}");
    for output in outputs {
        assert!(!dir.join(output).exists(), "a run killed with {signal} left {output}");
    }
    let done = finished_units(&dir.join("work"));
    assert!(
        done < units,
        "the run was killed before its end ({done} of {units} units saved)"
    );
}

#[test]
fn killed_perturb_leaves_no_output_and_resumes_to_the_same_matrix() {
    let reference = tempfile::tempdir().unwrap();
    let args = perturb_args(None);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_in("perturb", &args, b"", Some(reference.path())).success();
    let g_reference = std::fs::read(reference.path().join("G.npy")).unwrap();
    let se_reference = std::fs::read(reference.path().join("G.se.npy")).unwrap();

    for signal in ["-TERM", "-KILL"] {
        let dir = tempfile::tempdir().unwrap();
        kill_mid_run(dir.path(), signal);
        let args = perturb_args(Some("work"));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let resumed = run_in("perturb", &args, b"", Some(dir.path()));
        let stderr = resumed.stderr.clone();
        resumed.success();
        assert!(
            stderr.contains("resuming:"),
            "the rerun continued the killed one ({signal}):\n{stderr}"
        );
        assert_eq!(
            std::fs::read(dir.path().join("G.npy")).unwrap(),
            g_reference,
            "G.npy after a {signal} and a resume is byte-identical to an uninterrupted run"
        );
        assert_eq!(
            std::fs::read(dir.path().join("G.se.npy")).unwrap(),
            se_reference,
            "G.se.npy after a {signal} and a resume"
        );
        assert_eq!(
            index_without_clock(dir.path()),
            index_without_clock(reference.path()),
            "index.json ({signal})"
        );
    }
}

/// A killed shard leaves no partial result that a merge could take: the merge of what is there
/// is refused, the shard's rerun resumes, and the merged G and standard errors are
/// byte-identical to an unsharded run.
#[test]
fn killed_shard_leaves_nothing_to_merge_and_resumes_to_the_unsharded_matrix() {
    let reference = tempfile::tempdir().unwrap();
    let args = perturb_args(None);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_in("perturb", &args, b"", Some(reference.path())).success();

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let shard = |k: &str, resume: bool| -> Vec<String> {
        let mut a: Vec<String> = perturb_args(None).into_iter().take_while(|a| a != "-o").collect();
        a.extend(
            ["--shard", k, "-o", &format!("part{}.json", &k[..1])]
                .iter()
                .map(|s| s.to_string()),
        );
        if resume {
            a.extend(["--resume".to_string(), "work".to_string()]);
        }
        a
    };
    let run = |a: Vec<String>| {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        run_in("perturb", &a, b"", Some(d))
    };
    run(shard("2/2", false)).success();
    kill_run_after_first_unit(d, "-KILL", &shard("1/2", true), &["part1.json"], 30);
    let merge: Vec<String> = [
        "merge",
        "part1.json",
        "part2.json",
        "-o",
        "G.npy",
        "--index",
        "index.json",
        "--se",
        "G.se.npy",
    ]
    .map(String::from)
    .to_vec();
    let refused = run(merge.clone()).code(2);
    assert!(
        refused.contains("part1.json"),
        "the merge names the missing part:\n{refused}"
    );
    assert!(!d.join("G.npy").exists(), "a refused merge writes nothing");
    let resumed = run(shard("1/2", true));
    assert!(
        resumed.stderr.contains("resuming:"),
        "the shard's rerun resumed:\n{}",
        resumed.stderr
    );
    resumed.success();
    run(merge).success();
    for f in ["G.npy", "G.se.npy"] {
        assert!(
            std::fs::read(d.join(f)).unwrap() == std::fs::read(reference.path().join(f)).unwrap(),
            "{f} of a killed, resumed and merged shard is byte-identical to an unsharded run"
        );
    }
    assert_eq!(index_without_clock(d), index_without_clock(reference.path()));
}

/// G of a synthetic problem of `layer_count` layers with 9 options each: a positive diagonal
/// growing as bits shrink, and dense cross terms of both signs, `cross` times the geometric
/// mean of their diagonals (58 layers and 0.2: an indefinite G without a dominant answer, so
/// the exact reductions leave a real search).
fn synthetic_problem(dir: &Path, layer_count: usize, cross: f64) {
    use clado::format::{Index, LayerInfo};
    use clado::options::QuantOption;
    let options = QuantOption::parse_list("w{2,4,8}a{2,4,8}").unwrap();
    let layers: Vec<LayerInfo> = (0..layer_count)
        .map(|l| {
            let params = [432u64, 2304, 4608, 9216, 36864][l % 5];
            LayerInfo {
                name: format!("layer{l}"),
                kind: "conv".into(),
                params,
                macs: params * 256,
            }
        })
        .collect();
    let k = options.len();
    let n = layers.len() * k;
    // SplitMix64, so the instance is the same everywhere.
    let mut state = 0x5eed_u64;
    let mut uniform = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    let single =
        |o: QuantOption| 4f64.powi(-(o.w_bits.unwrap() as i32) / 2) + 4f64.powi(-(o.a_bits.unwrap() as i32) / 2);
    let mut g = ndarray::Array2::<f64>::zeros((n, n));
    for u in 0..n {
        g[[u, u]] = single(options[u % k]) * (0.5 + uniform());
        for v in 0..u {
            if u / k != v / k {
                let x = (uniform() - 0.5) * cross * (g[[u, u]] * single(options[v % k])).sqrt();
                g[[u, v]] = x;
                g[[v, u]] = x;
            }
        }
    }
    let index = Index {
        samples: 1,
        ..Index::all_options("synthetic", layers, &options)
    };
    use ndarray_npy::WriteNpyExt;
    let mut bytes = Vec::new();
    g.write_npy(&mut bytes).unwrap();
    std::fs::write(dir.join("G.npy"), bytes).unwrap();
    std::fs::write(dir.join("index.json"), serde_json::to_vec_pretty(&index).unwrap()).unwrap();
}

#[test]
fn a_tiny_time_limit_still_answers_with_its_gap() {
    let dir = tempfile::tempdir().unwrap();
    synthetic_problem(dir.path(), 58, 0.2);
    let r = run_in(
        "allocate",
        &[
            "--matrix",
            "G.npy",
            "--index",
            "index.json",
            "--avg-bits",
            "4",
            "--time-limit",
            "0.05",
            "-o",
            "alloc.json",
        ],
        b"",
        Some(dir.path()),
    );
    let stderr = r.stderr.clone();
    r.success();
    let alloc: clado::format::Alloc = clado::io::read_json(&dir.path().join("alloc.json").to_string_lossy()).unwrap();
    assert_eq!(alloc.solver.status, "time_limit", "the search was cut short: {stderr}");
    assert!(
        alloc.solver.gap > 0.0 && alloc.solver.gap.is_finite(),
        "gap {}",
        alloc.solver.gap
    );
    assert!(alloc.solver.bound <= alloc.solver.objective);
    assert!(alloc.avg_w_bits <= 4.0, "the answer meets the budget");
    assert_eq!(stderr.lines().count(), 1, "one warning line: {stderr}");
    assert!(
        stderr.starts_with("allocate: warning:") && stderr.contains("gap"),
        "{stderr}"
    );
}

/// Run `tool args` in `dir`, read `lines` lines of its stdout, close the pipe, and check that
/// the tool ends with exit 0 and nothing on stderr.
fn close_pipe_after(tool: &str, args: &[&str], dir: &Path, lines: usize) {
    let mut child = Command::new(bin(tool))
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the tool");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    for _ in 0..lines {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert!(
            line.ends_with('\n'),
            "{tool}: a whole line before the pipe closes: {line:?}"
        );
    }
    drop(out);
    let result = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(
        result.status.code(),
        Some(0),
        "{tool} {args:?} after the reader left: {stderr}"
    );
    assert!(stderr.is_empty(), "{tool} {args:?} ends quietly, but said: {stderr}");
}

#[test]
fn a_closed_stdout_ends_the_tools_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    synthetic_problem(d, 6, 0.05);
    // `allocate --sweep ... | head -1`: a line per budget, each flushed; the second write fails.
    close_pipe_after(
        "allocate",
        &[
            "--matrix",
            "G.npy",
            "--index",
            "index.json",
            "--sweep",
            "avg-bits=2:8:0.25",
        ],
        d,
        1,
    );
    // `psd G.npy | true`: the reader is gone before the first byte.
    close_pipe_after("psd", &["G.npy", "-q"], d, 0);
    close_pipe_after(
        "allocate",
        &["--matrix", "G.npy", "--index", "index.json", "--avg-bits", "5"],
        d,
        0,
    );
    // `evaluate --fp --alloc a --alloc b | head -1` (evaluate writes when all configurations are
    // done, so the reader has left before its first line).
    let fx = fixture_checkpoint();
    run_in(
        "quantize",
        &[
            "calibrate",
            "--weights",
            &fx,
            "--samples",
            "8",
            "--options",
            "w4a8,w8a8",
            "-o",
            "calib.json",
            "-q",
        ],
        b"",
        Some(d),
    )
    .success();
    let alloc = |option: &str| {
        let calib: clado::format::Calib = clado::io::read_json(&d.join("calib.json").to_string_lossy()).unwrap();
        let a = alloc_of(calib.layers.iter().map(|l| choice(&l.name, option)).collect());
        clado::io::write_json(&d.join(format!("{option}.json")).to_string_lossy(), &a).unwrap();
    };
    alloc("w4a8");
    alloc("w8a8");
    close_pipe_after(
        "evaluate",
        &[
            "--weights",
            &fx,
            "--samples",
            "16",
            "--calib",
            "calib.json",
            "--fp",
            "--alloc",
            "w4a8.json",
            "--alloc",
            "w8a8.json",
            "-q",
        ],
        d,
        0,
    );
}
