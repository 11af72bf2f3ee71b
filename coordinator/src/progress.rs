//! How a run reports progress to whoever started it (the CLI's progress bar, a test).

use kiln_protocol::Outcome;

pub use crate::collection::Progress;

/// Receives progress from the collector. Called from the collector actor: keep it quick.
pub trait ProgressObserver: Send + Sync {
    /// The collector is ready; `progress.done` counts keys recorded in earlier sessions.
    fn started(&self, _progress: Progress) {}
    /// An outcome was recorded.
    fn recorded(&self, _outcome: &Outcome, _progress: Progress) {}
}

/// Ignores progress.
pub struct NoProgress;

impl ProgressObserver for NoProgress {}
