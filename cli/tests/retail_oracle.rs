//! `kiln run --env tau2-retail --model oracle --split base`: the oracle's DB matches the gold DB on
//! all 114 tasks. Without a judge the NL assertions are unjudged, so strict success excludes the
//! tasks that have them while judged-only success counts all; the report shows both, and shows
//! the mean reward both ways too (strict, the headline, counts unjudged episodes as 0).

mod common;

use common::{assert_success, kiln, outcome_lines, unique_keys};
use serde_json::Value;

/// From the installed data: ids of tasks whose NL assertions need a judge (non-empty
/// `nl_assertions`), and the number of tasks with NL_ASSERTION in their reward basis.
fn nl_assertion_tasks() -> (std::collections::BTreeSet<String>, usize) {
    let path = kiln_environments::default_data_dir().join("data/tau2/retail/tasks.json");
    let tasks: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut need_judge = std::collections::BTreeSet::new();
    let mut in_basis_count = 0;
    for task in &tasks {
        let criteria = &task["evaluation_criteria"];
        let in_basis = criteria["reward_basis"]
            .as_array()
            .is_some_and(|basis| basis.iter().any(|b| b == "NL_ASSERTION"));
        let assertions = criteria["nl_assertions"]
            .as_array()
            .is_some_and(|list| !list.is_empty());
        in_basis_count += usize::from(in_basis);
        if in_basis && assertions {
            need_judge.insert(
                task["id"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| task["id"].to_string()),
            );
        }
    }
    (need_judge, in_basis_count)
}

#[test]
fn the_oracle_matches_the_gold_db_on_all_114_retail_tasks() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("retail");
    let output = kiln(
        work.path(),
        &[
            "run",
            "--env",
            "tau2-retail",
            "--model",
            "oracle",
            "--split",
            "base",
            "--workers",
            "4",
            "--out",
            "retail",
        ],
    );
    assert_success(&output);

    let outcomes = outcome_lines(&out);
    assert_eq!(unique_keys(&outcomes).len(), 114);
    let (judged_later, with_nl_component) = nl_assertion_tasks();
    assert_eq!(
        judged_later.len(),
        40,
        "the data has 40 retail tasks with NL assertions"
    );
    for outcome in &outcomes {
        let task = &outcome.task_id;
        assert_eq!(
            outcome.components["DB"].value,
            Some(1.0),
            "task {task}: {:?}",
            outcome.components["DB"]
        );
        assert!(outcome.db_hash.is_some(), "task {task} has no db_hash");
        assert!(outcome.success_judged_only, "task {task}");
        let nl = outcome.components.get("NL_ASSERTION");
        if judged_later.contains(task) {
            assert!(
                nl.is_some_and(|score| score.unjudged),
                "task {task}: {nl:?}"
            );
            assert!(
                !outcome.success,
                "task {task} has unjudged assertions, so strict success is false"
            );
        } else {
            assert!(
                nl.is_none_or(|score| !score.unjudged),
                "task {task}: {nl:?}"
            );
            assert!(outcome.success, "task {task}");
        }
    }

    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    let strict = 114 - judged_later.len();
    let strict_line = format!(
        "| Success (strict) | {strict}/114 ({:.1}%) |",
        strict as f64 / 114.0 * 100.0
    );
    assert!(
        report.contains(&strict_line),
        "expected `{strict_line}` in\n{report}"
    );
    assert!(
        report.contains("| Success (judged components only) | 114/114 (100.0%) |"),
        "{report}"
    );
    let nl_row = format!(
        "| NL_ASSERTION | 1.000 | {} | {} | 0 |",
        with_nl_component - judged_later.len(),
        judged_later.len()
    );
    assert!(report.contains(&nl_row), "expected `{nl_row}` in\n{report}");
    assert!(report.contains("| DB | 1.000 | 114 | 0 | 0 |"), "{report}");
    assert!(
        report.contains("40 episodes have components no judge scored"),
        "{report}"
    );
    assert!(report.contains("Judge | none configured"), "{report}");
    // Mean reward: the DB component gives every episode reward 1, which the judged-only mean
    // keeps; the headline (strict) mean counts the 40 unjudged episodes as 0.
    for outcome in &outcomes {
        assert_eq!(outcome.reward, 1.0, "task {}", outcome.task_id);
    }
    let strict_mean = format!("| Mean reward (strict) | {:.3} |", strict as f64 / 114.0);
    assert!(
        report.contains(&strict_mean),
        "expected `{strict_mean}` in\n{report}"
    );
    assert!(
        report.contains("| Mean reward (judged components only) | 1.000 |"),
        "{report}"
    );
    assert!(
        report.contains("The headline figures (success, pass^k, mean reward) are strict"),
        "{report}"
    );
}
