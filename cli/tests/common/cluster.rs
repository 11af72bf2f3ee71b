//! A test cluster of real processes: `kiln coordinator` and `kiln worker`s on a nats-server,
//! each a separate process of the `kiln` binary whose JSON log goes to a file.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::kiln_binary;

/// A (task, attempt) key.
pub type Key = (String, u32);

/// A `kiln` process whose stderr goes to a log file; killed on drop.
pub struct KilnProcess {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl KilnProcess {
    pub fn spawn(name: &str, work: &Path, args: &[String]) -> Self {
        let log = work.join(format!("{name}.log"));
        let child = Command::new(kiln_binary())
            .args(["--log-format", "json"])
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

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The `task started` / `task finished` events this process logged, in order.
    pub fn task_events(&self) -> Vec<TaskEvent> {
        self.log().lines().filter_map(TaskEvent::parse).collect()
    }

    /// Keys this process started and did not finish: the leases it holds (or held when killed).
    pub fn held(&self) -> BTreeSet<Key> {
        let mut held = BTreeSet::new();
        for event in self.task_events() {
            if event.finished {
                held.remove(&event.key);
            } else {
                held.insert(event.key);
            }
        }
        held
    }

    pub fn exited(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }

    pub fn kill_hard(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        self.wait_for_exit(Duration::from_secs(60))
    }

    pub fn wait_for_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
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

/// One `task started` or `task finished` event of a worker's JSON log.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskEvent {
    pub key: Key,
    pub finished: bool,
    /// JetStream's delivery count (started events only).
    pub delivery: Option<u64>,
}

impl TaskEvent {
    pub fn parse(line: &str) -> Option<Self> {
        let event: Value = serde_json::from_str(line).ok()?;
        let finished = match event["message"].as_str()? {
            "task started" => false,
            "task finished" => true,
            _ => return None,
        };
        let span = event["spans"]
            .as_array()?
            .iter()
            .find(|span| span["name"] == "task")?;
        let task_id = span["task_id"].as_str()?.to_string();
        let attempt = u32::try_from(span["attempt"].as_u64()?).ok()?;
        Some(Self {
            key: (task_id, attempt),
            finished,
            delivery: event["delivery"].as_u64(),
        })
    }
}

/// Lease shared by every process of a test cluster: short, so a killed worker's tasks come back
/// within seconds.
pub const LEASE_S: &str = "3";

/// The flags every process of a test cluster shares.
pub fn cluster_flags(url: &str, max_deliver: u32, duplicate_window_s: u64) -> Vec<String> {
    vec![
        "--nats".into(),
        url.into(),
        "--lease-s".into(),
        LEASE_S.into(),
        "--max-deliver".into(),
        max_deliver.to_string(),
        "--duplicate-window-s".into(),
        duplicate_window_s.to_string(),
    ]
}

/// Retries and duplicate window of the tests that do not exercise them.
pub fn default_flags(url: &str) -> Vec<String> {
    cluster_flags(url, 20, 120)
}

pub fn coordinator(work: &Path, flags: &[String], name: &str) -> KilnProcess {
    let mut args = vec!["coordinator".to_string()];
    args.extend(flags.iter().cloned());
    args.extend([
        "--runs-dir".into(),
        "coordinator-runs".into(),
        "--id".into(),
        name.into(),
    ]);
    KilnProcess::spawn(name, work, &args)
}

pub fn worker(work: &Path, flags: &[String], name: &str, slots: usize) -> KilnProcess {
    let mut args = vec!["worker".to_string()];
    args.extend(flags.iter().cloned());
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
