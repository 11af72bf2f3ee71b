//! The digester on episodes recorded by `kiln run` (prompts and token ids stripped to keep the
//! fixtures small):
//! - `alfworld-smollm2.json`: `kiln run --env alfworld --split train --tasks 3 --model
//!   local:smollm2 --harness harnesses/small-model.toml`, task `train/pick_and_place_simple/0000`
//!   (the model paces between two sofas until the step limit);
//! - `webshop-oracle.json`, `tau2-retail-oracle.json`: `--model oracle` runs on the train splits.
//!
//! Where a signature needs a failure the oracle never makes, the real episode is edited in the
//! smallest way (a step removed, a tool result replaced) and the test says so.

use kiln_evolve::digest::{Episode, FailureCategory, digest_attempt};
use kiln_protocol::{Observation, Outcome, Trajectory};
use serde::Deserialize;

#[derive(Deserialize)]
struct Recorded {
    outcome: Outcome,
    trajectory: Trajectory,
}

fn load(name: &str) -> Recorded {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn texts(trajectory: &Trajectory) -> Vec<String> {
    trajectory
        .steps
        .iter()
        .flat_map(|step| &step.actions)
        .map(|record| match &record.action {
            kiln_protocol::Action::Message { text } => text.clone(),
            kiln_protocol::Action::ToolCall { call } => call.name.clone(),
        })
        .collect()
}

#[test]
fn a_real_smollm2_alfworld_episode() {
    let recorded = load("alfworld-smollm2.json");
    let digest = digest_attempt(Episode {
        outcome: &recorded.outcome,
        trajectory: Some(&recorded.trajectory),
    });
    assert!(!digest.success);
    assert!(digest.signatures.contains_key("step_limit"));
    // The model alternates between two places: an A B A B cycle, found once at its onset.
    let actions = texts(&recorded.trajectory);
    let onset = (3..actions.len())
        .find(|&i| {
            actions[i] == actions[i - 2]
                && actions[i - 1] == actions[i - 3]
                && actions[i] != actions[i - 1]
        })
        .expect("the recording cycles");
    let loops = &digest.signatures["repeated_action_loop"];
    assert_eq!(loops.count, 1);
    assert_eq!(loops.evidence[0].step, Some(onset as u32));
    assert_eq!(
        loops.evidence[0].to_string(),
        format!(
            "{}/train/pick_and_place_simple/0000/0/{onset}",
            recorded.outcome.run_id
        )
    );
    // Every admissible-choice note with `changed: true` is a fallback.
    let changed = recorded
        .trajectory
        .steps
        .iter()
        .flat_map(|step| &step.events)
        .filter(|note| note["note"]["admissible_choice"]["changed"] == true)
        .count() as u32;
    assert!(changed > 0);
    assert_eq!(digest.signatures["admissible_fallback"].count, changed);
    // The goal's statue is never picked up; no action was rejected.
    assert_eq!(digest.signatures["alfworld_target_never_taken"].count, 1);
    assert!(!digest.signatures.contains_key("invalid_action"));
    assert_eq!(digest.category, Some(FailureCategory::StepLimit));
}

#[test]
fn a_real_webshop_episode_with_and_without_its_option_click() {
    let recorded = load("webshop-oracle.json");
    let clean = digest_attempt(Episode {
        outcome: &recorded.outcome,
        trajectory: Some(&recorded.trajectory),
    });
    assert!(clean.success);
    assert!(clean.signatures.is_empty(), "{:?}", clean.signatures.keys());
    // Remove the option click (`click[hot pink]`): the purchase skips the option.
    let mut edited = recorded.trajectory.clone();
    let position = texts(&edited)
        .iter()
        .position(|text| text == "click[hot pink]")
        .unwrap();
    edited.steps.remove(position);
    let mut failed = recorded.outcome.clone();
    failed.success = false;
    failed.reward = 0.5;
    let digest = digest_attempt(Episode {
        outcome: &failed,
        trajectory: Some(&edited),
    });
    assert_eq!(digest.signatures["webshop_buy_without_options"].count, 1);
    assert_eq!(digest.category, Some(FailureCategory::WrongResult));
}

#[test]
fn a_real_tau2_episode_and_a_tool_error_in_it() {
    let recorded = load("tau2-retail-oracle.json");
    let clean = digest_attempt(Episode {
        outcome: &recorded.outcome,
        trajectory: Some(&recorded.trajectory),
    });
    assert!(clean.success);
    assert!(!clean.signatures.contains_key("tool_error"));
    // Replace the order lookup's result with the error tau2 gives for an unknown order.
    let mut edited = recorded.trajectory.clone();
    let record = edited
        .steps
        .iter_mut()
        .flat_map(|step| step.actions.iter_mut())
        .find(|record| matches!(&record.observation, Observation::ToolResult { name, .. } if name == "get_order_details"))
        .unwrap();
    if let Observation::ToolResult {
        content, is_error, ..
    } = &mut record.observation
    {
        *content = "Error: Order not found".into();
        *is_error = true;
    }
    let digest = digest_attempt(Episode {
        outcome: &recorded.outcome,
        trajectory: Some(&edited),
    });
    assert_eq!(digest.signatures["tool_error"].count, 1);
    assert_eq!(
        digest.signatures["tau2_tool_error:Error: Order not found"].count,
        1
    );
}
