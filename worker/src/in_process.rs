//! The embedded transport: tokio primitives inside one process.
//!
//! Leases behave like JetStream's as far as a single process can tell: nak re-queues the task after
//! its delay with the delivery count raised, term drops it, heartbeats are counted. There is no
//! ack-wait expiry (a slot that dies takes the process with it) and no max-deliver limit.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use kiln_protocol::TaskSpec;
use tokio::sync::Notify;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::transport::{TaskLease, TaskResult, Transport, TransportError, TransportErrorKind};

/// Counters of lease settlements, for progress displays and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportStats {
    pub enqueued: u64,
    pub delivered: u64,
    pub acked: u64,
    pub naked: u64,
    pub termed: u64,
    pub heartbeats: u64,
    pub published: u64,
}

#[derive(Default)]
struct Counters {
    enqueued: AtomicU64,
    delivered: AtomicU64,
    acked: AtomicU64,
    naked: AtomicU64,
    termed: AtomicU64,
    heartbeats: AtomicU64,
    published: AtomicU64,
}

struct Queued {
    task: TaskSpec,
    delivery: u32,
}

#[derive(Default)]
struct ResultRoutes {
    subscribers: HashMap<String, UnboundedSender<TaskResult>>,
    /// Results of runs nobody subscribed to yet.
    pending: HashMap<String, Vec<TaskResult>>,
}

struct Inner {
    queue: Mutex<VecDeque<Queued>>,
    task_added: Notify,
    closed: AtomicBool,
    results: Mutex<ResultRoutes>,
    counters: Counters,
}

/// In-process [`Transport`]: cheap to clone, shared by the coordinator and every worker slot.
#[derive(Clone)]
pub struct InProcessTransport {
    inner: Arc<Inner>,
}

impl Default for InProcessTransport {
    fn default() -> Self {
        Self::new()
    }
}

impl InProcessTransport {
    pub fn new() -> Self {
        let inner = Inner {
            queue: Mutex::new(VecDeque::new()),
            task_added: Notify::new(),
            closed: AtomicBool::new(false),
            results: Mutex::new(ResultRoutes::default()),
            counters: Counters::default(),
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    /// A snapshot of the settlement counters.
    pub fn stats(&self) -> TransportStats {
        let counters = &self.inner.counters;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        TransportStats {
            enqueued: load(&counters.enqueued),
            delivered: load(&counters.delivered),
            acked: load(&counters.acked),
            naked: load(&counters.naked),
            termed: load(&counters.termed),
            heartbeats: load(&counters.heartbeats),
            published: load(&counters.published),
        }
    }

    /// Tasks waiting in the queue (not leased).
    pub fn queued(&self) -> usize {
        lock(&self.inner.queue).len()
    }

    fn push(&self, task: TaskSpec, delivery: u32) {
        lock(&self.inner.queue).push_back(Queued { task, delivery });
        self.inner.task_added.notify_one();
    }

    fn pop(&self) -> Option<Queued> {
        lock(&self.inner.queue).pop_front()
    }
}

/// Locks a mutex, recovering from poisoning: the guarded data stays consistent because every
/// critical section here is a single push, pop or insert.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[async_trait]
impl Transport for InProcessTransport {
    async fn enqueue(&self, task: TaskSpec) -> Result<(), TransportError> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(TransportError::new(
                TransportErrorKind::Closed,
                format!(
                    "cannot enqueue task {} of run {}: transport closed",
                    task.task_id, task.run_id
                ),
            ));
        }
        self.inner.counters.enqueued.fetch_add(1, Ordering::Relaxed);
        self.push(task, 1);
        Ok(())
    }

    async fn subscribe(
        &self,
        run_id: &str,
    ) -> Result<UnboundedReceiver<TaskResult>, TransportError> {
        let (sender, receiver) = unbounded_channel();
        let mut routes = lock(&self.inner.results);
        for result in routes.pending.remove(run_id).unwrap_or_default() {
            // The receiver is alive (we hold it), so this cannot fail.
            let _ = sender.send(result);
        }
        routes.subscribers.insert(run_id.to_string(), sender);
        Ok(receiver)
    }

    async fn pull(&self) -> Result<Option<Box<dyn TaskLease>>, TransportError> {
        loop {
            // Register interest before checking, so an enqueue between the check and the wait
            // is not missed.
            let notified = self.inner.task_added.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.inner.closed.load(Ordering::SeqCst) {
                return Ok(None);
            }
            if let Some(queued) = self.pop() {
                self.inner
                    .counters
                    .delivered
                    .fetch_add(1, Ordering::Relaxed);
                let lease = InProcessLease {
                    transport: self.clone(),
                    task: queued.task,
                    delivery: queued.delivery,
                };
                return Ok(Some(Box::new(lease)));
            }
            notified.await;
        }
    }

    async fn publish(&self, result: TaskResult) -> Result<(), TransportError> {
        self.inner
            .counters
            .published
            .fetch_add(1, Ordering::Relaxed);
        let run_id = result.outcome.run_id.clone();
        let mut routes = lock(&self.inner.results);
        let Some(sender) = routes.subscribers.get(&run_id) else {
            routes.pending.entry(run_id).or_default().push(result);
            return Ok(());
        };
        if let Err(unsent) = sender.send(result) {
            // The subscriber went away; keep the result for a later subscription.
            routes.subscribers.remove(&run_id);
            routes.pending.entry(run_id).or_default().push(unsent.0);
        }
        Ok(())
    }

    async fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        self.inner.task_added.notify_waiters();
    }
}

struct InProcessLease {
    transport: InProcessTransport,
    task: TaskSpec,
    delivery: u32,
}

#[async_trait]
impl TaskLease for InProcessLease {
    fn task(&self) -> &TaskSpec {
        &self.task
    }

    fn delivery(&self) -> u32 {
        self.delivery
    }

    async fn heartbeat(&self) -> Result<(), TransportError> {
        self.transport
            .inner
            .counters
            .heartbeats
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn ack(self: Box<Self>) -> Result<(), TransportError> {
        self.transport
            .inner
            .counters
            .acked
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn nak(self: Box<Self>, delay: Duration) -> Result<(), TransportError> {
        let transport = self.transport.clone();
        transport
            .inner
            .counters
            .naked
            .fetch_add(1, Ordering::Relaxed);
        let InProcessLease { task, delivery, .. } = *self;
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if transport.inner.closed.load(Ordering::SeqCst) {
                return;
            }
            transport.push(task, delivery + 1);
        });
        Ok(())
    }

    async fn term(self: Box<Self>, reason: &str) -> Result<(), TransportError> {
        self.transport
            .inner
            .counters
            .termed
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(task_id = %self.task.task_id, attempt = self.task.attempt, reason, "task terminated");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_protocol::ModelSpec;

    pub(crate) fn task(run_id: &str, task_id: &str) -> TaskSpec {
        TaskSpec {
            schema: 1,
            run_id: run_id.to_string(),
            env: "test-env".to_string(),
            split: "test".to_string(),
            task_id: task_id.to_string(),
            attempt: 0,
            harness_hash: "h".to_string(),
            model: ModelSpec::Oracle,
            env_options: serde_json::Value::Null,
            seed: 0,
            timeout_s: 0,
        }
    }

    #[tokio::test]
    async fn tasks_are_delivered_in_order_and_nak_redelivers_with_a_higher_count() {
        let transport = InProcessTransport::new();
        transport.enqueue(task("r", "a")).await.unwrap();
        transport.enqueue(task("r", "b")).await.unwrap();

        let first = transport.pull().await.unwrap().unwrap();
        assert_eq!(first.task().task_id, "a");
        assert_eq!(first.delivery(), 1);
        first.nak(Duration::from_millis(1)).await.unwrap();

        let second = transport.pull().await.unwrap().unwrap();
        assert_eq!(second.task().task_id, "b");
        second.ack().await.unwrap();

        let redelivered = transport.pull().await.unwrap().unwrap();
        assert_eq!(redelivered.task().task_id, "a");
        assert_eq!(redelivered.delivery(), 2);
        redelivered.heartbeat().await.unwrap();
        redelivered.term("deterministic").await.unwrap();

        let stats = transport.stats();
        assert_eq!(
            (
                stats.enqueued,
                stats.delivered,
                stats.acked,
                stats.naked,
                stats.termed
            ),
            (2, 3, 1, 1, 1)
        );
        assert_eq!(stats.heartbeats, 1);
    }

    #[tokio::test]
    async fn close_wakes_waiting_pullers_and_refuses_new_tasks() {
        let transport = InProcessTransport::new();
        let waiting = {
            let transport = transport.clone();
            tokio::spawn(async move { transport.pull().await.unwrap().is_none() })
        };
        tokio::task::yield_now().await;
        transport.close().await;
        assert!(waiting.await.unwrap());
        let error = transport.enqueue(task("r", "a")).await.unwrap_err();
        assert_eq!(error.kind(), TransportErrorKind::Closed);
    }

    #[tokio::test]
    async fn a_waiting_puller_gets_a_task_enqueued_later() {
        let transport = InProcessTransport::new();
        let waiting = {
            let transport = transport.clone();
            tokio::spawn(async move {
                transport
                    .pull()
                    .await
                    .unwrap()
                    .map(|lease| lease.task().task_id.clone())
            })
        };
        tokio::task::yield_now().await;
        transport.enqueue(task("r", "late")).await.unwrap();
        assert_eq!(waiting.await.unwrap().as_deref(), Some("late"));
    }
}
