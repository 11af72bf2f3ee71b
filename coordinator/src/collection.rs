//! Which results count: the collector's bookkeeping, without actors.
//!
//! A result is counted once per (run, task, attempt). Redelivery can publish a key twice, and a
//! resumed run may meet results of keys recorded in an earlier session; neither is counted again.

use std::collections::BTreeSet;

use kiln_protocol::Outcome;

/// What to do with an arriving result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// First result for an expected key: record it.
    New,
    /// The key was already recorded: drop it.
    Duplicate,
    /// Another run's result, or a key the run does not expect: drop it.
    Unexpected,
}

/// Progress of a run as the collector sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Keys recorded, including those of earlier sessions.
    pub done: usize,
    /// Keys the run expects.
    pub total: usize,
    /// Recorded in this session.
    pub recorded_now: usize,
    /// Successes among those recorded in this session.
    pub successes_now: usize,
    /// Infrastructure errors among those recorded in this session.
    pub errors_now: usize,
    /// Results dropped as duplicates in this session.
    pub duplicates: usize,
}

/// Expected keys of one run and which of them are recorded.
#[derive(Debug, Clone)]
pub struct Collection {
    run_id: String,
    expected: BTreeSet<(String, u32)>,
    recorded: BTreeSet<(String, u32)>,
    progress: Progress,
}

impl Collection {
    /// `done` are keys recorded by earlier sessions; keys in `done` but not in `expected` are ignored.
    pub fn new(
        run_id: impl Into<String>,
        expected: BTreeSet<(String, u32)>,
        done: &BTreeSet<(String, u32)>,
    ) -> Self {
        let recorded: BTreeSet<_> = expected.intersection(done).cloned().collect();
        let progress = Progress {
            done: recorded.len(),
            total: expected.len(),
            ..Progress::default()
        };
        Self {
            run_id: run_id.into(),
            expected,
            recorded,
            progress,
        }
    }

    /// Decides about an outcome without recording it.
    pub fn admission(&self, outcome: &Outcome) -> Admission {
        let key = (outcome.task_id.clone(), outcome.attempt);
        if outcome.run_id != self.run_id || !self.expected.contains(&key) {
            return Admission::Unexpected;
        }
        if self.recorded.contains(&key) {
            return Admission::Duplicate;
        }
        Admission::New
    }

    /// Marks an outcome recorded (after it was written), or counts a duplicate.
    pub fn record(&mut self, outcome: &Outcome) -> Admission {
        let admission = self.admission(outcome);
        match admission {
            Admission::New => {
                self.recorded
                    .insert((outcome.task_id.clone(), outcome.attempt));
                self.progress.done += 1;
                self.progress.recorded_now += 1;
                self.progress.successes_now += usize::from(outcome.success);
                self.progress.errors_now += usize::from(outcome.error.is_some());
            }
            Admission::Duplicate => self.progress.duplicates += 1,
            Admission::Unexpected => {}
        }
        admission
    }

    pub fn is_complete(&self) -> bool {
        self.recorded.len() == self.expected.len()
    }

    pub fn progress(&self) -> Progress {
        self.progress
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::outcome;

    fn keys(items: &[(&str, u32)]) -> BTreeSet<(String, u32)> {
        items
            .iter()
            .map(|(task, attempt)| (task.to_string(), *attempt))
            .collect()
    }

    #[test]
    fn counts_each_key_once_and_completes_when_all_are_in() {
        let mut collection = Collection::new("r", keys(&[("a", 0), ("b", 0)]), &BTreeSet::new());
        assert!(!collection.is_complete());
        assert_eq!(
            collection.record(&outcome("r", "a", 0, true)),
            Admission::New
        );
        assert_eq!(
            collection.record(&outcome("r", "a", 0, false)),
            Admission::Duplicate
        );
        assert_eq!(
            collection.record(&outcome("other-run", "b", 0, true)),
            Admission::Unexpected
        );
        assert_eq!(
            collection.record(&outcome("r", "c", 0, true)),
            Admission::Unexpected
        );
        assert!(!collection.is_complete());
        assert_eq!(
            collection.record(&outcome("r", "b", 0, false)),
            Admission::New
        );
        assert!(collection.is_complete());
        let progress = collection.progress();
        assert_eq!(
            (progress.done, progress.total, progress.recorded_now),
            (2, 2, 2)
        );
        assert_eq!((progress.successes_now, progress.duplicates), (1, 1));
    }

    #[test]
    fn keys_done_in_an_earlier_session_count_as_recorded() {
        let done = keys(&[("a", 0), ("stale", 3)]);
        let mut collection = Collection::new("r", keys(&[("a", 0), ("a", 1)]), &done);
        assert_eq!(collection.progress().done, 1);
        assert_eq!(
            collection.record(&outcome("r", "a", 0, true)),
            Admission::Duplicate
        );
        assert_eq!(
            collection.record(&outcome("r", "a", 1, true)),
            Admission::New
        );
        assert!(collection.is_complete());
    }
}
