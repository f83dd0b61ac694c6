//! Throughput of the graph executor against onnxruntime, side by side in one run: 2 threads,
//! batch 32, 224×224, FP32, on full-size ResNet-18, MobileNetV2 and EfficientNet-B0 with random
//! weights.
//!
//!     .deps/torch-venv/bin/python scripts/export_onnx_fixtures.py --bench   # target/onnx-bench/
//!     cargo bench -p clado --bench graph
//!     cargo bench -p clado --bench graph -- --models resnet18 --batch 32 --threads 2 --runs 3
//!
//! onnxruntime (from `make setup-venv`'s `.deps/venv`) runs with its default graph
//! optimisations and `intra_op_num_threads` = threads, one session per model; the executor with
//! a rayon pool of `threads`. Each figure is the median of `--runs` timed batches after one
//! warm-up batch, the two taking turns batch by batch; both see the same input. Before each
//! timed batch the bench waits `SETTLE` for the other side's threads to go idle: onnxruntime's
//! workers spin for tens of milliseconds after a run, which on 2 cores takes one from whatever
//! runs next (it slowed our first samples of a batch twofold); freed memory stays with the
//! allocator meanwhile (see `main`). The ratio is the median of the per-batch ratios (each of
//! our batches against onnxruntime's right after it), which a machine whose speed drifts from
//! minute to minute moves less than it moves the two medians. The largest |difference| of the
//! logits relative to the largest |logit| is printed too. Results go to stdout.

use clado::graph::{Executor, Graph};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The pause before each timed batch (see the module docs).
const SETTLE: Duration = Duration::from_millis(250);

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ORT_SCRIPT: &str = r#"
import sys, time, numpy as np, onnxruntime as ort
model, x_path, y_path, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
o = ort.SessionOptions()
o.intra_op_num_threads = threads
o.inter_op_num_threads = 1
s = ort.InferenceSession(model, o, providers=["CPUExecutionProvider"])
x = np.load(x_path)
feed = {s.get_inputs()[0].name: x}
np.save(y_path, s.run(None, feed)[0])
print("ready", flush=True)
for line in sys.stdin:
    t = time.perf_counter(); s.run(None, feed); print(time.perf_counter() - t, flush=True)
"#;

/// mimalloc's `mi_option_purge_delay`.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() {
    // The pauses (`SETTLE`) would let mimalloc hand a batch's freed memory back to the system
    // (it does so a second after a free) and the next batch fault it in again, zeroed by the
    // kernel: a cost that a tool running batches back to back does not pay, nor onnxruntime,
    // whose arena keeps its memory. So the bench keeps freed memory, as in a steady run.
    // SAFETY: sets an option before any other thread exists.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, -1) };
    let mut models = vec!["resnet18".to_string(), "mobilenet_v2".into(), "efficientnet_b0".into()];
    let (mut batch, mut threads, mut runs) = (32usize, 2usize, 3usize);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--models" => models = value().split(',').map(str::to_string).collect(),
            "--batch" => batch = value().parse().expect("--batch N"),
            "--threads" => threads = value().parse().expect("--threads N"),
            "--runs" => runs = value().parse().expect("--runs N"),
            "--bench" => {}
            other => panic!("unknown argument {other}; see the top of benches/graph.rs"),
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join(".deps/venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `make setup-venv`",
        python.display()
    );
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    println!("graph executor vs onnxruntime: batch {batch}, {threads} threads, median of {runs} batches");
    println!(
        "{:<16} {:>12} {:>14} {:>8} {:>12}",
        "model", "clado img/s", "onnxrt img/s", "ratio", "rel. diff"
    );
    for name in &models {
        let model: PathBuf = root.join("target/onnx-bench").join(format!("{name}.onnx"));
        assert!(
            model.exists(),
            "{}: run scripts/export_onnx_fixtures.py --bench",
            model.display()
        );
        let graph = Graph::from_onnx(&model).unwrap_or_else(|e| panic!("{e}"));
        let exec = Executor::new(&graph).unwrap();
        let per: usize = graph.input_shape().iter().product();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let x: Vec<f32> = (0..batch * per).map(|_| rng.random_range(-2.0f32..2.0)).collect();
        let mut shape = vec![batch];
        shape.extend_from_slice(graph.input_shape());
        let x_path = tmp.path().join("x.npy");
        let array = ndarray::ArrayD::from_shape_vec(shape, x.clone()).unwrap();
        ndarray_npy::write_npy(&x_path, &array).unwrap();

        // onnxruntime waits in a child process and times one batch whenever asked, right after
        // each of ours: both see the machine in the same state, which on a shared machine
        // matters more than either's own spread.
        let y_path = tmp.path().join("y.npy");
        let mut child = Command::new(&python)
            .args(["-c", ORT_SCRIPT])
            .arg(&model)
            .arg(&x_path)
            .arg(&y_path)
            .arg(threads.to_string())
            // numpy only loads and saves here: no idle BLAS threads beside onnxruntime's.
            .env("OPENBLAS_NUM_THREADS", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run onnxruntime");
        let mut to_ort = child.stdin.take().unwrap();
        let mut from_ort = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut answer = || {
            from_ort
                .next()
                .and_then(|l| l.ok())
                .expect("onnxruntime stopped; see its error above")
        };
        assert_eq!(answer(), "ready");
        let y = pool.install(|| exec.run(&x, batch, true).unwrap().remove(0));
        let (mut t_ours, mut t_ort) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            std::thread::sleep(SETTLE);
            let start = Instant::now();
            pool.install(|| exec.run(&x, batch, true).unwrap());
            t_ours.push(start.elapsed().as_secs_f64());
            std::thread::sleep(SETTLE);
            writeln!(to_ort, "run").unwrap();
            t_ort.push(answer().parse::<f64>().expect("onnxruntime's time"));
        }
        drop(to_ort);
        assert!(child.wait().unwrap().success(), "onnxruntime failed");
        let median = |mut t: Vec<f64>| {
            t.sort_by(f64::total_cmp);
            t[t.len() / 2]
        };
        let ratio = median(t_ort.iter().zip(&t_ours).map(|(o, u)| o / u).collect());
        let (ours, ort_secs) = ((median(t_ours), y), median(t_ort));
        let y_ort: ndarray::ArrayD<f32> = ndarray_npy::read_npy(&y_path).unwrap();
        let scale = y_ort.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let diff = y_ort.iter().zip(&ours.1).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        let (a, b) = (batch as f64 / ours.0, batch as f64 / ort_secs);
        println!("{name:<16} {a:>12.1} {b:>14.1} {ratio:>8.2} {:>12.1e}", diff / scale);
    }
}
