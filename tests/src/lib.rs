//! Helpers for the end-to-end tests in `tests/tests/`: find the real binaries, run them with
//! stdin/stdout, and check exit codes, the way a Makefile chains them.
//!
//! The binaries are the ones `cargo build --workspace --bins` put next to this test executable
//! (`make test` builds them first).

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
