//! The episode loop against a small in-test environment and scripted model. These doubles test
//! the loop's control flow and records, not a benchmark.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use kiln_environments::{EnvError, EnvErrorKind, Environment, Evaluation};
use kiln_harness::events::{AfterToolEvent, BeforeToolEvent};
use kiln_harness::processor::{ConfigError, ProcessorKind};
use kiln_harness::spec::{SpecFormat, parse_spec};
use kiln_harness::{Harness, Processor, ProcessorError, ProcessorRegistry, run_episode};
use kiln_models::{ChatModel, ChatRequest, ChatResponse, ModelError, ModelErrorKind, ModelFactory};
use kiln_protocol::{
    Action, ComponentScore, EnvInfo, Hook, Message, ModelSpec, Observation, Role, StepResult,
    TaskSpec, Termination, ToolCall, ToolSchema, Usage,
};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// Test doubles
// ---------------------------------------------------------------------------------------------

type Script = Box<dyn Fn(usize) -> Result<ChatResponse, ModelError> + Send + Sync>;

/// A model that answers call `n` with `script(n)` and remembers every request.
struct ScriptedModel {
    script: Script,
    delay: Duration,
    requests: Mutex<Vec<ChatRequest>>,
}

#[async_trait]
impl ChatModel for ScriptedModel {
    fn label(&self) -> String {
        "scripted".into()
    }
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ModelError> {
        let index = {
            let mut requests = self.requests.lock().unwrap();
            requests.push(request.clone());
            requests.len() - 1
        };
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        (self.script)(index)
    }
}

struct ScriptedFactory {
    model: Arc<ScriptedModel>,
}

impl ScriptedFactory {
    fn new(script: Script) -> Self {
        Self::with_delay(script, Duration::ZERO)
    }
    fn with_delay(script: Script, delay: Duration) -> Self {
        Self {
            model: Arc::new(ScriptedModel {
                script,
                delay,
                requests: Mutex::new(Vec::new()),
            }),
        }
    }
    fn requests(&self) -> Vec<ChatRequest> {
        self.model.requests.lock().unwrap().clone()
    }
}

#[async_trait]
impl ModelFactory for ScriptedFactory {
    fn label(&self) -> String {
        "scripted-factory".into()
    }
    fn for_episode(&self, _gold_plan: Option<&[Action]>) -> Result<Arc<dyn ChatModel>, ModelError> {
        Ok(self.model.clone())
    }
}

fn reply(text: &str) -> Result<ChatResponse, ModelError> {
    Ok(ChatResponse {
        message: Message::assistant(text),
        usage: Usage {
            prompt_tokens: 10,
            completion_tokens: 2,
            calls: 1,
        },
        finish_reason: Some("stop".into()),
        tokens: None,
    })
}

fn native_calls(calls: &[(&str, Value)]) -> Result<ChatResponse, ModelError> {
    let calls = calls
        .iter()
        .enumerate()
        .map(|(index, (name, arguments))| ToolCall {
            id: format!("native_{index}"),
            name: (*name).into(),
            arguments: arguments.clone(),
        })
        .collect();
    Ok(ChatResponse {
        message: Message::assistant_tool_calls("", calls),
        usage: Usage {
            prompt_tokens: 10,
            completion_tokens: 5,
            calls: 1,
        },
        finish_reason: Some("tool_calls".into()),
        tokens: None,
    })
}

/// A tiny tool environment: `lookup` returns a record, `fail` returns an error result, a message
/// containing `bye` ends the episode as a user stop. Reward 1 iff a lookup of id "1" happened
/// and the episode ended by a stop.
struct TestEnv {
    fail_reset: bool,
    actions: Vec<Action>,
    evaluated: Vec<Termination>,
}

impl TestEnv {
    fn new() -> Self {
        Self {
            fail_reset: false,
            actions: Vec::new(),
            evaluated: Vec::new(),
        }
    }
}

fn lookup_tool() -> ToolSchema {
    ToolSchema {
        name: "lookup".into(),
        description: "Looks up a record by id.".into(),
        parameters: json!({"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]}),
    }
}

#[async_trait]
impl Environment for TestEnv {
    async fn reset(&mut self, _task: &TaskSpec) -> Result<EnvInfo, EnvError> {
        if self.fail_reset {
            return Err(EnvError::new(EnvErrorKind::Data, "records.json is missing"));
        }
        Ok(EnvInfo {
            env: "test-env".into(),
            instructions: "Look up record 1, then say bye.".into(),
            tools: vec![lookup_tool()],
            opening: vec![
                Message::assistant("Hi! How can I help you today?"),
                Message::user("I need record 1."),
            ],
            admissible_actions: None,
        })
    }

    async fn step(&mut self, action: &Action) -> Result<StepResult, EnvError> {
        self.actions.push(action.clone());
        let (observation, done) = match action {
            Action::ToolCall { call } if call.name == "lookup" => (
                Observation::ToolResult {
                    call_id: call.id.clone(),
                    name: call.name.clone(),
                    content: format!("record {}", call.arguments["id"]),
                    is_error: false,
                },
                false,
            ),
            Action::ToolCall { call } => (
                Observation::ToolResult {
                    call_id: call.id.clone(),
                    name: call.name.clone(),
                    content: format!("Error: Tool '{}' not found.", call.name),
                    is_error: true,
                },
                false,
            ),
            Action::Message { text } => (
                Observation::User {
                    text: if text.contains("bye") {
                        "###STOP###".into()
                    } else {
                        "ok".into()
                    },
                },
                text.contains("bye"),
            ),
        };
        Ok(StepResult {
            observation,
            done,
            termination: done.then_some(Termination::UserStop),
            admissible_actions: None,
            info: Value::Null,
        })
    }

    async fn evaluate(&mut self, termination: Termination) -> Result<Evaluation, EnvError> {
        self.evaluated.push(termination);
        let looked_up = self.actions.iter().any(|action| {
            matches!(action, Action::ToolCall { call } if call.name == "lookup" && call.arguments["id"] == "1")
        });
        let stopped = matches!(termination, Termination::UserStop | Termination::AgentStop);
        let value = if looked_up && stopped { 1.0 } else { 0.0 };
        let components = BTreeMap::from([(
            "DB".to_string(),
            ComponentScore {
                value: Some(value),
                unjudged: false,
                detail: None,
            },
        )]);
        Ok(Evaluation {
            reward: value,
            components,
            success: value == 1.0,
            success_judged_only: value == 1.0,
            db_hash: Some("abc".into()),
            info: Value::Null,
        })
    }

    fn oracle_plan(&self) -> Option<Vec<Action>> {
        None
    }
}

fn task(timeout_s: u64) -> TaskSpec {
    TaskSpec {
        schema: 1,
        run_id: "run-1".into(),
        env: "test-env".into(),
        split: "test".into(),
        task_id: "1".into(),
        attempt: 0,
        harness_hash: String::new(),
        model: ModelSpec::Oracle,
        env_options: Value::Null,
        seed: 42,
        timeout_s,
    }
}

fn harness(toml: &str) -> Harness {
    Harness::new(&parse_spec(toml, SpecFormat::Toml).unwrap()).unwrap()
}

const BASIC: &str = r#"
name = "basic"
[[processor]]
id = "system"
kind = "system_prompt"
config = { template = "POLICY: {instructions}" }
[[processor]]
id = "parser"
kind = "tool_parser"
[[processor]]
id = "retry"
kind = "parse_retry"
after = ["parser"]
config = { max_retries = 2 }
[[processor]]
id = "limit"
kind = "step_limit"
config = { max_steps = 3 }
[[processor]]
id = "loops"
kind = "loop_detection"
config = { warn_after = 2, stop_after = 3 }
"#;

fn action_names(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .map(|action| match action {
            Action::ToolCall { call } => format!("{}({})", call.name, call.arguments),
            Action::Message { text } => format!("say {text}"),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_successful_episode_records_everything() {
    let harness = harness(BASIC);
    let models = ScriptedFactory::new(Box::new(|call| match call {
        0 => native_calls(&[("lookup", json!({"id": "1"}))]),
        _ => reply("Here is record 1. bye"),
    }));
    let mut env = TestEnv::new();
    let result = run_episode(&harness, &models, &mut env, &task(0), Some("worker-7")).await;
    let outcome = &result.outcome;

    assert_eq!(outcome.termination, Termination::UserStop);
    assert!(outcome.success);
    assert_eq!(outcome.reward, 1.0);
    assert_eq!(outcome.error, None);
    assert_eq!(outcome.steps, 2);
    assert_eq!(outcome.harness_hash, harness.hash());
    assert_eq!(outcome.model, "scripted");
    assert_eq!(outcome.worker.as_deref(), Some("worker-7"));
    assert_eq!(outcome.db_hash.as_deref(), Some("abc"));
    assert_eq!(
        outcome.usage,
        Usage {
            prompt_tokens: 20,
            completion_tokens: 7,
            calls: 2
        }
    );
    assert!(outcome.finished_at >= outcome.started_at);
    assert_eq!(env.evaluated, [Termination::UserStop]);

    let trajectory = &result.trajectory;
    assert_eq!(trajectory.harness_hash, harness.hash());
    assert_eq!(trajectory.opening.len(), 3);
    assert_eq!(
        trajectory.opening[0],
        Message::system("POLICY: Look up record 1, then say bye.")
    );
    assert_eq!(trajectory.steps.len(), 2);
    assert_eq!(trajectory.steps[0].actions.len(), 1);
    assert_eq!(trajectory.steps[0].model.raw_tool_calls.len(), 1);
    assert_eq!(
        trajectory.steps[1].actions[0].observation,
        Observation::User {
            text: "###STOP###".into()
        }
    );
    // Deltas: step 0 had nothing new beyond the opening; step 1 sees the assistant call and its result.
    assert!(trajectory.steps[0].prompt_is_delta);
    assert!(trajectory.steps[0].prompt.is_empty());
    let roles: Vec<Role> = trajectory.steps[1].prompt.iter().map(|m| m.role).collect();
    assert_eq!(roles, [Role::Assistant, Role::Tool]);

    // The second request carries the system prompt, opening, call and result, with native tools.
    let requests = models.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].messages.len(), 5);
    assert_eq!(
        requests[1].messages[4].tool_call_id.as_deref(),
        Some("native_0")
    );
    assert_eq!(requests[1].tools, [lookup_tool()]);
    assert_eq!(requests[0].sampling.seed, Some(42));
}

#[tokio::test]
async fn a_malformed_reply_is_retried_then_parsed() {
    let harness = harness(BASIC);
    let models = ScriptedFactory::new(Box::new(|call| match call {
        0 => reply("<tool_call>{\"name\": \"lookup\", \"arguments\": {\"id\": </tool_call>"),
        1 => reply("<tool_call>{\"name\": \"lookup\", \"arguments\": {\"id\": \"1\"}}</tool_call>"),
        _ => reply("bye"),
    }));
    let mut env = TestEnv::new();
    let result = run_episode(&harness, &models, &mut env, &task(0), None).await;

    assert_eq!(result.outcome.termination, Termination::UserStop);
    assert!(result.outcome.success);
    assert_eq!(
        action_names(&env.actions),
        ["lookup({\"id\":\"1\"})", "say bye"]
    );
    let first = &result.trajectory.steps[0];
    assert_eq!(first.model.retries, 1);
    assert_eq!(first.model.usage.calls, 2);
    assert!(
        first.events.iter().any(|event| event["parse_retry"] == 1),
        "{:?}",
        first.events
    );

    // The retry shows the model its bad reply and the corrective message.
    let requests = models.requests();
    let retry = &requests[1].messages;
    let corrective = retry.last().unwrap();
    assert_eq!(corrective.role, Role::User);
    assert!(
        corrective.content.contains("could not be used"),
        "{}",
        corrective.content
    );
    assert_eq!(retry[retry.len() - 2].role, Role::Assistant);
    // The bad reply is not kept in the conversation: the next step sees only the parsed call.
    let next = &requests[2].messages;
    assert!(!next.iter().any(|m| m.content.contains("could not be used")));
    assert_eq!(next[next.len() - 2].tool_calls[0].id, "call_0_0");
}

#[tokio::test]
async fn replies_that_never_parse_end_in_parse_failure() {
    let harness = harness(BASIC);
    let models = ScriptedFactory::new(Box::new(|_| reply("<tool_call>not json</tool_call>")));
    let mut env = TestEnv::new();
    let result = run_episode(&harness, &models, &mut env, &task(0), None).await;

    assert_eq!(result.outcome.termination, Termination::ParseFailure);
    let error = result.outcome.error.as_deref().unwrap();
    assert!(error.contains("<tool_call>"), "{error}");
    assert_eq!(models.requests().len(), 3, "one call plus two retries");
    assert!(env.actions.is_empty());
    assert_eq!(env.evaluated, [Termination::ParseFailure]);
    assert_eq!(result.outcome.reward, 0.0);
    assert_eq!(result.trajectory.steps[0].model.retries, 2);
}

#[tokio::test]
async fn a_model_error_ends_the_episode_and_is_recorded() {
    let harness = harness(BASIC);
    let models = ScriptedFactory::new(Box::new(|call| match call {
        0 => native_calls(&[("lookup", json!({"id": "1"}))]),
        _ => Err(ModelError::new(
            ModelErrorKind::Http,
            "http://127.0.0.1:9/v1 answered 503 Service Unavailable",
        )),
    }));
    let mut env = TestEnv::new();
    let result = run_episode(&harness, &models, &mut env, &task(0), None).await;

    assert_eq!(result.outcome.termination, Termination::ModelError);
    let error = result.outcome.error.as_deref().unwrap();
    assert!(error.contains("503 Service Unavailable"), "{error}");
    assert!(!result.outcome.success);
    // The environment still scored the episode it saw.
    assert_eq!(env.evaluated, [Termination::ModelError]);
    assert_eq!(result.outcome.components["DB"].value, Some(0.0));
    assert_eq!(result.outcome.steps, 2);
    let failed = &result.trajectory.steps[1];
    assert!(failed.actions.is_empty());
    assert!(
        failed
            .events
            .iter()
            .any(|event| event["model_error"].is_string())
    );
}

#[tokio::test]
async fn the_step_limit_stops_the_episode() {
    let harness = harness(BASIC);
    let models = ScriptedFactory::new(Box::new(|call| {
        native_calls(&[("lookup", json!({"id": call.to_string()}))])
    }));
    let mut env = TestEnv::new();
    let result = run_episode(&harness, &models, &mut env, &task(0), None).await;

    assert_eq!(result.outcome.termination, Termination::MaxSteps);
    assert_eq!(result.outcome.error, None);
    assert_eq!(result.outcome.steps, 3);
    assert_eq!(models.requests().len(), 3);
    assert_eq!(env.actions.len(), 3);
    let end = result
        .trajectory
        .events
        .iter()
        .find(|e| e.get("end").is_some())
        .unwrap();
    assert!(
        end["end"]["reason"]
            .as_str()
            .unwrap()
            .contains("step limit of 3")
    );
}

#[tokio::test]
async fn a_repeated_action_is_warned_about_then_stopped() {
    let spec = BASIC.replace("max_steps = 3", "max_steps = 50");
    let harness = harness(&spec);
    let models = ScriptedFactory::new(Box::new(|_| {
        native_calls(&[("lookup", json!({"id": "9"}))])
    }));
    let mut env = TestEnv::new();
    let result = run_episode(&harness, &models, &mut env, &task(0), None).await;

    assert_eq!(result.outcome.termination, Termination::LoopDetected);
    assert_eq!(result.outcome.steps, 3);
    // After the second identical call the advice is in the third request.
    let requests = models.requests();
    let advice = requests[2].messages.last().unwrap();
    assert_eq!(advice.role, Role::User);
    assert!(
        advice.content.contains("same action 2 times"),
        "{}",
        advice.content
    );
    assert!(
        !requests[1]
            .messages
            .iter()
            .any(|m| m.content.contains("same action"))
    );
    let notes: Vec<&Value> = result
        .trajectory
        .steps
        .iter()
        .flat_map(|s| &s.events)
        .collect();
    assert!(
        notes
            .iter()
            .any(|n| n["processor"] == "loops" && n["note"]["loop_warning"] == 2)
    );
}

#[tokio::test]
async fn tool_calls_of_one_turn_are_stepped_one_at_a_time() {
    let counter = Arc::new(Mutex::new(Vec::new()));
    let mut registry = ProcessorRegistry::with_builtins();
    registry.register(Arc::new(WatchKind {
        seen: counter.clone(),
    }));
    let spec = parse_spec(
        r#"
name = "watched"
[[processor]]
id = "watch"
kind = "watch"
[[processor]]
id = "parser"
kind = "tool_parser"
"#,
        SpecFormat::Toml,
    )
    .unwrap();
    let harness = Harness::with_registry(&spec, Arc::new(registry)).unwrap();
    let models = ScriptedFactory::new(Box::new(|call| match call {
        0 => native_calls(&[
            ("lookup", json!({"id": "1"})),
            ("forbidden", json!({})),
            ("lookup", json!({"id": "2"})),
        ]),
        _ => reply("bye"),
    }));
    let mut env = TestEnv::new();
    let result = run_episode(&harness, &models, &mut env, &task(0), None).await;

    // The vetoed call never reached the environment; the others arrived one by one, in order.
    assert_eq!(
        action_names(&env.actions),
        [
            "lookup({\"id\":\"1\"})",
            "lookup({\"id\":\"2\"})",
            "say bye"
        ]
    );
    assert_eq!(
        *counter.lock().unwrap(),
        [
            "before lookup",
            "after lookup",
            "before forbidden",
            "after forbidden",
            "before lookup",
            "after lookup",
            "before bye",
            "after bye"
        ]
    );
    let step = &result.trajectory.steps[0];
    assert_eq!(step.actions.len(), 3);
    assert_eq!(step.actions[1].info, json!({"vetoed": true}));
    assert_eq!(
        step.actions[1].observation.text(),
        "Error: forbidden is not allowed"
    );
    // after_tool edited the first observation; the env's original is noted.
    assert_eq!(step.actions[0].observation.text(), "record \"1\" (checked)");
    assert!(step.events.iter().any(|e| e["observation_edited"] == true));
    // Each call is answered by its own tool message before the next request.
    let next = &models.requests()[1].messages;
    let answered: Vec<&str> = next
        .iter()
        .filter(|m| m.role == Role::Tool)
        .map(|m| m.tool_call_id.as_deref().unwrap())
        .collect();
    assert_eq!(answered, ["native_0", "native_1", "native_2"]);
    assert_eq!(result.outcome.termination, Termination::UserStop);
}

#[tokio::test]
async fn a_failing_processor_ends_the_episode_as_a_harness_error() {
    let mut registry = ProcessorRegistry::with_builtins();
    registry.register(Arc::new(WatchKind {
        seen: Arc::new(Mutex::new(Vec::new())),
    }));
    let spec = parse_spec(
        "name = \"w\"\n[[processor]]\nid = \"watch\"\nkind = \"watch\"\n",
        SpecFormat::Toml,
    )
    .unwrap();
    let harness = Harness::with_registry(&spec, Arc::new(registry)).unwrap();
    let models = ScriptedFactory::new(Box::new(|_| native_calls(&[("explode", json!({}))])));
    let mut env = TestEnv::new();
    let result = run_episode(&harness, &models, &mut env, &task(0), None).await;

    assert_eq!(result.outcome.termination, Termination::HarnessError);
    let error = result.outcome.error.as_deref().unwrap();
    assert!(
        error.contains("processor `watch` failed at after_tool"),
        "{error}"
    );
    assert_eq!(env.evaluated, [Termination::HarnessError]);
}

#[tokio::test]
async fn a_failed_reset_is_an_env_error_without_evaluation() {
    let harness = harness(BASIC);
    let models = ScriptedFactory::new(Box::new(|_| reply("bye")));
    let mut env = TestEnv::new();
    env.fail_reset = true;
    let result = run_episode(&harness, &models, &mut env, &task(0), None).await;

    assert_eq!(result.outcome.termination, Termination::EnvError);
    assert!(
        result
            .outcome
            .error
            .as_deref()
            .unwrap()
            .contains("records.json")
    );
    assert!(env.evaluated.is_empty());
    assert!(models.requests().is_empty());
    assert!(result.outcome.components.is_empty());
}

#[tokio::test]
async fn the_episode_timeout_is_honoured() {
    let harness = harness(BASIC);
    let models = ScriptedFactory::with_delay(Box::new(|_| reply("bye")), Duration::from_secs(30));
    let mut env = TestEnv::new();
    let started = std::time::Instant::now();
    let result = run_episode(&harness, &models, &mut env, &task(1), None).await;

    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(result.outcome.termination, Termination::Timeout);
    assert!(result.outcome.error.as_deref().unwrap().contains("1s"));
    assert!(!result.outcome.success);
    assert_eq!(env.evaluated, [Termination::Timeout]);
}

#[tokio::test]
async fn full_prompt_recording_keeps_the_exact_request() {
    let spec = format!(
        "{BASIC}\n[[processor]]\nid = \"recorder\"\nkind = \"trajectory_recorder\"\nconfig = {{ prompts = \"full\" }}\n"
    );
    let harness = harness(&spec);
    let models = ScriptedFactory::new(Box::new(|call| match call {
        0 => native_calls(&[("lookup", json!({"id": "1"}))]),
        _ => reply("bye"),
    }));
    let mut env = TestEnv::new();
    let result = run_episode(&harness, &models, &mut env, &task(0), None).await;

    let requests = models.requests();
    for (step, request) in result.trajectory.steps.iter().zip(&requests) {
        assert!(!step.prompt_is_delta);
        assert_eq!(step.prompt, request.messages);
    }
}

#[tokio::test]
async fn the_text_harness_talks_to_a_model_without_tool_support() {
    let harness = Harness::new(&kiln_harness::builtin_harness("react-text").unwrap()).unwrap();
    let models = ScriptedFactory::new(Box::new(|call| match call {
        0 => reply("Thought: I need the record.\nAction: lookup[{\"id\": \"1\"}]"),
        _ => reply("Record 1 found. bye"),
    }));
    let mut env = TestEnv::new();
    let result = run_episode(&harness, &models, &mut env, &task(0), None).await;

    assert_eq!(result.outcome.termination, Termination::UserStop);
    assert!(result.outcome.success);
    let requests = models.requests();
    assert!(requests.iter().all(|r| r.tools.is_empty()));
    assert_eq!(requests[0].stop, ["Observation:"]);
    let system = &requests[0].messages[0];
    assert!(
        system
            .content
            .contains("- lookup: Looks up a record by id."),
        "{}",
        system.content
    );
    assert!(
        system.content.contains("Action: TOOL_NAME["),
        "{}",
        system.content
    );
    // The tool result reaches the model as text.
    let last = requests[1].messages.last().unwrap();
    assert_eq!(last.role, Role::User);
    assert_eq!(last.content, "Observation: record \"1\"");
    assert!(
        requests[1]
            .messages
            .iter()
            .all(|m| m.role != Role::Tool && m.tool_calls.is_empty())
    );
}

#[test]
fn the_episode_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let harness = harness(BASIC);
    let models = ScriptedFactory::new(Box::new(|_| reply("bye")));
    let mut env = TestEnv::new();
    let task = task(0);
    let future = run_episode(&harness, &models, &mut env, &task, None);
    assert_send(&future);
}

// ---------------------------------------------------------------------------------------------
// A test processor kind: logs before/after tool hooks, vetoes `forbidden`, annotates lookups,
// and fails on `explode`.
// ---------------------------------------------------------------------------------------------

struct WatchKind {
    seen: Arc<Mutex<Vec<String>>>,
}

impl ProcessorKind for WatchKind {
    fn name(&self) -> &'static str {
        "watch"
    }
    fn summary(&self) -> &'static str {
        "test processor"
    }
    fn hooks(&self) -> &'static [Hook] {
        &[Hook::BeforeTool, Hook::AfterTool]
    }
    fn group(&self) -> Option<&'static str> {
        None
    }
    fn normalize_config(&self, _config: &Value) -> Result<Value, ConfigError> {
        Ok(json!({}))
    }
    fn instantiate(&self, _config: &Value) -> Result<Box<dyn Processor>, ConfigError> {
        Ok(Box::new(Watch {
            seen: self.seen.clone(),
        }))
    }
}

struct Watch {
    seen: Arc<Mutex<Vec<String>>>,
}

fn label(action: &Action) -> String {
    match action {
        Action::ToolCall { call } => call.name.clone(),
        Action::Message { text } => text.clone(),
    }
}

#[async_trait]
impl Processor for Watch {
    async fn before_tool(&mut self, event: &mut BeforeToolEvent<'_>) -> Result<(), ProcessorError> {
        let name = label(event.action());
        self.seen.lock().unwrap().push(format!("before {name}"));
        if name == "forbidden" {
            event.veto_with_error("Error: forbidden is not allowed");
        }
        Ok(())
    }

    async fn after_tool(&mut self, event: &mut AfterToolEvent<'_>) -> Result<(), ProcessorError> {
        let name = label(event.action());
        self.seen.lock().unwrap().push(format!("after {name}"));
        if name == "explode" {
            return Err(ProcessorError::new("boom"));
        }
        if let Observation::ToolResult { content, .. } = event.observation_mut()
            && name == "lookup"
            && content.contains("\"1\"")
        {
            content.push_str(" (checked)");
        }
        Ok(())
    }
}
