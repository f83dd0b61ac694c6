//! Speed of the quantizers and accuracy of `mse` activation calibration's histogram search.
//!
//!     cargo bench -p clado --bench quant
//!
//! Speed: CPU seconds of this thread per value (median of 5 runs, each repeated until it used
//! 0.5 s), for fake-quantizing weights and activations, observing activations (`minmax`, `mse`),
//! the `mse` range search and `mse` weight scales, on 10⁷ Gaussian values.
//!
//! Accuracy: on 10⁶ values each of Gaussian, post-ReLU Gaussian with four outliers, and Laplace
//! data, at 2, 4 and 8 bits, the histogram's estimate of every grid candidate's squared error
//! against the exact error (the data quantized and summed), the factor `mse` chose against the
//! exact best factor of the grid, and the error bound against the exact error. The numbers in
//! `clado::quant`'s module documentation come from here.

use clado::format::ActRange;
use clado::quant::{
    fake_quantize_weights_into, mse_shrink_factors, weight_scales, ActObserver, ActQuantizer, Calibration,
    MSE_GRID_STEPS,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// CPU seconds of this thread (Linux; 10 ms ticks): wall-clock time on the shared build machine
/// would mostly measure the other jobs.
fn thread_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("Linux /proc");
    // Fields after the command name: state is field 3, utime 14 and stime 15.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// Median CPU seconds of `runs` calls of `f` (each call repeated until it used ≥ 0.5 s).
fn median_seconds(runs: usize, mut f: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let start = thread_cpu_seconds();
            let mut calls = 0;
            while thread_cpu_seconds() - start < 0.5 {
                f();
                calls += 1;
            }
            (thread_cpu_seconds() - start) / calls as f64
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[runs / 2]
}

/// `n` standard normal values (Box–Muller).
fn normals(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let (u, v): (f64, f64) = (rng.random::<f64>().max(1e-300), rng.random());
            ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
        })
        .collect()
}

/// Post-ReLU Gaussian values with four large outliers, like a ReLU network's activations.
fn relu_with_outliers(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    let mut x: Vec<f32> = normals(rng, n).into_iter().map(|v| v.max(0.0)).collect();
    for k in 0..4 {
        x[k * (n / 4) + 1] = 30.0 + k as f32;
    }
    x
}

fn laplace(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let u: f64 = rng.random::<f64>() - 0.5;
            (-u.signum() * (1.0 - 2.0 * u.abs()).max(1e-300).ln()) as f32
        })
        .collect()
}

fn squared_error(x: &[f32], q: &[f32]) -> f64 {
    x.iter().zip(q).map(|(&a, &b)| (a as f64 - b as f64).powi(2)).sum()
}

fn speed(data: &[f32]) {
    let n = data.len();
    println!("speed, CPU time of one thread on {n} values:");
    // Weights: the values as 2,048 output channels.
    let channels = 2048;
    let w = &data[..n / channels * channels];
    let scales = weight_scales(w, channels, 4, false, Calibration::MinMax);
    let mut out = vec![0.0; w.len()];
    let t = median_seconds(5, || fake_quantize_weights_into(w, channels, 4, &scales, &mut out));
    println!(
        "  fake-quantize weights        {:8.2} ns/value",
        t * 1e9 / w.len() as f64
    );
    let t = median_seconds(5, || {
        std::hint::black_box(weight_scales(w, channels, 4, false, Calibration::MinMax));
    });
    println!("  weight scales minmax         {:8.3} s", t);
    for bits in [2, 4, 8] {
        let t = median_seconds(3, || {
            std::hint::black_box(weight_scales(w, channels, bits, false, Calibration::Mse));
        });
        println!(
            "  weight scales mse {bits} bits     {:8.3} s ({:.2} ns per value and grid factor)",
            t,
            t * 1e9 / w.len() as f64 / f64::from(MSE_GRID_STEPS)
        );
    }
    let q = ActQuantizer::from_range(8, ActRange { lo: -4.0, hi: 4.0 });
    let mut x = data.to_vec();
    let t = median_seconds(5, || q.quantize_in_place(&mut x));
    println!("  fake-quantize activations    {:8.2} ns/value", t * 1e9 / n as f64);
    for calib in [Calibration::MinMax, Calibration::Mse] {
        let mut observer = ActObserver::new(calib);
        let t = median_seconds(3, || {
            observer = ActObserver::new(calib);
            for batch in data.chunks(1 << 16) {
                observer.observe(batch);
            }
        });
        print!(
            "  observe {:<6}               {:8.2} ns/value; range():",
            calib.as_str(),
            t * 1e9 / n as f64
        );
        for bits in [2, 4, 8] {
            let t = median_seconds(3, || {
                std::hint::black_box(observer.range(bits));
            });
            print!(" {bits} bits {:.1} ms", t * 1e3);
        }
        println!();
    }
}

fn accuracy(sets: &[(&str, Vec<f32>)]) {
    println!("mse activation calibration, histogram search against the exact errors:");
    for (name, x) in sets {
        let mut observer = ActObserver::new(Calibration::Mse);
        for batch in x.chunks(1 << 16) {
            observer.observe(batch);
        }
        let minmax = observer.minmax_range();
        for bits in [2, 4, 8] {
            let exact = |r: ActRange| {
                let mut q = x.clone();
                ActQuantizer::from_range(bits, r).quantize_in_place(&mut q);
                squared_error(x, &q)
            };
            let (mut best, mut worst_estimate, mut worst_bound) = ((1.0f32, f64::INFINITY), 0.0f64, 0.0f64);
            for f in mse_shrink_factors() {
                let r = ActRange {
                    lo: minmax.lo * f,
                    hi: minmax.hi * f,
                };
                if ActQuantizer::from_range(bits, r).scale == 0.0 {
                    continue;
                }
                let e = exact(r);
                let (estimate, bound) = observer.estimated_error(bits, r).expect("an mse observer");
                worst_estimate = worst_estimate.max((estimate - e).abs() / e);
                worst_bound = worst_bound.max(bound / e);
                if e < best.1 {
                    best = (f, e);
                }
            }
            let chosen = observer.range(bits);
            let e_chosen = exact(chosen);
            println!(
                "  {name:<14} {bits} bits: exact best factor {:.2} (error {:.6e}); chosen {:.2} (+{:.1e} \
                 relative); minmax error {:.6e}; worst |estimate − exact|/exact {:.1e}, worst bound/exact {:.1e}",
                best.0,
                best.1,
                chosen.hi / minmax.hi,
                e_chosen / best.1 - 1.0,
                exact(minmax),
                worst_estimate,
                worst_bound
            );
        }
    }
}

fn main() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let data = normals(&mut rng, 10_000_000);
    speed(&data);
    let m = 1_000_000;
    let sets = [
        ("gaussian", data[..m].to_vec()),
        ("relu+outliers", relu_with_outliers(&mut rng, m)),
        ("laplace", laplace(&mut rng, m)),
    ];
    accuracy(&sets);
}
