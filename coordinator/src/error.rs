//! The coordinator's error type.

use std::path::Path;

/// What went wrong in the coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoordinatorErrorKind {
    /// A run directory could not be read or written.
    Io,
    /// A run directory holds a file that does not parse (the message names file and line).
    CorruptStore,
    /// `--resume` asked for a run that differs from the one in `run.toml`.
    ConfigMismatch,
    /// The run directory already holds a run (and `--resume` was not given), or holds none.
    RunDirectory,
    /// The transport or harness store failed.
    Transport,
    /// An actor of the run failed; the run is stopped.
    ActorFailed,
}

/// A coordinator failure. `kind()` says what failed; the message names the file, field or actor.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct CoordinatorError {
    kind: CoordinatorErrorKind,
    message: String,
}

impl CoordinatorError {
    pub fn new(kind: CoordinatorErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub fn kind(&self) -> CoordinatorErrorKind {
        self.kind
    }

    /// An I/O failure on `path`, naming what was being done.
    pub fn io(action: &str, path: &Path, error: std::io::Error) -> Self {
        Self::new(
            CoordinatorErrorKind::Io,
            format!("cannot {action} {}: {error}", path.display()),
        )
    }
}
