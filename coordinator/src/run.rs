//! Running a run: the entry points the CLI calls.

use std::path::Path;
use std::sync::Arc;

use kiln_protocol::HarnessSpec;
use kiln_worker::{HarnessStore, Transport};
use ractor::Actor;
use serde_json::Value;
use tokio::sync::oneshot;

use crate::config::RunConfig;
use crate::error::{CoordinatorError, CoordinatorErrorKind};
use crate::progress::ProgressObserver;
use crate::report::{RunStats, compute_stats, render_report};
use crate::store::{RunStore, read_outcomes, read_run_config, write_report};
use crate::supervisor::{RunRole, RunSummary, RunSupervisor, SupervisorArgs};

/// What [`execute_run`] needs: an open store (new or resumed) and what the run talks to.
pub struct RunLaunch {
    /// Coordinate (queue and record) or only follow (record).
    pub role: RunRole,
    pub store: RunStore,
    pub harness: HarnessSpec,
    /// Options given to every environment instance (τ²: `{"user": "scripted"}`).
    pub env_options: Value,
    /// Episode time limit for this session (0 = none).
    pub timeout_s: u64,
    pub transport: Arc<dyn Transport>,
    pub harnesses: Arc<dyn HarnessStore>,
    pub progress: Arc<dyn ProgressObserver>,
}

/// Runs every (task, attempt) of the store's run that is not recorded yet, and returns when all
/// are. Workers must be pulling from `launch.transport` meanwhile (the CLI starts them).
pub async fn execute_run(launch: RunLaunch) -> Result<RunSummary, CoordinatorError> {
    let config = launch.store.config().clone();
    let done = launch.store.completed_keys()?;
    tracing::info!(
        run_id = %config.run_id,
        expected = config.tasks.len() * config.attempts as usize,
        done = done.len(),
        "run starting"
    );
    let (reply, answer) = oneshot::channel();
    let args = SupervisorArgs {
        role: launch.role,
        store: launch.store,
        done,
        env_options: launch.env_options,
        timeout_s: launch.timeout_s,
        harness: launch.harness,
        transport: launch.transport,
        harnesses: launch.harnesses,
        progress: launch.progress,
        reply,
    };
    let name = format!("{}/supervisor", config.run_id);
    let (_supervisor, handle) = Actor::spawn(Some(name), RunSupervisor, args)
        .await
        .map_err(|error| {
            CoordinatorError::new(
                CoordinatorErrorKind::ActorFailed,
                format!(
                    "cannot start the supervisor of run {}: {error}",
                    config.run_id
                ),
            )
        })?;
    let result = answer.await.unwrap_or_else(|_| {
        Err(CoordinatorError::new(
            CoordinatorErrorKind::ActorFailed,
            format!(
                "the supervisor of run {} ended without an answer",
                config.run_id
            ),
        ))
    });
    let _ = handle.await;
    result
}

/// Reads a run directory, computes its statistics and (re)writes `report.md`.
pub fn write_run_report(dir: &Path) -> Result<(RunConfig, RunStats), CoordinatorError> {
    let config = read_run_config(dir)?;
    let outcomes = read_outcomes(dir)?;
    let stats = compute_stats(&config, &outcomes);
    write_report(dir, &render_report(&config, &stats))?;
    Ok((config, stats))
}
