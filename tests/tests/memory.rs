//! `perturb --max-memory`: a configuration whose estimated peak does not fit is refused before
//! any work, with the estimate; one that fits runs, and its estimate is not below the peak
//! resident set it used (measured by the kernel: `wait4`'s `ru_maxrss` of that child).

use clado_tests::{bin, run_in, workspace_root};
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

/// How far above the measured peak the estimate may lie: it counts the whole FP-state buffers
/// of a batch and a 15 % allocator margin up front, and resident memory of data loading that
/// has been freed since; more than this and it would refuse runs that fit for no reason.
const ESTIMATE_AT_MOST_TIMES_PEAK: f64 = 3.0;

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

/// The estimated peak in bytes from the note `perturb: --max-memory ...: estimated peak X GiB|MiB`,
/// and half the unit of its last printed digit (the note rounds to 0.1 MiB or 0.01 GiB).
fn estimated_peak_and_resolution(stderr: &str) -> (f64, f64) {
    let at = stderr.find("estimated peak ").expect("the estimate is reported") + "estimated peak ".len();
    let mut words = stderr[at..].split_whitespace();
    let value: f64 = words.next().unwrap().parse().unwrap();
    match words.next().unwrap() {
        "GiB" => (value * (1u64 << 30) as f64, 0.005 * (1u64 << 30) as f64),
        "MiB" => (value * (1u64 << 20) as f64, 0.05 * (1u64 << 20) as f64),
        unit => panic!("unit {unit}"),
    }
}

/// A part of the estimate in MiB, e.g. `FP states of a batch 1.1 MiB`.
fn estimated_part(stderr: &str, label: &str) -> f64 {
    let at = stderr.find(label).unwrap_or_else(|| panic!("{label} in {stderr}")) + label.len();
    let mut words = stderr[at..].split_whitespace();
    let value: f64 = words.next().unwrap().parse().unwrap();
    match words.next().unwrap().trim_end_matches([',', ')']) {
        "GiB" => value * 1024.0,
        "MiB" => value,
        unit => panic!("unit {unit}"),
    }
}

/// Run `perturb` in `dir` and return its exit code, its stderr and its peak resident set size in
/// bytes, from the kernel's accounting of that one child (`wait4`, which also reaps it: std's
/// `wait` would not return the resource usage).
#[allow(clippy::zombie_processes)]
fn run_measured(args: &[&str], dir: &Path) -> (i32, String, u64) {
    let mut child = Command::new(bin("perturb"))
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start perturb");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain old data; wait4 fills it for the child we started and reaps it
    // (the `Child` handle is not waited on afterwards).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid, "wait4: {}", std::io::Error::last_os_error());
    assert!(libc::WIFEXITED(status), "perturb ended by a signal: {status}");
    // Linux reports ru_maxrss in kilobytes.
    (libc::WEXITSTATUS(status), stderr, usage.ru_maxrss as u64 * 1024)
}

#[test]
fn the_estimate_covers_the_measured_peak() {
    let dir = tempfile::tempdir().unwrap();
    for batch in ["4", "16"] {
        let a = args("8G", batch);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let (code, stderr, peak) = run_measured(&a, dir.path());
        assert_eq!(code, 0, "{stderr}");
        let (estimate, resolution) = estimated_peak_and_resolution(&stderr);
        let mib = |b: f64| b / (1u64 << 20) as f64;
        assert!(
            peak as f64 <= estimate + resolution,
            "--batch-size {batch}: peak {:.1} MiB above the estimate {:.1} MiB",
            mib(peak as f64),
            mib(estimate)
        );
        assert!(
            estimate <= ESTIMATE_AT_MOST_TIMES_PEAK * peak as f64,
            "--batch-size {batch}: estimate {:.1} MiB more than {ESTIMATE_AT_MOST_TIMES_PEAK}× the peak {:.1} MiB",
            mib(estimate),
            mib(peak as f64)
        );
        eprintln!(
            "--batch-size {batch}: estimate {:.1} MiB, measured peak {:.1} MiB",
            mib(estimate),
            mib(peak as f64)
        );
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
    // A larger batch keeps larger FP states: that part of the estimate grows with it (the peak
    // itself may be the data loading's, which varies with thread timing).
    let a = args("8G", "4");
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let smaller = run_in("perturb", &a, b"", Some(dir.path()));
    let small_stderr = smaller.stderr.clone();
    smaller.success();
    assert!(
        estimated_part(&stderr, "FP states of a batch ") > estimated_part(&small_stderr, "FP states of a batch "),
        "{stderr}\n{small_stderr}"
    );
}
