//! `quantize` and `evaluate` end to end on a small real checkpoint (a PyTorch-saved random
//! ResNet-20) and Fashion-MNIST samples.

use clado::format::{Alloc, Calib, Metrics};
use clado_tests::{alloc_of, choice, fixture_checkpoint, resnet20_layer_names, run_in};
use std::path::Path;

fn lines(out: &[u8]) -> Vec<Metrics> {
    String::from_utf8_lossy(out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a metrics JSON line"))
        .collect()
}

fn calibrate(dir: &Path) {
    run_in(
        "quantize",
        &[
            "calibrate",
            "--weights",
            &fixture_checkpoint(),
            "--samples",
            "32",
            "--options",
            "w{4,8}a8,w4,w8",
            "-o",
            "calib.json",
            "-q",
        ],
        b"",
        Some(dir),
    )
    .success();
}

#[test]
fn calibrate_writes_every_layer_and_bit_width() {
    let dir = tempfile::tempdir().unwrap();
    calibrate(dir.path());
    let c: Calib = clado::io::read_json(&dir.path().join("calib.json").to_string_lossy()).unwrap();
    assert_eq!(c.layers.len(), 22);
    assert_eq!(c.samples, 32);
    for l in &c.layers {
        assert_eq!(l.weight_scales.keys().collect::<Vec<_>>(), ["4", "8"]);
        assert_eq!(l.act_ranges.keys().collect::<Vec<_>>(), ["8"]);
        let r = l.act_ranges["8"];
        assert!(r.lo <= 0.0 && r.hi >= 0.0);
    }
}

#[test]
fn evaluates_fp_uniform_and_allocations_sharing_one_fp_pass() {
    let dir = tempfile::tempdir().unwrap();
    calibrate(dir.path());
    let alloc = alloc_all("w8a8");
    clado::io::write_json(&dir.path().join("a.json").to_string_lossy(), &alloc).unwrap();
    let out = run_in(
        "evaluate",
        &[
            "--weights",
            &fixture_checkpoint(),
            "--samples",
            "64",
            "--calib",
            "calib.json",
            "--fp",
            "--uniform",
            "w8a8",
            "--uniform",
            "w4",
            "--alloc",
            "a.json",
            "-q",
        ],
        b"",
        Some(dir.path()),
    )
    .success();
    let m = lines(&out);
    assert_eq!(m.len(), 4);
    assert_eq!(m[0].config, "fp");
    assert_eq!(m[0].kl, 0.0);
    assert_eq!(m[0].avg_w_bits, 32.0);
    assert_eq!(m[1].config, "uniform:w8a8");
    assert_eq!(m[1].avg_w_bits, 8.0);
    assert_eq!(m[1].size_bits * 4, m[0].size_bits);
    assert!(
        m[1].kl > 0.0 && m[1].kl < 0.01,
        "8 bits barely changes the predictions: {}",
        m[1].kl
    );
    assert!(m[2].kl > m[1].kl, "4-bit weights move predictions more than 8-bit ones");
    assert!(m.iter().all(|x| x.samples == 64 && x.top5 >= x.top1));
}

#[test]
fn applied_checkpoint_equals_on_the_fly_quantization() {
    // Weight-only options: the fake-quantized checkpoint evaluated at FP must equal evaluating
    // the allocation on the fly, exactly (same quantizer, same engine).
    let dir = tempfile::tempdir().unwrap();
    calibrate(dir.path());
    let alloc = alloc_all("w4");
    clado::io::write_json(&dir.path().join("a.json").to_string_lossy(), &alloc).unwrap();
    run_in(
        "quantize",
        &[
            "apply",
            "--weights",
            &fixture_checkpoint(),
            "--alloc",
            "a.json",
            "--calib",
            "calib.json",
            "-o",
            "q.safetensors",
            "--export-int",
            "int.safetensors",
            "-q",
        ],
        b"",
        Some(dir.path()),
    )
    .success();
    let common = ["--samples", "64", "--calib", "calib.json", "-q"];
    // At FP nothing is quantized, so no calib.json (that of the original weights belongs to
    // another model: the applied checkpoint is another file, with another digest).
    let a = vec!["--weights", "q.safetensors", "--fp", "--samples", "64", "-q"];
    let applied = lines(&run_in("evaluate", &a, b"", Some(dir.path())).success());
    let fx = fixture_checkpoint();
    let mut b = vec!["--weights", fx.as_str(), "--alloc", "a.json"];
    b.extend_from_slice(&common);
    let on_the_fly = lines(&run_in("evaluate", &b, b"", Some(dir.path())).success());
    assert_eq!(applied[0].top1, on_the_fly[0].top1);
    assert_eq!(applied[0].loss, on_the_fly[0].loss);
    assert!(dir.path().join("int.safetensors").exists());
}

#[test]
fn bad_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    calibrate(dir.path());
    let mut unknown = alloc_all("w8a8");
    unknown.layers[3].name = "layer9.0.conv1".into();
    clado::io::write_json(&dir.path().join("unknown.json").to_string_lossy(), &unknown).unwrap();
    let mut missing = alloc_all("w8a8");
    missing.layers.remove(5);
    clado::io::write_json(&dir.path().join("missing.json").to_string_lossy(), &missing).unwrap();
    let two_bits = alloc_all("w2a8");
    clado::io::write_json(&dir.path().join("w2.json").to_string_lossy(), &two_bits).unwrap();
    let fx = fixture_checkpoint();
    let cases: &[(&[&str], &str)] = &[
        (
            &["--alloc", "unknown.json"],
            "layer 'layer9.0.conv1' is not in the model",
        ),
        (&["--alloc", "missing.json"], "has no option for layer"),
        (
            &["--alloc", "w2.json", "--calib", "calib.json"],
            "no weight scales for 2 bits",
        ),
        (&["--uniform", "w3x"], "option 'w3x'"),
    ];
    for (extra, expect) in cases {
        let mut args = vec!["--weights", fx.as_str(), "--samples", "16", "-q"];
        args.extend_from_slice(extra);
        let err = run_in("evaluate", &args, b"", Some(dir.path())).code(2);
        assert!(err.contains(expect), "{extra:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    let err = run_in(
        "quantize",
        &[
            "apply",
            "--weights",
            &fx,
            "--alloc",
            "unknown.json",
            "--calib",
            "calib.json",
            "-o",
            "q.safetensors",
        ],
        b"",
        Some(dir.path()),
    )
    .code(2);
    assert!(err.contains("layer9.0.conv1"), "{err}");
    assert!(!dir.path().join("q.safetensors").exists());
}

/// An allocation giving every layer `option`, except `fc` at w8.
fn alloc_all(option: &str) -> Alloc {
    alloc_of(
        resnet20_layer_names()
            .iter()
            .map(|n| choice(n, if n == "fc" { "w8" } else { option }))
            .collect(),
    )
}
