//! `perturb` end to end: the real binary on a small real checkpoint (a PyTorch-saved random
//! ResNet-20) and a few Fashion-MNIST samples.

use clado_tests::{fixture_checkpoint, run};
use ndarray::Array2;
use std::path::Path;

/// A few layers of every kind (first conv, a block conv, a downsample, the last conv, fc).
const LAYERS: &str = "conv1,layer1.0.conv2,layer2.0.downsample.0,layer3.2.conv2,fc";

fn base_args(dir: &Path, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "--weights",
        &fixture_checkpoint(),
        "--samples",
        "12",
        "--batch-size",
        "5",
        "--options",
        "w2a8,w8a8",
        "--layers",
        LAYERS,
        "-q",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend(extra.iter().map(|s| s.to_string()));
    let _ = dir;
    a
}

fn perturb(dir: &Path, extra: &[&str]) -> clado_tests::Run {
    let args = base_args(dir, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    clado_tests::run_in("perturb", &args, b"", Some(dir))
}

fn read(dir: &Path, name: &str) -> Array2<f64> {
    clado::io::read_matrix(&dir.join(name).to_string_lossy()).unwrap()
}

#[test]
fn writes_a_symmetric_matrix_and_its_index() {
    let dir = tempfile::tempdir().unwrap();
    perturb(dir.path(), &["-o", "G.npy", "--index", "index.json", "--se", "se.npy"]).success();
    let g = read(dir.path(), "G.npy");
    assert_eq!(g.dim(), (10, 10), "5 layers × 2 options");
    assert_eq!(g, g.t(), "G is symmetric");
    // Same-layer entries are 0 by the convention; the diagonal holds d(v).
    for l in 0..5 {
        assert_eq!(g[[2 * l, 2 * l + 1]], 0.0);
    }
    let index: clado::format::Index = clado::io::read_json(&dir.path().join("index.json").to_string_lossy()).unwrap();
    assert_eq!(index.variables.len(), 10);
    assert_eq!(index.layers.len(), 22, "index lists every quantizable layer");
    assert_eq!(index.fixed.len(), 17, "the layers not perturbed stay FP");
    assert_eq!(index.samples, 12);
    let d = index.diagnostics.unwrap();
    assert_eq!(
        d.evaluations,
        10 + (5 * 4 / 2) * 2 * 2,
        "singles + pairs of options of different layers"
    );
    let se = read(dir.path(), "se.npy");
    assert!(se.iter().all(|v| *v >= 0.0 && v.is_finite()));
}

#[test]
fn fast_path_equals_full_forward_reference() {
    // The fast path reuses unchanged prefixes; the reference runs every entry from the images.
    // Both do the same float32 arithmetic on the same values, so they agree exactly; allow
    // float64 rounding of the metric sums only.
    const TOL: f64 = 1e-12;
    let dir = tempfile::tempdir().unwrap();
    perturb(dir.path(), &["-o", "fast.npy", "--index", "i1.json", "--metric", "kl"]).success();
    perturb(
        dir.path(),
        &["-o", "ref.npy", "--index", "i2.json", "--metric", "kl", "--reference"],
    )
    .success();
    let (a, b) = (read(dir.path(), "fast.npy"), read(dir.path(), "ref.npy"));
    let diff = (&a - &b).mapv(f64::abs).fold(0.0f64, |m, v| m.max(*v));
    assert!(diff <= TOL, "fast and reference differ by {diff}");
}

#[test]
fn shards_merge_into_the_unsharded_result() {
    let dir = tempfile::tempdir().unwrap();
    perturb(dir.path(), &["-o", "G.npy", "--index", "index.json"]).success();
    for k in 1..=3 {
        perturb(
            dir.path(),
            &["--shard", &format!("{k}/3"), "-o", &format!("part{k}.json")],
        )
        .success();
    }
    clado_tests::run_in(
        "perturb",
        &[
            "merge",
            "part1.json",
            "part2.json",
            "part3.json",
            "-o",
            "M.npy",
            "--index",
            "m.json",
            "-q",
        ],
        b"",
        Some(dir.path()),
    )
    .success();
    assert_eq!(
        read(dir.path(), "G.npy"),
        read(dir.path(), "M.npy"),
        "merge equals the unsharded run"
    );
    // A missing shard is an error, not a silent partial matrix.
    let err = clado_tests::run_in(
        "perturb",
        &["merge", "part1.json", "part3.json", "-o", "X.npy", "--index", "x.json"],
        b"",
        Some(dir.path()),
    )
    .code(2);
    assert!(err.contains("shard 2/3 is missing"), "{err}");
    assert!(!dir.path().join("X.npy").exists());
}

#[test]
fn resumes_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    perturb(
        dir.path(),
        &["-o", "G.npy", "--index", "index.json", "--resume", "work"],
    )
    .success();
    // Forget half of the finished units, as if the run had been killed, and run again.
    let mut removed = 0;
    for e in std::fs::read_dir(dir.path().join("work")).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().unwrap().to_string_lossy().starts_with("unit-") && removed < 5 {
            std::fs::remove_file(p).unwrap();
            removed += 1;
        }
    }
    perturb(
        dir.path(),
        &["-o", "G2.npy", "--index", "index2.json", "--resume", "work"],
    )
    .success();
    assert_eq!(read(dir.path(), "G.npy"), read(dir.path(), "G2.npy"));
    // Another job in the same directory is refused.
    let err = perturb(
        dir.path(),
        &[
            "-o", "G3.npy", "--index", "i3.json", "--resume", "work", "--metric", "kl",
        ],
    )
    .code(2);
    assert!(err.contains("another run") && err.contains("another metric"), "{err}");
}

#[test]
fn bad_input_is_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--options", "w9a8"], "9 bits is out of range"),
        (&["--options", "w4a8,w4a8"], "appears more than once"),
        (&["--options", "x4"], "not an option"),
        (
            &["--exclude", "layer9.0.conv1"],
            "layer 'layer9.0.conv1' is not in the model",
        ),
        (&["--samples", "0"], "--samples 0"),
        (&["--shard", "3/2"], "expected K/N"),
        (&["--data", "mnist:/nowhere"], "mnist"),
        (&["--arch", "resnet32"], "resnet32"),
    ];
    for (extra, expect) in cases {
        let mut args = vec!["-o", "G.npy", "--index", "index.json"];
        if extra.contains(&"--shard") {
            args = vec!["-o", "part.json"];
        }
        args.extend_from_slice(extra);
        let err = perturb(dir.path(), &args).code(2);
        assert!(err.contains(expect), "{extra:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(!dir.path().join("G.npy").exists() && !dir.path().join("index.json").exists());
    }
    let err = run(
        "perturb",
        &[
            "--weights",
            "/nonexistent.pth",
            "--options",
            "w4",
            "-o",
            "G.npy",
            "--index",
            "i.json",
        ],
        b"",
    )
    .code(2);
    assert!(err.contains("/nonexistent.pth"), "{err}");
}

/// The convention the matrix promises, checked against `evaluate` (full forward passes, no
/// prefix reuse) on the same calibration samples with the same quantizers: G[v,v] = d(v), the
/// metric with layer l alone at option o minus the FP metric, and for layers in different
/// places G[u,v] = (d(u,v) − d(u) − d(v)) / 2.
#[test]
fn the_diagonal_is_the_single_layer_change_and_cross_terms_the_interaction() {
    // Both tools compute the same float32 logits per sample and sum cross-entropies in f64 in
    // sample order; only the f64 rounding of the sums and differences may differ.
    const SAME_DELTA: f64 = 1e-12;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let checkpoint = fixture_checkpoint();
    let samples = [
        "--weights",
        &checkpoint,
        "--split",
        "train",
        "--samples",
        "12",
        "--batch-size",
        "5",
    ];
    let with = |extra: &[&str]| -> Vec<String> { samples.iter().chain(extra).map(|s| s.to_string()).collect() };
    let call = |tool: &str, a: Vec<String>| {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        clado_tests::run_in(tool, &a, b"", Some(d)).success()
    };
    call("quantize", {
        let mut a = vec!["calibrate".to_string()];
        a.extend(with(&["--options", "w2a8", "-o", "calib.json", "-q"]));
        a
    });
    // `fp` among the options: pinning the other layers to it gives single-layer allocations.
    call(
        "perturb",
        with(&[
            "--calib",
            "calib.json",
            "--options",
            "w2a8,fp",
            "--layers",
            LAYERS,
            "-o",
            "G.npy",
            "--index",
            "index.json",
            "-q",
        ]),
    );
    let g = read(d, "G.npy");
    let layers: Vec<&str> = LAYERS.split(',').collect();
    // Allocations: each layer alone at w2a8, and the first and third together.
    let alone = |on: &[usize]| -> String {
        layers
            .iter()
            .enumerate()
            .map(|(i, name)| format!("{name}={}", if on.contains(&i) { "w2a8" } else { "fp" }))
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut configs: Vec<Vec<usize>> = (0..layers.len()).map(|l| vec![l]).collect();
    configs.push(vec![0, 2]);
    let mut evaluate_args = with(&["--calib", "calib.json", "--fp", "-q"]);
    for (i, on) in configs.iter().enumerate() {
        let out = call(
            "allocate",
            ["--matrix", "G.npy", "--index", "index.json", "--pin", &alone(on), "-q"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        );
        let name = format!("alloc{i}.json");
        std::fs::write(d.join(&name), out).unwrap();
        evaluate_args.extend(["--alloc".to_string(), name]);
    }
    let out = call("evaluate", evaluate_args);
    let metrics: Vec<clado::format::Metrics> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(metrics.len(), configs.len() + 1, "fp and one line per allocation");
    let fp = metrics[0].loss;
    let delta = |i: usize| metrics[1 + i].loss - fp;
    // Variable v = (layer l, option 0 = w2a8) sits at row 2·l (layer-major, options in order).
    for l in 0..layers.len() {
        let (measured, diagonal) = (delta(l), g[[2 * l, 2 * l]]);
        assert!(
            (measured - diagonal).abs() <= SAME_DELTA,
            "{}: G[v,v] = {diagonal}, evaluate's Δloss {measured}",
            layers[l]
        );
        assert_eq!(g[[2 * l + 1, 2 * l + 1]], 0.0, "{} at fp changes nothing", layers[l]);
    }
    let pair = delta(layers.len());
    let cross = (pair - delta(0) - delta(2)) / 2.0;
    assert!(
        (cross - g[[0, 4]]).abs() <= SAME_DELTA,
        "G[u,v] = {}, (d(u,v) − d(u) − d(v)) / 2 from evaluate = {cross}",
        g[[0, 4]]
    );
    assert!(g[[0, 4]] != 0.0, "the two layers interact");
}
