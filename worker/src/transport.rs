//! How tasks reach workers and results reach the collector.
//!
//! The shape follows NATS JetStream so a JetStream implementation can slot in later: a task is
//! pulled as a *lease* that must be settled exactly once (ack, nak with a redelivery delay, or term
//! for a deterministic failure that redelivery cannot fix) and kept alive with in-progress
//! heartbeats while the episode runs. Results are published to a per-run stream; redelivery may
//! publish the same (run, task, attempt) twice, so subscribers deduplicate by that key.

use std::collections::BTreeSet;
use std::time::Duration;

use async_trait::async_trait;
use kiln_protocol::{Outcome, TaskSpec, Trajectory};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::UnboundedReceiver;

/// What a worker publishes for one (run, task, attempt): the scored outcome and the full record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    pub outcome: Outcome,
    pub trajectory: Trajectory,
}

impl TaskResult {
    /// The dedup key: (run, task, attempt).
    pub fn key(&self) -> (String, String, u32) {
        self.outcome.key()
    }
}

/// What went wrong in a transport operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportErrorKind {
    /// The transport was closed; no more tasks will come.
    Closed,
    /// A lease was settled twice or after it expired.
    Lease,
    /// The backend (NATS, channel) failed.
    Backend,
    /// A message could not be encoded or decoded.
    Codec,
}

/// A transport failure. `kind()` says what failed; the message names the subject or task.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct TransportError {
    kind: TransportErrorKind,
    message: String,
}

impl TransportError {
    pub fn new(kind: TransportErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
    pub fn kind(&self) -> TransportErrorKind {
        self.kind
    }
}

/// One delivery of a task to one worker. Settle it exactly once.
#[async_trait]
pub trait TaskLease: Send + Sync {
    fn task(&self) -> &TaskSpec;
    /// 1-based delivery count: greater than 1 when the task was redelivered.
    fn delivery(&self) -> u32;
    /// Keeps the lease alive while the episode runs (JetStream in-progress ack).
    async fn heartbeat(&self) -> Result<(), TransportError>;
    /// The task is done and its result published.
    async fn ack(self: Box<Self>) -> Result<(), TransportError>;
    /// Give the task back; it is redelivered after `delay` (worker shutting down, publish failed).
    async fn nak(self: Box<Self>, delay: Duration) -> Result<(), TransportError>;
    /// The task failed in a way redelivery cannot fix (its error outcome is already published).
    async fn term(self: Box<Self>, reason: &str) -> Result<(), TransportError>;
}

/// The work queue and the result stream, seen from both the coordinator and the workers.
#[async_trait]
pub trait Transport: Send + Sync {
    /// Coordinator side: queue one task.
    async fn enqueue(&self, task: TaskSpec) -> Result<(), TransportError>;
    /// Coordinator side: the results of one run, in publication order. Results published before
    /// the subscription are delivered too.
    async fn subscribe(
        &self,
        run_id: &str,
    ) -> Result<UnboundedReceiver<TaskResult>, TransportError>;
    /// Coordinator side: the (task, attempt) keys of `run_id` still in the work queue (waiting or
    /// leased), so a coordinator that restarts does not queue them again. A transport whose queue
    /// does not outlive the coordinator (in-process) has none.
    async fn queued(&self, run_id: &str) -> Result<BTreeSet<(String, u32)>, TransportError> {
        let _ = run_id;
        Ok(BTreeSet::new())
    }
    /// Coordinator side: the (task, attempt) keys of `run_id` whose results are already
    /// published, recorded by the coordinator or not (a task that finished while no coordinator
    /// was running). A worker publishes a result before it acknowledges the task, so a key absent
    /// from [`Transport::queued`] read first is here when this is read second. A transport whose
    /// results do not outlive the coordinator (in-process) has none.
    async fn published(&self, run_id: &str) -> Result<BTreeSet<(String, u32)>, TransportError> {
        let _ = run_id;
        Ok(BTreeSet::new())
    }
    /// Worker side: waits for the next task; `None` once the transport is closed.
    async fn pull(&self) -> Result<Option<Box<dyn TaskLease>>, TransportError>;
    /// Worker side: publish one result.
    async fn publish(&self, result: TaskResult) -> Result<(), TransportError>;
    /// No more work: pending and future pulls return `None`.
    async fn close(&self);
}
