//! Helpers for the end-to-end tests in `tests/tests/`: find the real binaries, run them with
//! stdin/stdout, and check exit codes, the way a Makefile chains them.
//!
//! The binaries are the ones `cargo build --workspace --bins` put next to this test executable
//! (`make test` builds them first).

use clado::format::{Alloc, FpReference, Index, LayerChoice, LayerInfo, ModelId, SolverReport, FORMAT_VERSION};
use clado::options::QuantOption;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Path of a workspace binary (`psd`, `allocate`, ...) built in the same profile as the tests.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile> directory");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --workspace --bins` (or `make test`) first",
        path.display()
    );
    path
}

/// The workspace root (for fixtures such as the built-in model).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The outcome of one run of a tool.
#[derive(Debug)]
pub struct Run {
    pub status: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Run {
    /// Assert exit 0 and return stdout.
    #[track_caller]
    pub fn success(self) -> Vec<u8> {
        assert_eq!(self.status, Some(0), "expected success, stderr:\n{}", self.stderr);
        self.stdout
    }

    /// Assert the exit code and return stderr.
    #[track_caller]
    pub fn code(self, code: i32) -> String {
        assert_eq!(
            self.status,
            Some(code),
            "expected exit {code}, stderr:\n{}",
            self.stderr
        );
        self.stderr
    }

    /// Stdout as UTF-8 text.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Run tool `name` with `args`, feeding `stdin` from a thread (so large inputs cannot deadlock).
pub fn run(name: &str, args: &[&str], stdin: &[u8]) -> Run {
    run_in(name, args, stdin, None)
}

/// As [`run`], in directory `cwd`.
pub fn run_in(name: &str, args: &[&str], stdin: &[u8], cwd: Option<&Path>) -> Run {
    run_with_env(name, args, stdin, cwd, &[])
}

/// As [`run_in`], with extra environment variables (e.g. `RAYON_NUM_THREADS`).
pub fn run_with_env(name: &str, args: &[&str], stdin: &[u8], cwd: Option<&Path>, env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(bin(name));
    cmd.args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        // A tool may exit before reading everything (e.g. on bad flags): ignore EPIPE here.
        let _ = input.write_all(&data);
    });
    let Output { status, stdout, stderr } = child.wait_with_output().expect("wait for tool");
    feeder.join().expect("stdin feeder");
    Run {
        status: status.code(),
        stdout,
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// The small random-weight ResNet-20 checkpoint (1 channel, 10 classes) that real PyTorch wrote
/// (`scripts/make_fixtures.py`): the model every end-to-end test runs.
pub fn fixture_checkpoint() -> String {
    workspace_root()
        .join("tests/fixtures/resnet20_c1k10.pth")
        .to_string_lossy()
        .into_owned()
}

/// The identity files made for [`fixture_checkpoint`] record.
pub fn fixture_model() -> ModelId {
    ModelId {
        arch: "resnet20".into(),
        digest: clado::io::file_digest(&fixture_checkpoint()).expect("the fixture checkpoint is readable"),
    }
}

/// The quantizable layers of a CIFAR ResNet-20, in forward order (PyTorch names).
pub fn resnet20_layer_names() -> Vec<String> {
    let mut names = vec!["conv1".to_string()];
    for stage in 1..=3 {
        for block in 0..3 {
            names.push(format!("layer{stage}.{block}.conv1"));
            names.push(format!("layer{stage}.{block}.conv2"));
            if stage > 1 && block == 0 {
                names.push(format!("layer{stage}.0.downsample.0"));
            }
        }
    }
    names.push("fc".into());
    names
}

/// Layer `name` at `option` (e.g. `w4a8`; bits from the option's text).
pub fn choice(name: &str, option: &str) -> LayerChoice {
    let parsed = QuantOption::parse(option).expect("a valid option");
    LayerChoice {
        name: name.into(),
        option: option.into(),
        w_bits: parsed.w_bits,
        a_bits: parsed.a_bits,
    }
}

/// An `alloc.json` for [`fixture_checkpoint`] with these choices and neutral solver fields (as
/// if written by hand).
pub fn alloc_of(layers: Vec<LayerChoice>) -> Alloc {
    Alloc {
        version: FORMAT_VERSION,
        model: fixture_model(),
        layers,
        predicted_delta: 0.0,
        size_bits: 0,
        avg_w_bits: 0.0,
        bops: 0,
        budget: "none".into(),
        solver: SolverReport {
            status: "exact".into(),
            objective: 0.0,
            bound: 0.0,
            gap: 0.0,
            seconds: 0.0,
        },
        notes: Default::default(),
    }
}

/// A perturb-like index: conv layers `layer0`, `layer1`, … with these parameter counts (64 MACs
/// per parameter), every layer a variable with every option, 64 samples, FP loss 0.3.
pub fn test_index(params: &[u64], options: &[&str]) -> Index {
    let layers = params
        .iter()
        .enumerate()
        .map(|(i, &p)| LayerInfo {
            name: format!("layer{i}"),
            kind: "conv".into(),
            params: p,
            macs: p * 64,
        })
        .collect();
    let options: Vec<QuantOption> = options.iter().map(|o| QuantOption::parse(o).unwrap()).collect();
    Index {
        samples: 64,
        data: "test".into(),
        fp: FpReference { loss: 0.3, top1: 90.0 },
        ..Index::all_options("test", layers, &options)
    }
}
