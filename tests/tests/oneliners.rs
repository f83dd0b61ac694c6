//! Natural one-liners, tested as written: each runs through `bash -o pipefail -c` in an empty
//! temporary directory with the workspace's binaries first on `PATH` — those of the profile the
//! tests are built in (`target/debug` under `make test`, whose dependencies and `clado` are
//! optimised; see [`clado_tests::bin`]). The model is the built-in one and the data the default
//! Fashion-MNIST, with small sample counts so each line takes seconds. Each test checks exit
//! statuses and what comes out (files, JSON lines, stderr). The README's block between
//! `<!-- one-liners: begin -->` and `<!-- one-liners: end -->` is extracted from README.md and
//! run line by line, so it cannot drift from what the tools do.

use clado::format::{Alloc, Index, Metrics, ModelId};
use clado_tests::{bin, workspace_root};
use std::path::Path;
use std::process::Command;

/// What one shell line did.
#[derive(Debug)]
struct Line {
    status: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Run `script` with `bash -o pipefail -c` in `dir`, the tools first on PATH.
fn sh(dir: &Path, script: &str) -> Line {
    let tools = bin("psd").parent().expect("binary directory").to_path_buf();
    let path = format!("{}:{}", tools.display(), std::env::var("PATH").unwrap_or_default());
    let out = Command::new("bash")
        .args(["-o", "pipefail", "-c", script])
        .current_dir(dir)
        .env("PATH", path)
        .output()
        .expect("bash runs");
    Line {
        status: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Run `script`, expect exit 0 and a quiet stderr (every line uses `-q`), return stdout.
#[track_caller]
fn ok(dir: &Path, script: &str) -> String {
    let r = sh(dir, script);
    assert_eq!(r.status, Some(0), "`{script}` failed:\n{}", r.stderr);
    assert!(r.stderr.is_empty(), "`{script}` wrote on stderr:\n{}", r.stderr);
    r.stdout
}

fn metrics_lines(text: &str) -> Vec<Metrics> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a metrics line ({e}): {l}")))
        .collect()
}

fn read_alloc(dir: &Path, file: &str) -> Alloc {
    clado::io::read_json(&dir.join(file).to_string_lossy()).expect("a valid alloc.json")
}

fn builtin_model() -> ModelId {
    ModelId {
        arch: "resnet20".into(),
        digest: clado::io::file_digest(
            &workspace_root()
                .join("models/fmnist-resnet20.safetensors")
                .to_string_lossy(),
        )
        .unwrap(),
    }
}

/// The quick perturbation most lines start from: G.npy, G.se.npy, index.json in `dir`.
const PERTURB: &str = "perturb -q --samples 16 --options w2a8,w4a8,w8a8 -o G.npy --index index.json --se G.se.npy";

#[test]
fn the_issue_pipeline_answers_for_its_own_options_when_an_old_index_lies_around() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // As the issue wrote it (evaluate on fewer test images), then with other options, in the
    // same directory: the second run must not read the first run's index.json.
    let pipeline = |options: &str| {
        format!(
            "perturb -q --samples 32 --options {options} -o - --index index.json | psd -q \
             | allocate -q --matrix - --index index.json --avg-bits 4 | tee alloc.json \
             | evaluate -q --samples 500 --alloc -"
        )
    };
    for options in ["w2a8,w8a8", "w4a8,w8a8"] {
        let out = ok(d, &pipeline(options));
        let m = metrics_lines(&out);
        assert_eq!(m.len(), 1, "{out}");
        assert_eq!(m[0].config, "-");
        assert_eq!(m[0].samples, 500);
        let index: Index = clado::io::read_json(&d.join("index.json").to_string_lossy()).unwrap();
        let names: Vec<&str> = index.options.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names.join(","), options);
        let alloc = read_alloc(d, "alloc.json");
        assert_eq!(alloc.model, builtin_model());
        assert!(
            alloc.layers.iter().all(|c| options.split(',').any(|o| o == c.option)),
            "{options}: {:?}",
            alloc.layers.iter().map(|c| &c.option).collect::<Vec<_>>()
        );
        assert!(alloc.avg_w_bits <= 4.0 + 1e-12);
        assert_eq!(m[0].avg_w_bits, alloc.avg_w_bits);
    }
}

#[test]
fn sweeps_flow_into_evaluate_and_readers_may_leave_early() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(d, PERTURB);
    // allocate --sweep | evaluate --alloc -: one metrics line per allocation, in order.
    ok(
        d,
        "allocate -q --matrix G.npy --index index.json --sweep avg-bits=3:6:1 > sweep.jsonl",
    );
    let out = ok(
        d,
        "allocate -q --matrix G.npy --index index.json --sweep avg-bits=3:6:1 | evaluate -q --samples 200 --alloc -",
    );
    let m = metrics_lines(&out);
    let sweep: Vec<Alloc> = clado::io::read_json_documents(&d.join("sweep.jsonl").to_string_lossy()).unwrap();
    assert_eq!(m.len(), 4, "{out}");
    assert_eq!(sweep.len(), 4);
    for (i, (m, a)) in m.iter().zip(&sweep).enumerate() {
        assert_eq!(m.config, format!("-#{}", i + 1));
        assert_eq!(
            m.avg_w_bits,
            a.avg_w_bits,
            "line {} evaluates allocation {}",
            i + 1,
            i + 1
        );
    }
    // head closes the pipe after one line: allocate and evaluate end with exit 0, no noise.
    let out = ok(
        d,
        "allocate -q --matrix G.npy --index index.json --sweep avg-bits=2.5:8:0.25 | head -1",
    );
    assert_eq!(out.lines().count(), 1);
    let out = ok(
        d,
        "evaluate -q --samples 200 --fp --uniform w8a8 --uniform w4a8 --alloc sweep.jsonl | head -1",
    );
    assert_eq!(metrics_lines(&out)[0].config, "fp");
    // quantize apply takes one allocation and says how to pick one of several.
    let r = sh(d, "quantize apply -q --alloc sweep.jsonl -o q.safetensors");
    assert_eq!(r.status, Some(2), "{r:?}");
    assert!(
        r.stderr.starts_with("quantize: sweep.jsonl: holds 4 allocations") && r.stderr.contains("sed -n 3p"),
        "{}",
        r.stderr
    );
    assert!(!d.join("q.safetensors").exists());
    ok(
        d,
        "sed -n 2p sweep.jsonl | quantize apply -q --alloc - -o q.safetensors",
    );
    assert!(d.join("q.safetensors").exists());
}

#[test]
fn fan_out_over_budgets_and_process_substitution() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(d, PERTURB);
    // xargs -P: four budgets solved two at a time, then evaluated from one concatenated stream.
    ok(
        d,
        "seq 3 6 | xargs -P 2 -I{} allocate -q --matrix G.npy --index index.json --avg-bits {} -o alloc-{}.json",
    );
    let out = ok(
        d,
        "cat alloc-3.json alloc-4.json alloc-5.json alloc-6.json | evaluate -q --samples 200 --alloc -",
    );
    let m = metrics_lines(&out);
    assert_eq!(m.len(), 4);
    for (m, budget) in m.iter().zip(3..=6) {
        assert_eq!(m.avg_w_bits, read_alloc(d, &format!("alloc-{budget}.json")).avg_w_bits);
    }
    // --matrix <(psd < G.npy): the same answer as through a file.
    ok(
        d,
        "psd -q < G.npy > Gpsd.npy && allocate -q --matrix Gpsd.npy --index index.json --avg-bits 3 > a.json",
    );
    ok(
        d,
        "allocate -q --matrix <(psd -q < G.npy) --index index.json --avg-bits 3 > b.json",
    );
    let (a, b) = (read_alloc(d, "a.json"), read_alloc(d, "b.json"));
    assert_eq!(a.layers, b.layers);
    assert_eq!(a.predicted_delta, b.predicted_delta);
}

#[test]
fn calibration_flows_through_stdin_and_side_files_of_another_model_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // quantize on the left, perturb on the right; then evaluate with --calib from a process.
    ok(
        d,
        "quantize calibrate -q --samples 32 --options w2a8,w8a8 -o - | tee calib.json \
         | perturb -q --calib - --samples 16 --options w2a8,w8a8 -o G.npy --index index.json",
    );
    let out = ok(
        d,
        "allocate -q --matrix G.npy --index index.json --avg-bits 5 \
         | evaluate -q --samples 200 --calib <(cat calib.json) --alloc -",
    );
    assert_eq!(metrics_lines(&out).len(), 1);
    // An allocation and a calib.json of the built-in model, used with another checkpoint (the
    // test fixture, also a ResNet-20 with the same layers): refused, naming file and field.
    let fixture = clado_tests::fixture_checkpoint();
    ok(
        d,
        "allocate -q --matrix G.npy --index index.json --avg-bits 5 > alloc.json",
    );
    let r = sh(
        d,
        &format!("evaluate -q --weights {fixture} --samples 100 --alloc alloc.json --calib calib.json"),
    );
    assert_eq!(r.status, Some(2), "{r:?}");
    assert!(
        r.stderr.starts_with("evaluate: alloc.json: model: made for resnet20")
            && r.stderr.contains(&builtin_model().digest)
            && r.stderr.contains(&fixture)
            && r.stderr.lines().count() == 1,
        "{}",
        r.stderr
    );
    assert!(r.stdout.is_empty());
    let r = sh(
        d,
        &format!("quantize calibrate -q --weights {fixture} --samples 8 --options w2a8,w8a8 -o c2.json && evaluate -q --samples 100 --calib c2.json --uniform w2a8"),
    );
    assert_eq!(r.status, Some(2), "{r:?}");
    assert!(r.stderr.starts_with("evaluate: c2.json: model:"), "{}", r.stderr);
    // Standard errors of another run are refused by allocate.
    ok(d, PERTURB);
    ok(d, "cp G.se.npy old.se.npy");
    ok(
        d,
        "perturb -q --samples 16 --seed 1 --options w2a8,w4a8,w8a8 -o G.npy --index index.json --se G.se.npy",
    );
    let r = sh(
        d,
        "allocate -q --matrix G.npy --index index.json --se old.se.npy --avg-bits 4",
    );
    assert_eq!(r.status, Some(2), "{r:?}");
    assert!(r.stderr.starts_with("allocate: old.se.npy: digest"), "{}", r.stderr);
}

#[test]
fn quantize_apply_reads_an_allocation_from_a_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(d, PERTURB);
    ok(
        d,
        "allocate -q --matrix G.npy --index index.json --avg-bits 4 \
         | quantize apply -q --alloc - --samples 32 -o mixed.safetensors",
    );
    let bytes = std::fs::read(d.join("mixed.safetensors")).unwrap();
    // .safetensors: an 8-byte little-endian header length, then the JSON header.
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let clado: serde_json::Value =
        serde_json::from_str(header["__metadata__"]["clado"].as_str().expect("metadata key clado")).unwrap();
    assert_eq!(clado["model"]["digest"], serde_json::json!(builtin_model().digest));
    assert_eq!(clado["allocation"].as_object().unwrap().len(), 22);
}

/// The README's block of one-liners, extracted from README.md: every line exits 0 with nothing
/// on stderr, in order, in one directory; then what they wrote is checked.
#[test]
fn the_readme_one_liners_run_as_written() {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let start = readme
        .find("<!-- one-liners: begin -->")
        .expect("README marks its one-liners");
    let end = readme[start..]
        .find("<!-- one-liners: end -->")
        .expect("the block ends")
        + start;
    let lines: Vec<&str> = readme[start..end]
        .lines()
        .skip(1)
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    assert!(lines.len() >= 6, "{lines:?}");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut outputs = Vec::new();
    for line in &lines {
        outputs.push(ok(d, line));
    }
    // The third line prints the metrics of alloc.json; the last the first of four.
    let first = metrics_lines(&outputs[2]);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].avg_w_bits, read_alloc(d, "alloc.json").avg_w_bits);
    assert_eq!(read_alloc(d, "alloc.json").model, builtin_model());
    let sweep = metrics_lines(&std::fs::read_to_string(d.join("sweep.jsonl")).unwrap());
    assert_eq!(sweep.len(), 4);
    assert!(d.join("shift.json").exists() && d.join("mixed.safetensors").exists());
    let last = metrics_lines(outputs.last().unwrap());
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].avg_w_bits, read_alloc(d, "alloc-3.json").avg_w_bits);
}

/// A tool waiting for data on a terminal says so on stderr (`script` gives it a terminal, and
/// ends that input at once, so the tool then reports the empty input).
#[test]
fn a_terminal_on_stdin_is_named_instead_of_a_silent_wait() {
    let dir = tempfile::tempdir().unwrap();
    for (line, expected) in [
        (
            "psd -o G.npy",
            "psd: reading a .npy matrix from standard input (a terminal)",
        ),
        (
            "evaluate --alloc -",
            "evaluate: reading an alloc.json document from standard input (a terminal)",
        ),
    ] {
        let r = sh(dir.path(), &format!("script -qec '{line}' /dev/null < /dev/null"));
        // script passes the tool's exit status and puts its stderr on the terminal (stdout).
        assert_eq!(r.status, Some(2), "{r:?}");
        assert!(
            r.stdout.contains(expected) && r.stdout.contains("e.g. `"),
            "{line}: {r:?}"
        );
    }
}
