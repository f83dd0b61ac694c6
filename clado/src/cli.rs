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
    crate::io::set_tool_name(tool);
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

/// Parse the value of a size flag (`flag`, for the message): bytes, or a number with K, M, G or T (powers of 1024; `KiB`, `MB`… and a
/// trailing `B` are accepted and mean the same), e.g. `4G`, `512M`, `1.5GiB`.
pub fn parse_size(flag: &str, text: &str) -> Result<u64, Error> {
    let bad = || Error::usage(format!("{flag} {text}: expected a size such as 4G, 512M or 1073741824"));
    let t = text.trim();
    let digits_end = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits_end);
    let value: f64 = number.parse().map_err(|_| bad())?;
    let unit = unit.trim().to_ascii_uppercase();
    let unit = unit.trim_end_matches('B').trim_end_matches('I');
    let scale: u64 = match unit {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return Err(bad()),
    };
    let bytes = value * scale as f64;
    if !(bytes.is_finite() && bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(bad());
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_powers_of_1024() {
        assert_eq!(parse_size("--x", "4G").unwrap(), 4 << 30);
        assert_eq!(parse_size("--x", "512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("--x", "512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("--x", "1.5g").unwrap(), 3 << 29);
        assert_eq!(parse_size("--x", "2048").unwrap(), 2048);
        for bad in ["", "G", "4X", "-1G", "0", "1e9", "4 GB extra", "nan"] {
            let e = parse_size("--max-memory", bad).unwrap_err().to_string();
            assert!(e.contains(&format!("--max-memory {bad}")), "{bad}: {e}");
        }
    }

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
