//! The README's main job (`scripts/demo.sh`) on a tiny configuration: a PyTorch-saved random
//! ResNet-20, 8 calibration samples, 2 options, 64 test images. Checks every produced file.

use clado::format::{Alloc, Index, Metrics};
use clado_tests::{bin, workspace_root};
use std::process::Command;

#[test]
fn demo_graph_runs_end_to_end() {
    let out = tempfile::tempdir().unwrap();
    let root = workspace_root();
    let bindir = bin("perturb").parent().unwrap().to_path_buf();
    let status = Command::new("bash")
        .arg(root.join("scripts/demo.sh"))
        .env("BIN", &bindir)
        .env("OUT", out.path())
        .env("WEIGHTS", root.join("tests/fixtures/resnet20_c1k10.pth"))
        .env("SAMPLES", "8")
        .env("EVAL_SAMPLES", "64")
        .env("OPTIONS", "w2a8,w8a8")
        .env("BUDGETS", "6")
        .output()
        .expect("run scripts/demo.sh");
    assert!(status.status.success(), "demo failed:\n{}", String::from_utf8_lossy(&status.stderr));
    let p = |name: &str| out.path().join(name).to_string_lossy().into_owned();
    let index: Index = clado::io::read_json(&p("index.json")).unwrap();
    let g = clado::io::read_matrix(&p("G.npy")).unwrap();
    assert_eq!(g.nrows(), index.variables.len());
    for name in ["alloc-none.json", "alloc-clado-6.json", "alloc-naive-6.json"] {
        let a: Alloc = clado::io::read_json(&p(name)).unwrap();
        assert_eq!(a.layers.len(), 22, "{name}");
    }
    let clado6: Alloc = clado::io::read_json(&p("alloc-clado-6.json")).unwrap();
    assert!(clado6.avg_w_bits <= 6.0 + 1e-9, "the budget holds");
    let metrics: Vec<Metrics> = std::fs::read_to_string(p("allocations.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(metrics.len(), 3);
    // The table's numbers are the JSON files' numbers.
    let table = std::fs::read_to_string(p("table.md")).unwrap();
    assert_eq!(table.lines().count(), 2 + 5 + 3, "header + 5 uniform/FP rows + 3 allocations");
    let row = table.lines().find(|l| l.starts_with("| alloc-clado-6 ")).expect("clado row");
    let m = metrics.iter().find(|m| m.config.ends_with("alloc-clado-6.json")).unwrap();
    assert!(row.contains(&format!("| {:.2} |", m.top1)) && row.contains(&format!("{:.4}", clado6.predicted_delta)), "{row}");
}
