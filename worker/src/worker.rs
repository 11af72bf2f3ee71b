//! The worker loop: N slots, each pulling a task, running its episode, publishing the result and
//! settling the lease. A task that fails in any way becomes that task's outcome; the slot goes on.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kiln_environments::Environment;
use kiln_models::ModelFactory;
use kiln_protocol::{HarnessSpec, TaskSpec, Termination};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::failure::{TaskFailure, failure_result, now_millis, panic_message};
use crate::harness_store::HarnessStore;
use crate::resolve::{EnvResolver, ModelResolver};
use crate::transport::{TaskLease, TaskResult, Transport, TransportErrorKind};

/// Everything one episode needs, resolved by the worker.
pub struct Episode {
    pub task: TaskSpec,
    pub harness_hash: String,
    pub harness: HarnessSpec,
    pub models: Arc<dyn ModelFactory>,
    pub env: Box<dyn Environment>,
    pub worker_id: String,
}

/// Runs one episode to its scored end. The default drives kiln-harness's episode loop; tests can
/// substitute a runner to exercise the worker's failure handling. The worker runs it in its own
/// tokio task, so a panic or a timeout only costs this episode.
#[async_trait]
pub trait EpisodeRunner: Send + Sync + 'static {
    async fn run(&self, episode: Episode) -> Result<TaskResult, TaskFailure>;
}

/// How a worker behaves.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Recorded in outcomes (`worker`) and logs.
    pub worker_id: String,
    /// Episodes run concurrently.
    pub slots: usize,
    /// How often a running task's lease is kept alive.
    pub heartbeat_interval: Duration,
    /// Redelivery delay when a result could not be published, and back-off after a failed pull.
    pub retry_delay: Duration,
    /// Added to a task's `timeout_s` for the worker's hard limit. The episode loop enforces
    /// `timeout_s` itself and still scores the episode; the hard limit is a backstop that aborts an
    /// episode which does not stop (the scoring included) and records a bare timeout.
    pub timeout_grace: Duration,
}

impl WorkerConfig {
    pub fn new(worker_id: impl Into<String>, slots: usize) -> Self {
        Self {
            worker_id: worker_id.into(),
            slots: slots.max(1),
            heartbeat_interval: Duration::from_secs(10),
            retry_delay: Duration::from_secs(1),
            timeout_grace: kiln_harness::episode::EVALUATION_TIMEOUT + Duration::from_secs(30),
        }
    }
}

/// What a worker talks to.
#[derive(Clone)]
pub struct WorkerDeps {
    pub transport: Arc<dyn Transport>,
    pub harnesses: Arc<dyn HarnessStore>,
    pub environments: Arc<dyn EnvResolver>,
    pub models: Arc<dyn ModelResolver>,
    pub runner: Arc<dyn EpisodeRunner>,
}

/// What a worker did, summed over its slots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// Tasks whose result was published.
    pub completed: u64,
    /// Of those, tasks that ended with an infrastructure error.
    pub failed: u64,
    /// Tasks handed back because their result could not be published.
    pub requeued: u64,
}

impl WorkerStats {
    fn add(&mut self, other: WorkerStats) {
        self.completed += other.completed;
        self.failed += other.failed;
        self.requeued += other.requeued;
    }
}

/// Hands a worker's running tasks back. Draining is closing the transport: no new task is
/// pulled and running episodes finish. When a drain takes too long, [`WorkerAbandon::abandon`]
/// stops the running episodes and naks their leases, so other workers take them at once instead
/// of after the lease expires.
#[derive(Clone)]
pub struct WorkerAbandon {
    sender: Arc<watch::Sender<bool>>,
}

impl WorkerAbandon {
    pub fn new() -> Self {
        let (sender, _) = watch::channel(false);
        Self {
            sender: Arc::new(sender),
        }
    }

    /// Stops every running episode of the worker and hands its task back.
    pub fn abandon(&self) {
        self.sender.send_replace(true);
    }

    fn subscribe(&self) -> watch::Receiver<bool> {
        self.sender.subscribe()
    }
}

impl Default for WorkerAbandon {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs `config.slots` slots until the transport is closed.
pub async fn run_worker(config: WorkerConfig, deps: WorkerDeps) -> WorkerStats {
    run_worker_abandonable(config, deps, WorkerAbandon::new()).await
}

/// [`run_worker`] whose running tasks `abandon` can hand back (graceful shutdown with a deadline).
pub async fn run_worker_abandonable(
    config: WorkerConfig,
    deps: WorkerDeps,
    abandon: WorkerAbandon,
) -> WorkerStats {
    let config = Arc::new(config);
    let mut slots = JoinSet::new();
    for slot in 0..config.slots {
        let span = tracing::info_span!("slot", worker = %config.worker_id, slot);
        slots.spawn(run_slot(config.clone(), deps.clone(), abandon.subscribe()).instrument(span));
    }
    let mut stats = WorkerStats::default();
    while let Some(joined) = slots.join_next().await {
        match joined {
            Ok(slot_stats) => stats.add(slot_stats),
            Err(error) => tracing::error!(worker = %config.worker_id, %error, "worker slot died"),
        }
    }
    tracing::info!(worker = %config.worker_id, completed = stats.completed, failed = stats.failed, "worker stopped");
    stats
}

async fn run_slot(
    config: Arc<WorkerConfig>,
    deps: WorkerDeps,
    abandon: watch::Receiver<bool>,
) -> WorkerStats {
    let mut stats = WorkerStats::default();
    loop {
        if *abandon.borrow() {
            return stats;
        }
        let lease = match deps.transport.pull().await {
            Ok(Some(lease)) => lease,
            Ok(None) => return stats,
            Err(error) if error.kind() == TransportErrorKind::Closed => return stats,
            Err(error) => {
                tracing::warn!(%error, "pulling a task failed; retrying");
                tokio::time::sleep(config.retry_delay).await;
                continue;
            }
        };
        let task = lease.task();
        let span = tracing::info_span!("task", run_id = %task.run_id, task_id = %task.task_id, attempt = task.attempt);
        stats.add(
            process_lease(lease, &config, &deps, abandon.clone())
                .instrument(span)
                .await,
        );
    }
}

/// Runs one leased task and settles the lease. Returns this task's contribution to the stats.
async fn process_lease(
    lease: Box<dyn TaskLease>,
    config: &WorkerConfig,
    deps: &WorkerDeps,
    mut abandon: watch::Receiver<bool>,
) -> WorkerStats {
    let task = lease.task().clone();
    let started_at = now_millis();
    tracing::info!(delivery = lease.delivery(), "task started");
    let execution = execute_task(&task, config, deps);
    // A closed abandon channel (no sender) disables that branch instead of abandoning.
    let executed = tokio::select! {
        executed = keep_alive(lease.as_ref(), execution, config.heartbeat_interval) => Some(executed),
        Ok(_) = abandon.wait_for(|abandoned| *abandoned) => None,
    };
    let Some(executed) = executed else {
        tracing::info!("worker shutting down; handing the task back");
        if let Err(error) = lease.nak(Duration::ZERO).await {
            tracing::warn!(%error, "nak failed; the task is redelivered when its lease expires");
        }
        return WorkerStats {
            requeued: 1,
            ..WorkerStats::default()
        };
    };
    let (result, failure) = match executed {
        Ok(result) => (result, None),
        Err(failure) => {
            let model_label = task.model.label();
            (
                failure_result(&task, &failure, &model_label, &config.worker_id, started_at),
                Some(failure),
            )
        }
    };
    let mut stats = WorkerStats::default();
    let errored = result.outcome.error.is_some();
    tracing::info!(
        success = result.outcome.success,
        reward = result.outcome.reward,
        termination = ?result.outcome.termination,
        error = result.outcome.error.as_deref().unwrap_or(""),
        wall_ms = result.outcome.wall_ms,
        "task finished"
    );
    if let Err(error) = deps.transport.publish(result).await {
        tracing::warn!(%error, "publishing the result failed; handing the task back");
        stats.requeued = 1;
        if let Err(error) = lease.nak(config.retry_delay).await {
            tracing::warn!(%error, "nak failed");
        }
        return stats;
    }
    stats.completed = 1;
    stats.failed = u64::from(errored);
    let settled = match failure {
        Some(failure) if failure.deterministic => lease.term(&failure.message).await,
        _ => lease.ack().await,
    };
    if let Err(error) = settled {
        tracing::warn!(%error, "settling the lease failed");
    }
    stats
}

/// Drives `work` to completion, sending a lease heartbeat every `interval` meanwhile.
async fn keep_alive<F: Future>(lease: &dyn TaskLease, work: F, interval: Duration) -> F::Output {
    tokio::pin!(work);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // the first tick is immediate
    loop {
        tokio::select! {
            output = &mut work => return output,
            _ = ticker.tick() => {
                if let Err(error) = lease.heartbeat().await {
                    tracing::warn!(%error, "lease heartbeat failed");
                }
            }
        }
    }
}

/// Resolves harness, model and environment, then runs the episode under the task's time limit.
async fn execute_task(
    task: &TaskSpec,
    config: &WorkerConfig,
    deps: &WorkerDeps,
) -> Result<TaskResult, TaskFailure> {
    let harness = fetch_harness(task, deps.harnesses.as_ref()).await?;
    let models = deps.models.resolve(&task.model).map_err(|error| {
        TaskFailure::deterministic(
            Termination::ModelError,
            format!("model `{}`: {error}", task.model.label()),
        )
    })?;
    let factory = deps.environments.resolve(&task.env).map_err(|error| {
        TaskFailure::deterministic(
            Termination::EnvError,
            format!("environment `{}`: {error}", task.env),
        )
    })?;
    let env = factory.create(&task.env_options).map_err(|error| {
        TaskFailure::deterministic(
            Termination::EnvError,
            format!(
                "cannot create environment `{}` with options {}: {error}",
                task.env, task.env_options
            ),
        )
    })?;
    let episode = Episode {
        task: task.clone(),
        harness_hash: task.harness_hash.clone(),
        harness,
        models,
        env,
        worker_id: config.worker_id.clone(),
    };
    let limit = time_limit(task).map(|limit| limit + config.timeout_grace);
    run_guarded(deps.runner.clone(), episode, limit).await
}

async fn fetch_harness(
    task: &TaskSpec,
    store: &dyn HarnessStore,
) -> Result<HarnessSpec, TaskFailure> {
    match store.get(&task.harness_hash).await {
        Ok(Some(spec)) => Ok(spec),
        Ok(None) => Err(TaskFailure::deterministic(
            Termination::HarnessError,
            format!("harness {} is not in the harness store", task.harness_hash),
        )),
        Err(error) => Err(TaskFailure::transient(
            Termination::HarnessError,
            format!("cannot fetch harness {}: {error}", task.harness_hash),
        )),
    }
}

/// The task's wall-clock limit for its episode; `timeout_s = 0` means none.
pub fn time_limit(task: &TaskSpec) -> Option<Duration> {
    (task.timeout_s > 0).then(|| Duration::from_secs(task.timeout_s))
}

/// Runs the episode in its own tokio task so that a panic is caught and a timeout can abort it.
async fn run_guarded(
    runner: Arc<dyn EpisodeRunner>,
    episode: Episode,
    limit: Option<Duration>,
) -> Result<TaskResult, TaskFailure> {
    let handle = tokio::spawn(async move { runner.run(episode).await }.in_current_span());
    let abort = handle.abort_handle();
    // Dropping this future (the worker abandoning the task) must stop the episode too.
    let _abort_on_drop = AbortOnDrop(handle.abort_handle());
    let joined = match limit {
        None => handle.await,
        Some(limit) => match tokio::time::timeout(limit, handle).await {
            Ok(joined) => joined,
            Err(_elapsed) => {
                abort.abort();
                return Err(TaskFailure::transient(
                    Termination::Timeout,
                    format!(
                        "episode exceeded the worker's hard limit of {}s and was aborted",
                        limit.as_secs()
                    ),
                ));
            }
        },
    };
    match joined {
        Ok(result) => result,
        Err(error) if error.is_panic() => {
            let message = panic_message(error.into_panic().as_ref());
            tracing::error!(panic = %message, "episode panicked");
            Err(TaskFailure::deterministic(
                Termination::HarnessError,
                format!("episode panicked: {message}"),
            ))
        }
        Err(error) => Err(TaskFailure::transient(
            Termination::HarnessError,
            format!("episode was cancelled: {error}"),
        )),
    }
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
