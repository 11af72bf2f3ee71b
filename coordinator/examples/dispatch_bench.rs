//! `ops/bench/dispatch`: how fast no-op tasks go coordinator → NATS → worker → result → collector,
//! against raw JetStream doing the same message pattern on the same server, in the same run.
//!
//! Kiln: the run actors (`execute_run`) queue N tasks on `KILN_TASKS`; `--workers` worker
//! processes' worth of transports (each its own NATS connection, `--slots` slots) pull them
//! through the shared durable consumer, run a no-op episode (no model, no environment), publish
//! the result on `KILN_OUTCOMES` and ack; the collector records each result in a run directory.
//!
//! Raw: the same task and result payloads (the JSON Kiln sends) published to a work-queue stream,
//! pulled by as many consumers' tasks as Kiln has slots, each acked after its result is
//! published, and every result read back through an ordered consumer. No run store, no dedup, no
//! leases: the floor of what JetStream allows for this pattern.
//!
//! Usage: `cargo run --release -p kiln-coordinator --example dispatch_bench -- [--tasks N]
//! [--workers W] [--slots S]`; needs `ops/setup nats`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, stream};
use async_trait::async_trait;
use futures::StreamExt;
use kiln_coordinator::config::{HarnessRef, RunConfig, UserMode};
use kiln_coordinator::{NoProgress, RunLaunch, RunRole, RunStore, execute_run};
use kiln_environments::{EnvError, Environment, EnvironmentFactory, SplitInfo};
use kiln_harness::Harness;
use kiln_protocol::{ModelSpec, TaskSpec};
use kiln_worker::testing::NatsServer;
use kiln_worker::{
    BackendModelResolver, EnvResolver, Episode, EpisodeRunner, NatsOptions, NatsTransport,
    TaskFailure, TaskResult, Transport, WorkerConfig, WorkerDeps, failure_result, run_worker,
};
use serde_json::Value;

struct Options {
    tasks: usize,
    workers: usize,
    slots: usize,
}

fn parse_options() -> Options {
    let mut options = Options {
        tasks: 2000,
        workers: 3,
        slots: 4,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value: usize = args
            .next()
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("{flag} needs a number"));
        match flag.as_str() {
            "--tasks" => options.tasks = value,
            "--workers" => options.workers = value,
            "--slots" => options.slots = value,
            other => panic!("unknown flag {other}; usage: [--tasks N] [--workers W] [--slots S]"),
        }
    }
    options
}

/// An environment factory whose instances are never stepped (the runner below does nothing).
struct NoopEnvs;

struct NoopEnv;

#[async_trait]
impl Environment for NoopEnv {
    async fn reset(&mut self, _task: &TaskSpec) -> Result<kiln_protocol::EnvInfo, EnvError> {
        unreachable!("the no-op runner never resets")
    }
    async fn step(
        &mut self,
        _action: &kiln_protocol::Action,
    ) -> Result<kiln_protocol::StepResult, EnvError> {
        unreachable!("the no-op runner never steps")
    }
    async fn evaluate(
        &mut self,
        _termination: kiln_protocol::Termination,
    ) -> Result<kiln_environments::Evaluation, EnvError> {
        unreachable!("the no-op runner never evaluates")
    }
    fn oracle_plan(&self) -> Option<Vec<kiln_protocol::Action>> {
        None
    }
}

impl EnvironmentFactory for NoopEnvs {
    fn id(&self) -> &str {
        "noop"
    }
    fn description(&self) -> &str {
        "no-op"
    }
    fn splits(&self) -> Vec<SplitInfo> {
        Vec::new()
    }
    fn task_ids(&self, _split: &str) -> Result<Vec<String>, EnvError> {
        Ok(Vec::new())
    }
    fn create(&self, _options: &Value) -> Result<Box<dyn Environment>, EnvError> {
        Ok(Box::new(NoopEnv))
    }
}

impl EnvResolver for NoopEnvs {
    fn resolve(&self, _env_id: &str) -> Result<Arc<dyn EnvironmentFactory>, EnvError> {
        Ok(Arc::new(NoopEnvs))
    }
}

/// Returns a result at once: the outcome a task gets, with no episode behind it.
struct NoopRunner;

#[async_trait]
impl EpisodeRunner for NoopRunner {
    async fn run(&self, episode: Episode) -> Result<TaskResult, TaskFailure> {
        Ok(noop_result(&episode.task, &episode.worker_id))
    }
}

fn noop_result(task: &TaskSpec, worker: &str) -> TaskResult {
    let failure = TaskFailure::transient(kiln_protocol::Termination::AgentStop, "no-op");
    let mut result = failure_result(task, &failure, "oracle", worker, 0);
    result.outcome.error = None;
    result.outcome.success = true;
    result.outcome.reward = 1.0;
    result
}

fn run_config(run_id: &str, tasks: usize, harness: &Harness) -> RunConfig {
    RunConfig {
        schema: kiln_protocol::SCHEMA_VERSION,
        run_id: run_id.to_string(),
        kiln_version: kiln_coordinator::KILN_VERSION.to_string(),
        created_at: "2026-01-01T00:00:00Z".to_string(),
        env: "noop".to_string(),
        split: "bench".to_string(),
        split_size: tasks,
        task_selection: "all".to_string(),
        attempts: 1,
        user: UserMode::None,
        judge: None,
        timeout_s: 0,
        tasks: (0..tasks).map(|task| task.to_string()).collect(),
        model: ModelSpec::Oracle,
        harness: HarnessRef {
            name: harness.name().to_string(),
            hash: harness.hash().to_string(),
        },
        seed_scope: None,
    }
}

async fn kiln_tasks_per_second(url: &str, options: &Options) -> f64 {
    let nats_options = NatsOptions {
        file_storage: false,
        ..NatsOptions::default()
    };
    let harness = Harness::new(&kiln_harness::default_for_env("tau2-airline")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = run_config("dispatch-bench", options.tasks, &harness);
    let store = RunStore::create(
        &dir.path().join("run"),
        &config,
        &harness.canonical_toml().unwrap(),
    )
    .unwrap();
    let coordinator = NatsTransport::connect(url, nats_options.clone())
        .await
        .unwrap();
    let mut workers = Vec::new();
    let mut transports = Vec::new();
    for index in 0..options.workers {
        let transport = NatsTransport::connect(url, nats_options.clone())
            .await
            .unwrap();
        let deps = WorkerDeps {
            transport: Arc::new(transport.clone()),
            harnesses: Arc::new(transport.harness_store().await.unwrap()),
            environments: Arc::new(NoopEnvs),
            models: Arc::new(BackendModelResolver::new()),
            runner: Arc::new(NoopRunner),
        };
        let config = WorkerConfig::new(format!("bench-{index}"), options.slots);
        workers.push(tokio::spawn(run_worker(config, deps)));
        transports.push(transport);
    }
    let started = Instant::now();
    let launch = RunLaunch {
        role: RunRole::Coordinate,
        store,
        harness: harness.spec().clone(),
        env_options: Value::Null,
        timeout_s: 0,
        transport: Arc::new(coordinator.clone()),
        harnesses: Arc::new(coordinator.harness_store().await.unwrap()),
        progress: Arc::new(NoProgress),
    };
    let summary = execute_run(launch).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(summary.progress.done, options.tasks, "every task recorded");
    for transport in &transports {
        transport.close().await;
    }
    for worker in workers {
        let _ = worker.await;
    }
    options.tasks as f64 / elapsed.as_secs_f64()
}

async fn raw_tasks_per_second(url: &str, options: &Options) -> f64 {
    let client = async_nats::connect(url).await.unwrap();
    let js = jetstream::new(client.clone());
    js.create_stream(stream::Config {
        name: "RAW_TASKS".into(),
        subjects: vec!["raw.tasks".into()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::Memory,
        ..Default::default()
    })
    .await
    .unwrap();
    let results = js
        .create_stream(stream::Config {
            name: "RAW_RESULTS".into(),
            subjects: vec!["raw.results".into()],
            storage: stream::StorageType::Memory,
            ..Default::default()
        })
        .await
        .unwrap();
    js.get_stream("RAW_TASKS")
        .await
        .unwrap()
        .create_consumer(pull::Config {
            durable_name: Some("raw".into()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .unwrap();
    // The same payloads Kiln sends: a task spec and a no-op result.
    let task = TaskSpec {
        schema: kiln_protocol::SCHEMA_VERSION,
        run_id: "raw".into(),
        env: "noop".into(),
        split: "bench".into(),
        task_id: "0".into(),
        attempt: 0,
        seed: 0,
        harness_hash: "x".repeat(64),
        model: ModelSpec::Oracle,
        env_options: Value::Null,
        timeout_s: 0,
    };
    let task_payload = serde_json::to_vec(&task).unwrap();
    let result_payload = serde_json::to_vec(&noop_result(&task, "raw")).unwrap();

    let started = Instant::now();
    let total = options.tasks;
    let mut pullers = Vec::new();
    for _ in 0..options.workers * options.slots {
        let js = js.clone();
        let result_payload = result_payload.clone();
        pullers.push(tokio::spawn(async move {
            let consumer: jetstream::consumer::PullConsumer = js
                .get_consumer_from_stream("raw", "RAW_TASKS")
                .await
                .unwrap();
            let mut messages = consumer.messages().await.unwrap();
            while let Some(Ok(message)) = messages.next().await {
                js.publish("raw.results", result_payload.clone().into())
                    .await
                    .unwrap()
                    .await
                    .unwrap();
                message.double_ack().await.unwrap();
            }
        }));
    }
    let reader = tokio::spawn(async move {
        let mut messages = results
            .create_consumer(pull::OrderedConfig::default())
            .await
            .unwrap()
            .messages()
            .await
            .unwrap();
        let mut seen = 0;
        while seen < total {
            messages.next().await.unwrap().unwrap();
            seen += 1;
        }
    });
    for _ in 0..total {
        js.publish("raw.tasks", task_payload.clone().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    reader.await.unwrap();
    let elapsed = started.elapsed();
    for puller in pullers {
        puller.abort();
    }
    total as f64 / elapsed.as_secs_f64()
}

#[tokio::main]
async fn main() {
    let options = parse_options();
    let server = NatsServer::start();
    let url = server.url();
    // Warm up both paths once (connections, stream creation).
    let raw = raw_tasks_per_second(&url, &options).await;
    let kiln = kiln_tasks_per_second(&url, &options).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    println!(
        "dispatch: {} no-op tasks, {} workers x {} slots, one nats-server on loopback",
        options.tasks, options.workers, options.slots
    );
    println!("  raw JetStream publish + consume + ack + result: {raw:>8.0} tasks/s");
    println!("  kiln coordinator -> NATS -> worker -> collector: {kiln:>8.0} tasks/s");
    println!("  ratio kiln/raw: {:.2} (goal >= 0.5)", kiln / raw);
}
