//! The dispatcher actor: publishes the run's harness and queues the run's tasks that are not done
//! yet, each with its seed derived from (run, task, attempt) (see [`crate::plan`]).

use std::collections::BTreeSet;
use std::sync::Arc;

use kiln_protocol::HarnessSpec;
use kiln_worker::{HarnessStore, Transport};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::Value;

use crate::backlog::read_backlog;
use crate::config::RunConfig;
use crate::error::{CoordinatorError, CoordinatorErrorKind};
use crate::plan::pending_tasks;
use crate::supervisor::SupervisorMsg;

/// Messages of the [`Dispatcher`].
#[derive(Debug)]
pub enum DispatcherMsg {
    /// Publish the harness and queue every pending task, then stop.
    DispatchAll,
}

/// What the dispatcher is started with.
pub struct DispatcherArgs {
    pub config: RunConfig,
    /// (task, attempt) keys recorded by earlier sessions.
    pub done: BTreeSet<(String, u32)>,
    pub env_options: Value,
    pub timeout_s: u64,
    pub harness: HarnessSpec,
    pub transport: Arc<dyn Transport>,
    pub harnesses: Arc<dyn HarnessStore>,
    pub supervisor: ActorRef<SupervisorMsg>,
}

/// Queues a run's tasks. Stops itself once they are all queued.
pub struct Dispatcher;

impl Actor for Dispatcher {
    type Msg = DispatcherMsg;
    type State = DispatcherArgs;
    type Arguments = DispatcherArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: DispatcherArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.cast(DispatcherMsg::DispatchAll)?;
        Ok(args)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            DispatcherMsg::DispatchAll => dispatch_all(state).await?,
        }
        myself.stop(Some("all tasks dispatched".to_string()));
        Ok(())
    }
}

async fn dispatch_all(state: &mut DispatcherArgs) -> Result<(), CoordinatorError> {
    let harness_hash = &state.config.harness.hash;
    state
        .harnesses
        .put(harness_hash, &state.harness)
        .await
        .map_err(|error| {
            CoordinatorError::new(
                CoordinatorErrorKind::Transport,
                format!("cannot publish harness {harness_hash}: {error}"),
            )
        })?;
    // After a coordinator restart some tasks are still in a durable queue and some finished
    // while it was down: queue only the rest.
    let backlog = read_backlog(
        state.transport.as_ref(),
        &state.config.run_id,
        state.done.clone(),
    )
    .await?;
    let tasks = pending_tasks(
        &state.config,
        &backlog.taken_care_of(),
        &state.env_options,
        state.timeout_s,
    );
    let count = tasks.len();
    if !backlog.queued.is_empty() || backlog.published_unrecorded() > 0 {
        tracing::info!(
            run_id = %state.config.run_id,
            already_queued = backlog.queued.len(),
            published_unrecorded = backlog.published_unrecorded(),
            "tasks queued or finished in an earlier session are not queued again"
        );
    }
    for task in tasks {
        let (task_id, attempt) = (task.task_id.clone(), task.attempt);
        state.transport.enqueue(task).await.map_err(|error| {
            CoordinatorError::new(
                CoordinatorErrorKind::Transport,
                format!("cannot queue task {task_id} attempt {attempt}: {error}"),
            )
        })?;
    }
    tracing::info!(run_id = %state.config.run_id, tasks = count, "tasks dispatched");
    // The supervisor only logs this; if it is gone the run is over anyway.
    let _ = state.supervisor.cast(SupervisorMsg::Dispatched(count));
    Ok(())
}
