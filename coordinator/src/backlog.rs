//! What a (re)starting dispatcher must not queue again, without actors.
//!
//! A coordinator that restarts mid-run finds three kinds of keys already taken care of: keys its
//! run directory records, keys still in the durable work queue (waiting or leased), and keys whose
//! results workers published while no coordinator was running (in the results stream, not yet
//! recorded; the collector records them when it replays the stream). Queueing any of them again
//! would execute the task twice, and once the server's duplicate window has passed nothing would
//! drop the second copy.

use std::collections::BTreeSet;

use kiln_worker::Transport;

use crate::error::{CoordinatorError, CoordinatorErrorKind};

/// A (task, attempt) key.
pub type Key = (String, u32);

/// The keys of one run that are recorded, queued or published.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Recorded in the run directory by earlier sessions.
    pub recorded: BTreeSet<Key>,
    /// Still in the work queue.
    pub queued: BTreeSet<Key>,
    /// Results published but possibly not recorded yet.
    pub published: BTreeSet<Key>,
}

impl Backlog {
    /// Keys the dispatcher must not queue: recorded, queued or published.
    pub fn taken_care_of(&self) -> BTreeSet<Key> {
        self.recorded
            .iter()
            .chain(&self.queued)
            .chain(&self.published)
            .cloned()
            .collect()
    }

    /// Published results the run directory does not record yet: tasks that finished while no
    /// coordinator was running.
    pub fn published_unrecorded(&self) -> usize {
        self.published.difference(&self.recorded).count()
    }
}

/// Reads what the transport holds for `run_id`. The queue is read before the results: a worker
/// publishes a result before it acknowledges the task, so a task that leaves the queue between the
/// two reads has its result in the second. (Read the other way round, a task finishing in between
/// would be in neither and be queued again.)
pub async fn read_backlog(
    transport: &dyn Transport,
    run_id: &str,
    recorded: BTreeSet<Key>,
) -> Result<Backlog, CoordinatorError> {
    let transport_error = |what: &str, error: kiln_worker::TransportError| {
        CoordinatorError::new(
            CoordinatorErrorKind::Transport,
            format!("cannot list the {what} of run {run_id}: {error}"),
        )
    };
    let queued = transport
        .queued(run_id)
        .await
        .map_err(|error| transport_error("queued tasks", error))?;
    let published = transport
        .published(run_id)
        .await
        .map_err(|error| transport_error("published results", error))?;
    Ok(Backlog {
        recorded,
        queued,
        published,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(items: &[(&str, u32)]) -> BTreeSet<Key> {
        items
            .iter()
            .map(|(task, attempt)| (task.to_string(), *attempt))
            .collect()
    }

    #[test]
    fn recorded_queued_and_published_keys_are_all_taken_care_of() {
        let backlog = Backlog {
            recorded: keys(&[("a", 0), ("b", 0)]),
            queued: keys(&[("c", 0)]),
            // "b" was recorded and is in the stream too; "d" finished while no coordinator ran.
            published: keys(&[("b", 0), ("d", 0)]),
        };
        assert_eq!(
            backlog.taken_care_of(),
            keys(&[("a", 0), ("b", 0), ("c", 0), ("d", 0)])
        );
        assert_eq!(backlog.published_unrecorded(), 1);
        assert!(Backlog::default().taken_care_of().is_empty());
    }
}
