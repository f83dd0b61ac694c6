//! `quantize export`: mixed allocations of the ONNX fixtures written as QDQ models, run by
//! onnxruntime with default session options (as a user would) against `evaluate --alloc
//! --logits`; the report's sizes against the file; the metadata; and the refusals.

use clado_tests::{run, run_in, workspace_root};
use ndarray::{Array4, ArrayD};
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};

/// Largest |onnxruntime − evaluate| over the largest |logit| allowed. The quantizers are the
/// same arithmetic (division by the scale, rounding half to even, `(code − zp)·s`), so what is
/// left is f32 summation order in the convolutions (measured: at most 1.9e-7 on these files);
/// a rounding difference that moved one activation across a quantizer's decision boundary
/// would still stay inside this.
const LOGIT_TOLERANCE: f32 = 1e-4;

/// The same for op_coverage, whose Gemm (a w2a8 layer reading a QuantizeLinear →
/// DequantizeLinear directly) onnxruntime's QDQSelectorActionTransformer replaces by an integer
/// GEMM at its default optimisation level: integer sums are exact where the f32 sums of the
/// simulation round, and its Softmax output sits after it (measured 2.3e-4; 8.5e-8 with that
/// transformer disabled).
const INTEGER_GEMM_TOLERANCE: f32 = 1e-3;

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

fn python_run(script: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(python())
        .args(["-c", script])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "python: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// `X.npy` (normal images of `shape`) and `Y.npy` in `dir`; returns the `--data` value.
fn write_data(dir: &Path, shape: [usize; 3], classes: u32, seed: u64) -> String {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let [c, h, w] = shape;
    let x = Array4::from_shape_fn((SAMPLES, c, h, w), |_| {
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
    let options: Vec<Option<(u8, u8)>> = std::iter::once(None)
        .chain([2, 4, 8].into_iter().flat_map(|w| [2, 4, 8].map(|a| Some((w, a)))))
        .collect();
    let layers: Vec<serde_json::Value> = calib["layers"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, l)| match options[i % options.len()] {
            Some((w, a)) => {
                serde_json::json!({"name": l["name"], "option": format!("w{w}a{a}"), "w_bits": w, "a_bits": a})
            }
            None => serde_json::json!({"name": l["name"], "option": "fp", "w_bits": null, "a_bits": null}),
        })
        .collect();
    let mut alloc = clado_tests::alloc_of(Vec::new());
    alloc.model = serde_json::from_value(calib["model"].clone()).unwrap();
    alloc.budget = "avg-bits=5".into();
    let mut value = serde_json::to_value(&alloc).unwrap();
    value["layers"] = serde_json::Value::Array(layers);
    value
}

/// Calibrates `model` on `data` into `dir/NAME.calib.json` and writes the mixed allocation to
/// `dir/NAME.alloc.json` with its size_bits as evaluate counts them; returns both paths.
fn calib_and_alloc(dir: &Path, name: &str, model: &str, data: &str) -> (String, String) {
    let calib = dir.join(format!("{name}.calib.json")).display().to_string();
    run(
        "quantize",
        &[
            "calibrate",
            "--samples",
            "12",
            "--model",
            model,
            "--data",
            data,
            "--options",
            "w{2,4,8}a{2,4,8}",
            "-o",
            &calib,
            "-q",
        ],
        b"",
    )
    .success();
    let c: serde_json::Value = serde_json::from_slice(&std::fs::read(&calib).unwrap()).unwrap();
    let mut alloc = mixed_allocation(&c);
    let alloc_path = dir.join(format!("{name}.alloc.json")).display().to_string();
    std::fs::write(&alloc_path, serde_json::to_vec(&alloc).unwrap()).unwrap();
    let metrics = run(
        "evaluate",
        &[
            "--model",
            model,
            "--data",
            data,
            "--calib",
            &calib,
            "--alloc",
            &alloc_path,
            "-q",
        ],
        b"",
    )
    .success();
    let m: serde_json::Value = serde_json::from_slice(&metrics).unwrap();
    alloc["size_bits"] = m["size_bits"].clone();
    std::fs::write(&alloc_path, serde_json::to_vec(&alloc).unwrap()).unwrap();
    (calib, alloc_path)
}

/// Runs the file in onnxruntime with default session options; saves the logits to `out` and
/// prints what the test checks of the file: its opset, the metadata, the quantizable layers'
/// weight bytes (codes of `*_quantized` initializers, float32 `NAME.weight` of layers at fp) and
/// the element types of the codes.
const ORT_SCRIPT: &str = r#"
import sys, json, numpy as np, onnx, onnxruntime as ort
path, x, out, alloc = sys.argv[1:5]
s = ort.InferenceSession(path)
np.save(out, s.run(None, {s.get_inputs()[0].name: np.load(x)})[0])
m = onnx.load(path)
onnx.checker.check_model(m)
fp = [l["name"] for l in json.load(open(alloc))["layers"] if l["option"] == "fp"]
inits = {t.name: t for t in m.graph.initializer}
codes = [t for t in m.graph.initializer if t.name.endswith("_quantized")]
size = sum(len(t.raw_data) for t in codes) + sum(4 * int(np.prod(inits[n + ".weight"].dims)) for n in fp)
print(json.dumps({
    "opset": [o.version for o in m.opset_import if o.domain in ("", "ai.onnx")][0],
    "metadata": {p.key: p.value for p in m.metadata_props},
    "weight_bytes": size,
    "code_types": sorted({onnx.TensorProto.DataType.Name(t.data_type) for t in codes}),
}))
"#;

#[test]
fn exported_models_run_in_onnxruntime_as_evaluate_simulates_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("64")).unwrap();
    let data64 = write_data(&d.join("64"), [3, 64, 64], 10, 7);
    // (fixture, its data, whether 4- and 2-bit codes are packed as int4): opset 18 is raised
    // to 21; opset 13 and 14 keep theirs and store small codes in int8. op_coverage has a
    // Gemm with transB=0 and a MatMul (channel axis 1).
    let coverage = std::fs::create_dir_all(d.join("cov")).map(|_| write_data(&d.join("cov"), [3, 21, 19], 7, 8));
    let coverage = coverage.unwrap();
    for (name, data, int4) in [
        ("resnet18_slim", &data64, true),
        ("mobilenet_v2_slim", &data64, true),
        ("efficientnet_b0_slim", &data64, true),
        ("resnet18_slim_opset13", &data64, false),
        ("op_coverage", &coverage, false),
    ] {
        let model = fixture(name);
        let (calib, alloc) = calib_and_alloc(d, name, &model, data);
        let ours = d.join(format!("{name}.ours.npy"));
        run(
            "evaluate",
            &[
                "--model",
                &model,
                "--data",
                data,
                "--fp",
                "--calib",
                &calib,
                "--alloc",
                &alloc,
                "--logits",
                &ours.display().to_string(),
                "-q",
            ],
            b"",
        )
        .success();
        let qdq = d.join(format!("{name}.qdq.onnx")).display().to_string();
        let r = run(
            "quantize",
            &[
                "export", "--model", &model, "--calib", &calib, "--alloc", &alloc, "-o", &qdq,
            ],
            b"",
        );
        let report = r.stderr.clone();
        r.success();
        let x = data.trim_start_matches("npy:").split(',').next().unwrap();
        let ort_out = d.join(format!("{name}.ort.npy"));
        let facts: serde_json::Value = serde_json::from_str(&python_run(
            ORT_SCRIPT,
            &[&qdq, x, &ort_out.display().to_string(), &alloc],
        ))
        .unwrap();

        let ours = read_f32(&ours);
        let n = ours.len() / 2;
        let flat: Vec<f32> = ours.iter().copied().collect();
        let (fp_ours, q_ours) = flat.split_at(n);
        let theirs = read_f32(&ort_out);
        let err = relative_error(theirs.as_slice().unwrap(), q_ours);
        let tolerance = if name == "op_coverage" {
            INTEGER_GEMM_TOLERANCE
        } else {
            LOGIT_TOLERANCE
        };
        assert!(
            err <= tolerance,
            "{name}: onnxruntime's logits off evaluate's by {err:e}"
        );
        let moved = relative_error(q_ours, fp_ours);
        assert!(
            moved > 100.0 * LOGIT_TOLERANCE,
            "{name}: the allocation moved the logits by {moved:e} only"
        );

        // The file: opset, containers, metadata.
        let a: serde_json::Value = serde_json::from_slice(&std::fs::read(&alloc).unwrap()).unwrap();
        let want_types = if int4 { vec!["INT4", "INT8"] } else { vec!["INT8"] };
        assert_eq!(facts["code_types"], serde_json::json!(want_types), "{name}");
        if int4 {
            assert_eq!(facts["opset"], 21, "{name}");
            assert!(report.contains("packed two per byte (int4)"), "{report}");
        } else {
            assert!(facts["opset"].as_i64().unwrap() < 18, "{name}");
            assert!(report.contains("sit in int8 containers"), "{report}");
        }
        let meta: serde_json::Value = serde_json::from_str(facts["metadata"]["clado"].as_str().unwrap()).unwrap();
        assert_eq!(meta["model"], a["model"], "{name}");
        assert_eq!(meta["budget"], "avg-bits=5");
        assert_eq!(meta["size_bits"], a["size_bits"]);
        for l in a["layers"].as_array().unwrap() {
            assert_eq!(meta["allocation"][l["name"].as_str().unwrap()], l["option"], "{name}");
        }
        // The report's sizes: the file's weight bytes as counted in the file, next to the
        // budget's prediction; packed 2-bit codes take 4 bits, int8 containers 8.
        let file_bytes = facts["weight_bytes"].as_u64().unwrap();
        let predicted = a["size_bits"].as_u64().unwrap().div_ceil(8);
        assert!(
            report.contains(&format!("layer weights {file_bytes} bytes in the file"))
                && report.contains(&format!("predicts {predicted} bytes")),
            "{name}: {report} (file {file_bytes}, predicted {predicted})"
        );
        assert!(
            predicted <= file_bytes && file_bytes <= 4 * predicted,
            "{name}: {report}"
        );
    }
}

#[test]
fn export_refuses_what_it_cannot_write_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = write_data(d, [3, 64, 64], 10, 9);
    let model = fixture("resnet18_slim");
    let (calib, alloc) = calib_and_alloc(d, "r18", &model, &data);
    let out = d.join("out.qdq.onnx");
    let o = out.display().to_string();
    let export = |model: &str, calib: &str, alloc: &str, o: &str| {
        run_in(
            "quantize",
            &["export", "--model", model, "--calib", calib, "--alloc", alloc, "-o", o],
            b"",
            Some(d),
        )
    };
    // An allocation of another model.
    let other = fixture("mobilenet_v2_slim");
    let (other_calib, other_alloc) = calib_and_alloc(d, "mnv2", &other, &data);
    let err = export(&model, &calib, &other_alloc, &o).code(2);
    assert!(
        err.contains("mnv2.alloc.json") && err.contains("another model") && err.lines().count() == 1,
        "{err}"
    );
    // A calib.json of another model, and one lacking a layer the allocation quantizes.
    let err = export(&model, &other_calib, &alloc, &o).code(2);
    assert!(
        err.contains("mnv2.calib.json") && err.contains("another model"),
        "{err}"
    );
    let mut c: serde_json::Value = serde_json::from_slice(&std::fs::read(&calib).unwrap()).unwrap();
    c["layers"].as_array_mut().unwrap().remove(1);
    let short = d.join("short.calib.json");
    std::fs::write(&short, serde_json::to_vec(&c).unwrap()).unwrap();
    let err = export(&model, &short.display().to_string(), &alloc, &o).code(2);
    assert!(
        err.contains("short.calib.json") && err.contains("has no entry for layer 'layer1.0.conv1'"),
        "{err}"
    );
    // An option the export cannot represent: per-channel scales on an opset-12 model.
    let old = d.join("opset12.onnx").display().to_string();
    python_run(
        "import sys, onnx\nm = onnx.load(sys.argv[1])\nm.opset_import[0].version = 12\nonnx.save(m, sys.argv[2])",
        &[&fixture("resnet18_slim_opset13"), &old],
    );
    let (old_calib, old_alloc) = calib_and_alloc(d, "old", &old, &data);
    let err = export(&old, &old_calib, &old_alloc, &o).code(2);
    assert!(
        err.contains("opset12.onnx") && err.contains("opset_import") && err.contains("opset 12"),
        "{err}"
    );
    assert!(!out.exists(), "a refused export left {o}");
    // -o naming an input: nothing is overwritten.
    for (i, victim) in [&model, &calib, &alloc].into_iter().enumerate() {
        let before = std::fs::read(victim).unwrap();
        let err = export(&model, &calib, &alloc, victim).code(2);
        let flag = ["--model", "--calib", "--alloc"][i];
        assert!(err.contains(flag) && err.contains("-o"), "{err}");
        assert_eq!(std::fs::read(victim).unwrap(), before, "{victim} changed");
    }
    // The checkpoint ResNets have no ONNX writer.
    let err = run_in(
        "quantize",
        &["export", "--calib", &calib, "--alloc", &alloc, "-o", &o],
        b"",
        Some(d),
    )
    .code(2);
    assert!(
        err.contains("built-in model") && err.contains("quantize apply"),
        "{err}"
    );
    assert!(!out.exists());
}

/// Largest |evaluate − onnxruntime| over the largest |logit| for a file from onnxruntime's
/// `quantize_static`, which onnxruntime runs with integer QLinearConv kernels that requantize
/// each convolution's output (one rounding of the int32 sum to the output's uint8 code, where
/// `evaluate` rounds the f32 sum); a code one step off propagates. Measured on ResNet-18's
/// fixture: 1.13e-2 (our own export: 1.5e-7); the bound leaves a factor of about 4.
const FOREIGN_QDQ_TOLERANCE: f32 = 0.05;

#[test]
fn qdq_files_evaluate_as_onnxruntime_runs_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = write_data(d, [3, 64, 64], 10, 11);
    let x = d.join("X.npy").display().to_string();
    let model = fixture("resnet18_slim");
    let (calib, alloc) = calib_and_alloc(d, "r18", &model, &data);
    let ours_qdq = d.join("r18.qdq.onnx").display().to_string();
    run(
        "quantize",
        &[
            "export", "--model", &model, "--calib", &calib, "--alloc", &alloc, "-o", &ours_qdq, "-q",
        ],
        b"",
    )
    .success();
    // onnxruntime's own quantizer: static, QDQ, uint8 activations, int8 weights.
    let theirs_qdq = d.join("r18.ort-static.onnx").display().to_string();
    python_run(
        r#"
import sys, numpy as np
from onnxruntime.quantization import quantize_static, CalibrationDataReader, QuantFormat, QuantType
class Reader(CalibrationDataReader):
    def __init__(self):
        x = np.load(sys.argv[2]); self.it = iter([{"x": x[i:i+1]} for i in range(len(x))])
    def get_next(self): return next(self.it, None)
import onnx
name = onnx.load(sys.argv[1], load_external_data=False).graph.input[0].name
class Named(Reader):
    def get_next(self):
        v = super().get_next(); return None if v is None else {name: v["x"]}
quantize_static(sys.argv[1], sys.argv[3], Named(), quant_format=QuantFormat.QDQ,
    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)
"#,
        &[&model, &x, &theirs_qdq],
    );
    for (file, tolerance) in [(&ours_qdq, LOGIT_TOLERANCE), (&theirs_qdq, FOREIGN_QDQ_TOLERANCE)] {
        let ort_out = d.join("ort.npy").display().to_string();
        python_run(
            "import sys, numpy as np, onnxruntime as ort\ns = ort.InferenceSession(sys.argv[1])\n\
             np.save(sys.argv[3], s.run(None, {s.get_inputs()[0].name: np.load(sys.argv[2])})[0])",
            &[file, &x, &ort_out],
        );
        let ours = d.join("ours.npy");
        let metrics = run(
            "evaluate",
            &[
                "--model",
                file,
                "--data",
                &data,
                "--fp",
                "--logits",
                &ours.display().to_string(),
                "-q",
            ],
            b"",
        )
        .success();
        let ours = read_f32(&ours);
        let theirs = read_f32(Path::new(&ort_out));
        let err = relative_error(ours.as_slice().unwrap(), theirs.as_slice().unwrap());
        eprintln!("{file}: evaluate against onnxruntime {err:e}");
        assert!(
            err <= tolerance,
            "{file}: evaluate's logits off onnxruntime's by {err:e}"
        );
        assert!(!metrics.is_empty());
    }
    // The folded weights are layers again, under the source's module names.
    let listed = d.join("listed.calib.json").display().to_string();
    run(
        "quantize",
        &[
            "calibrate",
            "--samples",
            "12",
            "--model",
            &ours_qdq,
            "--data",
            &data,
            "--options",
            "w8a8",
            "-o",
            &listed,
            "-q",
        ],
        b"",
    )
    .success();
    let names = |p: &str| -> Vec<serde_json::Value> {
        let c: serde_json::Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
        c["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["name"].clone())
            .collect()
    };
    assert_eq!(names(&listed), names(&calib));
}
