//! `perturb --max-memory`: a configuration whose estimated peak does not fit is refused before
//! any work, with the estimate; one that fits runs, and its estimate is not below what it used.

use clado_tests::{run_in, workspace_root};

fn args(max_memory: &str, batch: &str) -> Vec<String> {
    let fx = workspace_root()
        .join("tests/fixtures/resnet20_c1k10.pth")
        .to_string_lossy()
        .into_owned();
    [
        "--weights",
        &fx,
        "--samples",
        "16",
        "--batch-size",
        batch,
        "--options",
        "w2a8,w8a8",
        "--layers",
        "conv1,layer2.0.conv1,fc",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        "--max-memory".into(),
        max_memory.into(),
        "-o".into(),
        "G.npy".into(),
        "--index".into(),
        "index.json".into(),
    ])
    .collect()
}

/// The estimated peak in bytes from the note `perturb: --max-memory ...: estimated peak X GiB|MiB`.
fn estimated_peak(stderr: &str) -> f64 {
    let at = stderr.find("estimated peak ").expect("the estimate is reported") + "estimated peak ".len();
    let mut words = stderr[at..].split_whitespace();
    let value: f64 = words.next().unwrap().parse().unwrap();
    match words.next().unwrap() {
        "GiB" => value * (1u64 << 30) as f64,
        "MiB" => value * (1u64 << 20) as f64,
        unit => panic!("unit {unit}"),
    }
}

#[test]
fn refuses_up_front_what_would_not_fit_and_runs_what_fits() {
    let dir = tempfile::tempdir().unwrap();
    let a = args("16M", "16");
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let err = run_in("perturb", &a, b"", Some(dir.path())).code(2);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("--max-memory 16M") && err.contains("estimated peak") && err.contains("--batch-size"),
        "{err}"
    );
    assert!(!dir.path().join("G.npy").exists());

    let a = args("8G", "16");
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let fits = run_in("perturb", &a, b"", Some(dir.path()));
    let stderr = fits.stderr.clone();
    fits.success();
    assert!(dir.path().join("G.npy").exists());
    // A larger batch keeps larger FP states: the estimate grows with it.
    let a = args("8G", "4");
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let smaller = run_in("perturb", &a, b"", Some(dir.path()));
    let small_stderr = smaller.stderr.clone();
    smaller.success();
    assert!(
        estimated_peak(&stderr) > estimated_peak(&small_stderr),
        "{stderr}\n{small_stderr}"
    );
}
