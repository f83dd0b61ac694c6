//! ONNX models through the tools (`--model FILE.onnx`): the README's pipeline on torchvision
//! exports (reduced widths, 64×64 inputs, committed under tests/fixtures/onnx by
//! scripts/export_onnx_fixtures.py), their logits against onnxruntime at FP and under a mixed
//! allocation (the quantizers built outside the engine, scripts/onnx_fakequant.py), resumed
//! states against full passes on a DAG, and the refusals.

use clado_tests::{run, run_in, run_with_env, workspace_root};
use ndarray::{Array3, Array4, ArrayD};
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};

/// Largest |engine − onnxruntime| over the largest |logit| allowed. Both compute in f32 with
/// different summation orders (measured: up to 5.1e-7 at FP, 2.9e-7 under the mixed
/// allocation); a rounding difference that moved one activation across a quantizer's decision
/// boundary would still stay well inside this.
const LOGIT_TOLERANCE: f32 = 1e-4;

/// Samples written for each test: enough for every batch path, small for debug builds.
const SAMPLES: usize = 12;

fn fixture(name: &str) -> String {
    workspace_root()
        .join("tests/fixtures/onnx")
        .join(format!("{name}.onnx"))
        .display()
        .to_string()
}

fn python() -> PathBuf {
    let p = workspace_root().join(".deps/venv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run `make setup-venv` (onnxruntime is the reference)",
        p.display()
    );
    p
}

/// `X.npy` (`SAMPLES` normal images of `[c, h, w]`) and `Y.npy` (labels below `classes`) in `dir`;
/// returns the `--data` value.
fn write_data(dir: &Path, shape: [usize; 3], classes: u32, seed: u64) -> String {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let [c, h, w] = shape;
    let x = Array4::from_shape_fn((SAMPLES, c, h, w), |_| {
        // Box–Muller: unit normal, as an image normalised per channel.
        let (u, v): (f32, f32) = (rng.random_range(1e-7..1.0), rng.random_range(0.0..1.0));
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    });
    let y = ndarray::Array1::from_shape_fn(SAMPLES, |i| (i as u32 * 7 + 3) as i64 % classes as i64);
    ndarray_npy::write_npy(dir.join("X.npy"), &x).unwrap();
    ndarray_npy::write_npy(dir.join("Y.npy"), &y).unwrap();
    format!("npy:{},{}", dir.join("X.npy").display(), dir.join("Y.npy").display())
}

fn read_f32(path: &Path) -> ArrayD<f32> {
    ndarray_npy::read_npy(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn relative_error(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    got.iter().zip(want).fold(0.0f32, |m, (a, b)| m.max((a - b).abs())) / scale
}

/// An allocation of `calib`'s layers cycling through `fp` and the 9 options `w{2,4,8}a{2,4,8}`.
fn mixed_allocation(calib: &serde_json::Value) -> serde_json::Value {
    let options: Vec<(Option<u8>, Option<u8>)> = std::iter::once((None, None))
        .chain(
            [2, 4, 8]
                .into_iter()
                .flat_map(|w| [2, 4, 8].map(|a| (Some(w), Some(a)))),
        )
        .collect();
    let layers: Vec<serde_json::Value> = calib["layers"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let (w, a) = options[i % options.len()];
            let option = match (w, a) {
                (Some(w), Some(a)) => format!("w{w}a{a}"),
                _ => "fp".into(),
            };
            serde_json::json!({"name": l["name"], "option": option, "w_bits": w, "a_bits": a})
        })
        .collect();
    let mut alloc = clado_tests::alloc_of(Vec::new());
    alloc.model = serde_json::from_value(calib["model"].clone()).unwrap();
    let mut value = serde_json::to_value(&alloc).unwrap();
    value["layers"] = serde_json::Value::Array(layers);
    value
}

#[test]
fn the_readme_pipeline_runs_on_an_onnx_export() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = fixture("resnet18_slim");
    let data = write_data(d, [3, 64, 64], 10, 1);
    let m = ["--model", model.as_str(), "--data", data.as_str()];
    run_in(
        "quantize",
        &[
            &["calibrate", "--samples", "12"],
            &m[..],
            &["--options", "w{4,8}a8", "-o", "calib.json", "-q"],
        ]
        .concat(),
        b"",
        Some(d),
    )
    .success();
    run_in(
        "perturb",
        &[
            &m[..],
            &[
                "--samples",
                "12",
                "--calib",
                "calib.json",
                "--options",
                "w4a8,w8a8",
                "-o",
                "G.npy",
                "--index",
                "index.json",
                "-q",
            ],
        ]
        .concat(),
        b"",
        Some(d),
    )
    .success();
    let g = std::fs::read(d.join("G.npy")).unwrap();
    let gp = run("psd", &["-q"], &g).success();
    std::fs::write(d.join("Gpsd.npy"), &gp).unwrap();
    let alloc = run_in(
        "allocate",
        &["--matrix", "Gpsd.npy", "--index", "index.json", "--avg-bits", "6"],
        b"",
        Some(d),
    )
    .success();
    let a: serde_json::Value = serde_json::from_slice(&alloc).unwrap();
    assert_eq!(a["model"]["arch"], "onnx");
    let names: Vec<&str> = a["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    // torchvision's module names, from the initializers (BatchNorm folded into the Convs).
    assert_eq!(names.len(), 21, "{names:?}");
    assert_eq!(
        &names[..4],
        ["conv1", "layer1.0.conv1", "layer1.0.conv2", "layer1.1.conv1"]
    );
    assert!(names.contains(&"layer2.0.downsample.0"), "{names:?}");
    assert_eq!(names[20], "fc");
    let metrics = run_in(
        "evaluate",
        &[&m[..], &["--calib", "calib.json", "--alloc", "-", "-q"]].concat(),
        &alloc,
        Some(d),
    )
    .success();
    let line: serde_json::Value = serde_json::from_slice(&metrics).unwrap();
    assert_eq!(line["samples"], SAMPLES);
    assert!(line["avg_w_bits"].as_f64().unwrap() <= 6.0);
}

#[test]
fn logits_match_onnxruntime_at_fp_and_under_a_mixed_allocation() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = write_data(d, [3, 64, 64], 10, 2);
    // A residual network, depthwise convolutions with ReLU6, squeeze-and-excitation (Conv fc1/fc2
    // on pooled maps, a Mul by the sigmoid), channel shuffles, dense concatenations.
    for name in [
        "resnet18_slim",
        "mobilenet_v2_slim",
        "efficientnet_b0_slim",
        "shufflenet_v2_slim",
        "densenet_slim",
    ] {
        let model = fixture(name);
        let m = ["--model", model.as_str(), "--data", data.as_str()];
        let calib = d.join(format!("{name}.calib.json"));
        let calib_s = calib.display().to_string();
        run(
            "quantize",
            &[
                &["calibrate", "--samples", "12"],
                &m[..],
                &["--options", "w{2,4,8}a{2,4,8}", "-o", &calib_s, "-q"],
            ]
            .concat(),
            b"",
        )
        .success();
        let c: serde_json::Value = serde_json::from_slice(&std::fs::read(&calib).unwrap()).unwrap();
        let alloc = d.join(format!("{name}.alloc.json"));
        std::fs::write(&alloc, serde_json::to_vec(&mixed_allocation(&c)).unwrap()).unwrap();
        let ours = d.join(format!("{name}.ours.npy"));
        run(
            "evaluate",
            &[
                &m[..],
                &[
                    "--fp",
                    "--calib",
                    &calib_s,
                    "--alloc",
                    &alloc.display().to_string(),
                    "--logits",
                    &ours.display().to_string(),
                    "-q",
                ],
            ]
            .concat(),
            b"",
        )
        .success();
        let reference = d.join(format!("{name}.ref.npy"));
        let fp = d.join(format!("{name}.fp.npy"));
        let out = std::process::Command::new(python())
            .arg(workspace_root().join("scripts/onnx_fakequant.py"))
            .args([&model, &calib_s, &alloc.display().to_string()])
            .arg(d.join("X.npy"))
            .arg(&reference)
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        let script = "import sys, numpy as np, onnxruntime as ort\n\
            s = ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])\n\
            np.save(sys.argv[3], s.run(None, {s.get_inputs()[0].name: np.load(sys.argv[2])})[0])\n";
        let out = std::process::Command::new(python())
            .args(["-c", script, &model])
            .arg(d.join("X.npy"))
            .arg(&fp)
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        let ours = read_f32(&ours).into_dimensionality::<ndarray::Ix3>().unwrap();
        let ours: Array3<f32> = ours;
        assert_eq!(ours.dim(), (2, SAMPLES, 10));
        let (fp_ours, q_ours) = (
            ours.index_axis(ndarray::Axis(0), 0),
            ours.index_axis(ndarray::Axis(0), 1),
        );
        let (fp_ref, q_ref) = (read_f32(&fp), read_f32(&reference));
        let fp_err = relative_error(&fp_ours.iter().copied().collect::<Vec<_>>(), fp_ref.as_slice().unwrap());
        let q_err = relative_error(&q_ours.iter().copied().collect::<Vec<_>>(), q_ref.as_slice().unwrap());
        assert!(
            fp_err <= LOGIT_TOLERANCE,
            "{name}: FP logits off onnxruntime's by {fp_err:e}"
        );
        assert!(
            q_err <= LOGIT_TOLERANCE,
            "{name}: quantized logits off the reference by {q_err:e}"
        );
        // The allocation changes the logits far beyond the tolerance: the check has teeth.
        let moved = relative_error(&q_ours.iter().copied().collect::<Vec<_>>(), fp_ref.as_slice().unwrap());
        assert!(
            moved > 100.0 * LOGIT_TOLERANCE,
            "{name}: the allocation moved the logits by {moved:e} only"
        );
    }
}

#[test]
fn resumed_states_on_a_dag_give_the_full_pass_matrix_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = write_data(d, [3, 64, 64], 10, 3);
    let model = fixture("mobilenet_v2_slim");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "--model",
            &model,
            "--data",
            &data,
            "--samples",
            "12",
            "--options",
            "w4a8",
            "--layers",
            "features.1.conv.0.0,features.1.conv.1,features.2.conv.0.0,features.2.conv.2,features.3.conv.2,features.4.conv.1.0,classifier.1",
            "-q",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let g = |extra: &[&str], threads: &str| -> Vec<u8> {
        let a = args(extra);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let out = ["-o", "G.npy", "--index", "index.json"];
        run_with_env(
            "perturb",
            &[&a[..], &out].concat(),
            b"",
            Some(d),
            &[("RAYON_NUM_THREADS", threads)],
        )
        .success();
        std::fs::read(d.join("G.npy")).unwrap()
    };
    let cached = g(&[], "2");
    assert!(cached.len() > 128);
    assert_eq!(
        g(&["--reference"], "2"),
        cached,
        "--reference (full passes) differs from the resumed runs"
    );
    assert_eq!(
        g(&["--batch-size", "5"], "1"),
        cached,
        "another batch split and thread count differ"
    );
}

#[test]
fn onnx_models_are_refused_where_they_do_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = fixture("resnet18_slim");
    // Images of another size than the graph's input (the built-in data's 32×32).
    let small = write_data(d, [3, 32, 32], 10, 4);
    let err = run("evaluate", &["--model", &model, "--data", &small, "-q"], b"").code(2);
    assert!(
        err.contains("X.npy") && err.contains("32×32") && err.contains("64×64"),
        "{err}"
    );
    // --model with a checkpoint flag.
    let err = run("evaluate", &["--model", &model, "--weights", "x.pth"], b"").code(2);
    assert!(err.contains("--model") && err.contains("--weights"), "{err}");
    // Not an ONNX file.
    std::fs::write(d.join("bad.onnx"), b"not a model").unwrap();
    let bad = d.join("bad.onnx").display().to_string();
    let err = run("evaluate", &["--model", &bad], b"").code(2);
    assert!(err.contains("bad.onnx") && err.contains("not an ONNX model"), "{err}");
    // A calib.json of one ONNX model given for another.
    let data = write_data(d, [3, 64, 64], 10, 5);
    run_in(
        "quantize",
        &[
            "calibrate",
            "--samples",
            "12",
            "--model",
            &model,
            "--data",
            &data,
            "--options",
            "w4a8",
            "-o",
            "calib.json",
            "-q",
        ],
        b"",
        Some(d),
    )
    .success();
    let other = fixture("resnet50_slim");
    let err = run_in(
        "evaluate",
        &[
            "--model",
            &other,
            "--data",
            &data,
            "--uniform",
            "w4a8",
            "--calib",
            "calib.json",
            "-q",
        ],
        b"",
        Some(d),
    )
    .code(2);
    assert!(err.contains("calib.json") && err.contains("another model"), "{err}");
    // quantize apply writes checkpoints only, and points to quantize export.
    let calib = std::fs::read(d.join("calib.json")).unwrap();
    let c: serde_json::Value = serde_json::from_slice(&calib).unwrap();
    std::fs::write(d.join("alloc.json"), serde_json::to_vec(&mixed_allocation(&c)).unwrap()).unwrap();
    let err = run_in(
        "quantize",
        &[
            "apply",
            "--model",
            &model,
            "--calib",
            "calib.json",
            "--alloc",
            "alloc.json",
            "-o",
            "q.safetensors",
        ],
        b"",
        Some(d),
    )
    .code(2);
    assert!(err.contains("quantize export --model"), "{err}");
    assert!(!d.join("q.safetensors").exists());
}
