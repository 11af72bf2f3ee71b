//! Script processors (`kind = "script"`) in the episode loop: each hard limit, forbidden calls,
//! the field rules of every hook, the seeded RNG, a script that turns a looping agent into a
//! solved episode, canonical hashing of inline and file sources, and `validate` positions. The
//! environment and model are small in-test doubles; the shipped loop breaker also runs on a
//! generated ALFWorld task.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use kiln_environments::alfworld::AlfworldFactory;
use kiln_environments::{EnvContext, EnvError, Environment, Evaluation, default_data_dir};
use kiln_harness::builtin::script::{ScriptErrorKind, called_functions, script_surface};
use kiln_harness::commands::{show_file, validate_file};
use kiln_harness::spec::{SpecFormat, parse_spec};
use kiln_harness::{Harness, HarnessErrorKind, Hook, run_episode};
use kiln_models::{ChatModel, ChatRequest, ChatResponse, ModelError, ModelFactory};
use kiln_protocol::{
    Action, ComponentScore, EnvInfo, Message, ModelSpec, Observation, StepResult, TaskSpec,
    Termination, Trajectory, Usage,
};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// Test doubles
// ---------------------------------------------------------------------------------------------

/// A room with a shelf and a door. `look` describes where the agent stands; the apple can be
/// taken at the shelf. Lists admissible actions like ALFWorld.
struct Room {
    at: &'static str,
    taken: bool,
    commands: Arc<Mutex<Vec<String>>>,
}

impl Room {
    fn new() -> Self {
        Self {
            at: "middle",
            taken: false,
            commands: Arc::default(),
        }
    }

    fn admissible(&self) -> Vec<String> {
        let actions: &[&str] = if self.at == "shelf" {
            &[
                "look",
                "take apple 1 from shelf 1",
                "inventory",
                "go to door 1",
            ]
        } else {
            &["look", "inventory", "go to shelf 1", "go to door 1"]
        };
        actions.iter().map(|action| action.to_string()).collect()
    }

    fn describe(&self) -> String {
        match self.at {
            "shelf" => "You are at shelf 1. On the shelf 1, you see an apple 1.".into(),
            "door" => "You are at door 1. The door 1 is closed.".into(),
            _ => "You are in the middle of a room. You see a shelf 1 and a door 1.".into(),
        }
    }
}

#[async_trait]
impl Environment for Room {
    async fn reset(&mut self, _task: &TaskSpec) -> Result<EnvInfo, EnvError> {
        Ok(EnvInfo {
            env: "room".into(),
            instructions: "Take the apple.".into(),
            tools: Vec::new(),
            opening: vec![Message::user(format!(
                "{} Your task is to: take the apple.",
                self.describe()
            ))],
            admissible_actions: Some(self.admissible()),
        })
    }

    async fn step(&mut self, action: &Action) -> Result<StepResult, EnvError> {
        let command = match action {
            Action::Message { text } => text.clone(),
            Action::ToolCall { call } => format!("tool {}", call.name),
        };
        self.commands.lock().unwrap().push(command.clone());
        let text = if !self.admissible().contains(&command) {
            "Nothing happens.".to_string()
        } else {
            match command.as_str() {
                "look" => self.describe(),
                "inventory" => "You are not carrying anything.".into(),
                "go to shelf 1" => {
                    self.at = "shelf";
                    self.describe()
                }
                "go to door 1" => {
                    self.at = "door";
                    self.describe()
                }
                _ => {
                    self.taken = true;
                    "You pick up the apple 1 from the shelf 1.".into()
                }
            }
        };
        Ok(StepResult {
            observation: Observation::Text { text },
            done: self.taken,
            termination: self.taken.then_some(Termination::EnvDone),
            admissible_actions: Some(self.admissible()),
            info: Value::Null,
        })
    }

    async fn evaluate(&mut self, _termination: Termination) -> Result<Evaluation, EnvError> {
        let value = if self.taken { 1.0 } else { 0.0 };
        Ok(Evaluation {
            reward: value,
            components: BTreeMap::from([(
                "goal".to_string(),
                ComponentScore {
                    value: Some(value),
                    unjudged: false,
                    detail: None,
                },
            )]),
            success: self.taken,
            success_judged_only: self.taken,
            db_hash: None,
            info: Value::Null,
        })
    }

    fn oracle_plan(&self) -> Option<Vec<Action>> {
        None
    }
}

/// A model that always gives the same reply and remembers every request.
struct Repeating {
    reply: String,
    requests: Mutex<Vec<ChatRequest>>,
}

#[async_trait]
impl ChatModel for Repeating {
    fn label(&self) -> String {
        "repeating".into()
    }
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ModelError> {
        self.requests.lock().unwrap().push(request.clone());
        Ok(ChatResponse {
            message: Message::assistant(self.reply.clone()),
            usage: Usage {
                prompt_tokens: 10,
                completion_tokens: 1,
                calls: 1,
            },
            finish_reason: Some("stop".into()),
            tokens: None,
        })
    }
}

struct RepeatingFactory(Arc<Repeating>);

impl RepeatingFactory {
    fn new(reply: &str) -> Self {
        Self(Arc::new(Repeating {
            reply: reply.into(),
            requests: Mutex::new(Vec::new()),
        }))
    }
    fn requests(&self) -> Vec<ChatRequest> {
        self.0.requests.lock().unwrap().clone()
    }
}

#[async_trait]
impl ModelFactory for RepeatingFactory {
    fn label(&self) -> String {
        "repeating".into()
    }
    fn for_episode(&self, _plan: Option<&[Action]>) -> Result<Arc<dyn ChatModel>, ModelError> {
        Ok(self.0.clone())
    }
}

fn task(task_id: &str, seed: u64) -> TaskSpec {
    TaskSpec {
        schema: 1,
        run_id: "scripts".into(),
        env: "room".into(),
        split: "test".into(),
        task_id: task_id.into(),
        attempt: 0,
        harness_hash: String::new(),
        model: ModelSpec::Oracle,
        env_options: Value::Null,
        seed,
        timeout_s: 0,
    }
}

/// A harness with a step limit and, when given, one script processor.
fn harness_text(script: Option<&str>, max_steps: u32) -> String {
    harness_text_with(script, max_steps, "")
}

/// [`harness_text`] with more lines in the script's config table.
fn harness_text_with(script: Option<&str>, max_steps: u32, config: &str) -> String {
    let mut text = format!(
        "schema = 1\nname = \"t\"\n\n[[processor]]\nid = \"limit\"\nkind = \"step_limit\"\n\
         config = {{ max_steps = {max_steps} }}\n"
    );
    if let Some(script) = script {
        text.push_str(&format!(
            "\n[[processor]]\nid = \"s\"\nkind = \"script\"\n[processor.config]\nsource = '''\n{script}\n'''\n{config}\n"
        ));
    }
    text
}

fn harness(script: Option<&str>, max_steps: u32) -> Harness {
    let spec = parse_spec(&harness_text(script, max_steps), SpecFormat::Toml).unwrap();
    Harness::new(&spec).unwrap_or_else(|error| panic!("{error}"))
}

async fn run(
    harness: &Harness,
    reply: &str,
    task: &TaskSpec,
) -> (kiln_harness::EpisodeResult, Vec<String>) {
    let models = RepeatingFactory::new(reply);
    let mut env = Room::new();
    let commands = env.commands.clone();
    let result = run_episode(harness, &models, &mut env, task, None).await;
    let commands = commands.lock().unwrap().clone();
    (result, commands)
}

/// Notes of processor `s`, with the step they were recorded at (`None`: episode level).
fn script_notes(trajectory: &Trajectory) -> Vec<(Option<u32>, Value)> {
    let episode = trajectory.events.iter().map(|event| (None, event));
    let steps = trajectory.steps.iter().flat_map(|step| {
        step.events
            .iter()
            .map(move |event| (Some(step.index), event))
    });
    episode
        .chain(steps)
        .filter(|(_, event)| event["processor"] == "s")
        .map(|(step, event)| (step, event["note"].clone()))
        .collect()
}

fn script_errors(trajectory: &Trajectory) -> Vec<(Option<u32>, Value)> {
    script_notes(trajectory)
        .into_iter()
        .filter_map(|(step, note)| Some((step, note.get("script_error")?.clone())))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Behaviour in an episode
// ---------------------------------------------------------------------------------------------

/// Visited-state tracking: an action already taken in the same state is replaced by the first
/// admissible action not yet taken there.
const BREAKER: &str = r#"
fn after_model(event) {
    let admissible = event.admissible;
    let actions = event.actions;
    if admissible == () || actions.len() != 1 || actions[0].type != "message" { return; }
    let state = event.conversation[-1].content;
    let tried = this.tried ?? #{};
    let here = tried[state] ?? [];
    let chosen = actions[0].text;
    if here.contains(chosen) {
        let untried = [];
        for action in admissible { if !here.contains(action) { untried.push(action); } }
        if untried.is_empty() { return; }
        event.note(#{replaced: chosen, by: untried[0]});
        chosen = untried[0];
        actions[0].text = chosen;
        event.actions = actions;
    }
    here.push(chosen);
    tried[state] = here;
    this.tried = tried;
}
"#;

#[tokio::test]
async fn a_visited_state_script_turns_a_looping_agent_into_a_solved_episode() {
    let (plain, commands) = run(&harness(None, 12), "look", &task("1", 0)).await;
    assert!(!plain.outcome.success);
    assert_eq!(plain.outcome.termination, Termination::MaxSteps);
    assert!(
        commands.iter().all(|command| command == "look"),
        "{commands:?}"
    );

    let (scripted, commands) = run(&harness(Some(BREAKER), 12), "look", &task("1", 0)).await;
    assert!(scripted.outcome.success, "{commands:?}");
    assert_eq!(scripted.outcome.termination, Termination::EnvDone);
    assert_eq!(
        commands.last().map(String::as_str),
        Some("take apple 1 from shelf 1")
    );
    assert!(
        commands.contains(&"go to shelf 1".to_string()),
        "{commands:?}"
    );
    let replaced: Vec<Value> = script_notes(&scripted.trajectory)
        .into_iter()
        .map(|(_, note)| note)
        .filter(|note| note.get("replaced").is_some())
        .collect();
    assert!(!replaced.is_empty());
    assert!(
        replaced.iter().all(|note| note["replaced"] == "look"),
        "{replaced:?}"
    );
    assert!(script_errors(&scripted.trajectory).is_empty());
}

/// Every writable field at every hook, in one script.
const EVERY_HOOK: &str = r#"
fn task_start(event) {
    event.system_prompt = "You are tested.";
    event.tool_text = "no tools";
}
fn step_start(event) {
    if event.step == 2 { event.stop = #{termination: "loop_detected", reason: "enough"}; }
}
fn before_model(event) {
    event.sampling.max_tokens = 7;
    event.stop_sequences.push("END");
}
fn after_model(event) {
    if event.step == 0 { event.actions = [#{type: "message", text: "inventory"}]; }
}
fn before_tool(event) {
    if event.action.text == "look" { event.veto = "looking is not allowed"; }
}
fn after_tool(event) {
    event.observation.text += " [seen by script]";
}
fn step_end(event) {
    event.inject.push("hint " + event.step);
}
fn task_end(event) {
    event.note(#{termination: event.outcome.termination, steps: event.outcome.steps});
}
"#;

#[tokio::test]
async fn writable_fields_change_the_episode_at_every_hook() {
    let models = RepeatingFactory::new("look");
    let mut env = Room::new();
    let commands = env.commands.clone();
    let harness = harness(Some(EVERY_HOOK), 10);
    let result = run_episode(&harness, &models, &mut env, &task("1", 0), None).await;

    // task_start: the system prompt; step_start: the stop at step 2.
    assert_eq!(
        result.trajectory.opening[0],
        Message::system("You are tested.")
    );
    assert_eq!(result.outcome.termination, Termination::LoopDetected);
    assert_eq!(result.outcome.steps, 2);
    // before_model: sampling and stop sequences of every request.
    let requests = models.requests();
    assert_eq!(requests.len(), 2);
    for request in &requests {
        assert_eq!(request.sampling.max_tokens, 7);
        assert_eq!(request.stop, ["END"]);
    }
    // after_model rewrote step 0's action; before_tool vetoed step 1's `look`.
    assert_eq!(*commands.lock().unwrap(), ["inventory"]);
    let step1 = &result.trajectory.steps[1].actions[0];
    assert_eq!(
        step1.observation,
        Observation::Text {
            text: "looking is not allowed [seen by script]".into()
        }
    );
    // after_tool edited the environment's observation.
    assert_eq!(
        result.trajectory.steps[0].actions[0].observation.text(),
        "You are not carrying anything. [seen by script]"
    );
    // step_end injected a hint after step 0, which step 1's prompt carries.
    let hint = Message::user("hint 0");
    assert!(
        requests[1].messages.contains(&hint),
        "{:?}",
        requests[1].messages
    );
    // task_end noted the outcome it saw.
    let ended: Vec<Value> = script_notes(&result.trajectory)
        .into_iter()
        .filter(|(step, _)| step.is_none())
        .map(|(_, note)| note)
        .collect();
    assert_eq!(ended, [json!({"termination": "loop_detected", "steps": 2})]);
    assert!(script_errors(&result.trajectory).is_empty());
}

/// Runs `body` at `hook` in a short episode and returns the one script error.
async fn failing_write(hook: &str, body: &str) -> Value {
    let script = format!("fn {hook}(event) {{ {body} }}");
    let (result, _) = run(&harness(Some(&script), 2), "look", &task("1", 0)).await;
    assert_eq!(
        result.outcome.termination,
        Termination::MaxSteps,
        "{hook}: {body}"
    );
    let errors = script_errors(&result.trajectory);
    assert_eq!(errors.len(), 1, "{hook}: {body}: {errors:?}");
    errors[0].1.clone()
}

#[tokio::test]
async fn read_only_and_unknown_fields_are_refused_at_every_hook() {
    let cases = [
        ("task_start", "event.env = #{};"),
        ("step_start", "event.conversation = [];"),
        ("before_model", "event.step = 9;"),
        ("after_model", "event.prompt.push(\"x\");"),
        ("after_model", "event.response.content = \"x\";"),
        ("before_tool", "event.admissible = [];"),
        ("after_tool", "event.done = true;"),
        (
            "after_tool",
            "event.action = #{type: \"message\", text: \"x\"};",
        ),
        ("step_end", "event.actions = [];"),
        ("task_end", "event.outcome.success = true;"),
    ];
    for (hook, body) in cases {
        let error = failing_write(hook, body).await;
        let message = error["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("read-only at `{hook}`")),
            "{hook}: {message}"
        );
        assert_eq!(error["hook"], hook);
        assert_eq!(error["line"], 1);
        assert!(error.get("limit").is_none());
    }
    for (hook, body) in [
        ("step_end", "event.reward = 1;"),
        ("after_tool", "let x = event.gold;"),
        ("task_end", "event.trajectory = ();"),
    ] {
        let error = failing_write(hook, body).await;
        let message = error["message"].as_str().unwrap();
        assert!(message.contains("has no field"), "{hook}: {message}");
    }
    // A writable field with a value of the wrong shape.
    let error = failing_write("after_model", "event.actions = 3;").await;
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("expects an array of actions")
    );
    // A script may not claim an infrastructure failure.
    let error = failing_write("step_end", "event.stop = #{termination: \"env_error\"};").await;
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("only as agent_stop")
    );
}

// ---------------------------------------------------------------------------------------------
// Limits and failures
// ---------------------------------------------------------------------------------------------

const LIMITS: &str = "limits = { max_operations = 50000, max_call_depth = 8, \
                      max_string_bytes = 65536, max_array_len = 2000, max_map_len = 500 }";

/// Writes and notes at every step_end, then runs `trigger` at step 1.
fn limited_script(trigger: &str) -> String {
    format!(
        "fn deep(n) {{ deep(n + 1) }}\n\
         fn step_end(event) {{\n\
         event.inject.push(\"marker \" + event.step);\n\
         event.note(\"ran at \" + event.step);\n\
         if event.step == 1 {{ {trigger} }}\n\
         }}"
    )
}

#[tokio::test]
async fn each_limit_leaves_the_event_unchanged_and_disables_the_script_for_the_episode() {
    let cases = [
        ("loop { }", Some("max_operations")),
        ("deep(0);", Some("max_call_depth")),
        ("let s = \"x\"; loop { s += s; }", Some("max_string_bytes")),
        ("let a = []; loop { a.push(1); }", Some("max_array_len")),
        (
            "let m = #{}; let i = 0; loop { let n = #{}; n[`k${i}`] = i; m.mixin(n); i += 1; }",
            Some("max_map_len"),
        ),
        (
            "let t = this; t.big = \"y\".pad(70000, \"y\");",
            Some("max_string_bytes"),
        ),
        ("throw \"boom\";", None),
        ("let x = [1][5];", None),
        ("call(Fn(\"read_file\"), \"/etc/passwd\");", None),
        ("call(Fn(\"sleep\"), 1);", None),
    ];
    for (trigger, limit) in cases {
        let text = harness_text_with(Some(&limited_script(trigger)), 4, LIMITS);
        let harness = Harness::new(&parse_spec(&text, SpecFormat::Toml).unwrap())
            .unwrap_or_else(|error| panic!("{trigger}: {error}"));
        let models = RepeatingFactory::new("look");
        let mut env = Room::new();
        let result = run_episode(&harness, &models, &mut env, &task("1", 0), None).await;

        // The episode finished on its own terms.
        assert_eq!(
            result.outcome.termination,
            Termination::MaxSteps,
            "{trigger}"
        );
        assert_eq!(result.outcome.steps, 4, "{trigger}");
        assert!(result.outcome.error.is_none(), "{trigger}");
        // Step 0 ran; step 1 failed with nothing applied; steps 2 and 3 did not run the script.
        let notes = script_notes(&result.trajectory);
        let ran: Vec<_> = notes.iter().filter(|(_, note)| note.is_string()).collect();
        assert_eq!(ran.len(), 1, "{trigger}: {notes:?}");
        assert_eq!(ran[0], &(Some(0), json!("ran at 0")));
        let errors = script_errors(&result.trajectory);
        assert_eq!(errors.len(), 1, "{trigger}: {errors:?}");
        let (step, error) = &errors[0];
        assert_eq!(*step, Some(1), "{trigger}");
        assert_eq!(error["disabled"], true);
        assert_eq!(error["hook"], "step_end");
        assert_eq!(
            error.get("limit").and_then(Value::as_str),
            limit,
            "{trigger}: {error}"
        );
        if limit.is_none() {
            assert!(error["line"].as_u64().is_some(), "{trigger}: {error}");
        }
        let requests = models.requests();
        let markers = |index: usize| {
            requests[index]
                .messages
                .iter()
                .filter(|message| message.content.starts_with("marker"))
                .count()
        };
        assert_eq!((markers(1), markers(2), markers(3)), (1, 1, 1), "{trigger}");
    }
}

#[tokio::test]
async fn print_and_debug_go_to_the_trajectory() {
    let script = "fn step_end(event) { print(`step ${event.step}`); debug(\"checked\"); }";
    let (result, _) = run(&harness(Some(script), 1), "look", &task("1", 0)).await;
    let notes = script_notes(&result.trajectory);
    assert_eq!(notes.len(), 1, "{notes:?}");
    let output = notes[0].1["output"].as_array().unwrap();
    assert_eq!(output[0], "step 0");
    assert!(
        output[1].as_str().unwrap().contains("checked"),
        "{output:?}"
    );
    assert!(
        output[1].as_str().unwrap().starts_with("[debug line 1]"),
        "{output:?}"
    );
}

#[test]
fn forbidden_and_unknown_calls_do_not_compile() {
    let cases = [
        ("eval(\"1 + 1\");", "eval"),
        ("import \"fs\" as fs;", "import"),
        ("let t = read_file(\"/etc/passwd\");", "read_file"),
        ("let f = open(\"gold.json\");", "open"),
        ("http_get(\"http://example.com\");", "http_get"),
        ("let now = timestamp();", "clock"),
        ("sleep(1);", "clock"),
        ("exit();", "exit"),
        ("let gold = read_gold(event);", "read_gold"),
    ];
    for (statement, named) in cases {
        let script = format!("fn step_end(event) {{\n  {statement}\n}}");
        let spec = parse_spec(&harness_text(Some(&script), 3), SpecFormat::Toml).unwrap();
        let error = Harness::new(&spec).expect_err(statement);
        assert_eq!(error.processor(), Some("s"), "{statement}");
        assert_eq!(error.field(), Some("config.source"), "{statement}");
        assert!(error.message().contains(named), "{statement}: {error}");
        assert_eq!(
            error.location().map(|l| l.line),
            Some(2),
            "{statement}: {error}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// RNG
// ---------------------------------------------------------------------------------------------

const DRAWS: &str = r#"
fn step_end(event) {
    let items = [1, 2, 3, 4, 5, 6, 7, 8];
    rand_shuffle(items);
    event.note([rand_int(0, 1000000), rand_float(), rand_pick(["a", "b", "c"]), rand_bool(0.5), items]);
}
"#;

async fn draws(task: &TaskSpec) -> Vec<Value> {
    let (result, _) = run(&harness(Some(DRAWS), 3), "look", task).await;
    script_notes(&result.trajectory)
        .into_iter()
        .map(|(_, note)| note)
        .collect()
}

#[tokio::test]
async fn the_seeded_rng_replays_an_episode_and_differs_across_seeds() {
    let first = draws(&task("1", 42)).await;
    assert_eq!(first.len(), 3);
    assert_eq!(first, draws(&task("1", 42)).await);
    assert_ne!(first, draws(&task("1", 43)).await);
    assert_ne!(first, draws(&task("2", 42)).await);
    // Within an episode the stream moves on.
    assert_ne!(first[0], first[1]);
    let mut shuffled: Vec<i64> = first[0][4]
        .as_array()
        .unwrap()
        .iter()
        .map(|value| value.as_i64().unwrap())
        .collect();
    shuffled.sort();
    assert_eq!(shuffled, [1, 2, 3, 4, 5, 6, 7, 8]);
}

// ---------------------------------------------------------------------------------------------
// Files, hashes, validate
// ---------------------------------------------------------------------------------------------

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

const FILE_HARNESS: &str = "schema = 1\nname = \"f\"\n\n[[processor]]\nid = \"s\"\nkind = \"script\"\n\
                            config = { file = \"scripts/note.rhai\" }\n";
const NOTE_SCRIPT: &str = "fn step_end(event) {\n    event.note(event.step);\n}\n";

#[test]
fn file_and_inline_sources_hash_by_their_text() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("scripts")).unwrap();
    write(dir.path(), "scripts/note.rhai", NOTE_SCRIPT);
    let harness_path = write(dir.path(), "h.toml", FILE_HARNESS);

    let from_file = Harness::load(&harness_path).unwrap();
    let config = &from_file.spec().processors[0].config;
    assert_eq!(config["source"], NOTE_SCRIPT);
    assert!(config.get("file").is_none(), "{config}");
    assert_eq!(from_file.spec().processors[0].hooks, [Hook::StepEnd]);
    assert!(
        show_file(&harness_path)
            .unwrap()
            .contains("event.note(event.step)")
    );

    // The same text inline is the same version.
    let inline = FILE_HARNESS.replace(
        "config = { file = \"scripts/note.rhai\" }",
        &format!("config = {{ source = {} }}", json!(NOTE_SCRIPT)),
    );
    let inline_path = write(dir.path(), "inline.toml", &inline);
    assert_eq!(
        Harness::load(&inline_path).unwrap().hash(),
        from_file.hash()
    );

    // Moving the file changes nothing; changing its text changes the version.
    std::fs::rename(
        dir.path().join("scripts/note.rhai"),
        dir.path().join("moved.rhai"),
    )
    .unwrap();
    let moved = write(
        dir.path(),
        "h.toml",
        &FILE_HARNESS.replace("scripts/note.rhai", "moved.rhai"),
    );
    assert_eq!(Harness::load(&moved).unwrap().hash(), from_file.hash());
    write(
        dir.path(),
        "moved.rhai",
        &NOTE_SCRIPT.replace("event.step", "event.step + 1"),
    );
    let changed = Harness::load(&moved).unwrap();
    assert_ne!(changed.hash(), from_file.hash());

    // An inline change changes the hash too, and the canonical TOML reloads to the same hash.
    let other_inline = harness(Some("fn step_end(event) { event.note(2); }"), 3);
    let same_inline = harness(Some("fn step_end(event) { event.note(2); }"), 3);
    let third_inline = harness(Some("fn step_end(event) { event.note(3); }"), 3);
    assert_eq!(other_inline.hash(), same_inline.hash());
    assert_ne!(other_inline.hash(), third_inline.hash());
    let canonical = write(
        dir.path(),
        "canonical.toml",
        &changed.canonical_toml().unwrap(),
    );
    assert_eq!(Harness::load(&canonical).unwrap().hash(), changed.hash());
}

#[test]
fn validate_reports_script_errors_with_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("scripts")).unwrap();
    // A file script: the error names the script file.
    let script = write(
        dir.path(),
        "scripts/note.rhai",
        "fn step_end(event) {\n    let x = 1;\n    let y = ;\n}\n",
    );
    let harness_path = write(dir.path(), "h.toml", FILE_HARNESS);
    let error = validate_file(&harness_path).unwrap_err();
    assert_eq!(error.kind(), HarnessErrorKind::Script);
    assert_eq!(error.file(), Some(script.as_path()));
    let location = error.location().unwrap();
    assert_eq!((location.line, location.column), (3, 13));
    assert!(
        error
            .to_string()
            .starts_with(&format!("{}:3:13: processor `s`", script.display())),
        "{error}"
    );

    // An inline script: the position is mapped into the harness file.
    let inline = harness_text(
        Some("fn step_end(event) {\n    let ok = 1;\n    oops(ok);\n}"),
        3,
    );
    let inline_path = write(dir.path(), "inline.toml", &inline);
    let error = validate_file(&inline_path).unwrap_err();
    assert_eq!(error.file(), Some(inline_path.as_path()));
    let location = error.location().unwrap();
    let line_text = inline.lines().nth(location.line - 1).unwrap();
    assert_eq!(line_text, "    oops(ok);", "{error}");
    assert_eq!(location.column, 5, "{error}");
    assert!(error.message().contains("`oops`"), "{error}");

    // A one-line inline script keeps exact columns on its line.
    let one_line = FILE_HARNESS.replace(
        "config = { file = \"scripts/note.rhai\" }",
        "config = { source = \"fn step_end(event) { let = 1; }\" }",
    );
    let one_line_path = write(dir.path(), "one.toml", &one_line);
    let error = validate_file(&one_line_path).unwrap_err();
    let location = error.location().unwrap();
    let line_text = one_line.lines().nth(location.line - 1).unwrap();
    let script = "fn step_end(event) { let = 1; }";
    let in_script = kiln_harness::builtin::script::compile::compile(script, &Default::default())
        .unwrap_err()
        .location()
        .unwrap();
    assert_eq!(in_script.line, 1);
    assert!(
        line_text[location.column - 1..].starts_with(&script[in_script.column - 1..]),
        "{error}: {line_text}"
    );

    // A missing script file names the path it looked for.
    let missing = write(
        dir.path(),
        "missing.toml",
        &FILE_HARNESS.replace("scripts/note.rhai", "scripts/absent.rhai"),
    );
    let error = validate_file(&missing).unwrap_err();
    assert_eq!(error.kind(), HarnessErrorKind::Io);
    assert!(error.message().contains("absent.rhai"), "{error}");
    assert_eq!(error.field(), Some("config.file"));
}

#[test]
fn hooks_default_to_the_script_functions_and_must_match_them() {
    let script = "fn helper() { 1 }\nfn after_tool(event) {}\nfn step_end(event) { helper(); }";
    let harness = harness(Some(script), 3);
    assert_eq!(harness.processors_at(Hook::AfterTool), ["s"]);
    assert_eq!(harness.processors_at(Hook::StepEnd), ["s"]);
    assert!(harness.processors_at(Hook::AfterModel).is_empty());

    let listed = |hooks: &str| {
        let text = harness_text(Some(script), 3).replace(
            "kind = \"script\"\n",
            &format!("kind = \"script\"\nhooks = {hooks}\n"),
        );
        Harness::new(&parse_spec(&text, SpecFormat::Toml).unwrap())
    };
    assert!(listed("[\"after_tool\", \"step_end\"]").is_ok());
    let error = listed("[\"after_tool\", \"step_end\", \"task_end\"]").unwrap_err();
    assert_eq!(error.kind(), HarnessErrorKind::InvalidHook);
    assert!(
        error.message().contains("no `fn task_end(event)`"),
        "{error}"
    );
    let error = listed("[\"step_end\"]").unwrap_err();
    assert!(
        error.message().contains("does not list `after_tool`"),
        "{error}"
    );

    let error = Harness::new(
        &parse_spec(&harness_text(Some("fn helper() {}"), 3), SpecFormat::Toml).unwrap(),
    )
    .unwrap_err();
    assert!(
        error.message().contains("defines no hook function"),
        "{error}"
    );
}

#[test]
fn the_surface_helper_lists_what_a_script_calls() {
    let functions = called_functions(BREAKER).unwrap();
    for name in ["contains", "is_empty", "len", "note", "push"] {
        assert!(functions.contains(name), "{name}: {functions:?}");
    }
    let surface =
        script_surface("fn before_model(event) { event.sampling.max_tokens = 4096; }").unwrap();
    assert!(surface.properties.contains("max_tokens"));
    let error = script_surface("fn step_end(event) { let = 1; }").unwrap_err();
    assert_eq!(error.kind(), ScriptErrorKind::Syntax);
}

// ---------------------------------------------------------------------------------------------
// The shipped loop breaker
// ---------------------------------------------------------------------------------------------

fn shipped(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../harnesses")
        .join(name)
}

fn alfworld_task(seed: u64) -> TaskSpec {
    TaskSpec {
        env: "alfworld".into(),
        split: "valid_unseen".into(),
        env_options: json!({"max_steps": 30}),
        ..task("valid_unseen/pick_and_place_simple/0000", seed)
    }
}

async fn alfworld_episode(
    harness: &Harness,
    seed: u64,
) -> (kiln_harness::EpisodeResult, Vec<String>) {
    let factory = AlfworldFactory::new(&EnvContext {
        data_dir: default_data_dir(),
        ..EnvContext::default()
    });
    let mut env = factory
        .create_alfworld(&json!({"max_steps": 30}))
        .unwrap_or_else(|error| panic!("{error} (run ops/setup alfworld)"));
    let models = RepeatingFactory::new("Action: look");
    let result = run_episode(harness, &models, &mut env, &alfworld_task(seed), None).await;
    let actions = result
        .trajectory
        .steps
        .iter()
        .flat_map(|step| step.actions.iter())
        .filter_map(|record| match &record.action {
            Action::Message { text } => Some(text.clone()),
            Action::ToolCall { .. } => None,
        })
        .collect();
    (result, actions)
}

#[tokio::test]
async fn the_shipped_loop_breaker_explores_instead_of_repeating_on_alfworld() {
    let plain = Harness::load(&shipped("small-model.toml")).unwrap();
    let breaker = Harness::load(&shipped("small-model-loop-breaker.toml"))
        .unwrap_or_else(|error| panic!("{error}"));
    let others: Vec<_> = breaker
        .spec()
        .processors
        .iter()
        .filter(|processor| processor.id != "breaker")
        .cloned()
        .collect();
    assert_eq!(
        others,
        plain.spec().processors,
        "the loop-breaker harness is small-model plus one script"
    );

    let (without, plain_actions) = alfworld_episode(&plain, 5).await;
    assert_eq!(without.outcome.termination, Termination::LoopDetected);
    assert!(
        plain_actions.iter().all(|action| action == "look"),
        "{plain_actions:?}"
    );

    let (with, actions) = alfworld_episode(&breaker, 5).await;
    assert_ne!(
        with.outcome.termination,
        Termination::LoopDetected,
        "{actions:?}"
    );
    let distinct: std::collections::BTreeSet<&String> = actions.iter().collect();
    assert!(distinct.len() >= 5, "{actions:?}");
    let notes: Vec<Value> = with
        .trajectory
        .steps
        .iter()
        .flat_map(|step| step.events.iter())
        .filter(|event| event["processor"] == "breaker")
        .map(|event| event["note"].clone())
        .collect();
    assert!(
        notes.iter().any(|note| note.get("loop_breaker").is_some()),
        "{notes:?}"
    );
    assert!(
        notes.iter().all(|note| note.get("script_error").is_none()),
        "{notes:?}"
    );

    // Reproducible from the seed.
    let (_, again) = alfworld_episode(&breaker, 5).await;
    assert_eq!(actions, again);
    let (_, other) = alfworld_episode(&breaker, 6).await;
    assert_ne!(actions, other);
}
