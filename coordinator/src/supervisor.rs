//! The run supervisor: owns one run, spawns and links its [`Collector`] and [`Dispatcher`], and
//! answers whoever started the run once every result is recorded, or with a clear error as soon as
//! a child fails. There is no restart: a failed child fails the run, which `--resume` continues.

use std::collections::BTreeSet;
use std::sync::Arc;

use kiln_protocol::HarnessSpec;
use kiln_worker::{HarnessStore, Transport};
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};
use serde_json::Value;
use tokio::sync::oneshot;

use crate::collection::{Collection, Progress};
use crate::collector::{Collector, CollectorArgs};
use crate::dispatcher::{Dispatcher, DispatcherArgs};
use crate::error::{CoordinatorError, CoordinatorErrorKind};
use crate::progress::ProgressObserver;
use crate::store::RunStore;

/// How a run ended, as far as the actors know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSummary {
    pub run_id: String,
    /// Tasks queued in this session.
    pub dispatched: usize,
    pub progress: Progress,
}

/// Messages of the [`RunSupervisor`].
#[derive(Debug)]
pub enum SupervisorMsg {
    /// The dispatcher queued this many tasks.
    Dispatched(usize),
    /// Every expected key is recorded.
    AllCollected(Progress),
}

/// What this process does for a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunRole {
    /// Queue the pending tasks and record the results (the coordinator).
    Coordinate,
    /// Only record the results another process's dispatcher queued (`kiln run --nats` following
    /// a run that `kiln coordinator` executes).
    Follow,
}

/// What a run is started with.
pub struct SupervisorArgs {
    pub role: RunRole,
    pub store: RunStore,
    /// (task, attempt) keys recorded by earlier sessions.
    pub done: BTreeSet<(String, u32)>,
    /// Options given to every environment instance.
    pub env_options: Value,
    /// Episode time limit of this session (0 = none).
    pub timeout_s: u64,
    pub harness: HarnessSpec,
    pub transport: Arc<dyn Transport>,
    pub harnesses: Arc<dyn HarnessStore>,
    pub progress: Arc<dyn ProgressObserver>,
    pub reply: oneshot::Sender<Result<RunSummary, CoordinatorError>>,
}

/// The supervisor's state.
pub struct SupervisorState {
    run_id: String,
    collector: ActorCell,
    /// `None` when following.
    dispatcher: Option<ActorCell>,
    dispatched: usize,
    /// Taken when the run ends; `None` afterwards.
    reply: Option<oneshot::Sender<Result<RunSummary, CoordinatorError>>>,
}

/// Owns one run.
pub struct RunSupervisor;

impl Actor for RunSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let config = args.store.config().clone();
        let run_id = config.run_id.clone();
        // The collector subscribes before anything is queued, so no result can be missed.
        let collector_args = CollectorArgs {
            collection: Collection::new(
                &run_id,
                config.expected_keys().into_iter().collect(),
                &args.done,
            ),
            store: args.store,
            transport: args.transport.clone(),
            progress: args.progress,
            supervisor: myself.clone(),
        };
        let (collector, _) = Actor::spawn_linked(
            Some(format!("{run_id}/collector")),
            Collector,
            collector_args,
            myself.get_cell(),
        )
        .await?;
        let dispatcher = match args.role {
            RunRole::Follow => None,
            RunRole::Coordinate => {
                let dispatcher_args = DispatcherArgs {
                    config,
                    done: args.done,
                    env_options: args.env_options,
                    timeout_s: args.timeout_s,
                    harness: args.harness,
                    transport: args.transport,
                    harnesses: args.harnesses,
                    supervisor: myself.clone(),
                };
                let spawned = Actor::spawn_linked(
                    Some(format!("{run_id}/dispatcher")),
                    Dispatcher,
                    dispatcher_args,
                    myself.get_cell(),
                )
                .await;
                match spawned {
                    Ok((dispatcher, _)) => Some(dispatcher.get_cell()),
                    Err(error) => {
                        collector.stop(Some("dispatcher failed to start".to_string()));
                        return Err(error.into());
                    }
                }
            }
        };
        Ok(SupervisorState {
            run_id,
            collector: collector.get_cell(),
            dispatcher,
            dispatched: 0,
            reply: Some(args.reply),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Dispatched(count) => state.dispatched = count,
            SupervisorMsg::AllCollected(progress) => {
                let summary = RunSummary {
                    run_id: state.run_id.clone(),
                    dispatched: state.dispatched,
                    progress,
                };
                tracing::info!(run_id = %state.run_id, recorded = progress.recorded_now, "run complete");
                finish(&myself, state, Ok(summary));
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if state.reply.is_none() {
            return Ok(());
        }
        if let Some(error) = child_failure(state, &event) {
            tracing::error!(run_id = %state.run_id, %error, "run failed");
            finish(&myself, state, Err(error));
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(reply) = state.reply.take() {
            let error = CoordinatorError::new(
                CoordinatorErrorKind::ActorFailed,
                format!(
                    "the supervisor of run {} stopped before the run finished",
                    state.run_id
                ),
            );
            let _ = reply.send(Err(error));
        }
        Ok(())
    }
}

/// Which child an event is about, by name for messages.
fn child_name(state: &SupervisorState, cell: &ActorCell) -> Option<&'static str> {
    if cell.get_id() == state.collector.get_id() {
        return Some("collector");
    }
    let is_dispatcher = state
        .dispatcher
        .as_ref()
        .is_some_and(|dispatcher| dispatcher.get_id() == cell.get_id());
    if is_dispatcher {
        return Some("dispatcher");
    }
    None
}

/// The run's error when `event` means a child failed. The dispatcher stopping normally is expected
/// (it stops after queueing); the collector stopping before the run ends is not.
fn child_failure(state: &SupervisorState, event: &SupervisionEvent) -> Option<CoordinatorError> {
    match event {
        SupervisionEvent::ActorFailed(cell, error) => {
            let name = child_name(state, cell)?;
            Some(CoordinatorError::new(
                CoordinatorErrorKind::ActorFailed,
                format!("run {}: the {name} failed: {error}", state.run_id),
            ))
        }
        SupervisionEvent::ActorTerminated(cell, _, reason) => {
            let name = child_name(state, cell)?;
            if name == "dispatcher" {
                return None;
            }
            Some(CoordinatorError::new(
                CoordinatorErrorKind::ActorFailed,
                format!(
                    "run {}: the {name} stopped before every result arrived ({})",
                    state.run_id,
                    reason.as_deref().unwrap_or("no reason given")
                ),
            ))
        }
        _ => None,
    }
}

/// Answers the run's starter once, then stops the children and the supervisor.
fn finish(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    result: Result<RunSummary, CoordinatorError>,
) {
    if let Some(reply) = state.reply.take() {
        let _ = reply.send(result);
    }
    if let Some(dispatcher) = &state.dispatcher {
        dispatcher.stop(Some("run finished".to_string()));
    }
    state.collector.stop(Some("run finished".to_string()));
    myself.stop(Some("run finished".to_string()));
}
