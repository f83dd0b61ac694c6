//! Throughput of the forward engine: img/s of whole CIFAR ResNets and GFLOP/s per layer shape.
//!
//!     cargo bench -p clado --bench engine                      # ResNet-20 and -56, batch 256
//!     cargo bench -p clado --bench engine -- --arch resnet20 --batch 256 --threads 2 --runs 9
//!     cargo bench -p clado --bench engine -- --candle --no-layers   # also stock candle conv2d
//!
//! Random weights with random BatchNorm statistics (the speed does not depend on the values),
//! 1-channel 32×32 inputs and 10 classes unless told otherwise. Each number is the median of
//! `--runs` timed runs after one warm-up run. `scripts/bench_torch.py` measures PyTorch on the
//! same network for comparison. Results go to stdout.

use clado::checkpoint::{StateDict, Tensor32};
use clado::engine::{blocks_per_stage, ActQuant, Images, LayerPrecision, Network, Parallelism, Plan, State};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::time::Instant;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Options {
    archs: Vec<String>,
    batch: usize,
    threads: usize,
    runs: usize,
    in_channels: usize,
    classes: usize,
    layers: bool,
    candle: bool,
}

fn parse_options() -> Options {
    let mut o = Options {
        archs: vec!["resnet20".into(), "resnet56".into()],
        batch: 256,
        threads: 2,
        runs: 7,
        in_channels: 1,
        classes: 10,
        layers: true,
        candle: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--arch" => o.archs = value().split(',').map(str::to_string).collect(),
            "--batch" => o.batch = value().parse().expect("--batch N"),
            "--threads" => o.threads = value().parse().expect("--threads N"),
            "--runs" => o.runs = value().parse().expect("--runs N"),
            "--in-channels" => o.in_channels = value().parse().expect("--in-channels N"),
            "--classes" => o.classes = value().parse().expect("--classes N"),
            "--no-layers" => o.layers = false,
            "--candle" => o.candle = true,
            "--bench" => {} // passed by `cargo bench`
            other => panic!("unknown argument {other}; see the top of benches/engine.rs"),
        }
    }
    o
}

fn random_state_dict(blocks: usize, in_channels: usize, classes: usize) -> StateDict {
    let mut r = ChaCha8Rng::seed_from_u64(1);
    let mut sd = BTreeMap::new();
    let mut put = |name: String, shape: Vec<usize>, lo: f32, hi: f32, r: &mut ChaCha8Rng| {
        let data = (0..shape.iter().product()).map(|_| r.random_range(lo..hi)).collect();
        sd.insert(name, Tensor32 { shape, data });
    };
    let mut conv_bn = |conv: String, bn: String, cout: usize, cin: usize, k: usize, r: &mut ChaCha8Rng| {
        let a = (6.0 / (cin * k * k) as f32).sqrt();
        put(format!("{conv}.weight"), vec![cout, cin, k, k], -a, a, r);
        put(format!("{bn}.weight"), vec![cout], 0.5, 1.5, r);
        put(format!("{bn}.bias"), vec![cout], -0.3, 0.3, r);
        put(format!("{bn}.running_mean"), vec![cout], -0.3, 0.3, r);
        put(format!("{bn}.running_var"), vec![cout], 0.5, 2.0, r);
    };
    conv_bn("conv1".into(), "bn1".into(), 16, in_channels, 3, &mut r);
    let mut cin = 16;
    for (s, planes) in [16, 32, 64].into_iter().enumerate() {
        for b in 0..blocks {
            let p = format!("layer{}.{b}", s + 1);
            conv_bn(format!("{p}.conv1"), format!("{p}.bn1"), planes, cin, 3, &mut r);
            conv_bn(format!("{p}.conv2"), format!("{p}.bn2"), planes, planes, 3, &mut r);
            if cin != planes {
                conv_bn(
                    format!("{p}.downsample.0"),
                    format!("{p}.downsample.1"),
                    planes,
                    cin,
                    1,
                    &mut r,
                );
            }
            cin = planes;
        }
    }
    let a = (6.0f32 / 64.0).sqrt();
    put("fc.weight".into(), vec![classes, 64], -a, a, &mut r);
    put("fc.bias".into(), vec![classes], -0.1, 0.1, &mut r);
    sd
}

/// CPU seconds used so far by all threads of this process (Linux `schedstat`; 0 elsewhere).
fn cpu_seconds() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .sum::<f64>()
        / 1e9
}

/// Seconds of one timed call: the median wall time, and the mean CPU time (all threads) per
/// call, which is more stable than one call's (the kernel updates thread times at ticks).
#[derive(Clone, Copy)]
struct Timing {
    wall: f64,
    cpu: f64,
}

/// Times `runs` calls after one warm-up call.
fn median_seconds(runs: usize, mut f: impl FnMut()) -> Timing {
    f();
    let runs = runs.max(1);
    let cpu_start = cpu_seconds();
    let mut wall: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .collect();
    let cpu = (cpu_seconds() - cpu_start) / runs as f64;
    wall.sort_by(f64::total_cmp);
    Timing {
        wall: wall[runs / 2],
        cpu,
    }
}

fn main() {
    let o = parse_options();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(o.threads)
        .build()
        .expect("thread pool");
    pool.install(|| {
        for arch in &o.archs {
            bench_arch(arch, &o);
        }
    });
}

fn bench_arch(arch: &str, o: &Options) {
    let blocks = blocks_per_stage(arch).expect("architecture");
    let net = Network::from_state_dict(arch, &random_state_dict(blocks, o.in_channels, o.classes)).expect("network");
    let n = o.batch;
    let mut r = ChaCha8Rng::seed_from_u64(2);
    let x: Vec<f32> = (0..n * o.in_channels * 32 * 32)
        .map(|_| r.random_range(-2.0..2.0))
        .collect();
    let images = Images::new(&x, [n, o.in_channels, 32, 32]).expect("images");
    let macs: u64 = net.layers().iter().map(|l| l.macs).sum();
    println!(
        "{arch}: {} layers, {:.2} M MACs/image, batch {n}, {} thread(s), median of {} runs",
        net.layers().len(),
        macs as f64 / 1e6,
        o.threads,
        o.runs
    );

    let fp = Plan::fp(&net);
    // On a shared machine the wall time also counts other processes' time slices; the CPU
    // time does not: `img/CPU-s × threads` estimates the throughput on an idle machine.
    println!(
        "  {:<34} {:>8} {:>8} {:>8} {:>12}",
        "", "img/s", "GFLOP/s", "ms", "img/CPU-s×T"
    );
    let report = |what: &str, t: Timing| {
        let gflops = 2.0 * macs as f64 * n as f64 / t.wall / 1e9;
        let per_cpu = n as f64 / t.cpu * o.threads as f64;
        println!(
            "  {what:<34} {:>8.0} {gflops:>8.1} {:>8.1} {per_cpu:>12.0}",
            n as f64 / t.wall,
            t.wall * 1e3
        );
    };
    let t = median_seconds(o.runs, || {
        net.forward(images, &fp, Parallelism::Rayon).expect("forward");
    });
    report("forward FP", t);

    let mut w4a8 = Plan::fp(&net);
    for i in 0..net.layers().len() {
        let out = net.layers()[i].out_channels();
        let w = net.weights(i);
        let scales: Vec<f32> = w
            .chunks(w.len() / out)
            .map(|c| c.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-8) / 7.0)
            .collect();
        let q = LayerPrecision {
            weights: Some(net.quantized_weights(i, 4, &scales).expect("weights")),
            input: Some(ActQuant::new(8, -4.0, 8.0).expect("range")),
        };
        w4a8.set(i, q).expect("plan");
    }
    let t = median_seconds(o.runs, || {
        net.forward(images, &w4a8, Parallelism::Rayon).expect("forward");
    });
    report("forward w4a8 (all layers)", t);

    // Independent single-threaded forwards, one per thread (how `perturb` may use it).
    let chunk = n.div_ceil(o.threads);
    let t = median_seconds(o.runs, || {
        use rayon::prelude::*;
        x.par_chunks(chunk * o.in_channels * 32 * 32).for_each(|part| {
            let m = part.len() / (o.in_channels * 32 * 32);
            let imgs = Images::new(part, [m, o.in_channels, 32, 32]).expect("images");
            net.forward(imgs, &fp, Parallelism::None).expect("forward");
        });
    });
    report("forward FP, Parallelism::None xN", t);

    if o.candle {
        let t = candle_baseline(blocks, o, &x);
        report("candle-core conv2d (baseline)", t);
    }

    let fp_states = {
        let mut s: Vec<State> = vec![net.input_state(images).expect("state")];
        for i in 0..net.layers().len() {
            s.push(net.run(&s[i], i + 1, &fp, Parallelism::Rayon).expect("run"));
        }
        s
    };
    let mid = net.layers().len() / 2;
    let t = median_seconds(o.runs, || {
        net.run_to_logits(&fp_states[mid], &fp, Parallelism::Rayon)
            .expect("run");
    });
    report(&format!("resume from layer {mid} to logits"), t);

    if !o.layers {
        return;
    }
    // Per layer: run(state before i → state before i+1), which includes copying the state in
    // and out; layers of the same shape are pooled.
    println!("  per layer shape (run of one layer over the batch, incl. state copies):");
    println!(
        "    {:<34} {:>6} {:>9} {:>9} {:>13}",
        "shape", "count", "ms each", "GFLOP/s", "GFLOP/CPU-s×T"
    );
    let mut shapes: Vec<(String, u64, usize, f64, f64)> = Vec::new();
    for (i, layer) in net.layers().iter().enumerate() {
        let t = median_seconds(o.runs, || {
            net.run(&fp_states[i], i + 1, &fp, Parallelism::Rayon).expect("run");
        });
        let ws = &layer.weight_shape;
        let key = if ws.len() == 4 {
            let hw = (layer.macs / layer.params) as f64;
            let side = hw.sqrt() as usize;
            format!("conv {}x{} {}->{} out {side}x{side}", ws[2], ws[3], ws[1], ws[0])
        } else {
            format!("linear {}->{} (+pool)", ws[1], ws[0])
        };
        match shapes.iter_mut().find(|s| s.0 == key) {
            Some(s) => {
                s.2 += 1;
                s.3 += t.wall;
                s.4 += t.cpu;
            }
            None => shapes.push((key, layer.macs, 1, t.wall, t.cpu)),
        }
    }
    for (key, macs, count, wall, cpu) in shapes {
        let flop = 2.0 * macs as f64 * n as f64 * count as f64;
        let gflops = flop / wall / 1e9;
        let per_cpu = match cpu > 0.0 {
            true => format!("{:.1}", flop / cpu / 1e9 * o.threads as f64),
            false => "-".to_string(),
        };
        println!(
            "    {key:<34} {count:>6} {:>9.2} {gflops:>9.1} {per_cpu:>13}",
            wall / count as f64 * 1e3
        );
    }
}

/// The same network as a straightforward candle-core NCHW forward (`conv2d`, BN as
/// `(x − mean)/√(var + ε)·γ + β`), the baseline the engine replaces.
fn candle_baseline(blocks: usize, o: &Options, x: &[f32]) -> Timing {
    use candle_core::{Device, Tensor};
    let sd = random_state_dict(blocks, o.in_channels, o.classes);
    let dev = Device::Cpu;
    let t = |name: &str, shape: &[usize]| Tensor::from_vec(sd[name].data.clone(), shape, &dev).expect("tensor");
    let w = |name: &str| t(&format!("{name}.weight"), &sd[&format!("{name}.weight")].shape);
    let bn = |x: &Tensor, p: &str| -> Tensor {
        let c = sd[&format!("{p}.weight")].shape[0];
        let v = |n: &str| t(&format!("{p}.{n}"), &[1, c, 1, 1]);
        let sigma = (v("running_var") + clado::engine::BN_EPS)
            .and_then(|s| s.sqrt())
            .expect("bn");
        x.broadcast_sub(&v("running_mean"))
            .and_then(|y| y.broadcast_div(&sigma))
            .and_then(|y| y.broadcast_mul(&v("weight")))
            .and_then(|y| y.broadcast_add(&v("bias")))
            .expect("bn")
    };
    let images = Tensor::from_vec(x.to_vec(), (o.batch, o.in_channels, 32, 32), &dev).expect("x");
    let fc_w = w("fc").t().expect("t");
    let fc_b = t("fc.bias", &[o.classes]);
    let forward = || -> candle_core::Result<Tensor> {
        let mut h = bn(&images.conv2d(&w("conv1"), 1, 1, 1, 1)?, "bn1").relu()?;
        let mut cin = 16;
        for (s, planes) in [16, 32, 64].into_iter().enumerate() {
            for b in 0..blocks {
                let p = format!("layer{}.{b}", s + 1);
                let stride = if cin != planes { 2 } else { 1 };
                let out = bn(
                    &h.conv2d(&w(&format!("{p}.conv1")), 1, stride, 1, 1)?,
                    &format!("{p}.bn1"),
                )
                .relu()?;
                let out = bn(&out.conv2d(&w(&format!("{p}.conv2")), 1, 1, 1, 1)?, &format!("{p}.bn2"));
                let identity = if cin != planes {
                    let d = h.conv2d(&w(&format!("{p}.downsample.0")), 0, 2, 1, 1)?;
                    bn(&d, &format!("{p}.downsample.1"))
                } else {
                    h.clone()
                };
                h = (out + identity)?.relu()?;
                cin = planes;
            }
        }
        let pooled = h.flatten_from(2)?.mean(2)?;
        pooled.matmul(&fc_w)?.broadcast_add(&fc_b)
    };
    median_seconds(o.runs, || {
        forward().expect("candle forward");
    })
}
