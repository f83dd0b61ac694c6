//! Same inputs, same bytes: every output of `quantize calibrate`, `quantize apply`, `evaluate`,
//! `psd` and `allocate`, run twice with different thread counts (`RAYON_NUM_THREADS` 1 and 2)
//! and, where the tool runs the model, different `--batch-size` (256 and 7, so batches end at
//! other samples). The outputs must be byte-identical, but for the wall-clock `seconds` that
//! `allocate` (`solver.seconds`) and `psd --report` record, as their help says.

use clado_tests::run_with_env;
use std::path::Path;

/// The two settings every output is compared across.
const RUNS: [(&str, &str); 2] = [("1", "256"), ("2", "7")];

/// Run `tool` in `dir` under each of [`RUNS`] (`{batch}` in `args` becomes the batch size) and
/// return what each run left in `files` (`-` = stdout).
fn twice(dir: &Path, tool: &str, args: &[&str], files: &[&str]) -> Vec<Vec<Vec<u8>>> {
    RUNS.iter()
        .map(|(threads, batch)| {
            let args: Vec<String> = args.iter().map(|a| a.replace("{batch}", batch)).collect();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let r = run_with_env(tool, &args, b"", Some(dir), &[("RAYON_NUM_THREADS", threads)]);
            let stdout = r.success();
            files
                .iter()
                .map(|f| match *f {
                    "-" => stdout.clone(),
                    f => std::fs::read(dir.join(f)).unwrap_or_else(|e| panic!("{tool}: {f}: {e}")),
                })
                .collect()
        })
        .collect()
}

#[track_caller]
fn assert_same(what: &str, runs: &[Vec<Vec<u8>>], files: &[&str]) {
    for (i, f) in files.iter().enumerate() {
        assert!(!runs[0][i].is_empty(), "{what}: {f} is empty");
        assert!(
            runs[0][i] == runs[1][i],
            "{what}: {f} differs between RAYON_NUM_THREADS/--batch-size {:?} and {:?}",
            RUNS[0],
            RUNS[1]
        );
    }
}

/// A JSON document (or lines) without the named wall-clock fields, for comparison.
fn without_seconds(bytes: &[u8], pointer_to_seconds: &str) -> Vec<serde_json::Value> {
    serde_json::Deserializer::from_slice(bytes)
        .into_iter::<serde_json::Value>()
        .map(|v| {
            let mut v = v.unwrap();
            let seconds = v.pointer_mut(pointer_to_seconds).expect("the seconds field");
            assert!(seconds.is_number());
            *seconds = serde_json::Value::Null;
            v
        })
        .collect()
}

#[test]
fn every_tool_writes_the_same_bytes_whatever_the_threads_and_batch_size() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let options = "w2a8,w4a8,w8a8";

    // quantize calibrate, minmax and mse (the mse search sees all samples of a layer at once).
    for (a_calib, file) in [("minmax", "calib.json"), ("mse", "calib-mse.json")] {
        let runs = twice(
            d,
            "quantize",
            &[
                "calibrate",
                "-q",
                "--samples",
                "40",
                "--options",
                options,
                "--a-calib",
                a_calib,
                "--w-calib",
                a_calib,
                "--batch-size",
                "{batch}",
                "-o",
                file,
            ],
            &[file],
        );
        assert_same(&format!("quantize calibrate --a-calib {a_calib}"), &runs, &[file]);
    }

    // perturb once (its own batch-size independence is tested with perturb), then psd.
    run_with_env(
        "perturb",
        &[
            "-q",
            "--calib",
            "calib.json",
            "--samples",
            "16",
            "--options",
            options,
            "-o",
            "G.npy",
            "--index",
            "index.json",
        ],
        b"",
        Some(d),
        &[],
    )
    .success();
    for method in ["clip", "shift", "none"] {
        let runs = twice(
            d,
            "psd",
            &[
                "-q",
                "--method",
                method,
                "G.npy",
                "-o",
                "Gpsd.npy",
                "--index",
                "index.json",
                "--report",
                "psd.json",
            ],
            &["Gpsd.npy", "psd.json"],
        );
        assert_same(&format!("psd --method {method}"), &runs, &["Gpsd.npy"]);
        assert_eq!(
            without_seconds(&runs[0][1], "/seconds"),
            without_seconds(&runs[1][1], "/seconds"),
            "psd --report: only seconds may differ"
        );
    }

    // allocate: one budget, a sweep, no budget (the sanity check).
    for (args, file) in [
        (&["--avg-bits", "4"][..], "alloc.json"),
        (&["--sweep", "avg-bits=2.5:6:0.5"], "sweep.jsonl"),
        (&[], "none.json"),
    ] {
        let mut all = vec!["-q", "--matrix", "Gpsd.npy", "--index", "index.json", "-o", file];
        all.extend_from_slice(args);
        let runs = twice(d, "allocate", &all, &[file]);
        assert_eq!(
            without_seconds(&runs[0][0], "/solver/seconds"),
            without_seconds(&runs[1][0], "/solver/seconds"),
            "allocate {args:?}: only solver.seconds may differ"
        );
    }

    // evaluate: FP, a uniform option and the allocations, calibrated from calib.json and here.
    let runs = twice(
        d,
        "evaluate",
        &[
            "-q",
            "--samples",
            "300",
            "--batch-size",
            "{batch}",
            "--calib",
            "calib.json",
            "--fp",
            "--uniform",
            "w4a8",
            "--alloc",
            "alloc.json",
            "--alloc",
            "sweep.jsonl",
        ],
        &["-"],
    );
    assert_same("evaluate --calib", &runs, &["-"]);
    assert_eq!(String::from_utf8_lossy(&runs[0][0]).lines().count(), 2 + 1 + 8);
    // Test images loaded one batch at a time (--load-chunk below one image: a batch per chunk,
    // 43 chunks of 7): the same bytes as all at once.
    let chunked = run_with_env(
        "evaluate",
        &[
            "-q", "--samples", "300", "--batch-size", "7", "--load-chunk", "1", "--calib", "calib.json", "--fp",
            "--uniform", "w4a8", "--alloc", "alloc.json", "--alloc", "sweep.jsonl",
        ],
        b"",
        Some(d),
        &[],
    )
    .success();
    assert!(chunked == runs[0][0], "evaluate --load-chunk 1: other bytes than in one chunk");
    let runs = twice(
        d,
        "evaluate",
        &[
            "-q",
            "--samples",
            "300",
            "--batch-size",
            "{batch}",
            "--calib-samples",
            "40",
            "--uniform",
            "w2a8",
        ],
        &["-"],
    );
    assert_same("evaluate (calibrating itself)", &runs, &["-"]);

    // quantize apply, with calib.json and calibrating itself, with the integer export.
    let runs = twice(
        d,
        "quantize",
        &[
            "apply",
            "-q",
            "--alloc",
            "alloc.json",
            "--calib",
            "calib.json",
            "-o",
            "q.safetensors",
            "--export-int",
            "q-int.safetensors",
        ],
        &["q.safetensors", "q-int.safetensors"],
    );
    assert_same("quantize apply --calib", &runs, &["q.safetensors", "q-int.safetensors"]);
    let runs = twice(
        d,
        "quantize",
        &[
            "apply",
            "-q",
            "--alloc",
            "alloc.json",
            "--samples",
            "40",
            "--batch-size",
            "{batch}",
            "-o",
            "q2.safetensors",
        ],
        &["q2.safetensors"],
    );
    assert_same("quantize apply (calibrating itself)", &runs, &["q2.safetensors"]);
    // .safetensors: an 8-byte little-endian header length, then the JSON header.
    let bytes = &runs[0][0];
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8_lossy(&bytes[8..8 + n]);
    assert!(
        header.contains("zero_point") && !header.contains("-0.0"),
        "no negative zero: {header}"
    );
}
