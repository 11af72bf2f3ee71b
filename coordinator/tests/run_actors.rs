//! The run actors end to end on the in-process transport, with a stand-in worker.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use kiln_coordinator::config::{HarnessRef, RunConfig, UserMode};
use kiln_coordinator::store::{OUTCOMES, read_outcomes};
use kiln_coordinator::{
    CoordinatorErrorKind, Progress, ProgressObserver, RunLaunch, RunRole, RunStore, execute_run,
};
use kiln_protocol::{
    ComponentScore, HarnessSpec, ModelSpec, Outcome, TaskSpec, Termination, Trajectory, Usage,
};
use kiln_worker::{
    HarnessStore, InMemoryHarnessStore, InProcessTransport, TaskLease, TaskResult, Transport,
    TransportError,
};
use serde_json::json;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

fn config(run_id: &str, tasks: &[&str], attempts: u32) -> RunConfig {
    RunConfig {
        schema: 1,
        run_id: run_id.into(),
        kiln_version: "test".into(),
        created_at: "2025-01-01T00:00:00Z".into(),
        env: "tau2-airline".into(),
        split: "test".into(),
        split_size: tasks.len(),
        task_selection: "all".into(),
        attempts,
        user: UserMode::Scripted,
        judge: None,
        timeout_s: 0,
        tasks: tasks.iter().map(|task| task.to_string()).collect(),
        model: ModelSpec::Oracle,
        harness: HarnessRef {
            name: "h".into(),
            hash: "hash-1".into(),
        },
        seed_scope: None,
    }
}

fn harness() -> HarnessSpec {
    HarnessSpec {
        schema: 1,
        name: "h".into(),
        description: String::new(),
        envs: Vec::new(),
        processors: Vec::new(),
    }
}

/// The result a stand-in worker produces: success iff the task id is even.
fn result_for(task: &TaskSpec) -> TaskResult {
    let success = task
        .task_id
        .parse::<u32>()
        .map(|id| id % 2 == 0)
        .unwrap_or(false);
    let value = if success { 1.0 } else { 0.0 };
    let outcome = Outcome {
        schema: 1,
        run_id: task.run_id.clone(),
        env: task.env.clone(),
        split: task.split.clone(),
        task_id: task.task_id.clone(),
        attempt: task.attempt,
        success,
        success_judged_only: success,
        reward: value,
        components: BTreeMap::from([(
            "DB".into(),
            ComponentScore {
                value: Some(value),
                unjudged: false,
                detail: None,
            },
        )]),
        termination: Termination::AgentStop,
        error: None,
        harness_hash: task.harness_hash.clone(),
        model: task.model.label(),
        usage: Usage::default(),
        wall_ms: 1,
        steps: 1,
        db_hash: Some(format!("seed-{}", task.seed)),
        worker: Some("stand-in".into()),
        started_at: 10,
        finished_at: 11,
    };
    let trajectory = Trajectory {
        schema: 1,
        run_id: task.run_id.clone(),
        env: task.env.clone(),
        task_id: task.task_id.clone(),
        attempt: task.attempt,
        harness_hash: task.harness_hash.clone(),
        model: task.model.clone(),
        opening: Vec::new(),
        steps: Vec::new(),
        events: Vec::new(),
    };
    TaskResult {
        outcome,
        trajectory,
    }
}

/// Pulls every task, publishes its result `copies` times (as redelivery would) plus a stray result
/// of another run, and records which tasks it saw.
fn spawn_stand_in_worker(
    transport: InProcessTransport,
    copies: usize,
) -> tokio::task::JoinHandle<Vec<TaskSpec>> {
    tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(lease) = transport.pull().await.unwrap() {
            let task = lease.task().clone();
            for _ in 0..copies {
                transport.publish(result_for(&task)).await.unwrap();
            }
            let mut stray = result_for(&task);
            stray.outcome.run_id = "another-run".into();
            transport.publish(stray).await.unwrap();
            lease.ack().await.unwrap();
            seen.push(task);
        }
        seen
    })
}

#[derive(Default)]
struct RecordingProgress {
    started: Mutex<Option<Progress>>,
    recorded: Mutex<Vec<Progress>>,
}

impl ProgressObserver for RecordingProgress {
    fn started(&self, progress: Progress) {
        *self.started.lock().unwrap() = Some(progress);
    }
    fn recorded(&self, _outcome: &Outcome, progress: Progress) {
        self.recorded.lock().unwrap().push(progress);
    }
}

fn launch(
    store: RunStore,
    transport: Arc<dyn Transport>,
    harnesses: Arc<dyn HarnessStore>,
    progress: Arc<dyn ProgressObserver>,
) -> RunLaunch {
    RunLaunch {
        role: RunRole::Coordinate,
        store,
        harness: harness(),
        env_options: json!({"user": "scripted"}),
        timeout_s: 5,
        transport,
        harnesses,
        progress,
    }
}

#[tokio::test]
async fn every_key_is_recorded_exactly_once_despite_duplicates_and_strays() {
    let dir = tempfile::tempdir().unwrap();
    let config = config("run-dedup", &["0", "1", "2"], 2);
    let store =
        RunStore::create(dir.path(), &config, &toml::to_string(&harness()).unwrap()).unwrap();
    let transport = InProcessTransport::new();
    let harnesses = InMemoryHarnessStore::new();
    let worker = spawn_stand_in_worker(transport.clone(), 3);
    let progress = Arc::new(RecordingProgress::default());

    let summary = execute_run(launch(
        store,
        Arc::new(transport.clone()),
        Arc::new(harnesses.clone()),
        progress.clone(),
    ))
    .await
    .unwrap();
    transport.close().await;
    let seen = worker.await.unwrap();

    assert_eq!(summary.dispatched, 6);
    assert_eq!(summary.progress.done, 6);
    assert_eq!(summary.progress.recorded_now, 6);
    assert_eq!(
        summary.progress.successes_now, 4,
        "tasks 0 and 2 succeed in both attempts"
    );
    assert!(summary.progress.duplicates >= 6, "{:?}", summary.progress);
    assert_eq!(seen.len(), 6);
    for task in &seen {
        assert_eq!(task.env_options, json!({"user": "scripted"}));
        assert_eq!(task.timeout_s, 5);
    }
    let seeds: std::collections::BTreeSet<u64> = seen.iter().map(|task| task.seed).collect();
    assert_eq!(seeds.len(), 6, "every (task, attempt) gets its own seed");

    let text = std::fs::read_to_string(dir.path().join(OUTCOMES)).unwrap();
    assert_eq!(
        text.lines().count(),
        6,
        "duplicates must not be appended:\n{text}"
    );
    assert_eq!(read_outcomes(dir.path()).unwrap().len(), 6);
    assert_eq!(
        harnesses.get("hash-1").await.unwrap(),
        Some(harness()),
        "the dispatcher publishes the harness"
    );
    assert_eq!(progress.started.lock().unwrap().unwrap().total, 6);
    assert_eq!(progress.recorded.lock().unwrap().last().unwrap().done, 6);
}

#[tokio::test]
async fn a_resumed_run_dispatches_only_missing_keys() {
    let dir = tempfile::tempdir().unwrap();
    let config = config("run-resume", &["0", "1", "2", "3"], 1);
    let mut store =
        RunStore::create(dir.path(), &config, &toml::to_string(&harness()).unwrap()).unwrap();
    for task in kiln_coordinator::plan::pending_tasks(&config, &Default::default(), &json!(null), 0)
        .iter()
        .take(2)
    {
        store.append(&result_for(task)).unwrap();
    }
    drop(store);

    let store = RunStore::open(dir.path()).unwrap();
    let transport = InProcessTransport::new();
    let worker = spawn_stand_in_worker(transport.clone(), 1);
    let summary = execute_run(launch(
        store,
        Arc::new(transport.clone()),
        Arc::new(InMemoryHarnessStore::new()),
        Arc::new(kiln_coordinator::NoProgress),
    ))
    .await
    .unwrap();
    transport.close().await;
    let seen: Vec<String> = worker
        .await
        .unwrap()
        .into_iter()
        .map(|task| task.task_id)
        .collect();
    assert_eq!(seen, vec!["2", "3"]);
    assert_eq!(
        (
            summary.dispatched,
            summary.progress.done,
            summary.progress.recorded_now
        ),
        (2, 4, 2)
    );
    assert_eq!(read_outcomes(dir.path()).unwrap().len(), 4);
}

#[tokio::test]
async fn a_complete_run_finishes_without_dispatching() {
    let dir = tempfile::tempdir().unwrap();
    let config = config("run-complete", &["0"], 1);
    let mut store =
        RunStore::create(dir.path(), &config, &toml::to_string(&harness()).unwrap()).unwrap();
    let task =
        &kiln_coordinator::plan::pending_tasks(&config, &Default::default(), &json!(null), 0)[0];
    store.append(&result_for(task)).unwrap();
    let transport = InProcessTransport::new();
    let summary = execute_run(launch(
        store,
        Arc::new(transport.clone()),
        Arc::new(InMemoryHarnessStore::new()),
        Arc::new(kiln_coordinator::NoProgress),
    ))
    .await
    .unwrap();
    assert_eq!(summary.progress.recorded_now, 0);
    assert_eq!(transport.queued(), 0);
}

/// A transport whose result stream ends at once: the collector must fail the run, not hang it.
struct BrokenResults(InProcessTransport);

#[async_trait]
impl Transport for BrokenResults {
    async fn enqueue(&self, task: TaskSpec) -> Result<(), TransportError> {
        self.0.enqueue(task).await
    }
    async fn subscribe(
        &self,
        _run_id: &str,
    ) -> Result<UnboundedReceiver<TaskResult>, TransportError> {
        let (_sender, receiver) = unbounded_channel();
        Ok(receiver)
    }
    async fn pull(&self) -> Result<Option<Box<dyn TaskLease>>, TransportError> {
        self.0.pull().await
    }
    async fn publish(&self, result: TaskResult) -> Result<(), TransportError> {
        self.0.publish(result).await
    }
    async fn close(&self) {
        self.0.close().await
    }
}

#[tokio::test]
async fn a_failed_collector_fails_the_run_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = config("run-broken", &["0", "1"], 1);
    let store =
        RunStore::create(dir.path(), &config, &toml::to_string(&harness()).unwrap()).unwrap();
    let transport = Arc::new(BrokenResults(InProcessTransport::new()));
    let error = execute_run(launch(
        store,
        transport,
        Arc::new(InMemoryHarnessStore::new()),
        Arc::new(kiln_coordinator::NoProgress),
    ))
    .await
    .unwrap_err();
    assert_eq!(error.kind(), CoordinatorErrorKind::ActorFailed);
    let message = error.to_string();
    assert!(
        message.contains("run-broken") && message.contains("collector failed"),
        "{message}"
    );
    assert!(
        message.contains("result stream ended with 0 of 2"),
        "{message}"
    );
}
