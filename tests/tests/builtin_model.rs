//! The built-in models (`models/fmnist-resnet20.safetensors`, `models/fmnist-mobilenetv2.onnx`):
//! `evaluate` at FP on the whole Fashion-MNIST test set reproduces the accuracy recorded at
//! training time (for the ONNX model: onnxruntime's, measured by the training script on the
//! exported file), and uniform w8a8 stays close to it while w2a8 is far worse.

use clado::format::Metrics;
use clado_tests::{run, workspace_root};

/// The ResNet-20's training run evaluates with the candle reference model, the MobileNetV2's
/// record is onnxruntime's; `evaluate` runs its own engine. Logits differ by float32 summation
/// order (~1e-6 relative), which can flip the argmax of a near-tie: allow 3 of the 10,000 test
/// images.
const TOP1_TOLERANCE_PERCENT: f64 = 0.03;

#[test]
fn evaluate_reproduces_the_recorded_accuracy() {
    check_recorded_accuracy("models/fmnist-resnet20.json", "test_top1", &[]);
}

#[test]
fn evaluate_reproduces_onnxruntimes_accuracy_of_the_mobilenetv2() {
    let model = workspace_root().join("models/fmnist-mobilenetv2.onnx");
    check_recorded_accuracy(
        "models/fmnist-mobilenetv2.json",
        "onnxruntime_test_top1",
        &["--model", model.to_str().unwrap()],
    );
}

fn check_recorded_accuracy(report: &str, field: &str, model: &[&str]) {
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(workspace_root().join(report)).unwrap()).unwrap();
    let recorded = report[field].as_f64().unwrap_or_else(|| panic!("{field} in the model's report")) * 100.0;
    let mut args = model.to_vec();
    args.extend(["--fp", "--uniform", "w8a8", "--uniform", "w2a8", "-q"]);
    let out = run("evaluate", &args, b"").success();
    let m: Vec<Metrics> = String::from_utf8_lossy(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(m[0].samples, 10_000);
    assert!(
        (m[0].top1 - recorded).abs() <= TOP1_TOLERANCE_PERCENT,
        "evaluate {} vs recorded {recorded}",
        m[0].top1
    );
    assert!(
        m[0].top1 - m[1].top1 <= 0.5,
        "w8a8 within 0.5 points of FP: {} vs {}",
        m[1].top1,
        m[0].top1
    );
    assert!(
        m[0].top1 - m[2].top1 > 5.0,
        "w2a8 far worse: {} vs {}",
        m[2].top1,
        m[0].top1
    );
}
