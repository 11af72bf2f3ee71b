//! The cluster for real: a nats-server, `kiln coordinator`, `kiln worker` processes and
//! `kiln run --nats`, each a separate process of the real binary. Runs τ² airline and debug-faults
//! tasks and checks that every (task, attempt) is counted exactly once through worker kills (whose
//! leased tasks other workers execute again), a nats-server restart and coordinator restarts (which
//! queue no task twice), and that a task every worker died on becomes its error outcome.
//!
//! Every process logs JSON lines; the workers' `task started` / `task finished` events say which
//! worker executed which (task, attempt).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::{
    Key, KilnProcess, TaskEvent, cluster_flags, coordinator, default_flags, worker,
};
use common::{outcome_lines, require_tau2_data, split_task_ids, unique_keys};
use futures::StreamExt;
use kiln_models::testing::{Rule, Script, ScriptedResponse, ScriptedServer};
use kiln_worker::nats::advisories::GIVEN_UP_WORKER;
use kiln_worker::testing::NatsServer;
use serde_json::Value;

/// `kiln run --nats` of τ² airline base tasks.
fn submit(work: &Path, url: &str, out: &str, extra: &[&str]) -> KilnProcess {
    let mut args = vec!["--env", "tau2-airline", "--split", "base"];
    args.extend(extra);
    submit_run(work, url, out, &args)
}

/// `kiln run --nats URL --out OUT ARGS…`.
fn submit_run(work: &Path, url: &str, out: &str, args: &[&str]) -> KilnProcess {
    let mut all: Vec<String> = ["run", "--nats", url, "--out", out]
        .map(String::from)
        .to_vec();
    all.extend(args.iter().map(|arg| arg.to_string()));
    KilnProcess::spawn("run", work, &all)
}

/// The one run directory a coordinator keeps under `coordinator-runs`.
fn coordinator_run_dir(work: &Path) -> PathBuf {
    std::fs::read_dir(work.join("coordinator-runs"))
        .unwrap()
        .next()
        .expect("the coordinator created a run directory")
        .unwrap()
        .path()
}

/// Lines in `dir/outcomes.jsonl` so far (0 before the file exists).
fn recorded(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("outcomes.jsonl"))
        .map(|text| text.lines().count())
        .unwrap_or(0)
}

fn wait_until(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The run's (task, attempt) keys: the first `tasks` airline base tasks × `attempts`.
fn expected_keys(tasks: usize, attempts: u32) -> BTreeSet<(String, u32)> {
    split_task_ids("airline", "base")
        .into_iter()
        .take(tasks)
        .flat_map(|task| (0..attempts).map(move |attempt| (task.clone(), attempt)))
        .collect()
}

fn assert_exactly_once(
    dir: &Path,
    expected: &BTreeSet<(String, u32)>,
) -> Vec<kiln_protocol::Outcome> {
    let outcomes = outcome_lines(dir);
    let keys = unique_keys(&outcomes); // panics on a key recorded twice
    assert_eq!(&keys, expected, "{}", dir.display());
    outcomes
}

#[test]
fn two_hundred_oracle_tasks_over_nats_are_each_counted_once() {
    require_tau2_data();
    let work = tempfile::tempdir().unwrap();
    let nats = NatsServer::start();
    let url = nats.url();
    let flags = default_flags(&url);
    let _coordinator = coordinator(work.path(), &flags, "coordinator");
    let mut workers: Vec<KilnProcess> = (0..3)
        .map(|index| worker(work.path(), &flags, &format!("worker-{index}"), 2))
        .collect();

    let mut run = submit(
        work.path(),
        &url,
        "run",
        &["--model", "oracle", "--attempts", "4"],
    );
    let status = run.wait_for_exit(Duration::from_secs(300));
    assert!(status.success(), "kiln run --nats failed:\n{}", run.log());

    let expected = expected_keys(50, 4);
    let outcomes = assert_exactly_once(&work.path().join("run"), &expected);
    assert!(
        outcomes.iter().all(|outcome| outcome.success),
        "the airline oracle solves every task"
    );
    let by_worker: BTreeSet<String> = outcomes
        .iter()
        .filter_map(|outcome| outcome.worker.clone())
        .collect();
    assert!(
        by_worker.len() >= 2,
        "tasks spread over the workers: {by_worker:?}"
    );
    // The coordinator's own copy of the run agrees.
    assert_exactly_once(&coordinator_run_dir(work.path()), &expected);
    assert!(
        std::fs::read_to_string(work.path().join("run/report.md"))
            .unwrap()
            .contains("200")
    );

    // SIGTERM drains: each worker exits cleanly.
    for worker in &mut workers {
        let status = worker.terminate();
        assert!(
            status.success(),
            "{} exited with {status}:\n{}",
            worker.name,
            worker.log()
        );
        assert!(worker.log().contains("stopped;"), "{}", worker.log());
    }
}

/// A scripted model that answers every request after `delay_ms`, ending the conversation: each
/// episode lasts about one delay, long enough to kill a worker in the middle of episodes.
fn slow_model_script(delay_ms: u64) -> Script {
    Script::new(vec![Rule::times(
        u32::MAX,
        ScriptedResponse::text("I cannot help with that. ###STOP###").delayed(delay_ms),
    )])
}

#[test]
fn killed_workers_restarted_nats_and_a_restarted_coordinator_lose_and_double_nothing() {
    require_tau2_data();
    let work = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let model_server = runtime
        .block_on(ScriptedServer::start(slow_model_script(1500)))
        .unwrap();
    let model = format!("openai:scripted@{}", model_server.base_url());
    let mut nats = NatsServer::start();
    let url = nats.url();
    let flags = default_flags(&url);
    let mut coordinator_process = coordinator(work.path(), &flags, "coordinator");
    let mut workers: Vec<KilnProcess> = (0..3)
        .map(|index| worker(work.path(), &flags, &format!("worker-{index}"), 2))
        .collect();
    let mut run = submit(
        work.path(),
        &url,
        "run",
        &["--model", &model, "--user", "none", "--tasks", "48"],
    );
    let dir = work.path().join("run");

    // kill -9 one worker in the middle of its episodes, and start a replacement.
    wait_until(
        "some results are recorded and worker-0 runs an episode",
        Duration::from_secs(120),
        || recorded(&dir) >= 2 && !workers[0].held().is_empty(),
    );
    workers[0].kill_hard();
    // The log of a killed process is final: what it started and never finished, it held.
    let held_by_killed = workers[0].held();
    assert!(!held_by_killed.is_empty());
    workers.push(worker(work.path(), &flags, "worker-3", 2));

    // Kill the coordinator mid-run and start another.
    wait_until(
        "more results are recorded",
        Duration::from_secs(120),
        || recorded(&dir) >= 6,
    );
    let recorded_at_kill = recorded(&dir);
    coordinator_process.kill_hard();
    assert!(
        recorded_at_kill < 40,
        "the coordinator is killed mid-run ({recorded_at_kill} of 48 recorded)"
    );
    let coordinator_2 = coordinator(work.path(), &flags, "coordinator-2");

    // Restart nats-server mid-run (same port, same store).
    wait_until(
        "results after the coordinator restart",
        Duration::from_secs(120),
        || recorded(&dir) >= 14,
    );
    nats.restart();

    let status = run.wait_for_exit(Duration::from_secs(300));
    assert!(status.success(), "kiln run --nats failed:\n{}", run.log());
    let outcomes = assert_exactly_once(&dir, &expected_keys(48, 1));
    let errors: Vec<_> = outcomes
        .iter()
        .filter(|outcome| outcome.error.is_some())
        .collect();
    assert!(
        errors.is_empty(),
        "no task ends in an infrastructure error: {errors:?}"
    );
    let workers_used: BTreeSet<String> = outcomes
        .iter()
        .filter_map(|outcome| outcome.worker.clone())
        .collect();
    assert!(
        workers_used.contains("worker-3"),
        "the replacement worker took tasks: {workers_used:?}"
    );
    // Redelivery happened: each task the killed worker held was executed again, start to finish,
    // by the worker whose result is recorded.
    for key in &held_by_killed {
        let outcome = outcomes
            .iter()
            .find(|outcome| (outcome.task_id.clone(), outcome.attempt) == *key)
            .unwrap();
        let executor = outcome.worker.as_deref().unwrap_or_default();
        assert_ne!(
            executor, "worker-0",
            "task {key:?} held by the killed worker-0 is recorded from it"
        );
        let process = workers
            .iter()
            .find(|process| process.name == executor)
            .unwrap_or_else(|| panic!("task {key:?} recorded from unknown worker {executor:?}"));
        let events: Vec<TaskEvent> = process
            .task_events()
            .into_iter()
            .filter(|event| event.key == *key)
            .collect();
        assert!(
            events.iter().any(|event| !event.finished) && events.iter().any(|event| event.finished),
            "{executor} did not start and finish task {key:?} held by the killed worker-0; its events: {events:?}"
        );
    }
    // The restarted coordinator took the run over and finishes it too: its own copy of the run
    // (resumed from its directory and the replayed outcomes stream) holds every key once. The
    // client may finish first: workers publish results without the coordinator.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !coordinator_2.log().contains("run ended") {
        assert!(
            Instant::now() < deadline,
            "the restarted coordinator did not end the run; its log:\n{}",
            coordinator_2.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_exactly_once(&coordinator_run_dir(work.path()), &expected_keys(48, 1));
    assert!(
        coordinator_2.log().contains("run session started"),
        "{}",
        coordinator_2.log()
    );
    drop(model_server);
}

/// How often the cluster of the max-deliver test delivers a task at most.
const MAX_DELIVER: u32 = 2;

#[test]
fn a_task_every_worker_dies_on_becomes_its_error_outcome_after_max_deliver() {
    let work = tempfile::tempdir().unwrap();
    let nats = NatsServer::start();
    let url = nats.url();
    let flags = cluster_flags(&url, MAX_DELIVER, 120);
    let coordinator_process = coordinator(work.path(), &flags, "coordinator");
    // One slot per worker: a worker that runs the `hang` task runs nothing else, so killing it
    // costs no other task a delivery.
    let mut workers = vec![worker(work.path(), &flags, "worker-0", 1)];
    let mut run = submit_run(
        work.path(),
        &url,
        "run",
        &[
            "--env",
            "debug-faults",
            "--split",
            "test",
            "--tasks",
            "ok,hang",
            "--attempts",
            "2",
            "--model",
            "oracle",
        ],
    );

    // Whenever the current worker runs a `hang` episode (which never ends), kill -9 it and start
    // another: every delivery of a `hang` task dies with its worker, until JetStream gives up.
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut kills = 0;
    while !run.exited() {
        assert!(
            Instant::now() < deadline,
            "the run did not finish after {kills} worker kills; coordinator log:\n{}",
            coordinator_process.log()
        );
        let current = workers.last_mut().unwrap();
        if current.held().iter().any(|(task, _)| task == "hang") {
            current.kill_hard();
            kills += 1;
            workers.push(worker(work.path(), &flags, &format!("worker-{kills}"), 1));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = run.wait_for_exit(Duration::from_secs(1));
    assert!(status.success(), "kiln run --nats failed:\n{}", run.log());

    let keys: BTreeSet<Key> = ["ok", "hang"]
        .into_iter()
        .flat_map(|task| (0..2).map(move |attempt| (task.to_string(), attempt)))
        .collect();
    let outcomes = assert_exactly_once(&work.path().join("run"), &keys);
    for outcome in &outcomes {
        if outcome.task_id == "ok" {
            assert!(outcome.success && outcome.error.is_none(), "{outcome:?}");
            continue;
        }
        let error = outcome.error.as_deref().unwrap_or_default();
        assert!(
            error.contains(&format!("abandoned after {MAX_DELIVER} deliveries")),
            "{outcome:?}"
        );
        assert_eq!(outcome.worker.as_deref(), Some(GIVEN_UP_WORKER));
        assert!(!outcome.success);
    }
    // Each `hang` key was delivered exactly max-deliver times, each time to a worker that died.
    let mut deliveries: BTreeMap<Key, Vec<u64>> = BTreeMap::new();
    for process in &workers {
        for event in process.task_events() {
            if event.key.0 == "hang" && !event.finished {
                deliveries
                    .entry(event.key)
                    .or_default()
                    .push(event.delivery.unwrap());
            }
        }
    }
    let expected_deliveries: Vec<u64> = (1..=u64::from(MAX_DELIVER)).collect();
    for attempt in 0..2 {
        let key = ("hang".to_string(), attempt);
        assert_eq!(
            deliveries.get(&key),
            Some(&expected_deliveries),
            "deliveries of {key:?}"
        );
    }
    assert_eq!(kills, 2 * MAX_DELIVER as usize);
    assert!(
        coordinator_process
            .log()
            .contains("task given up after max deliveries"),
        "{}",
        coordinator_process.log()
    );
}

/// Counts every message published on the work queue's subjects, by message id
/// (`run/task/attempt`), duplicates the server drops included.
struct TaskPublications {
    counts: Arc<Mutex<BTreeMap<String, usize>>>,
}

impl TaskPublications {
    async fn watch(client: &async_nats::Client) -> Self {
        let mut subscriber = client.subscribe("kiln.tasks.>").await.unwrap();
        client.flush().await.unwrap();
        let counts = Arc::new(Mutex::new(BTreeMap::new()));
        let sink = counts.clone();
        tokio::spawn(async move {
            while let Some(message) = subscriber.next().await {
                let id = message
                    .headers
                    .as_ref()
                    .and_then(|headers| headers.get("Nats-Msg-Id"))
                    .map(|id| id.to_string())
                    .unwrap_or_default();
                *sink.lock().unwrap().entry(id).or_insert(0) += 1;
            }
        });
        Self { counts }
    }

    fn counts(&self) -> BTreeMap<String, usize> {
        self.counts.lock().unwrap().clone()
    }
}

/// The duplicate window of the coordinator-restart test: far shorter than the run, so the server's
/// message-id deduplication cannot hide a task queued twice.
const SHORT_DUPLICATE_WINDOW_S: u64 = 1;

#[test]
fn a_restarted_coordinator_queues_no_task_twice_even_past_the_duplicate_window() {
    require_tau2_data();
    let work = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let model_server = runtime
        .block_on(ScriptedServer::start(slow_model_script(1500)))
        .unwrap();
    let model = format!("openai:scripted@{}", model_server.base_url());
    let nats = NatsServer::start();
    let url = nats.url();
    let client = runtime.block_on(async_nats::connect(&url)).unwrap();
    let publications = runtime.block_on(TaskPublications::watch(&client));
    let flags = cluster_flags(&url, 20, SHORT_DUPLICATE_WINDOW_S);
    let mut coordinator_1 = coordinator(work.path(), &flags, "coordinator");
    let _worker = worker(work.path(), &flags, "worker-0", 2);
    const TASKS: usize = 16;
    let mut run = submit(
        work.path(),
        &url,
        "run",
        &[
            "--model",
            &model,
            "--user",
            "none",
            "--tasks",
            &TASKS.to_string(),
        ],
    );
    let dir = work.path().join("run");

    // Kill the coordinator once every task is queued, and let tasks finish while none runs.
    wait_until(
        "the coordinator queued the run's tasks",
        Duration::from_secs(120),
        || coordinator_1.log().contains("tasks dispatched"),
    );
    coordinator_1.kill_hard();
    let recorded_at_kill = recorded(&dir);
    wait_until(
        "tasks finish while no coordinator runs",
        Duration::from_secs(120),
        || recorded(&dir) >= recorded_at_kill + 2,
    );
    // Not an assertion: past the window, the server would store a task queued again.
    std::thread::sleep(Duration::from_secs(2 * SHORT_DUPLICATE_WINDOW_S));
    assert!(
        recorded(&dir) < TASKS,
        "the coordinator restarts mid-run ({} of {TASKS} recorded)",
        recorded(&dir)
    );
    let coordinator_2 = coordinator(work.path(), &flags, "coordinator-2");

    let status = run.wait_for_exit(Duration::from_secs(300));
    assert!(status.success(), "kiln run --nats failed:\n{}", run.log());
    let expected = expected_keys(TASKS, 1);
    assert_exactly_once(&dir, &expected);
    wait_until(
        "the restarted coordinator ends the run",
        Duration::from_secs(60),
        || coordinator_2.log().contains("run ended"),
    );
    assert_exactly_once(&coordinator_run_dir(work.path()), &expected);

    // Every key was published to the work queue exactly once: by message id as seen on the wire
    // (duplicates the server would drop included), and by the stream's sequence numbers.
    let run_id = outcome_lines(&dir)[0].run_id.clone();
    let counts = publications.counts();
    let expected_ids: BTreeMap<String, usize> = expected
        .iter()
        .map(|(task, attempt)| (format!("{run_id}/{task}/{attempt}"), 1))
        .collect();
    assert_eq!(counts, expected_ids, "task publications by message id");
    let last_sequence = runtime.block_on(async {
        let jetstream = async_nats::jetstream::new(client.clone());
        let mut stream = jetstream.get_stream("KILN_TASKS").await.unwrap();
        stream.info().await.unwrap().state.last_sequence
    });
    assert_eq!(
        last_sequence, TASKS as u64,
        "messages ever stored in KILN_TASKS"
    );

    // The restart met tasks that finished while no coordinator ran, and queued none of them.
    let skipped = coordinator_2
        .log()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|event| {
            event["message"]
                == "tasks queued or finished in an earlier session are not queued again"
        })
        .unwrap_or_else(|| {
            panic!(
                "coordinator-2 did not report its backlog:\n{}",
                coordinator_2.log()
            )
        });
    assert!(
        skipped["published_unrecorded"].as_u64().unwrap() >= 2,
        "{skipped}"
    );
    drop(model_server);
}
