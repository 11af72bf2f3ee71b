//! GAIA in the official format through the binary: the oracle answers a constructed dataset
//! (one task with an attachment) through `kiln run`, the run writes `submission.jsonl` and a
//! per-level report, the test split runs without scoring, and `kiln gaia score` scores
//! submissions made elsewhere.

mod common;

use std::path::Path;

use common::{assert_success, kiln, outcome_lines, stdout};
use serde_json::{Value, json};

/// validation: 3 tasks (levels 1, 2, 3; task v2 has a CSV attachment); test: 1 task, no answer.
fn write_dataset(root: &Path) {
    let validation = root.join("2023/validation");
    let test = root.join("2023/test");
    std::fs::create_dir_all(&validation).unwrap();
    std::fs::create_dir_all(&test).unwrap();
    std::fs::write(
        validation.join("v2.csv"),
        "item,count\napples,12\npears,30\n",
    )
    .unwrap();
    let validation_tasks = [
        json!({"task_id": "v1", "Question": "What is the capital of France?", "Level": "1",
               "Final answer": "Paris", "file_name": "",
               "Annotator Metadata": {"Steps": "1. Recall it.", "Number of steps": "1"}}),
        json!({"task_id": "v2", "Question": "How many fruits are listed in the attached file in total?",
               "Level": "2", "Final answer": "42", "file_name": "v2.csv"}),
        json!({"task_id": "v3", "Question": "List the first three primes.", "Level": "3",
               "Final answer": "2, 3, 5", "file_name": ""}),
    ];
    let lines: String = validation_tasks.iter().map(|t| format!("{t}\n")).collect();
    std::fs::write(validation.join("metadata.jsonl"), lines).unwrap();
    let test_task = json!({"task_id": "t1", "Question": "Name a primary colour.", "Level": "1",
                           "Final answer": "?", "file_name": ""});
    std::fs::write(test.join("metadata.jsonl"), format!("{test_task}\n")).unwrap();
}

fn submission(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("submission.jsonl"))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[test]
fn the_oracle_answers_every_validation_task_and_the_run_writes_a_submission() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("gaia");
    write_dataset(&data);
    let env = format!("gaia:{}", data.display());
    let output = kiln(
        work.path(),
        &["run", "--env", &env, "--model", "oracle", "--out", "run"],
    );
    assert_success(&output);
    let dir = work.path().join("run");
    let outcomes = outcome_lines(&dir);
    assert_eq!(outcomes.len(), 3);
    assert!(
        outcomes
            .iter()
            .all(|o| o.success && o.split == "validation"),
        "{outcomes:?}"
    );
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    for level in ["level 1", "level 2", "level 3"] {
        assert!(
            report.contains(level),
            "{level} missing from the report:\n{report}"
        );
    }
    assert!(stdout(&output).contains("100.0%"), "{}", stdout(&output));
    let lines = submission(&dir);
    let answers: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| {
            (
                l["task_id"].as_str().unwrap(),
                l["model_answer"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(answers, [("v1", "Paris"), ("v2", "42"), ("v3", "2, 3, 5")]);
    assert!(lines.iter().all(|l| l.get("reasoning_trace").is_some()));

    // The run's own submission scores 100% with `kiln gaia score`.
    let dataset = data.to_str().unwrap();
    let scored = kiln(
        work.path(),
        &[
            "gaia",
            "score",
            "--submission",
            "run/submission.jsonl",
            "--dataset",
            dataset,
            "--json",
        ],
    );
    assert_success(&scored);
    let per_task: Vec<Value> = stdout(&scored)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(per_task.len(), 3);
    assert!(
        per_task.iter().all(|t| t["correct"] == true),
        "{per_task:?}"
    );
}

#[test]
fn the_test_split_runs_without_scoring_and_still_writes_a_submission() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("gaia");
    write_dataset(&data);
    let env = format!("gaia:{}", data.display());
    let output = kiln(
        work.path(),
        &[
            "run", "--env", &env, "--split", "test", "--model", "oracle", "--out", "test-run",
        ],
    );
    assert_success(&output);
    let dir = work.path().join("test-run");
    let outcomes = outcome_lines(&dir);
    assert_eq!(outcomes.len(), 1);
    assert!(!outcomes[0].success);
    assert!(
        outcomes[0].components["level 1"].unjudged,
        "{:?}",
        outcomes[0]
    );
    let lines = submission(&dir);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["task_id"], "t1");
    // The oracle has no gold answer on the test split, so it gives none.
    assert_eq!(lines[0]["model_answer"], "");
}

#[test]
fn gaia_score_reports_accuracy_overall_and_per_level() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("gaia");
    write_dataset(&data);
    let lines = [
        json!({"task_id": "v1", "model_answer": "paris", "reasoning_trace": "I know it."}),
        json!({"task_id": "v2", "model_answer": "$42", "reasoning_trace": ""}),
        json!({"task_id": "v3", "model_answer": "2, 5, 3", "reasoning_trace": ""}),
    ];
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(work.path().join("sub.jsonl"), text).unwrap();
    let dataset = data.to_str().unwrap();
    let output = kiln(
        work.path(),
        &[
            "gaia",
            "score",
            "--submission",
            "sub.jsonl",
            "--dataset",
            dataset,
        ],
    );
    assert_success(&output);
    let summary = stdout(&output);
    assert!(summary.contains("accuracy  2/3 (66.7%)"), "{summary}");
    assert!(summary.contains("level 3   0/1 (0.0%)"), "{summary}");
    let json = kiln(
        work.path(),
        &[
            "gaia",
            "score",
            "--submission",
            "sub.jsonl",
            "--dataset",
            dataset,
            "--json",
        ],
    );
    let per_task: Vec<Value> = stdout(&json)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        per_task,
        [
            json!({"task_id": "v1", "correct": true}),
            json!({"task_id": "v2", "correct": true}),
            json!({"task_id": "v3", "correct": false}),
        ]
    );
    let missing = kiln(
        work.path(),
        &[
            "gaia",
            "score",
            "--submission",
            "nope.jsonl",
            "--dataset",
            dataset,
        ],
    );
    assert_eq!(missing.status.code(), Some(2), "bad input exits 2");
}
