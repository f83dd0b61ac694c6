//! One error type for every tool, and its exit codes.
//!
//! Exit codes (docs/definitions.md): 0 success; 1 a valid negative answer (an infeasible budget);
//! 2 a usage or input error. A closed stdout (`tool | head`) is not an error: exit 0.

use std::fmt;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad flags or flag values (exit 2).
    #[error("{0}")]
    Usage(String),
    /// A file that cannot be used: names the file and says what was expected (exit 2).
    #[error("{path}: {msg}")]
    Input { path: String, msg: String },
    /// Reading or writing failed at the OS level (exit 2, or 0 for a broken pipe).
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A valid question whose answer is "no", e.g. an infeasible budget (exit 1).
    #[error("{0}")]
    Infeasible(String),
    /// Anything else that stops the work (exit 2).
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn usage(msg: impl fmt::Display) -> Self {
        Error::Usage(msg.to_string())
    }

    pub fn input(path: impl fmt::Display, msg: impl fmt::Display) -> Self {
        Error::Input {
            path: display_path(&path.to_string()),
            msg: msg.to_string(),
        }
    }

    pub fn io(path: impl fmt::Display, source: std::io::Error) -> Self {
        Error::Io {
            path: display_path(&path.to_string()),
            source,
        }
    }

    pub fn other(msg: impl fmt::Display) -> Self {
        Error::Other(msg.to_string())
    }

    /// True when the error is a closed pipe on output, which ends a tool quietly.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe)
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            _ if self.is_broken_pipe() => 0,
            Error::Infeasible(_) => 1,
            _ => 2,
        }
    }
}

/// `-` reads as `<stdin>` / `<stdout>` in messages; callers pass those names directly.
fn display_path(p: &str) -> String {
    p.to_string()
}

#[cfg(feature = "nn")]
impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::Other(e.to_string())
    }
}
