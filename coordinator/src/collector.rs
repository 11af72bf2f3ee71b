//! The collector actor: receives results, counts each (run, task, attempt) once, appends it to the
//! run store, reports progress, and tells the supervisor when every expected key is in.

use std::sync::Arc;

use kiln_worker::{TaskResult, Transport};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::task::JoinHandle;

use crate::collection::{Admission, Collection};
use crate::error::{CoordinatorError, CoordinatorErrorKind};
use crate::progress::ProgressObserver;
use crate::store::RunStore;
use crate::supervisor::SupervisorMsg;

/// Messages of the [`Collector`].
#[derive(Debug)]
pub enum CollectorMsg {
    /// A result from the transport.
    Result(Box<TaskResult>),
    /// The transport's result stream ended.
    StreamEnded,
}

/// What the collector is started with.
pub struct CollectorArgs {
    pub store: RunStore,
    pub collection: Collection,
    pub transport: Arc<dyn Transport>,
    pub progress: Arc<dyn ProgressObserver>,
    pub supervisor: ActorRef<SupervisorMsg>,
}

/// The collector's state.
pub struct CollectorState {
    store: RunStore,
    collection: Collection,
    progress: Arc<dyn ProgressObserver>,
    supervisor: ActorRef<SupervisorMsg>,
    /// Forwards the transport's results into this actor's mailbox.
    forwarder: JoinHandle<()>,
    completion_reported: bool,
}

/// Records a run's results.
pub struct Collector;

impl Actor for Collector {
    type Msg = CollectorMsg;
    type State = CollectorState;
    type Arguments = CollectorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: CollectorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let run_id = args.store.config().run_id.clone();
        let mut results = args.transport.subscribe(&run_id).await.map_err(|error| {
            CoordinatorError::new(
                CoordinatorErrorKind::Transport,
                format!("cannot subscribe to the results of run {run_id}: {error}"),
            )
        })?;
        let forwarder = tokio::spawn(async move {
            while let Some(result) = results.recv().await {
                if myself.cast(CollectorMsg::Result(Box::new(result))).is_err() {
                    return;
                }
            }
            let _ = myself.cast(CollectorMsg::StreamEnded);
        });
        Ok(CollectorState {
            store: args.store,
            collection: args.collection,
            progress: args.progress,
            supervisor: args.supervisor,
            forwarder,
            completion_reported: false,
        })
    }

    async fn post_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.progress.started(state.collection.progress());
        report_completion(state)?;
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            CollectorMsg::Result(result) => handle_result(state, &result)?,
            CollectorMsg::StreamEnded => handle_stream_end(state)?,
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.forwarder.abort();
        Ok(())
    }
}

fn handle_result(state: &mut CollectorState, result: &TaskResult) -> Result<(), CoordinatorError> {
    let outcome = &result.outcome;
    match state.collection.admission(outcome) {
        Admission::New => {
            state.store.append(result)?;
            state.collection.record(outcome);
            state
                .progress
                .recorded(outcome, state.collection.progress());
            report_completion(state)
        }
        Admission::Duplicate => {
            state.collection.record(outcome);
            tracing::info!(task_id = %outcome.task_id, attempt = outcome.attempt, "dropping a duplicate result");
            Ok(())
        }
        Admission::Unexpected => {
            tracing::warn!(
                run_id = %outcome.run_id,
                task_id = %outcome.task_id,
                attempt = outcome.attempt,
                "dropping a result this run does not expect"
            );
            Ok(())
        }
    }
}

fn handle_stream_end(state: &mut CollectorState) -> Result<(), CoordinatorError> {
    if state.collection.is_complete() {
        return Ok(());
    }
    let progress = state.collection.progress();
    Err(CoordinatorError::new(
        CoordinatorErrorKind::Transport,
        format!(
            "the result stream ended with {} of {} results recorded",
            progress.done, progress.total
        ),
    ))
}

fn report_completion(state: &mut CollectorState) -> Result<(), CoordinatorError> {
    if state.completion_reported || !state.collection.is_complete() {
        return Ok(());
    }
    state.completion_reported = true;
    state
        .supervisor
        .cast(SupervisorMsg::AllCollected(state.collection.progress()))
        .map_err(|error| {
            CoordinatorError::new(
                CoordinatorErrorKind::ActorFailed,
                format!("cannot reach the run supervisor: {error}"),
            )
        })
}
