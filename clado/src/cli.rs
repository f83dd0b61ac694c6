//! What every tool's `main` shares: running the tool and mapping its error to an exit code.

use crate::Error;
use std::process::ExitCode;

/// Run a tool's body; print `tool: error` on stderr and return the exit code of STYLE.md.
///
/// ```no_run
/// fn main() -> std::process::ExitCode {
///     clado::cli::main("psd", || Ok(()))
/// }
/// ```
pub fn main(tool: &str, body: impl FnOnce() -> Result<(), Error>) -> ExitCode {
    match body() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{tool}: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Verbosity shared by the tools: `-q` silences progress and notes, `-v` says more.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
}

impl Verbosity {
    pub fn from_flags(quiet: bool, verbose: u8) -> Self {
        if quiet {
            Verbosity::Quiet
        } else if verbose > 0 {
            Verbosity::Verbose
        } else {
            Verbosity::Normal
        }
    }
}
