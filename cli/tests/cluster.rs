//! The cluster for real: a nats-server, `kiln coordinator`, three `kiln worker` processes and
//! `kiln run --nats`, each a separate process of the real binary. Runs τ² airline tasks and checks
//! that every (task, attempt) is counted exactly once through worker kills, a nats-server restart
//! and a coordinator restart.

mod common;

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{kiln_binary, outcome_lines, require_tau2_data, split_task_ids, unique_keys};
use kiln_models::testing::{Rule, Script, ScriptedResponse, ScriptedServer};
use kiln_worker::testing::NatsServer;

/// A `kiln` process whose stderr goes to a log file; killed on drop.
struct KilnProcess {
    name: String,
    child: Child,
    log: PathBuf,
}

impl KilnProcess {
    fn spawn(name: &str, work: &Path, args: &[String]) -> Self {
        let log = work.join(format!("{name}.log"));
        let child = Command::new(kiln_binary())
            .args(args)
            .current_dir(work)
            .env("RUST_LOG", "info")
            .stdout(File::create(work.join(format!("{name}.out"))).unwrap())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .expect("the kiln binary starts");
        Self {
            name: name.to_string(),
            child,
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill_hard(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        self.wait_for_exit(Duration::from_secs(60))
    }

    fn wait_for_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {limit:?}; log:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for KilnProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Lease and max-deliver shared by every process of a test cluster: short, so a killed worker's
/// tasks come back within seconds.
const LEASE_S: &str = "3";

fn cluster_flags(url: &str) -> Vec<String> {
    ["--nats", url, "--lease-s", LEASE_S, "--max-deliver", "20"]
        .map(String::from)
        .to_vec()
}

fn coordinator(work: &Path, url: &str, name: &str) -> KilnProcess {
    let mut args = vec!["coordinator".to_string()];
    args.extend(cluster_flags(url));
    args.extend([
        "--runs-dir".into(),
        "coordinator-runs".into(),
        "--id".into(),
        name.into(),
    ]);
    KilnProcess::spawn(name, work, &args)
}

fn worker(work: &Path, url: &str, name: &str, slots: usize) -> KilnProcess {
    let mut args = vec!["worker".to_string()];
    args.extend(cluster_flags(url));
    args.extend([
        "--slots".into(),
        slots.to_string(),
        "--id".into(),
        name.into(),
        "--drain-timeout-s".into(),
        "20".into(),
    ]);
    KilnProcess::spawn(name, work, &args)
}

fn submit(work: &Path, url: &str, out: &str, extra: &[&str]) -> KilnProcess {
    let mut args: Vec<String> = [
        "run",
        "--env",
        "tau2-airline",
        "--split",
        "base",
        "--nats",
        url,
        "--out",
        out,
    ]
    .map(String::from)
    .to_vec();
    args.extend(extra.iter().map(|arg| arg.to_string()));
    KilnProcess::spawn("run", work, &args)
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
    let _coordinator = coordinator(work.path(), &url, "coordinator");
    let mut workers: Vec<KilnProcess> = (0..3)
        .map(|index| worker(work.path(), &url, &format!("worker-{index}"), 2))
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
    let coordinator_dir = work.path().join("coordinator-runs");
    let run_dir = std::fs::read_dir(&coordinator_dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert_exactly_once(&run_dir, &expected);
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
    let mut coordinator_process = coordinator(work.path(), &url, "coordinator");
    let mut workers: Vec<KilnProcess> = (0..3)
        .map(|index| worker(work.path(), &url, &format!("worker-{index}"), 2))
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
        "some results are recorded",
        Duration::from_secs(120),
        || recorded(&dir) >= 2,
    );
    workers[0].kill_hard();
    workers.push(worker(work.path(), &url, "worker-3", 2));

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
    let coordinator_2 = coordinator(work.path(), &url, "coordinator-2");

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
    let coordinator_dir = work.path().join("coordinator-runs");
    let run_dir = std::fs::read_dir(&coordinator_dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert_exactly_once(&run_dir, &expected_keys(48, 1));
    assert!(
        coordinator_2.log().contains("run session started"),
        "{}",
        coordinator_2.log()
    );
    drop(model_server);
}
