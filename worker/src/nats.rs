//! The distributed transport: NATS JetStream.
//!
//! - Tasks go to the work-queue stream `KILN_TASKS` on `kiln.tasks.<run-id>`. Every worker pulls
//!   through **one shared durable pull consumer** (a work-queue stream allows only one consumer
//!   per subject). Its ack-wait is the lease, in-progress acks are the heartbeat, `max_deliver`
//!   bounds retries of tasks whose lease expired or was nak'ed, and term drops a task for good.
//! - Enqueues carry `Nats-Msg-Id: <run>/<task>/<attempt>`, so the server drops a duplicate
//!   enqueue within the stream's duplicate window.
//! - Results go to the limits stream `KILN_OUTCOMES` on `kiln.outcomes.<run-id>`, with the same
//!   message id: a republish after a redelivery is dropped within the window; subscribers still
//!   deduplicate by key, since a republish after the window is stored again.
//! - A subscription replays a run's results from the start through an ordered (ephemeral)
//!   consumer, then follows new ones.
//! - Harness versions live in the KV bucket `kiln_harness` ([`NatsHarnessStore`]).
//!
//! Results are JSON, uncompressed: one that exceeds the server's `max_payload` (1 MiB by
//! default) fails with a [`TransportErrorKind::Codec`] error naming the subject and both sizes.
//! Deployments running long episodes raise `max_payload` (the test server uses 8 MiB).
//!
//! A task that used up `max_deliver` stays in the work queue undelivered; JetStream emits a
//! max-deliveries advisory, which the coordinator turns into that task's error outcome
//! ([`advisories`]).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::consumer::pull::{Config as PullConfig, OrderedConfig};
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::message::{AckKind, PublishMessage};
use async_nats::jetstream::stream::{
    Config as StreamConfig, DirectGetErrorKind, RetentionPolicy, StorageType,
};
use async_nats::jetstream::{self, Context};
use async_trait::async_trait;
use futures::StreamExt;
use kiln_protocol::TaskSpec;
use kiln_protocol::names::{OUTCOMES_STREAM, TASKS_STREAM, outcome_subject, task_subject};
use serde::Serialize;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::sync::watch;

use crate::transport::{TaskLease, TaskResult, Transport, TransportError, TransportErrorKind};

pub mod advisories;
mod harness_store;

pub use harness_store::NatsHarnessStore;

/// Subjects of every run's tasks, bound to the work-queue stream.
const ALL_TASK_SUBJECTS: &str = "kiln.tasks.>";
/// Subjects of every run's results.
const ALL_OUTCOME_SUBJECTS: &str = "kiln.outcomes.>";

/// How the streams and the shared consumer are configured. Every worker and the coordinator
/// should connect with the same values: the last `connect` updates the consumer for all.
#[derive(Debug, Clone, PartialEq)]
pub struct NatsOptions {
    /// Durable name of the shared pull consumer.
    pub consumer: String,
    /// The lease: an unsettled task without a heartbeat for this long is redelivered.
    pub lease: Duration,
    /// Deliveries of one task at most (first delivery included); -1 for no limit.
    pub max_deliver: i64,
    /// Redelivery delays after successive lease expiries. JetStream uses `backoff[n]` as the
    /// ack-wait of delivery n+1 when set (so it replaces `lease` per delivery); empty keeps
    /// `lease` for every delivery. Must be shorter than `max_deliver`.
    pub backoff: Vec<Duration>,
    /// Window in which the server drops a task or result with an already seen message id.
    pub duplicate_window: Duration,
    /// How long one pull request waits on the server before the worker checks for `close`.
    pub pull_wait: Duration,
    /// File storage (survives a server restart) or memory storage.
    pub file_storage: bool,
}

impl Default for NatsOptions {
    fn default() -> Self {
        Self {
            consumer: "kiln-workers".to_string(),
            lease: Duration::from_secs(60),
            max_deliver: 5,
            backoff: Vec::new(),
            duplicate_window: Duration::from_secs(120),
            pull_wait: Duration::from_secs(5),
            file_storage: true,
        }
    }
}

/// [`Transport`] on NATS JetStream. Cheap to clone; clones share the connection and `close`.
#[derive(Clone)]
pub struct NatsTransport {
    inner: Arc<Inner>,
}

struct Inner {
    client: async_nats::Client,
    jetstream: Context,
    consumer: PullConsumer,
    options: NatsOptions,
    closed: AtomicBool,
    close_signal: watch::Sender<bool>,
}

impl NatsTransport {
    /// Connects to `url` and creates (or updates) the tasks and outcomes streams and the shared
    /// durable consumer: the cluster's members (workers, coordinator) configure it.
    pub async fn connect(url: &str, options: NatsOptions) -> Result<Self, TransportError> {
        Self::open(url, options, true).await
    }

    /// Connects to `url` without changing the streams or the consumer when they exist (they are
    /// created with `options` when they do not): a client of the cluster (`kiln run --nats`) must
    /// not reset the lease, max-deliver or duplicate window its workers and coordinator set.
    pub async fn attach(url: &str, options: NatsOptions) -> Result<Self, TransportError> {
        Self::open(url, options, false).await
    }

    async fn open(
        url: &str,
        options: NatsOptions,
        configure: bool,
    ) -> Result<Self, TransportError> {
        validate_options(&options)?;
        let client = async_nats::connect(url)
            .await
            .map_err(|error| backend(format!("cannot connect to nats at {url}: {error}")))?;
        let jetstream = jetstream::new(client.clone());
        for config in [
            tasks_stream_config(&options),
            outcomes_stream_config(&options),
        ] {
            let name = config.name.clone();
            let created = if configure {
                jetstream.create_or_update_stream(config).await.map(drop)
            } else {
                jetstream.get_or_create_stream(config).await.map(drop)
            };
            created.map_err(|error| backend(format!("cannot create stream {name}: {error}")))?;
        }
        let stream = open_stream(&jetstream, TASKS_STREAM).await?;
        let consumer: Result<PullConsumer, _> = if configure {
            stream.create_consumer(consumer_config(&options)).await
        } else {
            stream
                .get_or_create_consumer(&options.consumer, consumer_config(&options))
                .await
        };
        let consumer = consumer.map_err(|error| {
            backend(format!(
                "cannot create consumer {} on {TASKS_STREAM}: {error}",
                options.consumer
            ))
        })?;
        tracing::info!(url, consumer = %options.consumer, lease_s = options.lease.as_secs_f64(), "nats transport connected");
        let (close_signal, _) = watch::channel(false);
        let inner = Inner {
            client,
            jetstream,
            consumer,
            options,
            closed: AtomicBool::new(false),
            close_signal,
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// The options this transport was connected with.
    pub fn options(&self) -> &NatsOptions {
        &self.inner.options
    }

    /// The underlying client, for the KV bucket and object store that share the connection.
    pub fn client(&self) -> &async_nats::Client {
        &self.inner.client
    }

    /// The harness store on the same connection (bucket `kiln_harness`).
    pub async fn harness_store(&self) -> Result<NatsHarnessStore, TransportError> {
        NatsHarnessStore::open(&self.inner.client).await
    }

    /// Publishes `value` as JSON to `subject` with a dedup id; returns whether the server dropped
    /// it as a duplicate.
    async fn publish_json(
        &self,
        subject: String,
        message_id: String,
        value: &impl Serialize,
    ) -> Result<bool, TransportError> {
        let payload = serde_json::to_vec(value).map_err(|error| {
            TransportError::new(
                TransportErrorKind::Codec,
                format!("cannot encode message for {subject}: {error}"),
            )
        })?;
        check_payload_size(&subject, payload.len(), self.max_payload())?;
        let message = PublishMessage::build()
            .payload(payload.into())
            .message_id(&message_id);
        let ack = self
            .inner
            .jetstream
            .send_publish(subject.clone(), message)
            .await
            .map_err(|error| backend(format!("cannot publish to {subject}: {error}")))?
            .await
            .map_err(|error| backend(format!("no ack for publish to {subject}: {error}")))?;
        Ok(ack.duplicate)
    }

    fn max_payload(&self) -> usize {
        self.inner.client.server_info().max_payload
    }

    fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::SeqCst)
    }

    /// One pull request: a task, or `None` when none came within `pull_wait`.
    async fn pull_once(&self) -> Result<Option<NatsLease>, TransportError> {
        let mut batch = self
            .inner
            .consumer
            .batch()
            .max_messages(1)
            .expires(self.inner.options.pull_wait)
            .messages()
            .await
            .map_err(|error| backend(format!("cannot pull from {TASKS_STREAM}: {error}")))?;
        let Some(next) = batch.next().await else {
            return Ok(None);
        };
        let message =
            next.map_err(|error| backend(format!("cannot pull from {TASKS_STREAM}: {error}")))?;
        NatsLease::from_message(message).await.map(Some)
    }
}

#[async_trait]
impl Transport for NatsTransport {
    async fn enqueue(&self, task: TaskSpec) -> Result<(), TransportError> {
        if self.is_closed() {
            return Err(TransportError::new(
                TransportErrorKind::Closed,
                format!(
                    "cannot enqueue task {} of run {}: transport closed",
                    task.task_id, task.run_id
                ),
            ));
        }
        let subject = checked_subject(&task.run_id, task_subject)?;
        let message_id = message_id(&task.run_id, &task.task_id, task.attempt);
        let duplicate = self.publish_json(subject, message_id, &task).await?;
        if duplicate {
            tracing::debug!(run_id = %task.run_id, task_id = %task.task_id, attempt = task.attempt, "duplicate enqueue dropped by the server");
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        run_id: &str,
    ) -> Result<UnboundedReceiver<TaskResult>, TransportError> {
        let subject = checked_subject(run_id, outcome_subject)?;
        let stream = open_stream(&self.inner.jetstream, OUTCOMES_STREAM).await?;
        let config = OrderedConfig {
            filter_subject: subject.clone(),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        };
        let messages = stream
            .create_consumer(config)
            .await
            .map_err(|error| backend(format!("cannot subscribe to {subject}: {error}")))?
            .messages()
            .await
            .map_err(|error| backend(format!("cannot subscribe to {subject}: {error}")))?;
        let (sender, receiver) = unbounded_channel();
        tokio::spawn(forward_results(subject, messages, sender));
        Ok(receiver)
    }

    async fn queued(&self, run_id: &str) -> Result<BTreeSet<(String, u32)>, TransportError> {
        let subject = checked_subject(run_id, task_subject)?;
        let stream = open_stream(&self.inner.jetstream, TASKS_STREAM).await?;
        // A work-queue stream holds exactly the unacknowledged tasks; walk the run's subject with
        // direct gets (a second consumer is not allowed on a work queue).
        let mut keys = BTreeSet::new();
        let mut next_sequence = 1;
        loop {
            let message = match stream
                .direct_get_next_for_subject(subject.as_str(), Some(next_sequence))
                .await
            {
                Ok(message) => message,
                Err(error) if error.kind() == DirectGetErrorKind::NotFound => return Ok(keys),
                Err(error) => {
                    return Err(backend(format!(
                        "cannot read the queued tasks of {subject}: {error}"
                    )));
                }
            };
            next_sequence = message.sequence + 1;
            match serde_json::from_slice::<TaskSpec>(&message.payload) {
                Ok(task) => {
                    keys.insert((task.task_id, task.attempt));
                }
                Err(error) => {
                    tracing::warn!(%subject, sequence = message.sequence, %error, "queued message is not a task")
                }
            }
        }
    }

    async fn published(&self, run_id: &str) -> Result<BTreeSet<(String, u32)>, TransportError> {
        let subject = checked_subject(run_id, outcome_subject)?;
        let stream = open_stream(&self.inner.jetstream, OUTCOMES_STREAM).await?;
        // Headers only: the message id names the key, and the trajectories stay on the server.
        let consumer: PullConsumer = stream
            .create_consumer(PullConfig {
                description: Some(format!("kiln: published result keys of {subject}")),
                filter_subject: subject.clone(),
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::None,
                headers_only: true,
                inactive_threshold: Duration::from_secs(60),
                ..Default::default()
            })
            .await
            .map_err(|error| backend(format!("cannot read the results of {subject}: {error}")))?;
        let name = consumer.cached_info().name.clone();
        let keys = published_keys(run_id, &subject, &consumer).await;
        if let Err(error) = stream.delete_consumer(&name).await {
            tracing::debug!(%subject, %error, "cannot delete the key-listing consumer; it expires");
        }
        keys
    }

    async fn pull(&self) -> Result<Option<Box<dyn TaskLease>>, TransportError> {
        let mut closed = self.inner.close_signal.subscribe();
        loop {
            if self.is_closed() {
                return Ok(None);
            }
            // A pull cut short by `close` may leave one task delivered to nobody; its lease
            // expires and it is redelivered, like a worker that died.
            let pulled = tokio::select! {
                _ = closed.wait_for(|closed| *closed) => return Ok(None),
                pulled = self.pull_once() => pulled?,
            };
            if let Some(lease) = pulled {
                return Ok(Some(Box::new(lease)));
            }
        }
    }

    async fn publish(&self, result: TaskResult) -> Result<(), TransportError> {
        let (run_id, task_id, attempt) = result.key();
        let subject = checked_subject(&run_id, outcome_subject)?;
        let duplicate = self
            .publish_json(subject, message_id(&run_id, &task_id, attempt), &result)
            .await?;
        if duplicate {
            tracing::debug!(%run_id, %task_id, attempt, "duplicate result dropped by the server");
        }
        Ok(())
    }

    async fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        self.inner.close_signal.send_replace(true);
    }
}

/// Forwards a run's results to the subscriber until it hangs up. A message that does not decode
/// is logged and skipped: one bad record must not hide the rest of the run.
async fn forward_results(
    subject: String,
    mut messages: async_nats::jetstream::consumer::pull::Ordered,
    sender: UnboundedSender<TaskResult>,
) {
    loop {
        let next = tokio::select! {
            _ = sender.closed() => return,
            next = messages.next() => next,
        };
        let Some(next) = next else {
            tracing::warn!(%subject, "result subscription ended");
            return;
        };
        let message = match next {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(%subject, %error, "result subscription error");
                continue;
            }
        };
        match serde_json::from_slice::<TaskResult>(&message.payload) {
            Ok(result) => {
                if sender.send(result).is_err() {
                    return;
                }
            }
            Err(error) => {
                tracing::warn!(%subject, %error, "skipping a result that does not decode")
            }
        }
    }
}

/// Reads the message ids of the results `consumer` (headers only, from the start of `subject`)
/// has, up to the last one stored when it was created.
async fn published_keys(
    run_id: &str,
    subject: &str,
    consumer: &PullConsumer,
) -> Result<BTreeSet<(String, u32)>, TransportError> {
    let read_error = |error: &dyn std::fmt::Display| {
        backend(format!("cannot read the results of {subject}: {error}"))
    };
    let mut keys = BTreeSet::new();
    let mut remaining = consumer.cached_info().num_pending;
    while remaining > 0 {
        let mut batch = consumer
            .fetch()
            .max_messages(1000)
            .messages()
            .await
            .map_err(|error| read_error(&error))?;
        let mut fetched = 0;
        while let Some(next) = batch.next().await {
            let message = next.map_err(|error| read_error(&error))?;
            fetched += 1;
            remaining = message
                .info()
                .map(|info| info.pending)
                .map_err(|error| read_error(&error))?;
            let id = message
                .headers
                .as_ref()
                .and_then(|headers| headers.get(async_nats::header::NATS_MESSAGE_ID));
            match id.and_then(|id| key_of_message_id(run_id, id.as_str())) {
                Some(key) => {
                    keys.insert(key);
                }
                None => {
                    tracing::warn!(%subject, id = ?id.map(|id| id.as_str()), "result without a run/task/attempt message id")
                }
            }
        }
        if fetched == 0 && remaining > 0 {
            // Returning fewer keys would queue finished tasks again: fail, the caller retries.
            return Err(backend(format!(
                "the results of {subject} stopped with {remaining} still pending"
            )));
        }
    }
    Ok(keys)
}

/// The (task, attempt) of a [`message_id`] of `run_id`; `None` for another run's id or one that
/// is not `run/task/attempt`. Task ids may hold slashes: the attempt is after the last one.
pub fn key_of_message_id(run_id: &str, id: &str) -> Option<(String, u32)> {
    let rest = id.strip_prefix(run_id)?.strip_prefix('/')?;
    let (task_id, attempt) = rest.rsplit_once('/')?;
    if task_id.is_empty() {
        return None;
    }
    Some((task_id.to_string(), attempt.parse().ok()?))
}

/// One delivery of a task from the shared consumer.
struct NatsLease {
    message: jetstream::Message,
    task: TaskSpec,
    delivery: u32,
}

impl NatsLease {
    /// Decodes the task. A message that is not a task can never succeed, so it is terminated
    /// here rather than redelivered to every worker in turn.
    async fn from_message(message: jetstream::Message) -> Result<Self, TransportError> {
        let delivery = message
            .info()
            .map(|info| u32::try_from(info.delivered).unwrap_or(u32::MAX))
            .map_err(|error| {
                backend(format!(
                    "message on {} has no delivery info: {error}",
                    message.subject
                ))
            })?;
        match serde_json::from_slice::<TaskSpec>(&message.payload) {
            Ok(task) => Ok(Self {
                message,
                task,
                delivery,
            }),
            Err(error) => {
                let subject = message.subject.to_string();
                tracing::warn!(%subject, %error, "terminating a task message that does not decode");
                let _ = message.ack_with(AckKind::Term).await;
                Err(TransportError::new(
                    TransportErrorKind::Codec,
                    format!("task on {subject} does not decode: {error}"),
                ))
            }
        }
    }

    fn describe(&self) -> String {
        format!(
            "task {} attempt {} on {}",
            self.task.task_id, self.task.attempt, self.message.subject
        )
    }
}

#[async_trait]
impl TaskLease for NatsLease {
    fn task(&self) -> &TaskSpec {
        &self.task
    }

    fn delivery(&self) -> u32 {
        self.delivery
    }

    async fn heartbeat(&self) -> Result<(), TransportError> {
        self.message
            .ack_with(AckKind::Progress)
            .await
            .map_err(|error| backend(format!("heartbeat of {}: {error}", self.describe())))
    }

    async fn ack(self: Box<Self>) -> Result<(), TransportError> {
        // Double ack: the server confirms, so an ack after the lease expired is reported.
        self.message.double_ack().await.map_err(|error| {
            TransportError::new(
                TransportErrorKind::Lease,
                format!("ack of {} not confirmed: {error}", self.describe()),
            )
        })
    }

    async fn nak(self: Box<Self>, delay: Duration) -> Result<(), TransportError> {
        self.message
            .ack_with(AckKind::Nak(Some(delay)))
            .await
            .map_err(|error| backend(format!("nak of {}: {error}", self.describe())))
    }

    async fn term(self: Box<Self>, reason: &str) -> Result<(), TransportError> {
        tracing::debug!(task_id = %self.task.task_id, attempt = self.task.attempt, reason, "task terminated");
        self.message
            .ack_with(AckKind::Term)
            .await
            .map_err(|error| backend(format!("term of {}: {error}", self.describe())))
    }
}

/// Opens one of Kiln's streams, naming it in the error.
async fn open_stream(
    jetstream: &Context,
    name: &str,
) -> Result<jetstream::stream::Stream, TransportError> {
    jetstream
        .get_stream(name)
        .await
        .map_err(|error| backend(format!("cannot open stream {name}: {error}")))
}

fn backend(message: String) -> TransportError {
    TransportError::new(TransportErrorKind::Backend, message)
}

/// The dedup id of a task or result: `run/task/attempt`.
pub fn message_id(run_id: &str, task_id: &str, attempt: u32) -> String {
    format!("{run_id}/{task_id}/{attempt}")
}

/// The subject for `run_id`, or a codec error when the run id is not a single subject token
/// (a dot, a wildcard or whitespace would route the message elsewhere).
fn checked_subject(
    run_id: &str,
    subject: impl Fn(&str) -> String,
) -> Result<String, TransportError> {
    let valid = !run_id.is_empty()
        && !run_id
            .chars()
            .any(|c| c == '.' || c == '*' || c == '>' || c.is_whitespace() || c.is_control());
    if valid {
        return Ok(subject(run_id));
    }
    Err(TransportError::new(
        TransportErrorKind::Codec,
        format!(
            "run id {run_id:?} cannot name a subject ({}): use no dots, wildcards or whitespace",
            subject("<run-id>")
        ),
    ))
}

fn check_payload_size(subject: &str, size: usize, max: usize) -> Result<(), TransportError> {
    // A server that reports no limit (0) leaves the check to the server.
    if max == 0 || size <= max {
        return Ok(());
    }
    Err(TransportError::new(
        TransportErrorKind::Codec,
        format!(
            "message for {subject} is {size} bytes, over the server's max_payload of {max} bytes: raise max_payload in the nats-server config"
        ),
    ))
}

fn validate_options(options: &NatsOptions) -> Result<(), TransportError> {
    let invalid = |message: String| Err(TransportError::new(TransportErrorKind::Backend, message));
    if options.consumer.is_empty() || options.consumer.contains(['.', '*', '>', ' ']) {
        return invalid(format!(
            "consumer name {:?} must be non-empty without dots, wildcards or spaces",
            options.consumer
        ));
    }
    if options.lease.is_zero() {
        return invalid("the lease (ack-wait) must be longer than zero".to_string());
    }
    if options.max_deliver == 0 || options.max_deliver < -1 {
        return invalid(format!(
            "max_deliver must be positive or -1 (unlimited), got {}",
            options.max_deliver
        ));
    }
    let backoff_len = i64::try_from(options.backoff.len()).unwrap_or(i64::MAX);
    if options.max_deliver != -1 && backoff_len >= options.max_deliver {
        return invalid(format!(
            "{} backoff delays need max_deliver above {backoff_len}, got {}",
            options.backoff.len(),
            options.max_deliver
        ));
    }
    if options.pull_wait < Duration::from_millis(100) {
        return invalid("pull_wait must be at least 100ms".to_string());
    }
    Ok(())
}

fn storage(options: &NatsOptions) -> StorageType {
    if options.file_storage {
        StorageType::File
    } else {
        StorageType::Memory
    }
}

fn tasks_stream_config(options: &NatsOptions) -> StreamConfig {
    StreamConfig {
        name: TASKS_STREAM.to_string(),
        description: Some("kiln tasks: one shared durable pull consumer".to_string()),
        subjects: vec![ALL_TASK_SUBJECTS.to_string()],
        retention: RetentionPolicy::WorkQueue,
        storage: storage(options),
        duplicate_window: options.duplicate_window,
        // `queued` reads the pending tasks with direct gets.
        allow_direct: true,
        ..Default::default()
    }
}

fn outcomes_stream_config(options: &NatsOptions) -> StreamConfig {
    StreamConfig {
        name: OUTCOMES_STREAM.to_string(),
        description: Some("kiln outcomes and trajectories, per run".to_string()),
        subjects: vec![ALL_OUTCOME_SUBJECTS.to_string()],
        retention: RetentionPolicy::Limits,
        storage: storage(options),
        duplicate_window: options.duplicate_window,
        ..Default::default()
    }
}

fn consumer_config(options: &NatsOptions) -> PullConfig {
    PullConfig {
        durable_name: Some(options.consumer.clone()),
        description: Some("kiln workers (shared)".to_string()),
        ack_policy: AckPolicy::Explicit,
        ack_wait: options.lease,
        max_deliver: options.max_deliver,
        backoff: options.backoff.clone(),
        filter_subject: ALL_TASK_SUBJECTS.to_string(),
        deliver_policy: DeliverPolicy::All,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_name_run_task_and_attempt() {
        assert_eq!(message_id("r1", "42", 0), "r1/42/0");
        assert_ne!(message_id("r1", "42", 0), message_id("r1", "42", 1));
    }

    #[test]
    fn message_ids_give_back_their_key() {
        let id = message_id("r1", "django/issue-7", 3);
        assert_eq!(
            key_of_message_id("r1", &id),
            Some(("django/issue-7".to_string(), 3))
        );
        assert_eq!(key_of_message_id("r", &id), None, "another run's id");
        for bad in ["r1", "r1/", "r1//0", "r1/task", "r1/task/x", "r1/task/-1"] {
            assert_eq!(key_of_message_id("r1", bad), None, "{bad}");
        }
    }

    #[test]
    fn run_ids_that_are_not_one_subject_token_are_refused() {
        assert_eq!(
            checked_subject("run-7", task_subject).unwrap(),
            "kiln.tasks.run-7"
        );
        for bad in ["", "a.b", "a*", ">", "a b", "a\tb"] {
            let error = checked_subject(bad, task_subject).unwrap_err();
            assert_eq!(error.kind(), TransportErrorKind::Codec, "{bad:?}");
            assert!(error.to_string().contains("kiln.tasks.<run-id>"));
        }
    }

    #[test]
    fn oversized_payloads_are_refused_with_the_subject_and_sizes() {
        assert!(check_payload_size("kiln.outcomes.r", 10, 10).is_ok());
        assert!(check_payload_size("kiln.outcomes.r", 10, 0).is_ok());
        let error = check_payload_size("kiln.outcomes.r", 11, 10).unwrap_err();
        assert_eq!(error.kind(), TransportErrorKind::Codec);
        let text = error.to_string();
        assert!(text.contains("kiln.outcomes.r") && text.contains("11") && text.contains("10"));
    }

    #[test]
    fn options_are_checked_before_connecting() {
        assert!(validate_options(&NatsOptions::default()).is_ok());
        let too_much_backoff = NatsOptions {
            max_deliver: 2,
            backoff: vec![Duration::from_secs(1), Duration::from_secs(2)],
            ..NatsOptions::default()
        };
        assert!(validate_options(&too_much_backoff).is_err());
        let zero_lease = NatsOptions {
            lease: Duration::ZERO,
            ..NatsOptions::default()
        };
        assert!(validate_options(&zero_lease).is_err());
        let dotted = NatsOptions {
            consumer: "a.b".into(),
            ..NatsOptions::default()
        };
        assert!(validate_options(&dotted).is_err());
    }

    #[test]
    fn the_shared_consumer_takes_its_lease_and_retries_from_the_options() {
        let options = NatsOptions {
            lease: Duration::from_secs(7),
            max_deliver: 4,
            backoff: vec![Duration::from_secs(1)],
            ..NatsOptions::default()
        };
        let config = consumer_config(&options);
        assert_eq!(config.durable_name.as_deref(), Some("kiln-workers"));
        assert_eq!(config.ack_wait, Duration::from_secs(7));
        assert_eq!(config.max_deliver, 4);
        assert_eq!(config.backoff, vec![Duration::from_secs(1)]);
        assert_eq!(config.ack_policy, AckPolicy::Explicit);
        let tasks = tasks_stream_config(&options);
        assert_eq!(tasks.retention, RetentionPolicy::WorkQueue);
        assert_eq!(tasks.subjects, vec!["kiln.tasks.>".to_string()]);
        let outcomes = outcomes_stream_config(&options);
        assert_eq!(outcomes.retention, RetentionPolicy::Limits);
        assert_eq!(outcomes.subjects, vec!["kiln.outcomes.>".to_string()]);
    }
}
