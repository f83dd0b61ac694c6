//! Times each projection on random symmetric indefinite matrices.
//!
//!     cargo bench -p psd --bench projection                   # N = 500, 1000, 2000
//!     cargo bench -p psd --bench projection -- 900 5000       # other sizes
//!     PSD_BENCH_RUNS=5 PSD_BENCH_DEGREE=1 cargo bench -p psd --bench projection
//!
//! Prints the median, min and max wall-clock seconds of `project` (what `psd` reports as
//! `seconds`: symmetrise, eigendecompose, project) over PSD_BENCH_RUNS runs (default 3), and
//! the median CPU seconds of the process (all threads). PSD_BENCH_DEGREE is faer's parallel
//! degree: by default the tool's own (`psd::PARALLEL_DEGREE`), 1 for sequential code.

use ndarray::Array2;
use psd::{project, Method};
use rand::{Rng, SeedableRng};
use std::time::Instant;

/// A Wigner-like matrix: symmetric, entries uniform in [−1, 1), about half its eigenvalues
/// negative, so `clip` has plenty to do.
fn random_symmetric(n: usize, seed: u64) -> Array2<f64> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut g = Array2::<f64>::zeros((n, n));
    for i in 0..n {
        for j in 0..=i {
            let v: f64 = rng.random_range(-1.0..1.0);
            g[[i, j]] = v;
            g[[j, i]] = v;
        }
    }
    g
}

/// CPU seconds this process has run, all threads (Linux `/proc/self/stat`, in clock ticks of
/// 1/100 s), so that the numbers mean something on a machine shared with other jobs; `None`
/// elsewhere.
fn process_cpu_seconds() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; keep only the numbers.
    let mut sizes: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    if sizes.is_empty() {
        sizes = vec![500, 1000, 2000];
    }
    let runs = env_usize("PSD_BENCH_RUNS", 3).max(1);
    let degree = env_usize("PSD_BENCH_DEGREE", psd::PARALLEL_DEGREE).max(1);
    let par = if degree == 1 {
        faer::Par::Seq
    } else {
        faer::Par::rayon(degree)
    };
    println!(
        "psd projection benchmark: {runs} runs per cell, parallel degree {degree} on {} rayon thread(s); seconds",
        rayon::current_num_threads()
    );
    println!("(cpu: CPU seconds of the process, all threads; on a loaded machine wall ≫ cpu)");
    println!(
        "{:>6}  {:<6}  {:>9}  {:>9}  {:>9}  {:>9}",
        "N", "method", "median", "min", "max", "cpu"
    );
    for &n in &sizes {
        let g = random_symmetric(n, 42);
        for method in [Method::None, Method::Shift, Method::Clip] {
            let mut wall = Vec::new();
            let mut cpu = Vec::new();
            for _ in 0..runs {
                let (start, cpu_start) = (Instant::now(), process_cpu_seconds());
                let p = project(&g, method, par).expect("projection");
                wall.push(start.elapsed().as_secs_f64());
                if let (Some(a), Some(b)) = (cpu_start, process_cpu_seconds()) {
                    cpu.push(b - a);
                }
                std::hint::black_box(p);
            }
            let (min, max) = (
                wall.iter().copied().fold(f64::INFINITY, f64::min),
                wall.iter().copied().fold(0.0, f64::max),
            );
            let cpu = if cpu.is_empty() {
                "-".to_string()
            } else {
                format!("{:.3}", median(cpu))
            };
            println!(
                "{n:>6}  {:<6}  {:>9.3}  {min:>9.3}  {max:>9.3}  {cpu:>9}",
                method.to_string(),
                median(wall)
            );
        }
    }
}
