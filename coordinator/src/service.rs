//! `kiln coordinator`: the long-running coordinator of a NATS cluster. It executes every run
//! submitted to the `kiln_runs` bucket with the run actors ([`execute_run`]) over the JetStream
//! transport, keeps each run's directory under its runs directory, publishes the report into the
//! run's record when it finishes, and turns tasks JetStream gave up on into error outcomes.
//!
//! Restarting it resumes the runs it had not finished: their records are still `running`, their
//! directories (or, when the directory was lost, the outcomes stream replayed from the start) say
//! what is recorded, and tasks still in the work queue or whose results workers published while no
//! coordinator ran are not queued again ([`crate::backlog`]).
//!
//! One coordinator per NATS cluster: a second one would take over `running` runs too.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use kiln_harness::Harness;
use kiln_protocol::Outcome;
use kiln_worker::{NatsHarnessStore, NatsTransport};
use tokio::task::JoinSet;

use crate::error::{CoordinatorError, CoordinatorErrorKind};
use crate::progress::{Progress, ProgressObserver};
use crate::registry::{Revisioned, RunRecord, RunRegistry, RunState};
use crate::report::render_summary;
use crate::run::{RunLaunch, execute_run, write_run_report};
use crate::store::{RUN_TOML, RunStore};
use crate::supervisor::RunRole;

/// How a failed run session is retried before the run is marked failed.
const SESSION_RETRIES: u32 = 5;

/// What the coordinator needs.
#[derive(Clone)]
pub struct CoordinatorService {
    /// Recorded in run records and logs.
    pub id: String,
    /// Run directories go to `<runs_dir>/<run-id>`.
    pub runs_dir: PathBuf,
    pub transport: NatsTransport,
    pub harnesses: NatsHarnessStore,
    pub registry: RunRegistry,
}

impl CoordinatorService {
    /// Serves until `shutdown` resolves. Runs still executing then stay `running` and resume
    /// when a coordinator starts again.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), CoordinatorError> {
        let advisories = self.transport.advisory_consumer().await.map_err(|error| {
            CoordinatorError::new(CoordinatorErrorKind::Transport, error.to_string())
        })?;
        let mut background = JoinSet::new();
        let transport = self.transport.clone();
        background.spawn(async move {
            if let Err(error) = transport.publish_given_up(advisories).await {
                tracing::error!(%error, "the given-up task handler stopped");
            }
        });
        let mut records = Box::pin(self.registry.watch().await?);
        let mut active: HashMap<String, tokio::task::AbortHandle> = HashMap::new();
        let mut sessions = JoinSet::new();
        tracing::info!(coordinator = %self.id, runs_dir = %self.runs_dir.display(), "coordinator serving");
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some(revisioned) = records.next() => {
                    let run_id = revisioned.record.config.run_id.clone();
                    tracing::info!(%run_id, state = ?revisioned.record.state, revision = revisioned.revision, "run record");
                    if !revisioned.record.state.is_active() || active.contains_key(&run_id) {
                        continue;
                    }
                    let service = self.clone();
                    let session_run_id = run_id.clone();
                    let handle = sessions.spawn(async move {
                        service.execute(revisioned).await;
                        session_run_id
                    });
                    active.insert(run_id, handle);
                }
                Some(ended) = sessions.join_next() => {
                    if let Ok(run_id) = ended {
                        active.remove(&run_id);
                    }
                }
                else => break,
            }
        }
        tracing::info!(coordinator = %self.id, running = active.len(), "coordinator stopping; unfinished runs resume on restart");
        sessions.abort_all();
        background.abort_all();
        Ok(())
    }

    /// Takes a run and executes it to its end, retrying failed sessions.
    async fn execute(&self, revisioned: Revisioned) {
        let run_id = revisioned.record.config.run_id.clone();
        let Some((mut record, mut revision)) = self.claim(revisioned).await else {
            return;
        };
        let mut attempt = 0;
        loop {
            match self.execute_session(&record).await {
                Ok(summary) => {
                    record.state = RunState::Finished;
                    record.message = Some(summary.0);
                    record.report = Some(summary.1);
                    break;
                }
                Err(error) if attempt < SESSION_RETRIES => {
                    attempt += 1;
                    let delay = Duration::from_secs(1 << attempt);
                    tracing::warn!(%run_id, %error, attempt, delay_s = delay.as_secs(), "run session failed; resuming");
                    tokio::time::sleep(delay).await;
                }
                Err(error) => {
                    tracing::error!(%run_id, %error, "run failed");
                    record.state = RunState::Failed;
                    record.message = Some(error.to_string());
                    break;
                }
            }
        }
        match self.registry.update(&record, revision).await {
            Ok(Some(next)) => revision = next,
            Ok(None) => {
                tracing::warn!(%run_id, "run record changed while executing; overwriting its state");
                revision = self.registry.put(&record).await.unwrap_or(revision);
            }
            Err(error) => tracing::error!(%run_id, %error, "cannot record the run's end"),
        }
        tracing::info!(%run_id, state = ?record.state, revision, "run ended");
    }

    /// Marks the run `running` by this coordinator (compare-and-set, so a run submitted once is
    /// taken once). `None` when the record changed meanwhile.
    async fn claim(&self, revisioned: Revisioned) -> Option<(RunRecord, u64)> {
        let mut record = revisioned.record;
        record.state = RunState::Running;
        record.coordinator = Some(self.id.clone());
        match self.registry.update(&record, revisioned.revision).await {
            Ok(Some(revision)) => Some((record, revision)),
            Ok(None) => {
                tracing::info!(run_id = %record.config.run_id, "run record changed before it could be taken");
                None
            }
            Err(error) => {
                tracing::error!(run_id = %record.config.run_id, %error, "cannot take the run");
                None
            }
        }
    }

    /// One session of a run: open (or recreate) its directory, run the actors until every result
    /// is recorded, write the report. Returns (summary, report).
    async fn execute_session(
        &self,
        record: &RunRecord,
    ) -> Result<(String, String), CoordinatorError> {
        let store = open_or_create_store(&self.runs_dir, record)?;
        let dir = store.dir().to_path_buf();
        let launch = RunLaunch {
            role: RunRole::Coordinate,
            store,
            harness: record.harness.clone(),
            env_options: record.env_options.clone(),
            timeout_s: record.timeout_s,
            transport: Arc::new(self.transport.clone()),
            harnesses: Arc::new(self.harnesses.clone()),
            progress: Arc::new(LogProgress::default()),
        };
        execute_run(launch).await?;
        let (config, stats) = write_run_report(&dir)?;
        let report = std::fs::read_to_string(dir.join(crate::store::REPORT)).map_err(|error| {
            CoordinatorError::io("read", &dir.join(crate::store::REPORT), error)
        })?;
        Ok((render_summary(&config, &stats, &dir), report))
    }
}

/// The run's directory under `runs_dir`: reopened when it exists, else created from the record.
pub fn open_or_create_store(
    runs_dir: &Path,
    record: &RunRecord,
) -> Result<RunStore, CoordinatorError> {
    let dir = runs_dir.join(&record.config.run_id);
    if dir.join(RUN_TOML).exists() {
        return RunStore::open(&dir);
    }
    let harness = Harness::new(&record.harness).map_err(|error| {
        CoordinatorError::new(
            CoordinatorErrorKind::CorruptStore,
            format!(
                "run {}: its harness is invalid: {error}",
                record.config.run_id
            ),
        )
    })?;
    let harness_toml = harness.canonical_toml().map_err(|error| {
        CoordinatorError::new(
            CoordinatorErrorKind::Io,
            format!("cannot write the harness as TOML: {error}"),
        )
    })?;
    RunStore::create(&dir, &record.config, &harness_toml)
}

/// Logs progress at every tenth of the run.
#[derive(Default)]
struct LogProgress {
    last_decile: AtomicUsize,
}

impl ProgressObserver for LogProgress {
    fn started(&self, progress: Progress) {
        tracing::info!(
            done = progress.done,
            total = progress.total,
            "run session started"
        );
    }

    fn recorded(&self, outcome: &Outcome, progress: Progress) {
        let decile = progress.done * 10 / progress.total.max(1);
        if self.last_decile.swap(decile, Ordering::Relaxed) != decile {
            tracing::info!(run_id = %outcome.run_id, done = progress.done, total = progress.total, errors = progress.errors_now, "run progress");
        }
    }
}
