//! The worker loop against the in-process transport, with stand-in environments and episode runner:
//! every kind of bad task becomes that task's outcome and the worker goes on.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kiln_environments::{
    EnvError, EnvErrorKind, Environment, EnvironmentFactory, Evaluation, SplitInfo,
};
use kiln_protocol::{Action, EnvInfo, HarnessSpec, ModelSpec, StepResult, TaskSpec, Termination};
use kiln_worker::{
    BackendModelResolver, EnvResolver, Episode, EpisodeRunner, HarnessStore, InMemoryHarnessStore,
    InProcessTransport, TaskFailure, TaskResult, Transport, WorkerAbandon, WorkerConfig,
    WorkerDeps, failure_result, run_worker, run_worker_abandonable,
};
use serde_json::{Value, json};

/// An environment that does nothing; the stand-in runner never steps it.
struct IdleEnv;

#[async_trait]
impl Environment for IdleEnv {
    async fn reset(&mut self, _task: &TaskSpec) -> Result<EnvInfo, EnvError> {
        Err(EnvError::new(EnvErrorKind::State, "not used"))
    }
    async fn step(&mut self, _action: &Action) -> Result<StepResult, EnvError> {
        Err(EnvError::new(EnvErrorKind::State, "not used"))
    }
    async fn evaluate(&mut self, _termination: Termination) -> Result<Evaluation, EnvError> {
        Err(EnvError::new(EnvErrorKind::State, "not used"))
    }
    fn oracle_plan(&self) -> Option<Vec<Action>> {
        None
    }
}

/// `test-env`: creating an instance fails when the options ask for it.
struct IdleFactory;

impl EnvironmentFactory for IdleFactory {
    fn id(&self) -> &str {
        "test-env"
    }
    fn description(&self) -> &str {
        "stand-in"
    }
    fn splits(&self) -> Vec<SplitInfo> {
        vec![SplitInfo {
            name: "test".into(),
            tasks: 10,
        }]
    }
    fn task_ids(&self, _split: &str) -> Result<Vec<String>, EnvError> {
        Ok((0..10).map(|id| id.to_string()).collect())
    }
    fn create(&self, options: &Value) -> Result<Box<dyn Environment>, EnvError> {
        if options.get("broken").is_some() {
            return Err(EnvError::new(
                EnvErrorKind::InvalidOptions,
                "unknown option `broken`",
            ));
        }
        Ok(Box::new(IdleEnv))
    }
}

struct OneEnv;

impl EnvResolver for OneEnv {
    fn resolve(&self, env_id: &str) -> Result<Arc<dyn EnvironmentFactory>, EnvError> {
        if env_id == "test-env" {
            return Ok(Arc::new(IdleFactory));
        }
        Err(EnvError::new(
            EnvErrorKind::UnknownEnv,
            format!("unknown environment `{env_id}`"),
        ))
    }
}

/// Succeeds, panics or hangs depending on the task id.
struct ScriptedRunner;

#[async_trait]
impl EpisodeRunner for ScriptedRunner {
    async fn run(&self, episode: Episode) -> Result<TaskResult, TaskFailure> {
        match episode.task.task_id.as_str() {
            "panic" => panic!("processor exploded on task {}", episode.task.task_id),
            "hang" => {
                tokio::time::sleep(Duration::from_secs(60)).await;
                unreachable!("the worker's time limit aborts this episode");
            }
            _ => {
                let ok = TaskFailure::transient(Termination::AgentStop, "unused");
                let mut result = failure_result(
                    &episode.task,
                    &ok,
                    &episode.models.label(),
                    &episode.worker_id,
                    0,
                );
                result.outcome.error = None;
                result.outcome.success = true;
                result.outcome.reward = 1.0;
                result.outcome.harness_hash = episode.harness_hash.clone();
                result.outcome.steps = episode.harness.processors.len() as u32;
                Ok(result)
            }
        }
    }
}

fn task(
    task_id: &str,
    env: &str,
    harness_hash: &str,
    env_options: Value,
    timeout_s: u64,
) -> TaskSpec {
    TaskSpec {
        schema: 1,
        run_id: "run-w".into(),
        env: env.into(),
        split: "test".into(),
        task_id: task_id.into(),
        attempt: 0,
        harness_hash: harness_hash.into(),
        model: ModelSpec::Oracle,
        env_options,
        seed: 0,
        timeout_s,
    }
}

#[tokio::test]
async fn bad_tasks_become_error_outcomes_and_the_worker_goes_on() {
    let transport = InProcessTransport::new();
    let harnesses = InMemoryHarnessStore::new();
    let spec = HarnessSpec {
        schema: 1,
        name: "h".into(),
        description: String::new(),
        envs: vec![],
        processors: vec![],
    };
    harnesses.put("good", &spec).await.unwrap();
    let mut results = transport.subscribe("run-w").await.unwrap();

    let tasks = [
        task("ok", "test-env", "good", Value::Null, 0),
        task("panic", "test-env", "good", Value::Null, 0),
        task("hang", "test-env", "good", Value::Null, 1),
        task("unknown-env", "nowhere", "good", Value::Null, 0),
        task(
            "bad-options",
            "test-env",
            "good",
            json!({"broken": true}),
            0,
        ),
        task("no-harness", "test-env", "missing", Value::Null, 0),
        task("ok-after", "test-env", "good", Value::Null, 0),
    ];
    for task in &tasks {
        transport.enqueue(task.clone()).await.unwrap();
    }

    let mut config = WorkerConfig::new("w-test", 2);
    config.heartbeat_interval = Duration::from_millis(50);
    config.timeout_grace = Duration::ZERO;
    let deps = WorkerDeps {
        transport: Arc::new(transport.clone()),
        harnesses: Arc::new(harnesses),
        environments: Arc::new(OneEnv),
        models: Arc::new(BackendModelResolver::new()),
        runner: Arc::new(ScriptedRunner),
    };
    let worker = tokio::spawn(run_worker(config, deps));

    let mut by_task = BTreeMap::new();
    while by_task.len() < tasks.len() {
        let result = tokio::time::timeout(Duration::from_secs(20), results.recv())
            .await
            .unwrap()
            .unwrap();
        by_task.insert(result.outcome.task_id.clone(), result.outcome);
    }
    transport.close().await;
    let stats = worker.await.unwrap();

    for ok in ["ok", "ok-after"] {
        assert!(
            by_task[ok].success && by_task[ok].error.is_none(),
            "{:?}",
            by_task[ok]
        );
    }
    let expect_error = |task_id: &str, termination: Termination, fragment: &str| {
        let outcome = &by_task[task_id];
        assert_eq!(outcome.termination, termination, "{task_id}: {outcome:?}");
        let error = outcome.error.as_deref().unwrap_or_default();
        assert!(
            error.contains(fragment),
            "{task_id}: `{error}` should mention `{fragment}`"
        );
        assert!(!outcome.success);
        assert_eq!(outcome.worker.as_deref(), Some("w-test"));
    };
    expect_error(
        "panic",
        Termination::HarnessError,
        "processor exploded on task panic",
    );
    expect_error("hang", Termination::Timeout, "hard limit of 1s");
    expect_error(
        "unknown-env",
        Termination::EnvError,
        "unknown environment `nowhere`",
    );
    expect_error(
        "bad-options",
        Termination::EnvError,
        "unknown option `broken`",
    );
    expect_error(
        "no-harness",
        Termination::HarnessError,
        "harness missing is not in the harness store",
    );

    assert_eq!(stats.completed, 7);
    assert_eq!(stats.failed, 5);
    let settled = transport.stats();
    assert_eq!(
        settled.termed, 4,
        "deterministic failures are terminated: {settled:?}"
    );
    assert_eq!(
        settled.acked, 3,
        "successes and the timeout are acked: {settled:?}"
    );
    assert!(
        settled.heartbeats >= 10,
        "the 1s episode must be kept alive: {settled:?}"
    );
}

#[tokio::test]
async fn a_draining_worker_finishes_or_hands_back_its_tasks() {
    let transport = InProcessTransport::new();
    let harnesses = InMemoryHarnessStore::new();
    let spec = HarnessSpec {
        schema: 1,
        name: "h".into(),
        description: String::new(),
        envs: vec![],
        processors: vec![],
    };
    harnesses.put("good", &spec).await.unwrap();
    let mut results = transport.subscribe("run-w").await.unwrap();
    transport
        .enqueue(task("hang", "test-env", "good", Value::Null, 0))
        .await
        .unwrap();
    let deps = WorkerDeps {
        transport: Arc::new(transport.clone()),
        harnesses: Arc::new(harnesses),
        environments: Arc::new(OneEnv),
        models: Arc::new(BackendModelResolver::new()),
        runner: Arc::new(ScriptedRunner),
    };
    let abandon = WorkerAbandon::new();
    let worker = tokio::spawn(run_worker_abandonable(
        WorkerConfig::new("w-drain", 1),
        deps,
        abandon.clone(),
    ));
    while transport.stats().delivered == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Drain: no new task is taken; the running 60 s episode is still running.
    transport.close().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!worker.is_finished(), "a drain waits for running episodes");
    // The drain deadline passes: the task is handed back, not recorded.
    abandon.abandon();
    let stats = tokio::time::timeout(Duration::from_secs(5), worker)
        .await
        .expect("abandoning stops the worker at once")
        .unwrap();
    assert_eq!(stats.requeued, 1);
    assert_eq!(stats.completed, 0);
    let settled = transport.stats();
    assert_eq!(settled.naked, 1, "{settled:?}");
    assert_eq!(settled.published, 0, "{settled:?}");
    assert!(
        results.try_recv().is_err(),
        "no outcome for a handed-back task"
    );
}
