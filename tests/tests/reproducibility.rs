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

/// What `perturb` writes, as compared: G.npy and G.se.npy as raw bytes, index.json without its
/// wall-clock field.
#[derive(Debug, PartialEq)]
struct Measured {
    g: Vec<u8>,
    se: Vec<u8>,
    index: serde_json::Value,
}

fn measured(dir: &Path) -> Measured {
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    Measured {
        g: read("G.npy"),
        se: read("G.se.npy"),
        index: json_without(dir, "index.json", "diagnostics", "seconds"),
    }
}

/// 40 samples (batches of 7 leave a short one of 5), 4 layers × 2 options, the loss metric.
fn perturb_job(batch_size: &str) -> Vec<String> {
    [
        "--weights",
        &fixture_checkpoint(),
        "--seed",
        "3",
        "--samples",
        "40",
        "--batch-size",
        batch_size,
        "--options",
        "w2a8,w4a8",
        "--calib",
        "calib.json",
        "--layers",
        "conv1,layer1.0.conv2,layer2.0.downsample.0,fc",
        "-q",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// G, its standard errors and index.json (FP reference, spectrum, noise summary) have the same
/// bytes for any batch size, thread count, shard split and resume pattern: units keep exact
/// sums, and the engine gives each sample the same bits in any batch.
#[test]
fn perturb_gives_the_same_bytes_for_any_batch_size_threads_shards_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = |args: &[String], threads: &str| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_with_env("perturb", &args, b"", Some(d), &[("RAYON_NUM_THREADS", threads)]).success();
    };
    let fx = fixture_checkpoint();
    let calib = [
        "calibrate",
        "--weights",
        &fx,
        "--samples",
        "16",
        "--options",
        "w2a8,w4a8",
        "-o",
        "calib.json",
        "-q",
    ];
    run_with_env("quantize", &calib, b"", Some(d), &[]).success();
    let outputs = ["-o", "G.npy", "--index", "index.json", "--se", "G.se.npy"].map(String::from);
    let whole = |batch_size: &str, threads: &str, extra: &[&str]| -> Measured {
        let mut a = perturb_job(batch_size);
        a.extend(outputs.iter().cloned());
        a.extend(extra.iter().map(|s| s.to_string()));
        run(&a, threads);
        measured(d)
    };

    let reference = whole("256", "2", &[]);
    let mut variants = vec![
        ("--batch-size 7, 1 thread", whole("7", "1", &[])),
        ("--batch-size 32, 2 threads", whole("32", "2", &[])),
        ("--batch-size 256, 1 thread", whole("256", "1", &[])),
    ];

    // Three shards of batches of 7, merged in another order.
    for k in 1..=3 {
        let mut a = perturb_job("7");
        a.extend(["--shard".into(), format!("{k}/3"), "-o".into(), format!("part{k}.json")]);
        run(&a, if k == 2 { "1" } else { "2" });
    }
    let mut merge: Vec<String> = ["merge", "part3.json", "part1.json", "part2.json", "-q"]
        .map(String::from)
        .to_vec();
    merge.extend(outputs.iter().cloned());
    run(&merge, "2");
    variants.push(("3 shards of batches of 7, merged", measured(d)));

    // Resumed from a directory where some units and FP passes of batches of 32 are missing, as
    // a killed run leaves it.
    whole("32", "2", &["--resume", "work"]);
    let mut removed = 0;
    for e in std::fs::read_dir(d.join("work")).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("fp-b1") || (name.starts_with("unit-") && name.contains("-o1")) {
            std::fs::remove_file(e.path()).unwrap();
            removed += 1;
        }
    }
    assert_eq!(
        removed,
        1 + 2 * 4,
        "the FP pass of batch 1 and the w4a8 units of both batches"
    );
    variants.push(("resumed, batches of 32", whole("32", "1", &["--resume", "work"])));

    assert_eq!(reference.index["samples"], 40, "index.json counts every sample once");
    for (what, got) in &variants {
        assert!(got.g == reference.g, "G.npy differs with {what}");
        assert!(got.se == reference.se, "G.se.npy differs with {what}");
        assert_eq!(got.index, reference.index, "index.json differs with {what}");
    }
}
