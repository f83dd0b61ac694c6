//! The experiment graph (`scripts/experiment.mk`, what `make demo` runs) on a tiny
//! configuration, through the real binaries: a PyTorch-saved random ResNet-20, 8 calibration
//! samples, 2 options, 2 budgets, 64 test images. Checks every produced file, that the table's
//! numbers are the JSON files' numbers, and that a rerun has nothing to do.

use clado::format::{Alloc, Index, Metrics};
use clado_tests::{bin, workspace_root};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

const OPTIONS: &str = "w2a8,w8a8";
const BUDGETS: [&str; 2] = ["4", "6"];
const METHODS: [&str; 9] = [
    "uniform",
    "naive",
    "zeroq",
    "clado-loss-clip",
    "clado-loss-shift",
    "clado-kl-clip",
    "clado-kl-shift",
    "clado-loss-conf",
    "clado-loss-pess",
];
/// The resnet20 fixture has 22 quantizable layers.
const LAYERS: usize = 22;
/// table.csv writes floats with Python's repr (shortest round trip, correctly rounded) and the
/// workspace's serde_json reads them exactly (`float_roundtrip`), but the predicted Δ of `shift`
/// methods and the measured Δ are one subtraction away from the JSON numbers. A few ulps of the
/// operands cover that; a wrong number would differ in a printed digit.
const ROUND_TRIP_ULPS: f64 = 4.0 * f64::EPSILON;

fn make(out: &Path, extra: &[&str]) -> std::process::Output {
    let root = workspace_root();
    let bindir = bin("clado-plot").parent().unwrap().to_path_buf();
    Command::new("make")
        .current_dir(&root)
        .args(["-f", "scripts/experiment.mk", "-j2", "EXP=tiny"])
        .arg(format!("OUT={}", out.display()))
        .arg(format!("BIN={}", bindir.display()))
        .arg(format!(
            "WEIGHTS={}",
            root.join("tests/fixtures/resnet20_c1k10.pth").display()
        ))
        .args([
            "SAMPLES=8",
            "EVAL_SAMPLES=64",
            &format!("OPTIONS={OPTIONS}"),
            &format!("BUDGETS={}", BUDGETS.join(" ")),
        ])
        .args(extra)
        .output()
        .expect("run make (GNU make is needed for the experiment graph)")
}

fn read_metrics(path: &Path) -> Vec<Metrics> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .collect()
}

fn number(row: &BTreeMap<&str, &str>, column: &str) -> f64 {
    row[column]
        .parse()
        .unwrap_or_else(|e| panic!("column {column} = {:?}: {e}", row[column]))
}

#[test]
fn experiment_graph_runs_end_to_end_and_the_table_matches_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    let run = make(out, &[]);
    assert!(
        run.status.success(),
        "make failed:\n{}",
        String::from_utf8_lossy(&run.stderr)
    );

    // Every stage's files.
    let mut expected: Vec<String> = [
        "calib.json",
        "eval/fp.jsonl",
        "table.md",
        "table.csv",
        "sanity.md",
        "plot.png",
        "plot.svg",
    ]
    .map(String::from)
    .to_vec();
    for metric in ["loss", "kl"] {
        for file in [
            "G.npy",
            "G.se.npy",
            "index.json",
            "G-clip.npy",
            "psd-clip.json",
            "G-shift.npy",
            "psd-shift.json",
        ] {
            expected.push(format!("{metric}/{file}"));
        }
    }
    for method in METHODS {
        expected.push(format!("eval/{method}.jsonl"));
        expected.extend(BUDGETS.iter().map(|b| format!("alloc/{method}/{b}.json")));
        if method != "uniform" {
            expected.push(format!("alloc/{method}/none.json"));
        }
    }
    for file in &expected {
        let path = out.join(file);
        let len = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{file}: {e}")).len();
        assert!(len > 0, "{file} is empty");
    }
    assert!(
        !out.join("loss/work").exists(),
        "perturb's resume directory is dropped after the run"
    );
    assert_eq!(
        &std::fs::read(out.join("plot.png")).unwrap()[..8],
        b"\x89PNG\r\n\x1a\n",
        "plot.png is a PNG"
    );
    assert!(
        std::fs::read_to_string(out.join("plot.svg")).unwrap().contains("<svg"),
        "plot.svg is an SVG"
    );

    for metric in ["loss", "kl"] {
        let index: Index = clado::io::read_json(out.join(format!("{metric}/index.json")).to_str().unwrap()).unwrap();
        let g = clado::io::read_matrix(out.join(format!("{metric}/G.npy")).to_str().unwrap()).unwrap();
        assert_eq!((g.nrows(), index.variables.len()), (2 * LAYERS, 2 * LAYERS), "{metric}");
        assert_eq!(index.metric.to_string(), metric);
    }

    // The allocations: budgets hold, uniform is uniform, no-budget files carry the sanity check.
    let allocs: BTreeMap<String, Alloc> = expected
        .iter()
        .filter(|f| f.starts_with("alloc/"))
        .map(|f| (f.clone(), clado::io::read_json(out.join(f).to_str().unwrap()).unwrap()))
        .collect();
    for (file, alloc) in &allocs {
        assert_eq!(alloc.layers.len(), LAYERS, "{file}");
        let budget = file.rsplit('/').next().unwrap().trim_end_matches(".json");
        if budget == "none" {
            assert!(alloc.notes.contains_key("sanity"), "{file}: the sanity check");
        } else {
            assert!(
                alloc.avg_w_bits <= budget.parse::<f64>().unwrap() + 1e-9,
                "{file}: the budget holds"
            );
        }
    }
    for b in BUDGETS {
        let uniform = &allocs[&format!("alloc/uniform/{b}.json")];
        assert!(
            uniform.layers.iter().all(|l| l.option == "w2a8"),
            "w8a8 does not fit {b} bits: uniform w2a8"
        );
    }

    // table.csv against the JSON files it came from.
    let offset = |metric: &str| -> f64 {
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join(format!("{metric}/psd-shift.json"))).unwrap())
                .unwrap();
        report["objective_offset"]
            .as_f64()
            .expect("shift's offset with --index")
    };
    let fp = read_metrics(&out.join("eval/fp.jsonl")).remove(0);
    let csv = std::fs::read_to_string(out.join("table.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let rows: Vec<BTreeMap<&str, &str>> = lines
        .map(|l| header.iter().copied().zip(l.split(',')).collect())
        .collect();
    assert_eq!(
        rows.len(),
        1 + METHODS.len() * BUDGETS.len(),
        "FP and every (method, budget)"
    );
    assert_eq!((rows[0]["method"], number(&rows[0], "top1")), ("fp", fp.top1));
    let table_md = std::fs::read_to_string(out.join("table.md")).unwrap();
    for method in METHODS {
        let evaluated = read_metrics(&out.join(format!("eval/{method}.jsonl")));
        assert_eq!(evaluated.len(), BUDGETS.len(), "{method}");
        for (b, m) in BUDGETS.iter().zip(&evaluated) {
            let file = format!("alloc/{method}/{b}.json");
            assert!(m.config.ends_with(&file), "{} evaluates {file}", m.config);
            let alloc = &allocs[&file];
            let row = rows
                .iter()
                .find(|r| r["method"] == method && r["budget"] == *b)
                .expect("a row");
            let metric = row["metric"];
            let measured = if metric == "loss" { m.loss - fp.loss } else { m.kl };
            let predicted = alloc.predicted_delta
                - if method.ends_with("-shift") {
                    offset(metric)
                } else {
                    0.0
                };
            // Differences are compared at the scale of their operands (one rounding each).
            let loss_scale = m.loss.abs().max(fp.loss.abs());
            let predicted_scale = alloc.predicted_delta.abs().max(predicted.abs());
            for (column, want, scale) in [
                ("top1", m.top1, m.top1),
                ("loss", m.loss, m.loss),
                ("kl", m.kl, m.kl),
                ("size_mb", m.size_mb, m.size_mb),
                ("avg_w_bits", alloc.avg_w_bits, alloc.avg_w_bits),
                ("size_bits", alloc.size_bits as f64, alloc.size_bits as f64),
                ("predicted_delta", predicted, predicted_scale),
                (
                    "measured_delta",
                    measured,
                    if metric == "loss" { loss_scale } else { m.kl },
                ),
                ("measured_delta_loss", m.loss - fp.loss, loss_scale),
            ] {
                let got = number(row, column);
                let tolerance = ROUND_TRIP_ULPS * scale.abs().max(f64::MIN_POSITIVE);
                assert!(
                    (got - want).abs() <= tolerance,
                    "{file}: table.csv {column} = {got}, the JSON says {want}"
                );
            }
            let md_row = format!(
                "| {b} | {method} | {:.2} | {:.4} | {:.4} | {:.3} ",
                m.top1, m.loss, m.kl, alloc.avg_w_bits
            );
            assert!(table_md.contains(&md_row), "table.md lacks `{md_row}`");
        }
    }
    let sanity = std::fs::read_to_string(out.join("sanity.md")).unwrap();
    for method in &METHODS[1..] {
        assert!(sanity.contains(&format!("| {method} | ")), "sanity.md reports {method}");
    }

    // A rerun has nothing to do; a changed allocation variable redoes allocations, not perturb.
    let up_to_date = make(out, &["-q"]);
    assert_eq!(up_to_date.status.code(), Some(0), "a rerun has nothing to do");
    let dry = make(out, &["-n", "TIME_LIMIT=30"]);
    let plan = String::from_utf8_lossy(&dry.stdout);
    assert!(
        plan.contains("allocate") && !plan.contains("perturb") && !plan.contains("quantize"),
        "{plan}"
    );
}

/// A stage whose command fails fails the graph: make exits non-zero naming the stage, and the
/// stage leaves no target behind. Here the helper that computes the pins of `uniform` breaks (as
/// when `$(PYTHON) uniform.py` used to fail inside a command substitution: the allocation ran
/// unpinned and the table called it uniform).
#[test]
fn a_failing_stage_fails_the_graph_and_leaves_no_target() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let broken = dir.path().join("broken-python");
    std::fs::write(
        &broken,
        "#!/bin/sh\necho \"broken-python: $1: fails on purpose\" >&2\nexit 3\n",
    )
    .unwrap();
    std::fs::set_permissions(&broken, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let run = make(&out, &[&format!("PYTHON={}", broken.display())]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "make succeeded with a broken stage:\n{stderr}");
    assert!(
        stderr.contains("broken-python: scripts/uniform.py: fails on purpose"),
        "{stderr}"
    );
    let failed: Vec<&str> = BUDGETS
        .iter()
        .copied()
        .filter(|b| {
            stderr.contains(&format!(
                "{}] Error 3",
                out.join(format!("alloc/uniform/{b}.pins")).display()
            ))
        })
        .collect();
    assert!(!failed.is_empty(), "make names the failed stage:\n{stderr}");
    for b in BUDGETS {
        for file in [format!("alloc/uniform/{b}.pins"), format!("alloc/uniform/{b}.json")] {
            assert!(!out.join(&file).exists(), "{file} exists after its stage failed");
        }
    }
    for file in ["eval/uniform.jsonl", "table.md", "table.csv"] {
        assert!(!out.join(file).exists(), "{file} was made from a failed stage");
    }
}

fn read_csv(path: &Path) -> Vec<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().unwrap().split(',').map(String::from).collect();
    lines
        .map(|l| header.iter().cloned().zip(l.split(',').map(String::from)).collect())
        .collect()
}

/// REPEATS=2: each draw is a whole graph of its own (other calibration images: seeds 0 and 1),
/// and the report's table.csv holds, per method and budget, the mean and the sample standard
/// deviation of the draws' numbers (recomputed here from the draws' own tables); table.md shows
/// them as mean ± sd and pairs each CLADO method with the baselines.
#[test]
fn repeats_run_one_graph_per_draw_and_report_mean_and_spread() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let run = make(
        &out,
        &["REPEATS=2", "METRICS=loss", "PSD_METHODS=shift", "CONFIDENCE=", "BASELINES=naive zeroq"],
    );
    assert!(run.status.success(), "make failed:\n{}", String::from_utf8_lossy(&run.stderr));
    let calib: Vec<String> = (0..2)
        .map(|k| std::fs::read_to_string(out.join(format!("draw-{k}/calib.json"))).unwrap())
        .collect();
    assert_ne!(calib[0], calib[1], "the draws calibrate on other images");
    let draws: Vec<_> = (0..2).map(|k| read_csv(&out.join(format!("draw-{k}/table.csv")))).collect();
    let merged = read_csv(&out.join("table.csv"));
    assert_eq!(merged.len(), draws[0].len());
    let mut spread = 0.0f64;
    for row in &merged {
        let key = |r: &BTreeMap<String, String>| (r["method"].clone(), r["budget"].clone());
        let per_draw: Vec<f64> = draws
            .iter()
            .map(|d| {
                let r = d.iter().find(|r| key(r) == key(row)).expect("the row in every draw");
                r["top1"].parse().unwrap()
            })
            .collect();
        let mean = (per_draw[0] + per_draw[1]) / 2.0;
        // The sample standard deviation of two values.
        let sd = (per_draw[0] - per_draw[1]).abs() / 2f64.sqrt();
        let got: f64 = row["top1"].parse().unwrap();
        let got_sd: f64 = row["top1_sd"].parse().unwrap();
        assert!((got - mean).abs() <= 1e-12 * mean.abs().max(1.0), "{key:?}: mean {got} vs {mean}", key = key(row));
        assert!((got_sd - sd).abs() <= 1e-12 * sd.max(1.0), "{key:?}: sd {got_sd} vs {sd}", key = key(row));
        assert_eq!(row["draws"], "2");
        spread = spread.max(sd);
    }
    assert!(spread > 0.0, "two calibration draws gave identical accuracies everywhere");
    let table = std::fs::read_to_string(out.join("table.md")).unwrap();
    for needle in ["2 calibration draws (seeds 0,1)", " ± ", "Paired with `naive`", "Paired with `zeroq`", "clado-loss-shift"] {
        assert!(table.contains(needle), "table.md lacks {needle:?}:\n{table}");
    }
    assert!(out.join("plot.png").exists(), "the plot of the means");

    // scripts/layers.py splits the raw loss G's prediction of each allocation into its
    // single-layer and cross-layer parts: their sum is the prediction `allocate --naive` wrote
    // (xᵀGx of the whole raw G), averaged over the draws.
    let python = workspace_root().join(".deps/venv/bin/python");
    assert!(python.exists(), "{} is missing: run `make setup-venv`", python.display());
    let layers = Command::new(&python)
        .arg(workspace_root().join("scripts/layers.py"))
        .arg(&out)
        .args(["--methods", "naive,clado-loss-shift", "--budgets", BUDGETS[0]])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&layers.stdout);
    assert!(layers.status.success(), "layers.py: {}", String::from_utf8_lossy(&layers.stderr));
    assert!(report.contains("in how many of 2 draws"), "{report}");
    let row: Vec<&str> = report
        .lines()
        .find(|l| l.starts_with(&format!("| naive | {} |", BUDGETS[0])))
        .unwrap_or_else(|| panic!("no naive row:\n{report}"))
        .split('|')
        .map(str::trim)
        .collect();
    let mean = |cell: &str| -> f64 { cell.split(" ± ").next().unwrap().parse().unwrap() };
    let (single, cross, predicted) = (mean(row[3]), mean(row[4]), mean(row[6]));
    let written: Vec<f64> = (0..2)
        .map(|k| {
            let a: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(out.join(format!("draw-{k}/alloc/naive/{}.json", BUDGETS[0]))).unwrap(),
            )
            .unwrap();
            a["predicted_delta"].as_f64().unwrap()
        })
        .collect();
    // The report prints three decimals.
    let expected = (written[0] + written[1]) / 2.0;
    assert!((predicted - expected).abs() <= 1.5e-3, "predicted {predicted} vs allocate's {expected}:\n{report}");
    assert!((single + cross - predicted).abs() <= 2e-3, "{single} + {cross} vs {predicted}:\n{report}");
}
