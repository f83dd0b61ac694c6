//! What every tool's `main` shares: running the tool and mapping its error to an exit code.

use crate::Error;
use std::process::ExitCode;

/// Run a tool's body; print `tool: error` on stderr and return the exit code of docs/definitions.md.
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

/// Parse the command line into `A` (clap derive), then run `body` as [`main`] does.
///
/// `--help` and `--version` print to stdout and exit 0. Any other parse error becomes a one-line
/// usage error on stderr, exit 2 (clap's own message spans several lines).
///
/// ```no_run
/// #[derive(clap::Parser)]
/// struct Args {
///     input: String,
/// }
/// fn main() -> std::process::ExitCode {
///     clado::cli::main_with_args("psd", |args: Args| Ok(()))
/// }
/// ```
pub fn main_with_args<A: clap::Parser>(tool: &str, body: impl FnOnce(A) -> Result<(), Error>) -> ExitCode {
    main(tool, || match A::try_parse() {
        Ok(args) => body(args),
        Err(e) if !e.use_stderr() => {
            // --help / --version: the manual goes to stdout.
            e.print().map_err(|io| Error::io("<stdout>", io))
        }
        Err(e) => Err(Error::usage(one_line_usage_error(tool, &e))),
    })
}

/// Condense a clap error to one line: `invalid value 'x' for '--method <METHOD>' [possible
/// values: clip, shift, none] (see psd --help)`.
fn one_line_usage_error(tool: &str, e: &clap::Error) -> String {
    let text = e.render().to_string();
    let parts: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty()
                && !l.starts_with("Usage:")
                && !l.starts_with("For more information")
                && !l.starts_with("tip:")
        })
        .map(|l| l.strip_prefix("error: ").unwrap_or(l))
        .collect();
    format!("{} (see {tool} --help)", parts.join(" "))
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Args {
        #[arg(long, value_parser = ["clip", "shift"])]
        method: String,
    }

    #[test]
    fn clap_errors_become_one_line() {
        let e = Args::try_parse_from(["psd", "--method", "foo"]).unwrap_err();
        assert_eq!(
            one_line_usage_error("psd", &e),
            "invalid value 'foo' for '--method <METHOD>' [possible values: clip, shift] (see psd --help)"
        );
        let e = Args::try_parse_from(["psd", "--bogus"]).unwrap_err();
        let line = one_line_usage_error("psd", &e);
        assert!(!line.contains('\n') && line.contains("'--bogus'"), "{line}");
    }
}
