//! `quantize export`: mixed allocations of the ONNX fixtures written as QDQ models, run by
//! onnxruntime with default session options (as a user would) against `evaluate --alloc
//! --logits`; the report's sizes against the file; the metadata; and the refusals. The built-in
//! ResNet-20, written as ONNX, against the engine on Fashion-MNIST test images.

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
    // -o naming a checkpoint ResNet's --weights.
    let weights = d.join("r20.pth");
    std::fs::copy(clado_tests::fixture_checkpoint(), &weights).unwrap();
    let w = weights.display().to_string();
    let before = std::fs::read(&weights).unwrap();
    let err = run_in(
        "quantize",
        &[
            "export",
            "--weights",
            &w,
            "--calib",
            &calib,
            "--alloc",
            &alloc,
            "-o",
            &w,
        ],
        b"",
        Some(d),
    )
    .code(2);
    assert!(err.contains("--weights") && err.contains("-o"), "{err}");
    assert_eq!(std::fs::read(&weights).unwrap(), before);
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

/// Fashion-MNIST test images the built-in model is compared on.
const TEST_IMAGES: usize = 300;

/// Writes the first `n` Fashion-MNIST test images, preprocessed as the loader does (float32
/// `(v/255 − 0.2860)/0.3530`, zero-padded to 32×32), to `dir/X.npy` and their labels to
/// `dir/Y.npy`; returns the `--data` value.
fn fashion_mnist_test(dir: &Path, n: usize) -> String {
    let (x, y) = (dir.join("X.npy"), dir.join("Y.npy"));
    python_run(
        r#"
import sys, gzip, numpy as np
d, n, x_out, y_out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
raw = np.frombuffer(gzip.open(d + "/t10k-images-idx3-ubyte.gz").read()[16:], np.uint8).reshape(-1, 28, 28)[:n]
y = np.frombuffer(gzip.open(d + "/t10k-labels-idx1-ubyte.gz").read()[8:], np.uint8)[:n].astype(np.int64)
x = (raw.astype(np.float32) / np.float32(255) - np.float32(0.2860)) / np.float32(0.3530)
np.save(x_out, np.pad(x, ((0, 0), (2, 2), (2, 2)))[:, None])
np.save(y_out, y)
"#,
        &[
            clado::data::FASHION_MNIST_DIR,
            &n.to_string(),
            &x.display().to_string(),
            &y.display().to_string(),
        ],
    );
    format!("npy:{},{}", x.display(), y.display())
}

/// The layers (name, kind, params, MACs) `perturb` lists in index.json for `model_args`.
fn listed_layers(dir: &Path, name: &str, model_args: &[&str], data: &str) -> serde_json::Value {
    let index = dir.join(format!("{name}.index.json")).display().to_string();
    let g = dir.join(format!("{name}.G.npy")).display().to_string();
    let mut args = model_args.to_vec();
    args.extend([
        "--data",
        data,
        "--samples",
        "2",
        "--options",
        "w8a8",
        "-o",
        &g,
        "--index",
        &index,
        "-q",
    ]);
    run("perturb", &args, b"").success();
    let i: serde_json::Value = serde_json::from_slice(&std::fs::read(&index).unwrap()).unwrap();
    i["layers"].clone()
}

/// A sample may exceed [`LOGIT_TOLERANCE`] only where one of its quantizer inputs lies this
/// close to a rounding tie (`x/s` within `TIE_WINDOW·max(1, |x/s|)` of `k + ½`), so that the
/// last bits of a float sum decide the code: onnxruntime's convolutions sum in another order
/// than the engine's, and a code one step off at 2 bits moves the logits by percents (measured:
/// 1 of 300 test images, its input to layer2.2.conv1 (w2a4) 4.8e-7 codes from a tie; all others equal
/// bit for bit). The window is 100 times f32's relative precision.
const TIE_WINDOW: f64 = 1e-5;

/// Runs the QDQ file in onnxruntime (default options) and saves the logits; prints, per sample,
/// the smallest distance of a QuantizeLinear input to a rounding tie relative to `max(1, |x/s|)`
/// (computed with the graph unoptimised, every QuantizeLinear input an output).
const ORT_TIES_SCRIPT: &str = r#"
import sys, json, numpy as np, onnx, onnxruntime as ort
path, x_path, out = sys.argv[1:4]
x = np.load(x_path)
s = ort.InferenceSession(path)
np.save(out, s.run(None, {s.get_inputs()[0].name: x})[0])
m = onnx.load(path)
inits = {t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer}
qs = [n for n in m.graph.node if n.op_type == "QuantizeLinear"]
for n in qs:
    m.graph.output.append(onnx.helper.make_tensor_value_info(n.input[0], onnx.TensorProto.FLOAT, None))
so = ort.SessionOptions()
so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
values = ort.InferenceSession(m.SerializeToString(), so).run(None, {"input": x})[1:]
dist = np.full(len(x), np.inf)
for n, v in zip(qs, values):
    y = v.astype(np.float64).reshape(len(x), -1) / float(inits[n.input[1]])
    d = np.abs(y - np.floor(y) - 0.5) / np.maximum(1.0, np.abs(y))
    dist = np.minimum(dist, d.min(axis=1))
print(json.dumps({"quantizers": len(qs), "tie_distance": dist.tolist()}))
"#;

#[test]
fn the_builtin_resnet_exports_as_evaluate_computes_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = fashion_mnist_test(d, TEST_IMAGES);
    let x = d.join("X.npy").display().to_string();
    // Calibrated on 64 training images (the default data).
    let calib = d.join("r20.calib.json").display().to_string();
    run(
        "quantize",
        &[
            "calibrate",
            "--samples",
            "64",
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
    let mixed = mixed_allocation(&c);
    let mut fp = mixed.clone();
    for l in fp["layers"].as_array_mut().unwrap() {
        *l = serde_json::json!({"name": l["name"], "option": "fp", "w_bits": null, "a_bits": null});
    }
    let export = |alloc: &serde_json::Value, name: &str| -> (String, String) {
        let a = d.join(format!("{name}.alloc.json")).display().to_string();
        std::fs::write(&a, serde_json::to_vec(alloc).unwrap()).unwrap();
        let o = d.join(format!("{name}.onnx")).display().to_string();
        run(
            "quantize",
            &["export", "--calib", &calib, "--alloc", &a, "-o", &o, "-q"],
            b"",
        )
        .success();
        (a, o)
    };

    // (a) The float model: the reader lists the engine's layers, and onnxruntime computes the
    // engine's logits.
    let (_, fp_onnx) = export(&fp, "fp");
    let engine_layers = listed_layers(d, "engine", &[], &data);
    assert_eq!(engine_layers.as_array().unwrap().len(), 22);
    assert_eq!(listed_layers(d, "graph", &["--model", &fp_onnx], &data), engine_layers);
    let structure: serde_json::Value = serde_json::from_str(&python_run(
        "import sys, json, onnx\nm = onnx.load(sys.argv[1])\nonnx.checker.check_model(m, full_check=True)\n\
         ops = {}\nfor n in m.graph.node: ops[n.op_type] = ops.get(n.op_type, 0) + 1\n\
         print(json.dumps({'opset': m.opset_import[0].version, 'ops': ops, \
         'inits': sorted(t.name for t in m.graph.initializer), \
         'input': [d.dim_param or d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]}))",
        &[&fp_onnx],
    ))
    .unwrap();
    assert_eq!(structure["opset"], 21);
    assert_eq!(
        structure["ops"],
        serde_json::json!({"Conv": 21, "BatchNormalization": 21, "Relu": 19, "Add": 9,
            "GlobalAveragePool": 1, "Flatten": 1, "Gemm": 1})
    );
    assert_eq!(structure["input"], serde_json::json!(["N", 1, 32, 32]));
    // The initializers are the checkpoint's tensors (BN's num_batches_tracked aside).
    let checkpoint = clado::checkpoint::load(clado::setup::BUILTIN_WEIGHTS).unwrap();
    let names: Vec<&String> = checkpoint
        .keys()
        .filter(|k| !k.ends_with("num_batches_tracked"))
        .collect();
    assert_eq!(structure["inits"], serde_json::json!(names));
    let ort_fp = d.join("fp.ort.npy");
    python_run(
        "import sys, numpy as np, onnxruntime as ort\ns = ort.InferenceSession(sys.argv[1])\n\
         np.save(sys.argv[3], s.run(None, {s.get_inputs()[0].name: np.load(sys.argv[2])})[0])",
        &[&fp_onnx, &x, &ort_fp.display().to_string()],
    );
    let ours_fp = d.join("fp.ours.npy");
    run(
        "evaluate",
        &[
            "--data",
            &data,
            "--fp",
            "--logits",
            &ours_fp.display().to_string(),
            "-q",
        ],
        b"",
    )
    .success();
    let ours = read_f32(&ours_fp);
    let fp_ours: Vec<f32> = ours.iter().copied().collect();
    let err = relative_error(read_f32(&ort_fp).as_slice().unwrap(), &fp_ours);
    eprintln!("FP: onnxruntime against evaluate {err:e}");
    assert!(err <= LOGIT_TOLERANCE, "FP logits off by {err:e}");

    // (b) A mixed allocation (fp and the nine options): per sample within LOGIT_TOLERANCE, or a
    // quantizer input at a rounding tie.
    let (mixed_alloc, mixed_onnx) = export(&mixed, "mixed");
    let ours_q = d.join("mixed.ours.npy");
    run(
        "evaluate",
        &[
            "--data",
            &data,
            "--calib",
            &calib,
            "--alloc",
            &mixed_alloc,
            "--logits",
            &ours_q.display().to_string(),
            "-q",
        ],
        b"",
    )
    .success();
    let ort_q = d.join("mixed.ort.npy");
    let ties: serde_json::Value = serde_json::from_str(&python_run(
        ORT_TIES_SCRIPT,
        &[&mixed_onnx, &x, &ort_q.display().to_string()],
    ))
    .unwrap();
    assert!(ties["quantizers"].as_u64().unwrap() > 15, "{ties}");
    let ours: Vec<f32> = read_f32(&ours_q).iter().copied().collect();
    let theirs: Vec<f32> = read_f32(&ort_q).iter().copied().collect();
    let scale = ours.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let classes = ours.len() / TEST_IMAGES;
    let mut at_ties = 0;
    for (i, (a, b)) in ours.chunks(classes).zip(theirs.chunks(classes)).enumerate() {
        let err = a.iter().zip(b).fold(0.0f32, |m, (p, q)| m.max((p - q).abs())) / scale;
        if err > LOGIT_TOLERANCE {
            let tie = ties["tie_distance"][i].as_f64().unwrap();
            assert!(
                tie <= TIE_WINDOW,
                "image {i}: onnxruntime's logits off evaluate's by {err:e}, its nearest tie {tie:e}"
            );
            at_ties += 1;
        }
    }
    eprintln!("mixed: {at_ties} of {TEST_IMAGES} images off by more than {LOGIT_TOLERANCE:e} (at ties)");
    assert!(at_ties * 100 <= TEST_IMAGES, "{at_ties} images at ties");
    let moved = relative_error(&ours, &fp_ours);
    assert!(
        moved > 100.0 * LOGIT_TOLERANCE,
        "the allocation moved the logits by {moved:e} only"
    );
}
