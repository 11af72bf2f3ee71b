//! `kiln run --env tau2-airline --model oracle` on all 50 tasks: the oracle replays the gold actions,
//! so every task must succeed, and every outcome carries the final DB hash.

mod common;

use common::{assert_success, kiln, outcome_lines, split_task_ids, stdout, unique_keys};

#[test]
fn the_oracle_solves_all_50_airline_tasks() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("airline");
    let output = kiln(
        work.path(),
        &[
            "run",
            "--env",
            "tau2-airline",
            "--split",
            "base",
            "--model",
            "oracle",
            "--workers",
            "4",
            "--out",
            "airline",
        ],
    );
    assert_success(&output);

    let outcomes = outcome_lines(&out);
    let keys = unique_keys(&outcomes);
    let expected: std::collections::BTreeSet<(String, u32)> = split_task_ids("airline", "base")
        .into_iter()
        .map(|id| (id, 0))
        .collect();
    assert_eq!(expected.len(), 50);
    assert_eq!(keys, expected);
    for outcome in &outcomes {
        assert!(
            outcome.success,
            "task {} failed: {outcome:?}",
            outcome.task_id
        );
        assert_eq!(outcome.error, None, "task {}", outcome.task_id);
        let hash = outcome
            .db_hash
            .as_deref()
            .unwrap_or_else(|| panic!("task {} has no db_hash", outcome.task_id));
        assert_eq!(
            hash.len(),
            64,
            "db_hash of task {} is a sha256 hex digest: {hash}",
            outcome.task_id
        );
        assert_eq!(outcome.model, "oracle");
        for (name, component) in &outcome.components {
            assert_eq!(
                component.value,
                Some(1.0),
                "task {} component {name}",
                outcome.task_id
            );
        }
    }

    let trajectories = std::fs::read_to_string(out.join("trajectories.jsonl")).unwrap();
    assert_eq!(trajectories.lines().count(), 50);
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("| Success (strict) | 50/50 (100.0%) |"),
        "{report}"
    );
    assert!(
        report.contains("official τ²-bench airline tasks"),
        "{report}"
    );
    assert!(
        report.contains("not comparable to official τ² numbers"),
        "{report}"
    );
    let run_toml = std::fs::read_to_string(out.join("run.toml")).unwrap();
    let hash = outcomes[0].harness_hash.clone();
    assert!(
        run_toml.contains(&format!("hash = \"{hash}\"")),
        "{run_toml}"
    );
    assert!(out.join("harness").join(format!("{hash}.toml")).exists());
    let summary = stdout(&output);
    assert!(summary.contains("50/50 (100.0%)"), "{summary}");
}
