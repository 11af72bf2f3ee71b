//! Submitted runs, in the JetStream KV bucket `kiln_runs` (key: run id): what `kiln run --nats`
//! hands to `kiln coordinator`, and how the coordinator says where each run stands. The bucket
//! outlives both processes, so a restarted coordinator finds the runs it has not finished.

use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, Store};
use async_nats::jetstream::stream::StorageType;
use futures::{Stream, StreamExt};
use kiln_protocol::HarnessSpec;
use kiln_protocol::names::RUNS_BUCKET;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::RunConfig;
use crate::error::{CoordinatorError, CoordinatorErrorKind};

/// Where a submitted run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Waiting for a coordinator.
    Submitted,
    /// A coordinator is executing it (or was, and will resume it when restarted).
    Running,
    /// Every (task, attempt) is recorded; `report` holds the report.
    Finished,
    /// The coordinator gave up on it; `message` says why. Submitting it again resumes it.
    Failed,
}

impl RunState {
    /// A coordinator should be executing runs in these states.
    pub fn is_active(self) -> bool {
        matches!(self, RunState::Submitted | RunState::Running)
    }
}

/// One submitted run: everything a coordinator needs to execute it, and its state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub config: RunConfig,
    pub harness: HarnessSpec,
    /// Options given to every environment instance.
    pub env_options: Value,
    /// Episode time limit (0 = none).
    pub timeout_s: u64,
    pub state: RunState,
    /// The coordinator executing it, once one has taken it.
    #[serde(default)]
    pub coordinator: Option<String>,
    /// Why it failed, or the one-line summary once finished.
    #[serde(default)]
    pub message: Option<String>,
    /// `report.md`, once finished.
    #[serde(default)]
    pub report: Option<String>,
}

/// The `kiln_runs` bucket. Cheap to clone.
#[derive(Clone)]
pub struct RunRegistry {
    store: Store,
}

/// A record and the bucket revision it was read at (for compare-and-set updates).
#[derive(Debug, Clone)]
pub struct Revisioned {
    pub record: RunRecord,
    pub revision: u64,
}

impl RunRegistry {
    /// Opens the bucket, creating it when missing.
    pub async fn open(client: &async_nats::Client) -> Result<Self, CoordinatorError> {
        let jetstream = async_nats::jetstream::new(client.clone());
        if let Ok(store) = jetstream.get_key_value(RUNS_BUCKET).await {
            return Ok(Self { store });
        }
        let config = kv::Config {
            bucket: RUNS_BUCKET.to_string(),
            description: "kiln runs submitted to the coordinator".to_string(),
            history: 1,
            storage: StorageType::File,
            ..Default::default()
        };
        let store = jetstream.create_key_value(config).await.map_err(|error| {
            transport(format!("cannot create kv bucket {RUNS_BUCKET}: {error}"))
        })?;
        Ok(Self { store })
    }

    /// Submits a new run. Fails with [`CoordinatorErrorKind::RunDirectory`] when a run with this
    /// id was already submitted.
    pub async fn submit(&self, record: &RunRecord) -> Result<u64, CoordinatorError> {
        let run_id = &record.config.run_id;
        match self.store.create(run_id, encode(record)?.into()).await {
            Ok(revision) => Ok(revision),
            Err(error) if error.kind() == CreateErrorKind::AlreadyExists => {
                Err(CoordinatorError::new(
                    CoordinatorErrorKind::RunDirectory,
                    format!("run {run_id} was already submitted to {RUNS_BUCKET}"),
                ))
            }
            Err(error) => Err(transport(format!(
                "cannot submit run {run_id} to {RUNS_BUCKET}: {error}"
            ))),
        }
    }

    /// The record of `run_id`, if submitted.
    pub async fn get(&self, run_id: &str) -> Result<Option<Revisioned>, CoordinatorError> {
        let entry = self.store.entry(run_id).await.map_err(|error| {
            transport(format!(
                "cannot read run {run_id} from {RUNS_BUCKET}: {error}"
            ))
        })?;
        let Some(entry) = entry else {
            return Ok(None);
        };
        if entry.operation != Operation::Put {
            return Ok(None);
        }
        Ok(Some(Revisioned {
            record: decode(run_id, &entry.value)?,
            revision: entry.revision,
        }))
    }

    /// Writes `record` if the stored revision is still `revision`; `Ok(None)` when another
    /// process changed it first.
    pub async fn update(
        &self,
        record: &RunRecord,
        revision: u64,
    ) -> Result<Option<u64>, CoordinatorError> {
        let run_id = &record.config.run_id;
        match self
            .store
            .update(run_id, encode(record)?.into(), revision)
            .await
        {
            Ok(revision) => Ok(Some(revision)),
            Err(error) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(error) => Err(transport(format!(
                "cannot update run {run_id} in {RUNS_BUCKET}: {error}"
            ))),
        }
    }

    /// Writes `record` whatever is stored.
    pub async fn put(&self, record: &RunRecord) -> Result<u64, CoordinatorError> {
        let run_id = &record.config.run_id;
        self.store
            .put(run_id, encode(record)?.into())
            .await
            .map_err(|error| {
                transport(format!(
                    "cannot write run {run_id} to {RUNS_BUCKET}: {error}"
                ))
            })
    }

    /// Every record now in the bucket, then every change. A value that does not decode is
    /// logged and skipped.
    pub async fn watch(
        &self,
    ) -> Result<impl Stream<Item = Revisioned> + Send + 'static, CoordinatorError> {
        let watch = self
            .store
            .watch_with_history(">")
            .await
            .map_err(|error| transport(format!("cannot watch {RUNS_BUCKET}: {error}")))?;
        Ok(watch.filter_map(|entry| async move {
            let entry = match entry {
                Ok(entry) => entry,
                Err(error) => {
                    tracing::warn!(%error, "run registry watch error");
                    return None;
                }
            };
            if entry.operation != Operation::Put {
                return None;
            }
            match decode(&entry.key, &entry.value) {
                Ok(record) => Some(Revisioned {
                    record,
                    revision: entry.revision,
                }),
                Err(error) => {
                    tracing::warn!(%error, "skipping a run record that does not decode");
                    None
                }
            }
        }))
    }
}

fn encode(record: &RunRecord) -> Result<Vec<u8>, CoordinatorError> {
    serde_json::to_vec(record).map_err(|error| {
        CoordinatorError::new(
            CoordinatorErrorKind::Transport,
            format!("cannot encode run {}: {error}", record.config.run_id),
        )
    })
}

fn decode(run_id: &str, bytes: &[u8]) -> Result<RunRecord, CoordinatorError> {
    serde_json::from_slice(bytes).map_err(|error| {
        CoordinatorError::new(
            CoordinatorErrorKind::CorruptStore,
            format!("run {run_id} in {RUNS_BUCKET} does not decode as a run record: {error}"),
        )
    })
}

fn transport(message: String) -> CoordinatorError {
    CoordinatorError::new(CoordinatorErrorKind::Transport, message)
}
