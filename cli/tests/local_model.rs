//! `kiln run --env tau2-retail --model local:smollm2 --user scripted` end to end on the embedded
//! model, with the harness chosen for small models by default: episodes are recorded, and every model step of the trajectory carries the prompt token
//! ids, the completion token ids and one logprob per completion token, for the trainer.

mod common;

use common::{assert_success, kiln, outcome_lines, split_task_ids};
use kiln_protocol::Trajectory;

#[test]
fn a_local_model_run_records_token_ids_and_logprobs() {
    let model =
        kiln_environments::default_data_dir().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        model.exists(),
        "missing {}: run `ops/setup model`",
        model.display()
    );
    let work = tempfile::tempdir().unwrap();
    let output = kiln(
        work.path(),
        &[
            "run",
            "--env",
            "tau2-retail",
            "--model",
            "local:smollm2",
            "--user",
            "scripted",
            "--tasks",
            "2",
            "--workers",
            "2",
            "--out",
            "smol",
        ],
    );
    assert_success(&output);

    let dir = work.path().join("smol");
    // Without --harness, a local model gets the small-model harness.
    let run_toml = std::fs::read_to_string(dir.join("run.toml")).unwrap();
    assert!(run_toml.contains("name = \"small-model\""), "{run_toml}");
    let outcomes = outcome_lines(&dir);
    let expected: Vec<String> = split_task_ids("retail", "test")
        .into_iter()
        .take(2)
        .collect();
    let mut recorded: Vec<String> = outcomes.iter().map(|o| o.task_id.clone()).collect();
    recorded.sort();
    let mut expected_sorted = expected.clone();
    expected_sorted.sort();
    assert_eq!(recorded, expected_sorted);
    for outcome in &outcomes {
        assert_eq!(outcome.model, "local:smollm2");
        assert!(
            outcome.error.is_none(),
            "task {}: {:?}",
            outcome.task_id,
            outcome.error
        );
        assert!(outcome.usage.prompt_tokens > 0 && outcome.usage.completion_tokens > 0);
    }

    let text = std::fs::read_to_string(dir.join("trajectories.jsonl")).unwrap();
    let trajectories: Vec<Trajectory> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(trajectories.len(), 2);
    for trajectory in &trajectories {
        assert!(
            !trajectory.steps.is_empty(),
            "task {} took no step",
            trajectory.task_id
        );
        for step in &trajectory.steps {
            let tokens = step.model.tokens.as_ref().unwrap_or_else(|| {
                panic!(
                    "task {} step {} has no token record",
                    trajectory.task_id, step.index
                )
            });
            assert!(!tokens.prompt_ids.is_empty());
            assert!(!tokens.completion_ids.is_empty());
            assert_eq!(
                tokens.completion_ids.len(),
                tokens.completion_logprobs.len()
            );
            assert!(
                tokens
                    .completion_logprobs
                    .iter()
                    .all(|lp| lp.is_finite() && *lp <= 0.0),
                "logprobs must be finite and ≤ 0: {:?}",
                tokens.completion_logprobs
            );
        }
    }
}
