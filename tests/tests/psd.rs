//! End-to-end tests of the `psd` binary: pipes, files, the report, and every bad input of
//! issue 5 (exit 2, one line on stderr, nothing written).

use clado_tests::run;
use ndarray::{array, Array1, Array2, Array3};
use ndarray_npy::{ReadNpyExt, WriteNpyExt};
use std::path::Path;

/// |output − expected| on the small matrices below, whose entries are O(1): the tool's only
/// arithmetic is (a + b)/2 and one addition on the diagonal, exact or rounded once (≤ ε).
const ENTRY_TOL: f64 = 1e-15;

fn npy<A: WriteNpyExt>(a: &A) -> Vec<u8> {
    let mut bytes = Vec::new();
    a.write_npy(&mut bytes).expect("encode .npy");
    bytes
}

fn read_npy(bytes: &[u8]) -> Array2<f64> {
    Array2::<f64>::read_npy(bytes).expect("the output is a float64 2-D .npy")
}

/// An indefinite, slightly asymmetric 4×4 matrix: 2 layers × 2 options, with the matrix
/// convention (same-layer off-diagonals 0).
fn indefinite() -> Array2<f64> {
    array![
        [0.10, 0.00, -0.30, 0.05],
        [0.00, 0.02, 0.20, -0.10],
        [-0.30, 0.20, 0.04, 0.00],
        [0.05, -0.10, 0.00, 0.01],
    ]
}

fn index_json(variables: &[(usize, usize)]) -> String {
    let vars: Vec<String> = variables
        .iter()
        .map(|(l, o)| format!(r#"{{"layer":{l},"option":{o}}}"#))
        .collect();
    format!(
        r#"{{"version":1,"arch":"resnet20","layers":[
              {{"name":"conv1","kind":"conv","params":432,"macs":442368}},
              {{"name":"fc","kind":"linear","params":640,"macs":640}}],
            "options":[{{"name":"w4a8","w_bits":4,"a_bits":8}},{{"name":"w8a8","w_bits":8,"a_bits":8}}],
            "variables":[{}],"metric":"loss","naive":false,"samples":64,"data":"npy:x.npy,y.npy",
            "seed":0,"fp":{{"loss":0.3,"top1":91.0}}}}"#,
        vars.join(",")
    )
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temporary path")
}

#[test]
fn shift_through_pipes_adds_a_constant_to_the_diagonal() {
    let g = indefinite();
    let out = read_npy(&run("psd", &["--method", "shift"], &npy(&g)).success());
    let lambda = out[[0, 0]] - g[[0, 0]];
    assert!(lambda > 0.0, "G is indefinite, so the shift is positive");
    for i in 0..4 {
        assert!(
            (out[[i, i]] - g[[i, i]] - lambda).abs() <= ENTRY_TOL,
            "the same λ on every diagonal entry"
        );
        for j in 0..4 {
            assert_eq!(out[[i, j]], out[[j, i]], "exactly symmetric");
        }
    }
    assert_eq!(out[[0, 2]], g[[0, 2]], "off-diagonal entries are untouched");
}

#[test]
fn float32_input_is_promoted_and_symmetrised() {
    let g32 = array![[1.5f32, 0.25], [0.75, -2.0]];
    let r = run("psd", &["--method", "none", "-", "-o", "-"], &npy(&g32));
    let stderr = r.stderr.clone();
    let out = read_npy(&r.success());
    assert_eq!(out, array![[1.5, 0.5], [0.5, -2.0]], "(G + Gᵀ)/2 in float64");
    assert!(stderr.contains("max asymmetry 5.000e-1"), "{stderr}");
    assert!(stderr.lines().all(|l| l.starts_with("psd: ")), "{stderr}");
}

#[test]
fn files_index_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output, report, index) = (
        dir.path().join("G.npy"),
        dir.path().join("Gpsd.npy"),
        dir.path().join("psd.json"),
        dir.path().join("index.json"),
    );
    std::fs::write(&input, npy(&indefinite())).unwrap();
    std::fs::write(&index, index_json(&[(0, 0), (0, 1), (1, 0), (1, 1)])).unwrap();
    let args = [
        path_str(&input),
        "--method",
        "shift",
        "-o",
        path_str(&output),
        "--report",
        path_str(&report),
        "--index",
        path_str(&index),
        "-q",
    ];
    let r = run("psd", &args, b"");
    assert_eq!(r.stderr, "", "-q prints nothing");
    assert!(r.success().is_empty(), "the matrix went to -o, not stdout");

    let out = read_npy(&std::fs::read(&output).unwrap());
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(doc["method"], "shift");
    assert_eq!(doc["n"], 4);
    assert_eq!(doc["layers"], 2);
    let shift = doc["shift"].as_f64().unwrap();
    assert!((out[[1, 1]] - indefinite()[[1, 1]] - shift).abs() <= ENTRY_TOL);
    assert_eq!(
        doc["objective_offset"].as_f64().unwrap(),
        2.0 * shift,
        "λ·L with L = 2 layers"
    );
    let before = &doc["before"];
    assert!(before["lambda_min"].as_f64().unwrap() < 0.0);
    assert!(before["negative_eigenvalues"].as_u64().unwrap() >= 1);
    assert_eq!(doc["after"]["negative_eigenvalues"], 0);
    assert!(doc["after"]["lambda_min"].as_f64().unwrap() > 0.0);
    assert!(
        (doc["frobenius_moved"].as_f64().unwrap() - 2.0 * shift).abs() <= ENTRY_TOL,
        "λ·√N with N = 4"
    );
    assert!(doc["seconds"].as_f64().unwrap() >= 0.0);
    assert_eq!(doc["max_asymmetry"], 0.0);

    // Same input, same bytes.
    let again = dir.path().join("again.npy");
    run(
        "psd",
        &[path_str(&input), "--method", "shift", "-o", path_str(&again), "-q"],
        b"",
    )
    .success();
    assert_eq!(std::fs::read(&output).unwrap(), std::fs::read(&again).unwrap());
}

#[test]
fn clip_reports_to_stdout_when_the_matrix_goes_to_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("Gclip.npy");
    let r = run(
        "psd",
        &["--method", "clip", "-o", path_str(&output), "--report", "-", "-q"],
        &npy(&indefinite()),
    );
    let doc: serde_json::Value = serde_json::from_slice(&r.success()).unwrap();
    assert_eq!(doc["method"], "clip");
    assert_eq!(
        doc["objective_offset"],
        serde_json::Value::Null,
        "clip adds no constant"
    );
    assert_eq!(doc["after"]["lambda_min"], 0.0);
    assert!(output.exists());
}

/// Clip and shift relative to the largest |λ| on a matrix built from known eigenvalues: the
/// eigensolver is backward stable (≲ n·ε·‖G‖₂ ≈ 5e-14 for N = 200) and the projector onto the
/// negative eigenspace is accurate to that over the gap around zero (≥ 0.1·max|λ| here); the
/// reconstructions add as much again. 1e-10 leaves room and still catches any wrong eigenpair.
const SPECTRUM_TOL: f64 = 1e-10;

/// Q·diag(λ)·Qᵀ with Q a product of three Householder reflections I − 2vvᵀ/vᵀv of fixed vectors
/// (orthogonal by construction, independent of any eigensolver), exactly symmetrised.
fn with_eigenvalues(lambda: &[f64]) -> Array2<f64> {
    let n = lambda.len();
    let mut q = Array2::<f64>::eye(n);
    for k in 1..=3 {
        let v = Array1::from_shape_fn(n, |i| ((i * k) as f64 * 0.37 + k as f64).sin());
        let qv = q.dot(&v);
        let vv = v.dot(&v);
        for i in 0..n {
            for j in 0..n {
                q[[i, j]] -= 2.0 * qv[i] * v[j] / vv;
            }
        }
    }
    let a = (&q * &Array1::from(lambda.to_vec())).dot(&q.t());
    Array2::from_shape_fn((n, n), |(i, j)| 0.5 * (a[[i, j]] + a[[j, i]]))
}

/// N = 200 (above faer's divide-and-conquer threshold) through the binary: `clip` gives
/// Q·diag(max(λ, 0))·Qᵀ, `shift` adds −λ_min + 1e-10·‖G‖₂ to the diagonal, and both reports
/// give the spectrum the matrix was built with.
#[test]
fn clip_and_shift_of_a_known_spectrum() {
    // 70 negative eigenvalues in [−2, −0.2], 130 positive in [0.2, 3].
    let lambda: Vec<f64> = (0..200)
        .map(|k| {
            if k < 70 {
                -2.0 + 1.8 * k as f64 / 69.0
            } else {
                0.2 + 2.8 * (k - 70) as f64 / 129.0
            }
        })
        .collect();
    let g = with_eigenvalues(&lambda);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("G.npy");
    std::fs::write(&input, npy(&g)).unwrap();
    for method in ["clip", "shift"] {
        let (output, report) = (
            dir.path().join(format!("{method}.npy")),
            dir.path().join(format!("{method}.json")),
        );
        let args = [
            path_str(&input),
            "-m",
            method,
            "-o",
            path_str(&output),
            "--report",
            path_str(&report),
            "-q",
        ];
        run("psd", &args, b"").success();
        let out = read_npy(&std::fs::read(&output).unwrap());
        let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        let before = &doc["before"];
        assert_eq!(before["negative_eigenvalues"], 70, "{method}");
        assert!(
            (before["lambda_min"].as_f64().unwrap() + 2.0).abs() <= SPECTRUM_TOL * 3.0,
            "{method}"
        );
        assert!(
            (before["lambda_max"].as_f64().unwrap() - 3.0).abs() <= SPECTRUM_TOL * 3.0,
            "{method}"
        );
        let expected = match method {
            "clip" => with_eigenvalues(&lambda.iter().map(|l| l.max(0.0)).collect::<Vec<_>>()),
            _ => &g + &(Array2::<f64>::eye(200) * (2.0 + 1e-10 * 3.0)),
        };
        let err = (&out - &expected).iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(err <= SPECTRUM_TOL * 3.0, "{method}: max entry error {err:e}");
        assert!(out == out.t(), "{method}: exactly symmetric");
    }
}

#[test]
fn help_is_the_manual() {
    let help = run("psd", &["--help"], b"").success();
    let text = String::from_utf8(help).unwrap();
    for needle in [
        "--method",
        "shift",
        "clip",
        "none",
        "--index",
        "--report",
        "psd < G.npy > Gpsd.npy",
        "default is `clip`",
    ] {
        assert!(text.contains(needle), "--help lacks {needle}");
    }
}

/// A bad input: exit 2, exactly one line on stderr containing `expect`, no output file or report.
#[track_caller]
fn rejects(args: &[&str], stdin: &[u8], expect: &str) {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.npy");
    let report = dir.path().join("report.json");
    let mut all = args.to_vec();
    all.extend(["-o", path_str(&output), "--report", path_str(&report)]);
    let stderr = run("psd", &all, stdin).code(2);
    assert_eq!(stderr.lines().count(), 1, "one line on stderr: {stderr}");
    assert!(
        stderr.starts_with("psd: ") && stderr.contains(expect),
        "expected {expect:?} in {stderr}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing written: {stderr}"
    );
}

#[test]
fn bad_inputs_exit_2_with_one_line_and_write_nothing() {
    rejects(
        &[],
        &npy(&Array2::<f64>::zeros((3, 4))),
        "<stdin>: expected a square N×N matrix, got shape 3×4",
    );
    rejects(
        &[],
        &npy(&Array1::<f64>::zeros(4)),
        "expected a 2-D matrix, got shape (4,)",
    );
    rejects(
        &[],
        &npy(&Array3::<f64>::zeros((2, 2, 2))),
        "expected a 2-D matrix, got shape (2, 2, 2)",
    );
    let mut g = indefinite();
    g[[1, 3]] = f64::NAN;
    g[[2, 0]] = f64::NAN;
    rejects(&[], &npy(&g), "entry [1, 3] is NaN, expected a finite number");
    let mut g = indefinite();
    g[[3, 2]] = f64::NEG_INFINITY;
    rejects(&[], &npy(&g), "entry [3, 2] is -inf");
    rejects(&[], b"", "<stdin>: empty input, expected a .npy file");
    rejects(&[], b"0.1,0.2\n0.3,0.4\n", "not a .npy file");
    rejects(
        &[],
        &npy(&Array2::<i64>::zeros((2, 2))),
        "expected float64 or float32 data",
    );
    rejects(
        &[],
        &npy(&Array2::<f64>::zeros((0, 0))),
        "expected a non-empty N×N matrix",
    );
    rejects(
        &["--method", "eigen"],
        &npy(&indefinite()),
        "invalid value 'eigen' for '--method <METHOD>' [possible values: clip, shift, none]",
    );
    rejects(&["missing.npy"], b"", "missing.npy: No such file");
}

#[test]
fn an_index_of_another_matrix_is_rejected_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let index = dir.path().join("index.json");
    std::fs::write(&index, index_json(&[(0, 0), (0, 1), (1, 0)])).unwrap();
    rejects(
        &["--index", path_str(&index)],
        &npy(&indefinite()),
        "has 3 variables but the matrix is 4×4",
    );
    std::fs::write(&index, "{}").unwrap();
    rejects(
        &["--index", path_str(&index)],
        &npy(&indefinite()),
        "missing field `version`",
    );
}
