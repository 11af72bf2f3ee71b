//! A run against a real HTTP model: kiln-models' `ScriptedServer` (feature `testing`) serves an
//! OpenAI-compatible script on a loopback port; the `kiln` binary runs as a separate process. One task gets a valid tool call, one a malformed
//! tool call, one HTTP 500s; each is recorded in its outcome and the run completes.

mod common;

use std::path::Path;

use common::{assert_success, kiln, outcome_lines, stdout, unique_keys};
use kiln_models::testing::{Matcher, Rule, Script, ScriptedResponse, ScriptedServer};
use kiln_protocol::{Termination, Trajectory};
use serde_json::json;

/// The scripted OpenAI-compatible server, on a runtime of its own inside the test process: the
/// `kiln` binary under test is a separate process and talks real HTTP to it. Stops on drop.
struct ScriptedLlm {
    server: Option<ScriptedServer>,
    runtime: tokio::runtime::Runtime,
    base_url: String,
}

impl ScriptedLlm {
    fn start(script: Script) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a tokio runtime for the scripted server");
        let server = runtime
            .block_on(ScriptedServer::start(script))
            .expect("the scripted server binds a loopback port");
        let base_url = server.base_url();
        assert!(
            base_url.starts_with("http://127.0.0.1:"),
            "unexpected base url `{base_url}`"
        );
        Self {
            server: Some(server),
            runtime,
            base_url,
        }
    }
}

impl Drop for ScriptedLlm {
    fn drop(&mut self) {
        // Dropping the server inside its runtime lets it shut its listener down cleanly.
        let _guard = self.runtime.enter();
        self.server.take();
    }
}

/// Airline test-split tasks and a phrase of the scripted user's first message in each.
const VALID_TASK: (&str, &str) = ("6", "added insurance");
const MALFORMED_TASK: (&str, &str) = ("8", "ORD to PHL");
const FAILING_TASK: (&str, &str) = ("13", "ATL to LAX");

fn script() -> Script {
    let about = |phrase: &str| Matcher::AnyMessageContains {
        text: phrase.to_string(),
    };
    Script::new(vec![
        Rule::when(
            about(FAILING_TASK.1),
            ScriptedResponse::status(500, "upstream model crashed"),
        ),
        Rule {
            matcher: Some(about(MALFORMED_TASK.1)),
            response: ScriptedResponse::MalformedToolCall {
                name: "get_user_details".into(),
                raw_arguments: "{\"user_id\": \"sophia_silva_7557\"".into(),
            },
            times: Some(1),
        },
        Rule {
            matcher: Some(about(VALID_TASK.1)),
            response: ScriptedResponse::tool_call(
                "get_reservation_details",
                json!({"reservation_id": "PEP4E0"}),
            ),
            times: Some(1),
        },
    ])
}

fn trajectory_of(dir: &Path, task_id: &str) -> Trajectory {
    let text = std::fs::read_to_string(dir.join("trajectories.jsonl")).unwrap();
    text.lines()
        .map(|line| serde_json::from_str::<Trajectory>(line).unwrap())
        .find(|trajectory| trajectory.task_id == task_id)
        .unwrap_or_else(|| panic!("no trajectory for task {task_id}"))
}

#[test]
fn valid_malformed_and_failing_model_replies_are_each_recorded() {
    let work = tempfile::tempdir().unwrap();
    let server = ScriptedLlm::start(script());
    let model = format!("openai:scripted@{}", server.base_url);
    let tasks = format!("{},{},{}", VALID_TASK.0, MALFORMED_TASK.0, FAILING_TASK.0);
    let output = kiln(
        work.path(),
        &[
            "run",
            "--env",
            "tau2-airline",
            "--tasks",
            &tasks,
            "--model",
            &model,
            "--user",
            "scripted",
            "--out",
            "run",
        ],
    );
    assert_success(&output);
    let run = work.path().join("run");
    let outcomes = outcome_lines(&run);
    assert_eq!(unique_keys(&outcomes).len(), 3);
    let outcome = |task: &str| {
        outcomes
            .iter()
            .find(|outcome| outcome.task_id == task)
            .unwrap()
    };

    // The valid tool call ran against the environment, then the default reply stopped the agent.
    let valid = outcome(VALID_TASK.0);
    assert_eq!(valid.error, None, "{valid:?}");
    assert_eq!(valid.termination, Termination::AgentStop);
    assert_eq!(valid.model, model);
    assert!(
        valid.usage.calls >= 2 && valid.usage.total_tokens() > 0,
        "{:?}",
        valid.usage
    );
    let trajectory = trajectory_of(&run, VALID_TASK.0);
    let first_action = &trajectory.steps[0].actions[0];
    let observation = serde_json::to_string(&first_action.observation).unwrap();
    assert!(
        observation.contains("sophia_taylor_9065"),
        "the reservation was looked up: {observation}"
    );

    // The malformed arguments are kept verbatim in the trajectory, and the episode still ends.
    let malformed = outcome(MALFORMED_TASK.0);
    let trajectory = serde_json::to_string(&trajectory_of(&run, MALFORMED_TASK.0)).unwrap();
    assert!(
        trajectory.contains(r#"{\"user_id\": \"sophia_silva_7557\""#),
        "{trajectory}"
    );
    assert!(!malformed.success, "{malformed:?}");

    // HTTP 500 on every call: a model error with the status in the message.
    let failing = outcome(FAILING_TASK.0);
    assert_eq!(failing.termination, Termination::ModelError, "{failing:?}");
    let error = failing.error.as_deref().unwrap_or_default();
    assert!(error.contains("500"), "{error}");

    let report = std::fs::read_to_string(run.join("report.md")).unwrap();
    assert!(report.contains("| Episodes with errors | 1 |"), "{report}");
    assert!(report.contains("| 13 | 0 | model_error |"), "{report}");
    assert!(
        stdout(&output).contains("3/3 recorded, 1 with errors"),
        "{}",
        stdout(&output)
    );
}
