//! Helpers shared by the `kiln` binary's integration tests.

#![allow(dead_code)] // each test binary uses a different subset

pub mod cluster;
pub mod shop_agent;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kiln_protocol::Outcome;

/// The `kiln` binary built for these tests.
pub fn kiln_binary() -> &'static str {
    env!("CARGO_BIN_EXE_kiln")
}

/// `kiln ARGS…` run in `cwd` with the machine's data directory. Fails loudly when the τ² data is
/// not installed, since every test here needs it.
pub fn kiln(cwd: &Path, args: &[&str]) -> Output {
    require_tau2_data();
    kiln_without_data(cwd, args)
}

/// `kiln ARGS…` run in `cwd`, for commands that need no installed data.
pub fn kiln_without_data<S: AsRef<std::ffi::OsStr>>(cwd: &Path, args: &[S]) -> Output {
    Command::new(kiln_binary())
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .output()
        .expect("the kiln binary runs")
}

/// Panics with the instruction to run `ops/setup` when the τ² data is missing.
pub fn require_tau2_data() {
    let data = kiln_environments::default_data_dir()
        .join("data")
        .join("tau2");
    for domain in ["retail", "airline"] {
        let tasks = data.join(domain).join("tasks.json");
        assert!(
            tasks.exists(),
            "missing {}: these tests need the τ² data; run `ops/setup` (or set KILN_HOME)",
            tasks.display()
        );
    }
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts the command succeeded, showing its output otherwise.
pub fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "kiln failed with {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        stdout(output),
        stderr(output)
    );
}

/// Every line of `outcomes.jsonl`, parsed (a line that does not parse fails the test).
pub fn outcome_lines(dir: &Path) -> Vec<Outcome> {
    let text = std::fs::read_to_string(dir.join("outcomes.jsonl")).expect("outcomes.jsonl exists");
    text.lines()
        .enumerate()
        .map(|(index, line)| {
            serde_json::from_str(line)
                .unwrap_or_else(|error| panic!("outcomes.jsonl line {}: {error}", index + 1))
        })
        .collect()
}

/// The (task, attempt) keys of outcomes, asserting none repeats.
pub fn unique_keys(outcomes: &[Outcome]) -> BTreeSet<(String, u32)> {
    let mut keys = BTreeSet::new();
    for outcome in outcomes {
        assert!(
            keys.insert((outcome.task_id.clone(), outcome.attempt)),
            "task {} attempt {} is recorded twice",
            outcome.task_id,
            outcome.attempt
        );
    }
    keys
}

/// The task ids of a τ² split, from the installed `split_tasks.json`.
pub fn split_task_ids(domain: &str, split: &str) -> Vec<String> {
    let path = kiln_environments::default_data_dir()
        .join("data")
        .join("tau2")
        .join(domain)
        .join("split_tasks.json");
    let text = std::fs::read_to_string(&path).expect("split_tasks.json exists");
    let splits: serde_json::Value = serde_json::from_str(&text).expect("split_tasks.json parses");
    splits[split]
        .as_array()
        .unwrap_or_else(|| panic!("{} has no split `{split}`", path.display()))
        .iter()
        .map(|id| {
            id.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| id.to_string())
        })
        .collect()
}

/// Lists what a directory contains, for "nothing was written" assertions.
pub fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    entries.sort();
    entries
}
