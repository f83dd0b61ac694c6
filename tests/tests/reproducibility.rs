//! Reproducibility: the same inputs and seed give byte-identical files through the whole
//! pipeline (perturb → psd → allocate → evaluate), with 1 and 2 threads and across runs.
//!
//! Byte-identical means every byte, except the wall-clock fields, which are removed before the
//! comparison: `diagnostics.seconds` of index.json and `solver.seconds` of alloc.json. G.npy,
//! the psd output and evaluate's metrics lines are compared as raw bytes.

use clado_tests::{fixture_checkpoint, run_with_env};
use std::path::Path;

/// Everything the pipeline writes, as compared.
#[derive(Debug, PartialEq)]
struct Outputs {
    g: Vec<u8>,
    index: serde_json::Value,
    g_psd: Vec<u8>,
    alloc: serde_json::Value,
    metrics: Vec<u8>,
}

fn json_without(dir: &Path, file: &str, object: &str, clock: &str) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join(file)).unwrap()).unwrap();
    let removed = v[object].as_object_mut().and_then(|o| o.remove(clock));
    assert!(removed.is_some(), "{file} has {object}.{clock}");
    v
}

/// The whole pipeline on a small configuration with `threads` rayon threads.
fn pipeline(threads: &str) -> Outputs {
    let dir = tempfile::tempdir().unwrap();
    let d = Some(dir.path());
    let env = [("RAYON_NUM_THREADS", threads)];
    let fx = fixture_checkpoint();
    let model = ["--weights", fx.as_str(), "--seed", "7", "-q"];
    let run = |tool: &str, args: &[&str]| {
        let mut all = args.to_vec();
        if tool != "psd" && tool != "allocate" {
            all.extend_from_slice(&model);
        }
        run_with_env(tool, &all, b"", d, &env).success()
    };
    run(
        "quantize",
        &[
            "calibrate",
            "--samples",
            "16",
            "--options",
            "w{2,4,8}a8",
            "-o",
            "calib.json",
        ],
    );
    run(
        "perturb",
        &[
            "--samples",
            "12",
            "--batch-size",
            "5",
            "--options",
            "w2a8,w4a8,w8a8",
            "--calib",
            "calib.json",
            "--layers",
            "conv1,layer1.1.conv2,layer2.0.conv1,layer3.2.conv2,fc",
            "--metric",
            "kl",
            "-o",
            "G.npy",
            "--index",
            "index.json",
        ],
    );
    run("psd", &["G.npy", "-o", "Gpsd.npy", "-q"]);
    // The 17 layers not perturbed stay FP (32 bits) and count in the budget.
    run(
        "allocate",
        &[
            "--matrix",
            "Gpsd.npy",
            "--index",
            "index.json",
            "--avg-bits",
            "28",
            "-o",
            "alloc.json",
            "-q",
        ],
    );
    let metrics = run(
        "evaluate",
        &[
            "--samples",
            "24",
            "--calib",
            "calib.json",
            "--fp",
            "--uniform",
            "w4a8",
            "--alloc",
            "alloc.json",
        ],
    );
    let read = |f: &str| std::fs::read(dir.path().join(f)).unwrap();
    Outputs {
        g: read("G.npy"),
        index: json_without(dir.path(), "index.json", "diagnostics", "seconds"),
        g_psd: read("Gpsd.npy"),
        alloc: json_without(dir.path(), "alloc.json", "solver", "seconds"),
        metrics,
    }
}

#[test]
fn one_and_two_threads_and_two_runs_give_the_same_bytes() {
    let one = pipeline("1");
    let two = pipeline("2");
    let again = pipeline("2");
    assert_eq!(
        one.metrics.iter().filter(|&&b| b == b'\n').count(),
        3,
        "three metrics lines"
    );
    for (what, other) in [("2 threads", &two), ("a second run", &again)] {
        assert!(one.g == other.g, "G.npy differs with {what}");
        assert_eq!(one.index, other.index, "index.json differs with {what}");
        assert!(one.g_psd == other.g_psd, "psd's output differs with {what}");
        assert_eq!(one.alloc, other.alloc, "alloc.json differs with {what}");
        assert_eq!(
            String::from_utf8_lossy(&one.metrics),
            String::from_utf8_lossy(&other.metrics),
            "metrics differ with {what}"
        );
    }
}
