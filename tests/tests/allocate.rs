//! End-to-end tests of the `allocate` binary: real files in, JSON out (parsed, never compared
//! as text), exit codes as docs/definitions.md says.

use clado::format::{Alloc, Index};
use clado::io::json_from_bytes;
use clado_tests::{run, run_in, test_index};
use ndarray::Array2;
use ndarray_npy::WriteNpyExt;
use std::path::Path;

/// Sums of a few dozen entries, recomputed here in another order.
const SAME_VALUE: f64 = 1e-12;

const OPTIONS: [&str; 3] = ["w2a8", "w4a8", "w8a8"];
const PARAMS: [u64; 6] = [144, 2304, 2304, 4608, 512, 640];

fn index() -> Index {
    index_of(&PARAMS)
}

fn index_of(params: &[u64]) -> Index {
    test_index(params, &OPTIONS)
}

/// A perturbation-like G: diagonal 4^(−bits)·s_l, small cross terms of both signs.
fn matrix() -> Array2<f64> {
    matrix_of(PARAMS.len())
}

fn matrix_of(layers: usize) -> Array2<f64> {
    let k = OPTIONS.len();
    let n = layers * k;
    let bits = [2.0, 4.0, 8.0];
    Array2::from_shape_fn((n, n), |(u, v)| {
        let (lu, ou, lv, ov) = (u / k, u % k, v / k, v % k);
        let d = |l: usize, o: usize| (1.0 + l as f64 * 0.37) * 4f64.powf(-bits[o]) * 16.0;
        if u == v {
            d(lu, ou)
        } else if lu == lv {
            0.0
        } else {
            let sign = if (lu + lv + ou * ov) % 3 == 0 { -1.0 } else { 1.0 };
            sign * 0.1 * (d(lu, ou) * d(lv, ov)).sqrt()
        }
    })
}

fn write(dir: &Path, g: &Array2<f64>, index: &Index) {
    let mut bytes = Vec::new();
    g.write_npy(&mut bytes).unwrap();
    std::fs::write(dir.join("G.npy"), bytes).unwrap();
    std::fs::write(dir.join("index.json"), serde_json::to_vec_pretty(index).unwrap()).unwrap();
}

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &matrix(), &index());
    dir
}

fn allocate(dir: &Path, extra: &[&str]) -> clado_tests::Run {
    let mut args = vec!["--matrix", "G.npy", "--index", "index.json"];
    args.extend_from_slice(extra);
    run_in("allocate", &args, b"", Some(dir))
}

fn parse(bytes: &[u8]) -> Alloc {
    json_from_bytes::<Alloc>("<stdout>", bytes).expect("allocate writes a valid alloc.json")
}

/// xᵀGx of an allocation, recomputed from the layers' options.
fn delta(alloc: &Alloc, g: &Array2<f64>) -> f64 {
    let k = OPTIONS.len();
    let chosen: Vec<usize> = alloc
        .layers
        .iter()
        .enumerate()
        .map(|(l, c)| l * k + OPTIONS.iter().position(|o| *o == c.option).expect("a listed option"))
        .collect();
    chosen
        .iter()
        .map(|&u| chosen.iter().map(|&v| g[[u, v]]).sum::<f64>())
        .sum()
}

#[track_caller]
fn one_line_error(r: clado_tests::Run, code: i32, needle: &str) {
    assert!(r.stdout.is_empty(), "no output on error, got {}", r.stdout_text());
    let stderr = r.code(code);
    assert_eq!(stderr.lines().count(), 1, "one line on stderr: {stderr}");
    assert!(
        stderr.starts_with("allocate: ") && stderr.contains(needle),
        "stderr should name {needle:?}: {stderr}"
    );
}

#[test]
fn a_budget_gives_a_checked_allocation() {
    let dir = setup();
    let alloc = parse(&allocate(dir.path(), &["--avg-bits", "4"]).success());
    assert_eq!(alloc.layers.len(), PARAMS.len());
    assert!(alloc.avg_w_bits <= 4.0, "{}", alloc.avg_w_bits);
    let params: u64 = PARAMS.iter().sum();
    let size: u64 = alloc
        .layers
        .iter()
        .zip(PARAMS)
        .map(|(c, p)| p * u64::from(c.w_bits.unwrap()))
        .sum();
    assert_eq!(alloc.size_bits, size);
    assert!((alloc.avg_w_bits - size as f64 / params as f64).abs() < SAME_VALUE);
    assert!((alloc.predicted_delta - delta(&alloc, &matrix())).abs() <= SAME_VALUE * alloc.predicted_delta.abs());
    assert_eq!(alloc.budget, "avg-bits=4");
    assert!(
        ["optimal", "exact", "gap_limit"].contains(&alloc.solver.status.as_str()),
        "{}",
        alloc.solver.status
    );
    assert!(alloc.solver.gap <= 1e-6 && alloc.solver.bound <= alloc.solver.objective);
    assert_eq!(alloc.solver.objective, alloc.predicted_delta);
}

#[test]
fn scip_and_enumeration_agree_through_the_binary() {
    let dir = setup();
    let a = parse(&allocate(dir.path(), &["--avg-bits", "3.5", "--method", "scip"]).success());
    let b = parse(&allocate(dir.path(), &["--avg-bits", "3.5", "--method", "enumerate"]).success());
    assert_eq!(a.layers, b.layers);
    assert_eq!(b.solver.status, "exact");
}

#[test]
fn output_file_is_written_and_stdout_stays_empty() {
    let dir = setup();
    let r = allocate(dir.path(), &["--bops", "2e7", "-o", "alloc.json"]);
    assert!(r.success().is_empty());
    let alloc = parse(&std::fs::read(dir.path().join("alloc.json")).unwrap());
    assert!(alloc.bops <= 20_000_000);
}

#[test]
fn pins_are_honoured_and_counted() {
    let dir = setup();
    let alloc = parse(&allocate(dir.path(), &["--avg-bits", "5", "--pin", "layer0=w8a8,layer3=w8a8"]).success());
    assert_eq!(alloc.layers[0].option, "w8a8");
    assert_eq!(alloc.layers[3].option, "w8a8");
    assert!(alloc.avg_w_bits <= 5.0);
    // Pinned layers count: with them at 8 bits, 3 bits on average is out of reach.
    one_line_error(
        allocate(
            dir.path(),
            &["--avg-bits", "3", "--pin", "layer0=w8a8", "--pin", "layer3=w8a8"],
        ),
        1,
        "avg-bits=4.71233",
    );
}

#[test]
fn fixed_layers_count_in_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    // layer5 is not a variable: it stays FP (32 bits) and still counts.
    let mut idx = index();
    idx.fixed.insert("layer5".into(), "fp".into());
    idx.variables.retain(|v| v.layer != 5);
    let g = matrix().slice(ndarray::s![..15, ..15]).to_owned();
    write(dir.path(), &g, &idx);
    let alloc = parse(&allocate(dir.path(), &["--avg-bits", "6"]).success());
    assert_eq!(alloc.layers[5].option, "fp");
    let size: u64 = alloc
        .layers
        .iter()
        .zip(PARAMS)
        .map(|(c, p)| p * u64::from(c.w_bits.unwrap_or(32)))
        .sum();
    assert_eq!(alloc.size_bits, size);
    assert!(alloc.avg_w_bits <= 6.0);
}

#[test]
fn no_budget_runs_the_sanity_check() {
    let dir = setup();
    let r = allocate(dir.path(), &[]);
    let alloc = parse(&r.stdout);
    assert_eq!(r.status, Some(0));
    assert_eq!(alloc.budget, "none");
    assert!(alloc.layers.iter().all(|c| c.option == "w8a8"));
    assert_eq!(alloc.notes["sanity"]["passed"], serde_json::json!(true));
    assert!(r.stderr.contains("sanity check passed"), "{}", r.stderr);

    // A negative single estimate at 2 bits (the seed's failure): the check fails and says why.
    let mut g = matrix();
    g[[2 * 3, 2 * 3]] = -0.5;
    write(dir.path(), &g, &index());
    let r = allocate(dir.path(), &[]);
    let alloc = parse(&r.stdout);
    assert_eq!(alloc.layers[2].option, "w2a8");
    let sanity = &alloc.notes["sanity"];
    assert_eq!(sanity["passed"], serde_json::json!(false));
    assert_eq!(sanity["deviations"][0]["layer"], "layer2");
    assert_eq!(
        sanity["deviations"][0]["negative_estimates"][0]["value"],
        serde_json::json!(-0.5)
    );
    assert!(
        r.stderr.contains("sanity check failed") && r.stderr.contains("layer2"),
        "{}",
        r.stderr
    );
}

#[test]
fn the_confidence_rule_ignores_insignificant_negative_estimates() {
    let dir = setup();
    let mut g = matrix();
    g[[2 * 3, 2 * 3]] = -0.5;
    write(dir.path(), &g, &index());
    let write_se = |scale: f64| {
        let se = g.mapv(|v| if v == 0.0 { 0.0 } else { scale });
        let mut bytes = Vec::new();
        se.write_npy(&mut bytes).unwrap();
        std::fs::write(dir.path().join("G.se.npy"), bytes).unwrap();
    };
    // The -0.5 is within two standard errors of 0 (se 0.3 each: bound 2·(0.3 + 0.3) on the
    // difference to 8 bits) : the rule keeps layer2 at w8a8 and the sanity check passes.
    write_se(0.3);
    let r = allocate(dir.path(), &["--se", "G.se.npy", "--confidence", "2"]);
    let alloc = parse(&r.stdout);
    assert!(alloc.layers.iter().all(|c| c.option == "w8a8"), "{}", r.stdout_text());
    assert_eq!(alloc.notes["sanity"]["passed"], serde_json::json!(true));
    let c = &alloc.notes["confidence"];
    assert_eq!(c["z"], serde_json::json!(2.0));
    assert_eq!(c["delta_vs_highest"], serde_json::json!(0.0));
    assert!(
        (alloc.predicted_delta - delta(&alloc, &g)).abs() < 1e-12,
        "predicted_delta stays xᵀGx"
    );
    // With tiny standard errors the estimate is significant and the rule follows it.
    write_se(1e-6);
    let r = allocate(dir.path(), &["--se", "G.se.npy", "--confidence", "2"]);
    let alloc = parse(&r.stdout);
    assert_eq!(alloc.layers[2].option, "w2a8");
    let upper = alloc.notes["confidence"]["delta_vs_highest_upper"].as_f64().unwrap();
    assert!(upper < 0.0, "a significant improvement over 8 bits: {upper}");
    // --se alone reports without changing the answer; --confidence without --se is refused.
    let r = allocate(dir.path(), &["--se", "G.se.npy"]);
    let alloc = parse(&r.stdout);
    assert_eq!(alloc.layers[2].option, "w2a8");
    assert!(alloc.notes["confidence"]["predicted_delta_se_bound"].as_f64().unwrap() > 0.0);
    one_line_error(allocate(dir.path(), &["--confidence", "2"]), 2, "--se");
}

#[test]
fn the_pessimistic_rule_does_not_count_on_negative_cross_terms() {
    let dir = setup();
    let mut g = matrix();
    // Layers 1 and 2 at w2a8 together: a large benefit of interaction, beyond their own costs.
    let (u, v) = (3, 2 * 3);
    let own = g[[u, u]] + g[[v, v]] - g[[u + 2, u + 2]] - g[[v + 2, v + 2]];
    g[[u, v]] = -own;
    g[[v, u]] = -own;
    write(dir.path(), &g, &index());
    let plain = parse(&allocate(dir.path(), &["-q"]).success());
    assert_eq!(
        (plain.layers[1].option.as_str(), plain.layers[2].option.as_str()),
        ("w2a8", "w2a8"),
        "the plain objective takes the benefit"
    );
    assert!(!plain.notes.contains_key("pessimistic"));
    let r = allocate(dir.path(), &["--pessimistic"]);
    let alloc = parse(&r.stdout);
    assert!(alloc.layers.iter().all(|c| c.option == "w8a8"), "{}", r.stdout_text());
    assert_eq!(alloc.notes["sanity"]["passed"], serde_json::json!(true));
    assert_eq!(alloc.notes["pessimistic"]["ignored_benefit"], serde_json::json!(0.0));
    assert!(
        (alloc.predicted_delta - delta(&alloc, &g)).abs() < 1e-12,
        "predicted_delta stays xᵀGx"
    );
    // Under a budget that forces both down, the answer reports what the rule ignored.
    // The benefit ignored is the sum over ordered pairs (u, v) of chosen variables in different
    // layers, not both at their highest precision, of min(G[u,v], 0): recomputed here from the
    // answer, it must be strictly negative (the budget forces layers below 8 bits where this G
    // has negative cross terms) and equal to what allocate reports.
    let alloc = parse(&allocate(dir.path(), &["--pessimistic", "--avg-bits", "3", "-q"]).success());
    let ignored = alloc.notes["pessimistic"]["ignored_benefit"].as_f64().unwrap();
    let k = OPTIONS.len();
    let highest = OPTIONS.len() - 1;
    let chosen: Vec<(usize, usize)> = alloc
        .layers
        .iter()
        .enumerate()
        .map(|(l, c)| (l, OPTIONS.iter().position(|o| *o == c.option).unwrap()))
        .collect();
    assert!(
        chosen.iter().any(|&(_, o)| o != highest),
        "the budget forces a layer down"
    );
    let mut expected = 0.0;
    for &(lu, ou) in &chosen {
        for &(lv, ov) in &chosen {
            if lu != lv && !(ou == highest && ov == highest) {
                expected += g[[lu * k + ou, lv * k + ov]].min(0.0);
            }
        }
    }
    assert!(
        expected < 0.0,
        "this answer has negative cross terms off x₀: {expected}"
    );
    assert!(
        (ignored - expected).abs() <= SAME_VALUE * expected.abs(),
        "reported {ignored}, recomputed {expected}"
    );
}

#[test]
fn naive_uses_the_diagonal_and_reports_the_whole_delta() {
    let dir = setup();
    let alloc = parse(&allocate(dir.path(), &["--avg-bits", "4", "--naive"]).success());
    let g = matrix();
    let k = OPTIONS.len();
    let diag: f64 = alloc
        .layers
        .iter()
        .enumerate()
        .map(|(l, c)| g[[l * k + OPTIONS.iter().position(|o| *o == c.option).unwrap(); 2]])
        .sum();
    assert!((alloc.solver.objective - diag).abs() <= SAME_VALUE * diag.abs());
    assert!((alloc.predicted_delta - delta(&alloc, &g)).abs() <= SAME_VALUE * alloc.predicted_delta.abs());
}

#[test]
fn a_sweep_writes_one_allocation_per_budget_never_worse() {
    let dir = setup();
    let out = allocate(dir.path(), &["--sweep", "avg-bits=2:8:0.5", "-q"]).success();
    let text = String::from_utf8(out).unwrap();
    let allocs: Vec<Alloc> = text.lines().map(|l| parse(l.as_bytes())).collect();
    assert_eq!(allocs.len(), 13);
    for pair in allocs.windows(2) {
        assert!(pair[1].solver.objective <= pair[0].solver.objective * (1.0 + SAME_VALUE) + SAME_VALUE);
    }
    assert_eq!(allocs[0].budget, "avg-bits=2");
    assert_eq!(allocs[12].budget, "avg-bits=8");
    // The same to a file (seconds aside).
    allocate(dir.path(), &["--sweep", "avg-bits=2:8:0.5", "-q", "-o", "front.jsonl"]).success();
    let again: Vec<Alloc> = std::fs::read_to_string(dir.path().join("front.jsonl"))
        .unwrap()
        .lines()
        .map(|l| parse(l.as_bytes()))
        .collect();
    let timeless = |a: &Alloc| {
        let mut a = a.clone();
        a.solver.seconds = 0.0;
        a
    };
    assert_eq!(
        again.iter().map(timeless).collect::<Vec<_>>(),
        allocs.iter().map(timeless).collect::<Vec<_>>()
    );
}

#[test]
fn an_infeasible_budget_exits_1_naming_the_smallest_feasible_one() {
    let dir = setup();
    one_line_error(
        allocate(dir.path(), &["--avg-bits", "1.5"]),
        1,
        "smallest feasible budget is avg-bits=2",
    );
    one_line_error(
        allocate(dir.path(), &["--bops", "1000"]),
        1,
        "smallest feasible budget is bops=",
    );
}

#[test]
fn bad_input_exits_2_with_one_line_and_no_output_file() {
    let dir = setup();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--pin", "conv9=w8a8"], "no layer \"conv9\""),
        (vec!["--pin", "layer1=w3a3"], "no variable for option w3a3"),
        (vec!["--pin", "layer1=bogus"], "option 'bogus'"),
        (vec!["--avg-bits", "-1"], "--avg-bits -1"),
        (vec!["--avg-bits", "0"], "--avg-bits 0"),
        (vec!["--sweep", "avg-bits=2:8:1", "--avg-bits", "4"], "conflict"),
        (vec!["--time-limit", "-3"], "--time-limit"),
        (vec!["--progress-every", "-1"], "--progress-every -1"),
        (vec!["--nonsense"], "--nonsense"),
    ];
    for (extra, needle) in cases {
        let mut args = extra.clone();
        args.extend(["-o", "out.json"]);
        one_line_error(allocate(dir.path(), &args), 2, needle);
        assert!(!dir.path().join("out.json").exists(), "{extra:?} left an output file");
    }
}

#[test]
fn bad_files_exit_2_naming_the_file_and_the_problem() {
    let dir = setup();
    // Matrix size does not match the index.
    let small = Array2::<f64>::eye(5);
    write(dir.path(), &small, &index());
    one_line_error(
        allocate(dir.path(), &["-o", "out.json"]),
        2,
        "G.npy: matrix is 5×5, but index.json lists 18 variables",
    );
    // NaN in the matrix.
    let mut g = matrix();
    g[[3, 4]] = f64::NAN;
    g[[4, 3]] = f64::NAN;
    write(dir.path(), &g, &index());
    one_line_error(allocate(dir.path(), &["-o", "out.json"]), 2, "entry [3, 4] is NaN");
    // Wrong index version.
    let mut idx = serde_json::to_value(index()).unwrap();
    idx["version"] = serde_json::json!(99);
    write(dir.path(), &matrix(), &index());
    std::fs::write(dir.path().join("index.json"), idx.to_string()).unwrap();
    one_line_error(
        allocate(dir.path(), &["-o", "out.json"]),
        2,
        "index.json version 99 is not supported",
    );
    // A missing file.
    write(dir.path(), &matrix(), &index());
    one_line_error(
        run_in(
            "allocate",
            &["--matrix", "nope.npy", "--index", "index.json"],
            b"",
            Some(dir.path()),
        ),
        2,
        "nope.npy",
    );
    assert!(!dir.path().join("out.json").exists());
}

/// An instance of `layers` layers written to a temporary folder, and the flags that send it to
/// SCIP whole (no enumeration, no reductions) under an avg-bits budget of 4.3.
fn scip_instance(layers: u64) -> (tempfile::TempDir, Vec<&'static str>) {
    let dir = tempfile::tempdir().unwrap();
    let params: Vec<u64> = (0..layers).map(|l| 100 + 37 * (l % 7)).collect();
    write(dir.path(), &matrix_of(params.len()), &index_of(&params));
    (dir, vec!["--avg-bits", "4.3", "--method", "scip", "--no-reduce"])
}

#[test]
fn a_time_out_writes_the_best_allocation_with_its_gap() {
    let (dir, mut args) = scip_instance(40);
    args.extend(["--time-limit", "0.01"]);
    let r = allocate(dir.path(), &args);
    let stderr = r.stderr.clone();
    let alloc = parse(&r.success());
    assert_eq!(alloc.solver.status, "time_limit");
    assert!(alloc.avg_w_bits <= 4.3);
    assert!(alloc.solver.bound <= alloc.solver.objective);
    assert!(stderr.contains("warning") && stderr.contains("gap"), "{stderr}");
    assert!(alloc.notes.contains_key("warning"));
}

#[test]
fn a_long_solve_prints_progress_lines_unless_quiet() {
    let (dir, mut args) = scip_instance(12);
    // A line is due at every SCIP event once `--progress-every` has passed: with 1 µs, at the
    // first one, whatever the machine's speed.
    args.extend(["--time-limit", "20", "--progress-every", "0.000001"]);
    let r = allocate(dir.path(), &args);
    let stderr = r.stderr.clone();
    r.success();
    let line = stderr
        .lines()
        .find(|l| l.starts_with("allocate: avg-bits=4.3: still solving after"))
        .unwrap_or_else(|| panic!("no progress line in:\n{stderr}"));
    assert!(line.contains(" nodes, ") && line.contains("gap"), "{line}");
    let mut quiet = args.clone();
    quiet.push("-q");
    let r = allocate(dir.path(), &quiet);
    assert!(!r.stderr.contains("still solving"), "{}", r.stderr);
    let mut off = args.clone();
    off.extend(["--progress-every", "0"]);
    let r = allocate(dir.path(), &off);
    assert!(!r.stderr.contains("still solving"), "{}", r.stderr);
}

/// `psd --method clip` then `allocate --method branch-and-bound` (what `--method auto` picks
/// for a convex G on harder instances than this): the allocation enumeration gives, proven
/// optimal, and alloc.json naming the method.
#[test]
fn psd_clip_then_branch_and_bound_agrees_with_enumeration() {
    let dir = setup();
    run_in(
        "psd",
        &["--method", "clip", "G.npy", "-o", "G-clip.npy", "-q"],
        b"",
        Some(dir.path()),
    )
    .success();
    let solve = |method: &str| {
        let args = [
            "--matrix",
            "G-clip.npy",
            "--index",
            "index.json",
            "--avg-bits",
            "3.5",
            "--method",
            method,
        ];
        parse(&run_in("allocate", &args, b"", Some(dir.path())).success())
    };
    let (bb, exact) = (solve("branch-and-bound"), solve("enumerate"));
    assert_eq!(bb.layers, exact.layers);
    assert_eq!(bb.solver.status, "optimal");
    assert!(bb.solver.bound <= bb.solver.objective && bb.solver.gap <= 1e-6);
    assert_eq!(bb.notes["method"], "branch-and-bound");
}

/// The branch and bound cut short: the best allocation found with its bound, gap and warning;
/// and its progress lines, as SCIP's.
#[test]
fn the_branch_and_bound_times_out_honestly_and_reports_progress() {
    let dir = tempfile::tempdir().unwrap();
    let params: Vec<u64> = (0..40).map(|l| 100 + 37 * (l % 7)).collect();
    write(dir.path(), &matrix_of(params.len()), &index_of(&params));
    run_in(
        "psd",
        &["--method", "clip", "G.npy", "-o", "G-clip.npy", "-q"],
        b"",
        Some(dir.path()),
    )
    .success();
    let base = [
        "--matrix",
        "G-clip.npy",
        "--index",
        "index.json",
        "--avg-bits",
        "4.3",
        "--method",
        "branch-and-bound",
        "--no-reduce",
    ];
    let mut args = base.to_vec();
    args.extend(["--time-limit", "0.001"]);
    let r = run_in("allocate", &args, b"", Some(dir.path()));
    let stderr = r.stderr.clone();
    let alloc = parse(&r.success());
    assert_eq!(alloc.solver.status, "time_limit");
    assert!(alloc.avg_w_bits <= 4.3);
    assert!(alloc.solver.bound.is_finite() && alloc.solver.bound <= alloc.solver.objective);
    assert!(stderr.contains("warning") && stderr.contains("gap"), "{stderr}");
    let mut args = base.to_vec();
    args.extend(["--time-limit", "20", "--progress-every", "0.000001"]);
    let r = run_in("allocate", &args, b"", Some(dir.path()));
    let stderr = r.stderr.clone();
    r.success();
    let line = stderr
        .lines()
        .find(|l| l.starts_with("allocate: avg-bits=4.3: still solving after"))
        .unwrap_or_else(|| panic!("no progress line in:\n{stderr}"));
    assert!(line.contains(" nodes, ") && line.contains("gap"), "{line}");
}

#[test]
fn the_matrix_can_come_from_stdin() {
    let dir = setup();
    let g = std::fs::read(dir.path().join("G.npy")).unwrap();
    let index = dir.path().join("index.json");
    let r = run(
        "allocate",
        &["--matrix", "-", "--index", index.to_str().unwrap(), "--avg-bits", "4"],
        &g,
    );
    assert!(parse(&r.success()).avg_w_bits <= 4.0);
}

#[test]
fn help_is_the_manual() {
    let r = run("allocate", &["--help"], b"");
    let text = String::from_utf8(r.success()).unwrap();
    for needle in [
        "--avg-bits",
        "--sweep",
        "--pin",
        "--naive",
        "--time-limit",
        "perturb",
        "evaluate",
        "sanity check",
        "Exit status",
    ] {
        assert!(text.contains(needle), "--help lacks {needle}");
    }
}
