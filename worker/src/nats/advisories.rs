//! Tasks JetStream gave up on. When a task has been delivered `max_deliver` times without being
//! settled (every worker that took it died, hung past its lease or could not publish), the server
//! stops delivering it and emits a max-deliveries advisory; the task itself stays in the work
//! queue. [`publish_given_up`] turns each such task into its recorded error outcome, so the run
//! still completes, and removes it from the queue.
//!
//! Advisories are plain NATS messages; the stream [`ADVISORIES_STREAM`] keeps them, so one emitted
//! while no coordinator was running is handled when one starts.

use std::time::Duration;

use async_nats::jetstream::consumer::pull::Config as PullConfig;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::stream::{Config as StreamConfig, RetentionPolicy};
use futures::StreamExt;
use kiln_protocol::names::{ADVISORIES_STREAM, TASKS_STREAM};
use kiln_protocol::{TaskSpec, Termination};
use serde::Deserialize;

use super::{NatsTransport, backend};
use crate::failure::{TaskFailure, failure_result, now_millis};
use crate::transport::{Transport, TransportError};

/// Durable consumer of the advisories stream shared by coordinators.
const ADVISORY_CONSUMER: &str = "kiln-coordinator";
/// Recorded as the outcome's worker: no worker finished the task.
pub const GIVEN_UP_WORKER: &str = "jetstream";

/// The fields Kiln reads of `io.nats.jetstream.advisory.v1.max_deliver`.
#[derive(Debug, Deserialize, PartialEq)]
pub struct MaxDeliverAdvisory {
    pub stream: String,
    pub consumer: String,
    pub stream_seq: u64,
    pub deliveries: u64,
}

/// The subject on which the server announces tasks of `consumer` that hit `max_deliver`.
pub fn advisory_subject(consumer: &str) -> String {
    format!("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{TASKS_STREAM}.{consumer}")
}

/// The error text recorded for a task given up after `deliveries` deliveries.
pub fn given_up_message(deliveries: u64) -> String {
    format!(
        "abandoned after {deliveries} deliveries: every worker that took this task died, hung \
         past its lease or could not publish the result (JetStream max_deliver)"
    )
}

impl NatsTransport {
    /// Creates (or updates) the advisories stream and its durable consumer. Call it before work is
    /// queued so that no advisory is missed.
    pub async fn advisory_consumer(&self) -> Result<PullConsumer, TransportError> {
        let subject = advisory_subject(&self.inner.options.consumer);
        let config = StreamConfig {
            name: ADVISORIES_STREAM.to_string(),
            description: Some("kiln: max-deliveries advisories of KILN_TASKS".to_string()),
            subjects: vec![subject],
            retention: RetentionPolicy::WorkQueue,
            storage: super::storage(&self.inner.options),
            ..Default::default()
        };
        self.inner
            .jetstream
            .create_or_update_stream(config)
            .await
            .map_err(|error| {
                backend(format!("cannot create stream {ADVISORIES_STREAM}: {error}"))
            })?;
        let stream = self
            .inner
            .jetstream
            .get_stream(ADVISORIES_STREAM)
            .await
            .map_err(|error| backend(format!("cannot open stream {ADVISORIES_STREAM}: {error}")))?;
        stream
            .create_consumer(PullConfig {
                durable_name: Some(ADVISORY_CONSUMER.to_string()),
                ack_policy: AckPolicy::Explicit,
                deliver_policy: DeliverPolicy::All,
                ack_wait: Duration::from_secs(30),
                ..Default::default()
            })
            .await
            .map_err(|error| {
                backend(format!(
                    "cannot create consumer {ADVISORY_CONSUMER} on {ADVISORIES_STREAM}: {error}"
                ))
            })
    }

    /// Handles advisories until the connection ends: each given-up task gets an error outcome
    /// (published like a worker's, keyed by run/task/attempt, so a late real result is still
    /// counted once) and is removed from the work queue. Returns the number handled when the
    /// consumer's message stream ends.
    pub async fn publish_given_up(&self, consumer: PullConsumer) -> Result<u64, TransportError> {
        let mut messages = consumer
            .messages()
            .await
            .map_err(|error| backend(format!("cannot read {ADVISORIES_STREAM}: {error}")))?;
        let mut handled = 0;
        while let Some(next) = messages.next().await {
            let message = match next {
                Ok(message) => message,
                Err(error) => {
                    tracing::warn!(%error, "advisory stream error");
                    continue;
                }
            };
            match serde_json::from_slice::<MaxDeliverAdvisory>(&message.payload) {
                Ok(advisory) => match self.give_up(&advisory).await {
                    Ok(()) => handled += 1,
                    Err(error) => {
                        // Not acknowledged: the advisory comes back after its ack wait.
                        tracing::warn!(%error, sequence = advisory.stream_seq, "cannot record a given-up task; retrying later");
                        continue;
                    }
                },
                Err(error) => tracing::warn!(%error, "skipping an advisory that does not decode"),
            }
            if let Err(error) = message.ack().await {
                tracing::warn!(%error, "cannot acknowledge an advisory");
            }
        }
        Ok(handled)
    }

    async fn give_up(&self, advisory: &MaxDeliverAdvisory) -> Result<(), TransportError> {
        let stream = self
            .inner
            .jetstream
            .get_stream(TASKS_STREAM)
            .await
            .map_err(|error| backend(format!("cannot open stream {TASKS_STREAM}: {error}")))?;
        let message = match stream.get_raw_message(advisory.stream_seq).await {
            Ok(message) => message,
            Err(error) => {
                // Already removed (a late ack or an earlier coordinator handled it).
                tracing::info!(sequence = advisory.stream_seq, %error, "given-up task is no longer queued");
                return Ok(());
            }
        };
        let task: TaskSpec = match serde_json::from_slice(&message.payload) {
            Ok(task) => task,
            Err(error) => {
                tracing::warn!(sequence = advisory.stream_seq, %error, "given-up message is not a task; removing it");
                let _ = stream.delete_message(advisory.stream_seq).await;
                return Ok(());
            }
        };
        let failure =
            TaskFailure::transient(Termination::EnvError, given_up_message(advisory.deliveries));
        let result = failure_result(
            &task,
            &failure,
            &task.model.label(),
            GIVEN_UP_WORKER,
            now_millis(),
        );
        tracing::warn!(run_id = %task.run_id, task_id = %task.task_id, attempt = task.attempt, deliveries = advisory.deliveries, "task given up after max deliveries");
        self.publish(result).await?;
        stream
            .delete_message(advisory.stream_seq)
            .await
            .map_err(|error| {
                backend(format!(
                    "cannot remove given-up task at sequence {} from {TASKS_STREAM}: {error}",
                    advisory.stream_seq
                ))
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_advisory_decodes() {
        // As nats-server 2.10+ sends it.
        let payload = br#"{"type":"io.nats.jetstream.advisory.v1.max_deliver","id":"x","timestamp":"2026-11-21T09:00:00Z","stream":"KILN_TASKS","consumer":"kiln-workers","stream_seq":42,"deliveries":5,"domain":""}"#;
        let advisory: MaxDeliverAdvisory = serde_json::from_slice(payload).unwrap();
        assert_eq!(advisory.stream_seq, 42);
        assert_eq!(advisory.deliveries, 5);
        assert_eq!(
            advisory_subject("kiln-workers"),
            "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.KILN_TASKS.kiln-workers"
        );
    }
}
