//! The built-in model (`models/fmnist-resnet20.safetensors`): `evaluate` at FP on the whole
//! Fashion-MNIST test set reproduces the accuracy recorded at training time, and uniform w8a8
//! stays close to it while w2a8 is far worse.

use clado::format::Metrics;
use clado_tests::{run, workspace_root};

/// The training run evaluates with the candle reference model, `evaluate` with the fast
/// engine; logits differ by float32 summation order (~1e-6 relative), which can flip the
/// argmax of a near-tie: allow 3 of the 10,000 test images.
const TOP1_TOLERANCE_PERCENT: f64 = 0.03;

#[test]
fn evaluate_reproduces_the_recorded_accuracy() {
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(workspace_root().join("models/fmnist-resnet20.json")).unwrap())
            .unwrap();
    let recorded = report["test_top1"].as_f64().expect("test_top1 in the model's report") * 100.0;
    let out = run(
        "evaluate",
        &["--fp", "--uniform", "w8a8", "--uniform", "w2a8", "-q"],
        b"",
    )
    .success();
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
