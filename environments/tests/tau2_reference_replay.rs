//! The τ² acceptance test: every airline and retail task, driven through the `Environment` API
//! with the oracle plan (gold actions, then a message with every `communicate_info` string, then
//! `###STOP###`), once with no user (`user: none`) and once with the scripted user answering every
//! agent message. Airline must succeed on all 50 tasks; retail must get DB reward 1 on all 114
//! (40 of them also carry NL assertions, which stay unjudged without a judge model); and every
//! final DB hash must equal the hash the reference `server.py` computes after replaying the same
//! gold actions (one Python process per domain, `tests/support/tau2_reference.py`).
//!
//! Needs `ops/setup tau2` (data and reference wheels in `$KILN_HOME`) and `python3`.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use kiln_environments::{EnvContext, EnvironmentFactory, Evaluation, catalog, default_data_dir};
use kiln_protocol::{Action, ModelSpec, TaskSpec, Termination};
use serde_json::{Value, json};

fn context() -> EnvContext {
    EnvContext {
        data_dir: default_data_dir(),
        ..EnvContext::default()
    }
}

fn spec(env: &str, task_id: &str, user: &str) -> TaskSpec {
    TaskSpec {
        schema: 1,
        run_id: "acceptance".to_string(),
        env: env.to_string(),
        split: "base".to_string(),
        task_id: task_id.to_string(),
        attempt: 0,
        harness_hash: "none".to_string(),
        model: ModelSpec::Oracle,
        env_options: json!({ "user": user }),
        seed: 0,
        timeout_s: 0,
    }
}

/// One oracle episode's result.
struct Episode {
    task_id: String,
    user: &'static str,
    plan: Vec<Action>,
    termination: Termination,
    user_replies: usize,
    evaluation: Evaluation,
}

/// Resets, steps the oracle plan until the environment says done, evaluates.
async fn run_oracle(
    factory: &dyn EnvironmentFactory,
    task_id: &str,
    user: &'static str,
) -> Episode {
    let spec = spec(factory.id(), task_id, user);
    let mut env = factory
        .create(&spec.env_options)
        .unwrap_or_else(|error| panic!("create {task_id}: {error}"));
    let info = env
        .reset(&spec)
        .await
        .unwrap_or_else(|error| panic!("reset {task_id}: {error}"));
    assert_eq!(
        info.opening.len(),
        2,
        "greeting and the user's first message"
    );
    let plan = env
        .oracle_plan()
        .expect("a reset environment has an oracle plan");
    let mut termination = None;
    let mut user_replies = 0;
    for action in &plan {
        let result = env
            .step(action)
            .await
            .unwrap_or_else(|error| panic!("step {task_id}: {error}"));
        if matches!(result.observation, kiln_protocol::Observation::User { .. }) {
            user_replies += 1;
        }
        if result.done {
            termination = result.termination;
            break;
        }
    }
    let termination = termination.unwrap_or_else(|| {
        panic!("task {task_id} ({user}): the oracle plan never ended the episode")
    });
    let evaluation = env
        .evaluate(termination)
        .await
        .unwrap_or_else(|error| panic!("evaluate {task_id}: {error}"));
    Episode {
        task_id: task_id.to_string(),
        user,
        plan,
        termination,
        user_replies,
        evaluation,
    }
}

/// Runs the reference driver once for all `episodes` (each a list of gold calls) and returns its
/// per-episode answers.
fn reference_hashes(domain: &str, plans: &[&[Action]]) -> Vec<Value> {
    let episodes: Vec<Value> = plans
        .iter()
        .map(|plan| {
            let calls: Vec<Value> = plan
                .iter()
                .filter_map(|action| match action {
                    Action::ToolCall { call } => {
                        Some(json!({ "name": call.name, "arguments": call.arguments }))
                    }
                    Action::Message { .. } => None,
                })
                .collect();
            json!({ "domain": domain, "calls": calls })
        })
        .collect();
    let driver = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/tau2_reference.py");
    let mut child = Command::new("python3")
        .arg(&driver)
        .env("KILN_HOME", default_data_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is required to run the tau2 reference (install Python 3)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(Value::Array(episodes).to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "reference driver failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answers: Vec<Value> =
        serde_json::from_slice(&output.stdout).expect("the reference driver prints a JSON list");
    assert_eq!(answers.len(), plans.len());
    answers
}

async fn run_domain(env_id: &str, domain: &str) -> (Vec<Episode>, Vec<Value>) {
    let factory = catalog::open(env_id, &context()).unwrap_or_else(|error| panic!("{error}"));
    let task_ids = factory.task_ids("base").unwrap();
    let mut episodes = Vec::new();
    for task_id in &task_ids {
        for user in ["none", "scripted"] {
            episodes.push(run_oracle(factory.as_ref(), task_id, user).await);
        }
    }
    let plans: Vec<&[Action]> = episodes
        .iter()
        .filter(|episode| episode.user == "none")
        .map(|episode| episode.plan.as_slice())
        .collect();
    let reference = reference_hashes(domain, &plans);
    (episodes, reference)
}

/// Checks every episode's final DB hash against the reference's for the same task.
fn assert_hashes_match_reference(episodes: &[Episode], reference: &[Value], initial_prefix: &str) {
    for (index, answer) in reference.iter().enumerate() {
        let initial = answer["initial_db_hash"].as_str().unwrap();
        assert!(
            initial.starts_with(initial_prefix),
            "reference initial hash {initial} (expected {initial_prefix}…)"
        );
        let expected = answer["db_hash"].as_str().unwrap();
        for episode in &episodes[2 * index..2 * index + 2] {
            assert_eq!(
                episode.evaluation.db_hash.as_deref(),
                Some(expected),
                "task {} (user {}): final DB hash differs from the reference",
                episode.task_id,
                episode.user
            );
        }
    }
}

fn assert_stops(episode: &Episode) {
    match episode.user {
        "none" => assert_eq!(
            episode.termination,
            Termination::AgentStop,
            "task {}",
            episode.task_id
        ),
        _ => {
            assert!(
                matches!(
                    episode.termination,
                    Termination::AgentStop | Termination::UserStop | Termination::Transfer
                ),
                "task {} (scripted): ended by {:?}",
                episode.task_id,
                episode.termination
            );
            assert!(
                episode.user_replies >= 1,
                "task {}: the scripted user answered no message",
                episode.task_id
            );
        }
    }
}

#[tokio::test]
async fn airline_oracle_succeeds_on_every_task_and_matches_the_reference_db() {
    let (episodes, reference) = run_domain("tau2-airline", "airline").await;
    assert_eq!(episodes.len(), 2 * 50);
    for episode in &episodes {
        assert_stops(episode);
        let evaluation = &episode.evaluation;
        assert!(
            evaluation.success,
            "airline task {} (user {}): reward {} components {:?}",
            episode.task_id, episode.user, evaluation.reward, evaluation.components
        );
        assert_eq!(evaluation.reward, 1.0);
        assert!(
            evaluation.components.contains_key("DB")
                && evaluation.components.contains_key("COMMUNICATE")
        );
    }
    assert_hashes_match_reference(&episodes, &reference, "124e39a664b56402");
}

#[tokio::test]
async fn retail_oracle_gets_full_db_reward_on_every_task_and_matches_the_reference_db() {
    let (episodes, reference) = run_domain("tau2-retail", "retail").await;
    assert_eq!(episodes.len(), 2 * 114);
    let mut unjudged_tasks = 0;
    for episode in &episodes {
        assert_stops(episode);
        let evaluation = &episode.evaluation;
        let db = &evaluation.components["DB"];
        assert_eq!(
            db.value,
            Some(1.0),
            "retail task {} (user {}): {:?}",
            episode.task_id,
            episode.user,
            db.detail
        );
        assert!(
            evaluation.success_judged_only,
            "retail task {}: {:?}",
            episode.task_id, evaluation.components
        );
        let nl_unjudged = evaluation
            .components
            .get("NL_ASSERTION")
            .is_some_and(|nl| nl.unjudged);
        assert_eq!(
            evaluation.success, !nl_unjudged,
            "task {}: unjudged NL assertions must block success",
            episode.task_id
        );
        if nl_unjudged && episode.user == "none" {
            unjudged_tasks += 1;
        }
    }
    assert_eq!(unjudged_tasks, 40, "40 retail tasks carry NL assertions");
    assert_hashes_match_reference(&episodes, &reference, "b25c9cb211f5efca");
}
