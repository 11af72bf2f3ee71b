//! `--resume`: a run killed part-way, with its last outcome line cut mid-write, continues with only
//! the missing (task, attempt) keys; finished ones are kept as they were and every key ends up
//! recorded exactly once.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    assert_success, kiln, kiln_binary, outcome_lines, split_task_ids, stderr, unique_keys,
};

const TASKS: usize = 6;
const ATTEMPTS: u32 = 2;

fn line_count(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|text| text.lines().count())
        .unwrap_or(0)
}

/// Starts the run, kills it once a few outcomes are in (or lets it finish if it is faster).
fn run_part_way(work: &Path) {
    common::require_tau2_data();
    let mut child = Command::new(kiln_binary())
        .args([
            "run",
            "--env",
            "tau2-airline",
            "--tasks",
            &TASKS.to_string(),
            "--attempts",
            &ATTEMPTS.to_string(),
        ])
        .args(["--workers", "2", "--out", "run"])
        .current_dir(work)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let outcomes = work.join("run").join("outcomes.jsonl");
    let deadline = Instant::now() + Duration::from_secs(300);
    while line_count(&outcomes) < 3 && Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    child.wait().unwrap();
}

#[test]
fn resume_records_only_missing_keys_after_a_kill_and_a_truncated_line() {
    let work = tempfile::tempdir().unwrap();
    let run = work.path().join("run");
    run_part_way(work.path());

    // Keep at most 5 complete lines, then cut the next one in the middle, as a crash mid-append
    // would.
    let path = run.join("outcomes.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines.len() >= 3,
        "the run recorded {} outcomes before the kill",
        lines.len()
    );
    let kept: Vec<&str> = lines[..(lines.len() - 1).min(5)].to_vec();
    let cut = lines[kept.len()];
    let mut damaged = kept
        .iter()
        .map(|line| format!("{line}\n"))
        .collect::<String>();
    damaged.push_str(&cut[..cut.len() / 2]);
    std::fs::write(&path, damaged).unwrap();

    let output = kiln(work.path(), &["run", "--resume", "run"]);
    assert_success(&output);

    let outcomes = outcome_lines(&run);
    let keys = unique_keys(&outcomes);
    let expected: BTreeSet<(String, u32)> = split_task_ids("airline", "test")
        .into_iter()
        .take(TASKS)
        .flat_map(|id| (0..ATTEMPTS).map(move |attempt| (id.clone(), attempt)))
        .collect();
    assert_eq!(keys, expected, "every key exactly once");

    let after = std::fs::read_to_string(&path).unwrap();
    let after_lines: Vec<&str> = after.lines().collect();
    assert_eq!(
        &after_lines[..kept.len()],
        &kept[..],
        "finished outcomes are kept as they were, not redone"
    );
    assert_eq!(after_lines.len(), TASKS * ATTEMPTS as usize);
    assert!(
        stderr(&output).contains("truncated"),
        "the dropped line is logged:\n{}",
        stderr(&output)
    );

    let report = std::fs::read_to_string(run.join("report.md")).unwrap();
    assert!(
        report.contains("(12 episodes expected, 12 recorded)"),
        "{report}"
    );
    assert!(
        report.contains("| 2 | 1.000 | 6 |"),
        "pass^2 over 6 tasks:\n{report}"
    );
}

#[test]
fn resume_refuses_flags_that_change_the_run_and_writes_nothing() {
    let work = tempfile::tempdir().unwrap();
    let run = work.path().join("run");
    assert_success(&kiln(
        work.path(),
        &[
            "run",
            "--env",
            "tau2-airline",
            "--tasks",
            "2",
            "--out",
            "run",
        ],
    ));
    let before = std::fs::read_to_string(run.join("outcomes.jsonl")).unwrap();
    let run_toml = std::fs::read_to_string(run.join("run.toml")).unwrap();

    let output = kiln(
        work.path(),
        &[
            "run",
            "--resume",
            "run",
            "--attempts",
            "3",
            "--split",
            "train",
        ],
    );
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(
        message.contains("attempts: run.toml has `1`, requested `3`"),
        "{message}"
    );
    assert!(
        message.contains("split: run.toml has `test`, requested `train`"),
        "{message}"
    );
    assert_eq!(
        std::fs::read_to_string(run.join("outcomes.jsonl")).unwrap(),
        before
    );
    assert_eq!(
        std::fs::read_to_string(run.join("run.toml")).unwrap(),
        run_toml
    );

    // A complete run resumes to a no-op.
    let output = kiln(work.path(), &["run", "--resume", "run"]);
    assert_success(&output);
    assert_eq!(
        std::fs::read_to_string(run.join("outcomes.jsonl")).unwrap(),
        before
    );
}
