//! The small-model processors (`admissible_choice`, `compact_prompt`) alone and inside the episode
//! loop, with an in-test text environment that lists admissible actions and in-test models whose
//! `score` prefers known candidates. The doubles test the processors, not a benchmark.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use kiln_environments::{EnvError, Environment, Evaluation};
use kiln_harness::builtin::compact_prompt::{self, CompactPromptConfig, message_chars};
use kiln_harness::commands::validate_file;
use kiln_harness::events::{AfterModelEvent, Scorer, StepContext};
use kiln_harness::{Harness, HarnessSpec, builtin_harness, builtin_registry, run_episode};
use kiln_models::{
    CandidateScore, ChatModel, ChatRequest, ChatResponse, ModelError, ModelErrorKind, ModelFactory,
};
use kiln_protocol::{
    Action, ComponentScore, EnvInfo, Message, ModelSpec, Observation, Role, StepResult, TaskSpec,
    Termination, ToolCall, ToolSchema, Trajectory, Usage,
};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// Test doubles
// ---------------------------------------------------------------------------------------------

/// A one-room text world: go to the shelf, take the apple. Lists its admissible actions at reset
/// and after every step, as ALFWorld does; an inadmissible command answers "Nothing happens.".
struct ShelfWorld {
    at_shelf: bool,
    taken: bool,
    commands: Vec<String>,
}

impl ShelfWorld {
    fn new() -> Self {
        Self {
            at_shelf: false,
            taken: false,
            commands: Vec::new(),
        }
    }

    fn admissible(&self) -> Vec<String> {
        let mut actions = vec!["look".to_string(), "inventory".to_string()];
        if self.at_shelf {
            actions.push("go to table 1".into());
            actions.push("take apple 1 from shelf 1".into());
        } else {
            actions.push("go to shelf 1".into());
            actions.push("go to table 1".into());
        }
        actions
    }
}

#[async_trait]
impl Environment for ShelfWorld {
    async fn reset(&mut self, _task: &TaskSpec) -> Result<EnvInfo, EnvError> {
        Ok(EnvInfo {
            env: "shelf-world".into(),
            instructions: "Interact with the room to solve the task.".into(),
            tools: Vec::new(),
            opening: vec![Message::user(
                "You are in a room with a shelf 1 and a table 1. Your task is to: take the apple.",
            )],
            admissible_actions: Some(self.admissible()),
        })
    }

    async fn step(&mut self, action: &Action) -> Result<StepResult, EnvError> {
        let command = match action {
            Action::Message { text } => text.clone(),
            Action::ToolCall { call } => format!("tool {}", call.name),
        };
        self.commands.push(command.clone());
        let admissible_now = self.admissible();
        let text = if !admissible_now.contains(&command) {
            "Nothing happens.".to_string()
        } else if command == "go to shelf 1" {
            self.at_shelf = true;
            "You arrive at shelf 1. On the shelf 1, you see an apple 1.".to_string()
        } else if command == "take apple 1 from shelf 1" {
            self.taken = true;
            "You pick up the apple 1 from the shelf 1.".to_string()
        } else {
            format!("You {command}.")
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

/// One `score` call as the model received it.
#[derive(Debug, Clone)]
struct ScoreCall {
    messages: Vec<Message>,
    candidates: Vec<String>,
}

/// Replies with `replies[n]` to chat call `n` (the last one repeats). `score` gives each
/// candidate -0.1 per word when it ends with one of `preferred`, else -3 per word; with `scores`
/// false it keeps the trait's default (`Unavailable`) by delegating to [`Unscoring`].
struct ChoosyModel {
    replies: Vec<String>,
    preferred: Vec<String>,
    scores: bool,
    chats: Mutex<Vec<ChatRequest>>,
    score_calls: Mutex<Vec<ScoreCall>>,
}

impl ChoosyModel {
    fn new(replies: &[&str], preferred: &[&str]) -> Self {
        Self {
            replies: replies.iter().map(|reply| reply.to_string()).collect(),
            preferred: preferred.iter().map(|action| action.to_string()).collect(),
            scores: true,
            chats: Mutex::new(Vec::new()),
            score_calls: Mutex::new(Vec::new()),
        }
    }

    fn unscoring(replies: &[&str]) -> Self {
        Self {
            scores: false,
            ..Self::new(replies, &[])
        }
    }

    fn chats(&self) -> Vec<ChatRequest> {
        self.chats.lock().unwrap().clone()
    }

    fn score_calls(&self) -> Vec<ScoreCall> {
        self.score_calls.lock().unwrap().clone()
    }

    fn likelihood(&self, candidate: &str) -> CandidateScore {
        let tokens = candidate.split_whitespace().count().max(1);
        let per_token = if self
            .preferred
            .iter()
            .any(|action| candidate.ends_with(action.as_str()))
        {
            -0.1
        } else {
            -3.0
        };
        CandidateScore {
            logprob: per_token * tokens as f64,
            tokens,
        }
    }
}

/// A model with no `score` of its own: the trait default answers.
struct Unscoring;

#[async_trait]
impl ChatModel for Unscoring {
    fn label(&self) -> String {
        "unscoring".into()
    }
    async fn chat(&self, _request: &ChatRequest) -> Result<ChatResponse, ModelError> {
        Err(ModelError::new(ModelErrorKind::Unavailable, "not used"))
    }
}

#[async_trait]
impl ChatModel for ChoosyModel {
    fn label(&self) -> String {
        "choosy".into()
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ModelError> {
        let index = {
            let mut chats = self.chats.lock().unwrap();
            chats.push(request.clone());
            chats.len() - 1
        };
        let text = self.replies[index.min(self.replies.len() - 1)].clone();
        Ok(ChatResponse {
            message: Message::assistant(text),
            usage: Usage {
                prompt_tokens: 10,
                completion_tokens: 3,
                calls: 1,
            },
            finish_reason: Some("stop".into()),
            tokens: None,
        })
    }

    async fn score(
        &self,
        messages: &[Message],
        candidates: &[String],
    ) -> Result<Vec<CandidateScore>, ModelError> {
        if !self.scores {
            return Unscoring.score(messages, candidates).await;
        }
        self.score_calls.lock().unwrap().push(ScoreCall {
            messages: messages.to_vec(),
            candidates: candidates.to_vec(),
        });
        Ok(candidates
            .iter()
            .map(|candidate| self.likelihood(candidate))
            .collect())
    }
}

struct SharedFactory(Arc<ChoosyModel>);

#[async_trait]
impl ModelFactory for SharedFactory {
    fn label(&self) -> String {
        "choosy-factory".into()
    }
    fn for_episode(&self, _plan: Option<&[Action]>) -> Result<Arc<dyn ChatModel>, ModelError> {
        Ok(self.0.clone())
    }
}

fn task() -> TaskSpec {
    TaskSpec {
        schema: 1,
        run_id: "run-small".into(),
        env: "shelf-world".into(),
        split: "test".into(),
        task_id: "apple".into(),
        attempt: 0,
        harness_hash: String::new(),
        model: ModelSpec::Oracle,
        env_options: Value::Null,
        seed: 1,
        timeout_s: 0,
    }
}

/// The shipped `small-model` harness with `edit` applied to one processor's config.
fn small_model_with(id: &str, edit: impl FnOnce(&mut Value)) -> Harness {
    let mut spec: HarnessSpec = builtin_harness("small-model").expect("small-model is built in");
    let processor = spec
        .processors
        .iter_mut()
        .find(|processor| processor.id == id)
        .expect("processor exists");
    edit(&mut processor.config);
    Harness::new(&spec).unwrap()
}

/// Every note the given processor left in the trajectory's steps, in order, with its step index.
fn notes_of(trajectory: &Trajectory, processor: &str) -> Vec<(u32, Value)> {
    trajectory
        .steps
        .iter()
        .flat_map(|step| {
            step.events
                .iter()
                .filter(|event| event["processor"] == processor)
                .map(move |event| (step.index, event["note"].clone()))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// admissible_choice in the episode loop
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn fallback_replaces_an_inadmissible_action_with_the_likeliest_admissible_one() {
    let harness = Harness::new(&builtin_harness("small-model").unwrap()).unwrap();
    let model = Arc::new(ChoosyModel::new(
        &[
            "Thought: the apple may be on the shelf.\nAction: go to the shelf",
            "Action: take apple 1 from shelf 1",
        ],
        &["go to shelf 1"],
    ));
    let mut env = ShelfWorld::new();
    let result = run_episode(
        &harness,
        &SharedFactory(model.clone()),
        &mut env,
        &task(),
        None,
    )
    .await;

    assert_eq!(result.outcome.termination, Termination::EnvDone);
    assert!(result.outcome.success);
    assert_eq!(env.commands, ["go to shelf 1", "take apple 1 from shelf 1"]);

    // Only step 0 needed scoring; step 1's generation was admissible in the updated list.
    let scored = model.score_calls();
    assert_eq!(scored.len(), 1);
    let chats = model.chats();
    assert_eq!(
        scored[0].messages, chats[0].messages,
        "candidates are scored against the prompt the model saw"
    );
    assert_eq!(
        scored[0].candidates,
        [
            "Action: look",
            "Action: inventory",
            "Action: go to shelf 1",
            "Action: go to table 1"
        ]
    );

    let notes = notes_of(&result.trajectory, "choice");
    assert_eq!(notes.len(), 1);
    let (step, note) = &notes[0];
    assert_eq!(*step, 0);
    let choice = &note["admissible_choice"];
    assert_eq!(choice["reason"], "not_admissible");
    assert_eq!(choice["generated"], "go to the shelf");
    assert_eq!(choice["chosen"], "go to shelf 1");
    assert_eq!(choice["changed"], true);
    assert_eq!(choice["scored"], 4);
    let top = choice["top"].as_array().unwrap();
    assert_eq!(top.len(), 4);
    assert_eq!(top[0]["action"], "go to shelf 1");
    let scores: Vec<f64> = top.iter().map(|c| c["score"].as_f64().unwrap()).collect();
    assert!(
        scores.windows(2).all(|pair| pair[0] >= pair[1]),
        "{scores:?}"
    );

    // The conversation shows the action really taken; the raw reply stays in the model turn.
    let second_prompt = &chats[1].messages;
    assert!(
        second_prompt
            .iter()
            .any(|m| m.role == Role::Assistant && m.content == "Action: go to shelf 1")
    );
    assert!(
        result.trajectory.steps[0]
            .model
            .raw_content
            .ends_with("Action: go to the shelf")
    );
}

#[tokio::test]
async fn always_mode_overrides_even_an_admissible_generation() {
    let harness = small_model_with("choice", |config| config["mode"] = json!("always"));
    let model = Arc::new(ChoosyModel::new(
        &["Action: go to table 1"],
        &["go to shelf 1", "take apple 1 from shelf 1"],
    ));
    let mut env = ShelfWorld::new();
    let result = run_episode(
        &harness,
        &SharedFactory(model.clone()),
        &mut env,
        &task(),
        None,
    )
    .await;

    assert!(result.outcome.success);
    assert_eq!(env.commands, ["go to shelf 1", "take apple 1 from shelf 1"]);
    assert_eq!(model.score_calls().len(), 2, "every step is scored");
    let notes = notes_of(&result.trajectory, "choice");
    let reasons: Vec<&Value> = notes
        .iter()
        .map(|(_, note)| &note["admissible_choice"]["reason"])
        .collect();
    assert_eq!(reasons, [&json!("always"), &json!("always")]);
    assert_eq!(
        notes[0].1["admissible_choice"]["generated"],
        "go to table 1"
    );
}

#[tokio::test]
async fn fallback_leaves_admissible_generations_alone() {
    let harness = Harness::new(&builtin_harness("small-model").unwrap()).unwrap();
    // The model would prefer "look", but its generations are admissible, so they stand.
    let model = Arc::new(ChoosyModel::new(
        &["Action: go to shelf 1", "Action: take apple 1 from shelf 1"],
        &["look"],
    ));
    let mut env = ShelfWorld::new();
    let result = run_episode(
        &harness,
        &SharedFactory(model.clone()),
        &mut env,
        &task(),
        None,
    )
    .await;
    assert!(result.outcome.success);
    assert!(model.score_calls().is_empty());
    assert!(notes_of(&result.trajectory, "choice").is_empty());
}

#[tokio::test]
async fn max_candidates_keeps_those_closest_to_the_generation() {
    let harness = small_model_with("choice", |config| config["max_candidates"] = json!(2));
    let model = Arc::new(ChoosyModel::new(
        &[
            "Action: walk to the shelf 1",
            "Action: take apple 1 from shelf 1",
        ],
        &["go to shelf 1"],
    ));
    let mut env = ShelfWorld::new();
    let result = run_episode(
        &harness,
        &SharedFactory(model.clone()),
        &mut env,
        &task(),
        None,
    )
    .await;
    assert!(result.outcome.success);
    // "go to shelf 1" shares {to, shelf, 1} with the reply, "go to table 1" shares {to, 1}; "look"
    // and "inventory" share nothing.
    assert_eq!(
        model.score_calls()[0].candidates,
        ["Action: go to shelf 1", "Action: go to table 1"]
    );
    let note = &notes_of(&result.trajectory, "choice")[0].1;
    assert_eq!(note["admissible_choice"]["admissible"], 4);
    assert_eq!(note["admissible_choice"]["scored"], 2);
}

#[tokio::test]
async fn an_unscoring_model_keeps_its_actions_and_says_so_once() {
    let harness = small_model_with("limit", |config| config["max_steps"] = json!(3));
    let model = Arc::new(ChoosyModel::unscoring(&[
        "Action: go to the shelf",
        "Action: find the apple",
        "Action: grab apple",
    ]));
    let mut env = ShelfWorld::new();
    let result = run_episode(
        &harness,
        &SharedFactory(model.clone()),
        &mut env,
        &task(),
        None,
    )
    .await;

    assert_eq!(result.outcome.termination, Termination::MaxSteps);
    assert_eq!(result.outcome.error, None);
    assert_eq!(
        env.commands,
        ["go to the shelf", "find the apple", "grab apple"]
    );
    let notes = notes_of(&result.trajectory, "choice");
    assert_eq!(notes.len(), 1, "{notes:?}");
    let (step, note) = &notes[0];
    assert_eq!(*step, 0);
    assert!(
        note["admissible_choice"]
            .as_str()
            .unwrap()
            .contains("scoring unavailable")
    );
    assert!(
        note["error"]
            .as_str()
            .unwrap()
            .contains("cannot score candidates")
    );
    let summary = result
        .trajectory
        .events
        .iter()
        .find(|event| event["processor"] == "choice" && event["hook"] == "task_end")
        .expect("task_end summary");
    assert_eq!(summary["note"]["unscored_steps"], 3);
}

#[tokio::test]
async fn environments_without_admissible_actions_are_left_to_the_parser() {
    let model = Arc::new(ChoosyModel::new(&["hello there"], &["look"]));
    let task = task();
    let env = EnvInfo {
        env: "chat".into(),
        instructions: String::new(),
        tools: Vec::new(),
        opening: Vec::new(),
        admissible_actions: None,
    };
    let response = model
        .chat(&ChatRequest::default())
        .await
        .expect("scripted reply");
    let conversation = Vec::new();
    let ctx = StepContext::new(&task, &env, 0, &conversation);
    let mut event = AfterModelEvent::new(ctx, 0, &response).with_scorer(Scorer::new(&*model));
    let kind = builtin_registry().get("admissible_choice").unwrap().clone();
    let mut processor = kind.instantiate(&json!({"mode": "always"})).unwrap();
    processor.after_model(&mut event).await.unwrap();
    assert_eq!(
        event.actions(),
        [Action::Message {
            text: "hello there".into()
        }]
    );
    assert!(model.score_calls().is_empty());
}

/// A three-page shop in WebShop's format: the search page admits only the free-text placeholder
/// `search[...]`; results and item pages admit clicks; `click[buy now]` ends it. Anything else
/// is an invalid action that leaves the page as it is.
struct MiniShop {
    page: &'static str,
    commands: Vec<String>,
    bought: bool,
}

impl MiniShop {
    fn new() -> Self {
        Self {
            page: "search",
            commands: Vec::new(),
            bought: false,
        }
    }

    fn admissible(&self) -> Vec<String> {
        let list: &[&str] = match self.page {
            "search" => &["search[...]"],
            "results" => &["click[back to search]", "click[b001]", "click[b002]"],
            _ => &["click[back to search]", "click[buy now]"],
        };
        list.iter().map(|action| action.to_string()).collect()
    }

    fn text(&self) -> String {
        let body = match self.page {
            "search" => "Search",
            "results" => "Back to Search [SEP] b001 [SEP] Red dress [SEP] b002 [SEP] Blue hat",
            _ => "Back to Search [SEP] Red dress [SEP] Buy Now",
        };
        format!("WebShop [SEP] Instruction: [SEP] i need a red dress under 30 dollars [SEP] {body}")
    }
}

#[async_trait]
impl Environment for MiniShop {
    async fn reset(&mut self, _task: &TaskSpec) -> Result<EnvInfo, EnvError> {
        Ok(EnvInfo {
            env: "mini-shop".into(),
            instructions: "Buy what the instruction asks for.".into(),
            tools: Vec::new(),
            opening: vec![Message::user(self.text())],
            admissible_actions: Some(self.admissible()),
        })
    }

    async fn step(&mut self, action: &Action) -> Result<StepResult, EnvError> {
        let command = match action {
            Action::Message { text } => text.clone(),
            Action::ToolCall { call } => format!("tool {}", call.name),
        };
        self.commands.push(command.clone());
        match (self.page, command.as_str()) {
            ("search", search) if search.starts_with("search[") && search.ends_with(']') => {
                self.page = "results"
            }
            ("results", "click[b001]") => self.page = "item",
            ("item", "click[buy now]") => self.bought = true,
            (_, "click[back to search]") => self.page = "search",
            _ => {}
        }
        Ok(StepResult {
            observation: Observation::Text { text: self.text() },
            done: self.bought,
            termination: self.bought.then_some(Termination::EnvDone),
            admissible_actions: Some(self.admissible()),
            info: Value::Null,
        })
    }

    async fn evaluate(&mut self, _termination: Termination) -> Result<Evaluation, EnvError> {
        let value = if self.bought { 1.0 } else { 0.0 };
        Ok(Evaluation {
            reward: value,
            components: BTreeMap::new(),
            success: self.bought,
            success_judged_only: self.bought,
            db_hash: None,
            info: Value::Null,
        })
    }

    fn oracle_plan(&self) -> Option<Vec<Action>> {
        None
    }
}

const APOLOGY: &str = "I'm sorry for the confusion. How can I help you today?";

#[tokio::test]
async fn a_chat_message_on_a_free_text_page_becomes_the_likeliest_filled_placeholder() {
    let harness = Harness::new(&builtin_harness("small-model").unwrap()).unwrap();
    let model = Arc::new(ChoosyModel::new(
        &[APOLOGY],
        &["dollars]", "click[b001]", "click[buy now]"],
    ));
    let mut env = MiniShop::new();
    let result = run_episode(
        &harness,
        &SharedFactory(model.clone()),
        &mut env,
        &task(),
        None,
    )
    .await;

    // The model never wrote an action, yet every step acted in the shop.
    assert_eq!(result.outcome.termination, Termination::EnvDone);
    assert!(result.outcome.success);
    assert_eq!(
        env.commands,
        [
            "search[i need a red dress under 30 dollars]",
            "click[b001]",
            "click[buy now]"
        ]
    );
    // On the search page the instruction (the only observation segment of 3+ words) fills it.
    let first = &model.score_calls()[0];
    assert_eq!(
        first.candidates,
        ["Action: search[i need a red dress under 30 dollars]"]
    );
    let notes = notes_of(&result.trajectory, "choice");
    assert_eq!(notes.len(), 3);
    assert_eq!(
        notes[0].1["admissible_choice"]["chosen"],
        "search[i need a red dress under 30 dollars]"
    );
}

#[tokio::test]
async fn without_placeholder_fills_a_chat_message_never_reaches_the_shop() {
    // The seed's behaviour before the fix, kept behind `fill_placeholders = false`.
    let harness = small_model_with("choice", |config| {
        config["fill_placeholders"] = json!(false)
    });
    let model = Arc::new(ChoosyModel::new(&[APOLOGY], &["dollars]"]));
    let mut env = MiniShop::new();
    let result = run_episode(
        &harness,
        &SharedFactory(model.clone()),
        &mut env,
        &task(),
        None,
    )
    .await;
    assert_eq!(result.outcome.termination, Termination::LoopDetected);
    assert!(!result.outcome.success);
    assert!(
        env.commands
            .iter()
            .all(|command| !command.starts_with("search["))
    );
    assert!(model.score_calls().is_empty());
}

// ---------------------------------------------------------------------------------------------
// admissible_choice in isolation
// ---------------------------------------------------------------------------------------------

/// A model whose scoring fails for a reason other than being unable to score.
struct TimingOut;

#[async_trait]
impl ChatModel for TimingOut {
    fn label(&self) -> String {
        "timing-out".into()
    }
    async fn chat(&self, _request: &ChatRequest) -> Result<ChatResponse, ModelError> {
        Err(ModelError::new(ModelErrorKind::Timeout, "not used"))
    }
    async fn score(
        &self,
        _messages: &[Message],
        _candidates: &[String],
    ) -> Result<Vec<CandidateScore>, ModelError> {
        Err(ModelError::new(
            ModelErrorKind::Timeout,
            "scoring timed out",
        ))
    }
}

fn reply(text: &str) -> ChatResponse {
    ChatResponse {
        message: Message::assistant(text),
        usage: Usage::default(),
        finish_reason: None,
        tokens: None,
    }
}

#[tokio::test]
async fn a_parse_error_is_resolved_by_choice_and_a_failed_score_changes_nothing() {
    let task = task();
    let env = EnvInfo {
        env: "shelf-world".into(),
        instructions: String::new(),
        tools: Vec::new(),
        opening: Vec::new(),
        admissible_actions: None,
    };
    let admissible = vec!["look".to_string(), "go to shelf 1".to_string()];
    let conversation = vec![Message::user("Your task is to: take the apple.")];
    let prompt = conversation.clone();
    let ctx =
        StepContext::new(&task, &env, 0, &conversation).with_admissible_actions(Some(&admissible));
    let kind = builtin_registry().get("admissible_choice").unwrap().clone();
    let empty = reply("");

    // A parse error (empty reply) in fallback mode: the likeliest admissible action is taken
    // and the error cleared.
    let model = ChoosyModel::new(&[""], &["go to shelf 1"]);
    let mut event = AfterModelEvent::new(ctx, 0, &empty)
        .with_prompt(&prompt)
        .with_scorer(Scorer::new(&model));
    let mut processor = kind.instantiate(&Value::Null).unwrap();
    processor.after_model(&mut event).await.unwrap();
    assert_eq!(event.parse_error(), None);
    assert_eq!(
        event.actions(),
        [Action::Message {
            text: "go to shelf 1".into()
        }]
    );
    assert_eq!(model.score_calls()[0].messages, prompt);

    // A scoring failure other than Unavailable leaves the parse error for parse_retry.
    let mut event = AfterModelEvent::new(ctx, 0, &empty)
        .with_prompt(&prompt)
        .with_scorer(Scorer::new(&TimingOut));
    let mut processor = kind.instantiate(&Value::Null).unwrap();
    processor.after_model(&mut event).await.unwrap();
    assert!(event.parse_error().is_some());
    assert!(event.actions().is_empty());

    // Sum vs mean: the long action is less likely in total but more likely per token.
    let long = "take apple 1 from shelf 1".to_string();
    let admissible = vec!["look".to_string(), long.clone()];
    let ctx =
        StepContext::new(&task, &env, 0, &conversation).with_admissible_actions(Some(&admissible));
    let generated = reply("grab it");
    let model = FixedScores(BTreeMap::from([
        ("look".to_string(), (-2.0, 1)),
        (long.clone(), (-6.0, 8)),
    ]));
    let mut chosen = Vec::new();
    for normalize in ["sum", "mean"] {
        let mut event = AfterModelEvent::new(ctx, 0, &generated)
            .with_prompt(&prompt)
            .with_scorer(Scorer::new(&model));
        let mut processor = kind.instantiate(&json!({"normalize": normalize})).unwrap();
        processor.after_model(&mut event).await.unwrap();
        chosen.push(event.actions()[0].clone());
    }
    let text = |text: &str| Action::Message { text: text.into() };
    assert_eq!(chosen, [text("look"), text(&long)]);
}

/// Scores each candidate from a table (logprob, tokens); unknown candidates are very unlikely.
struct FixedScores(BTreeMap<String, (f64, usize)>);

#[async_trait]
impl ChatModel for FixedScores {
    fn label(&self) -> String {
        "fixed".into()
    }
    async fn chat(&self, _request: &ChatRequest) -> Result<ChatResponse, ModelError> {
        Err(ModelError::new(ModelErrorKind::Unavailable, "not used"))
    }
    async fn score(
        &self,
        _messages: &[Message],
        candidates: &[String],
    ) -> Result<Vec<CandidateScore>, ModelError> {
        Ok(candidates
            .iter()
            .map(|candidate| {
                let (logprob, tokens) = self.0.get(candidate).copied().unwrap_or((-100.0, 1));
                CandidateScore { logprob, tokens }
            })
            .collect())
    }
}

// ---------------------------------------------------------------------------------------------
// compact_prompt
// ---------------------------------------------------------------------------------------------

fn call(id: &str, name: &str) -> ToolCall {
    ToolCall {
        id: id.into(),
        name: name.into(),
        arguments: json!({"order_id": id}),
    }
}

/// A τ²-shaped conversation: system, greeting, request, then turns with one or two tool calls
/// (each answered), assistant messages and user replies.
fn tool_conversation() -> Vec<Message> {
    let mut messages = vec![
        Message::system("You are a customer service agent."),
        Message::assistant("Hi! How can I help you today?"),
        Message::user("I want to return the items of my last three orders."),
    ];
    for turn in 0..6 {
        let first = call(&format!("a{turn}"), "get_order_details");
        if turn % 2 == 0 {
            let second = call(&format!("b{turn}"), "get_product_details");
            messages.push(Message::assistant_tool_calls(
                "",
                vec![first.clone(), second.clone()],
            ));
            messages.push(Message::tool_result(&first, "o".repeat(90 + turn)));
            messages.push(Message::tool_result(&second, "p".repeat(40)));
        } else {
            messages.push(Message::assistant_tool_calls("", vec![first.clone()]));
            messages.push(Message::tool_result(&first, "q".repeat(70)));
            messages.push(Message::assistant("Anything else?"));
            messages.push(Message::user(format!("Yes, order {turn} too.")));
        }
    }
    messages
}

/// Every kept tool result has its call kept before it, and every kept call whose result existed
/// keeps that result.
fn assert_calls_paired(kept: &[Message], original: &[Message]) {
    for (index, message) in kept.iter().enumerate() {
        if message.role == Role::Tool {
            let id = message.tool_call_id.as_deref().unwrap();
            assert!(
                kept[..index]
                    .iter()
                    .any(|m| m.tool_calls.iter().any(|c| c.id == id)),
                "result {id} kept without its call"
            );
        }
        for call in &message.tool_calls {
            let answered = |messages: &[Message]| {
                messages
                    .iter()
                    .any(|m| m.tool_call_id.as_deref() == Some(call.id.as_str()))
            };
            if answered(original) {
                assert!(answered(kept), "call {} kept without its result", call.id);
            }
        }
    }
}

#[test]
fn every_budget_keeps_calls_with_their_results_and_the_head() {
    let original = tool_conversation();
    let total: usize = original.iter().map(message_chars).sum();
    for budget in (0..=total + 10).step_by(7) {
        for min_turns in [1, 2, 3] {
            let config = CompactPromptConfig {
                max_chars: budget,
                min_turns,
                observation_chars: 0,
                ..CompactPromptConfig::default()
            };
            let (kept, report) = compact_prompt::compact(&original, &config);
            assert_calls_paired(&kept, &original);
            assert_eq!(kept[0], original[0], "budget {budget}");
            assert_eq!(kept[1], original[1]);
            assert!(kept[2].content.starts_with(&original[2].content));
            // What follows the head is a suffix of the original: the oldest turns went first.
            let tail = &kept[3..];
            assert_eq!(tail, &original[original.len() - tail.len()..]);
            assert!(tail.first().is_none_or(|m| m.role == Role::Assistant));
            if budget > 0 && !report.over_budget {
                assert!(report.chars_after <= budget, "budget {budget}: {report:?}");
            }
            if report.over_budget {
                let turns = compact_prompt::turns(&original[3..]).len();
                assert_eq!(turns - report.dropped_turns, min_turns.min(turns));
            }
        }
    }
}

/// A tool environment whose lookups return long records; `bye` ends the episode.
struct RecordsEnv {
    observations: Vec<String>,
}

#[async_trait]
impl Environment for RecordsEnv {
    async fn reset(&mut self, _task: &TaskSpec) -> Result<EnvInfo, EnvError> {
        Ok(EnvInfo {
            env: "records".into(),
            instructions: "Help the user. Records are long.".into(),
            tools: vec![ToolSchema {
                name: "get_record".into(),
                description: "Returns a record by id. Records can be very long.".into(),
                parameters: json!({
                    "type": "object",
                    "properties": {"id": {"type": "integer"}},
                    "required": ["id"],
                }),
            }],
            opening: vec![Message::user("Show me records 1 to 4.")],
            admissible_actions: None,
        })
    }

    async fn step(&mut self, action: &Action) -> Result<StepResult, EnvError> {
        let (observation, done) = match action {
            Action::ToolCall { call } => {
                let content = format!("record {}: {}", call.arguments["id"], "r".repeat(400));
                self.observations.push(content.clone());
                (
                    Observation::ToolResult {
                        call_id: call.id.clone(),
                        name: call.name.clone(),
                        content,
                        is_error: false,
                    },
                    false,
                )
            }
            Action::Message { text } => (
                Observation::User {
                    text: "thanks".into(),
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

    async fn evaluate(&mut self, _termination: Termination) -> Result<Evaluation, EnvError> {
        Ok(Evaluation {
            reward: 1.0,
            components: BTreeMap::new(),
            success: true,
            success_judged_only: true,
            db_hash: None,
            info: Value::Null,
        })
    }

    fn oracle_plan(&self) -> Option<Vec<Action>> {
        None
    }
}

#[tokio::test]
async fn compact_prompt_bounds_every_request_in_the_loop() {
    let spec = kiln_harness::spec::parse_spec(
        r#"
name = "compact-native"
[[processor]]
id = "prompt"
kind = "compact_prompt"
config = { observation_chars = 60, max_chars = 500, min_turns = 1, template = "Agent in {env}.\n{tools}" }
[[processor]]
id = "parser"
kind = "tool_parser"
config = { native = false, formats = ["action"] }
"#,
        kiln_harness::SpecFormat::Toml,
    )
    .unwrap();
    let harness = Harness::new(&spec).unwrap();
    let model = Arc::new(ChoosyModel::new(
        &[
            "Action: get_record[{\"id\": 1}]",
            "Action: get_record[{\"id\": 2}]",
            "Action: get_record[{\"id\": 3}]",
            "Action: get_record[{\"id\": 4}]",
            "Here they are, bye",
        ],
        &[],
    ));
    let mut env = RecordsEnv {
        observations: Vec::new(),
    };
    let result = run_episode(
        &harness,
        &SharedFactory(model.clone()),
        &mut env,
        &task(),
        None,
    )
    .await;
    assert_eq!(result.outcome.termination, Termination::UserStop);

    let chats = model.chats();
    assert_eq!(chats.len(), 5);
    let system = &chats[0].messages[0];
    assert_eq!(
        system.content,
        "Agent in records.\nTools:\nget_record(id: integer) — Returns a record by id.\nCall a tool with: Action: tool_name[{\"arg\":\"value\"}]"
    );
    for request in &chats {
        let messages = &request.messages;
        assert_eq!(messages[0], *system);
        assert!(messages[1].content.starts_with("Show me records 1 to 4."));
        assert_calls_paired(messages, messages);
        let chars: usize = messages.iter().map(message_chars).sum();
        assert!(chars <= 500, "request of {chars} characters");
        for message in messages.iter().filter(|m| m.role == Role::Tool) {
            assert!(message.content.contains("characters cut]"), "{message:?}");
        }
    }
    // The last request dropped the oldest turns and says so.
    let last = &chats[4].messages;
    assert!(last[1].content.contains("earlier turns omitted"));
    assert!(
        last.iter()
            .any(|m| m.tool_calls.iter().any(|c| c.arguments["id"] == 4))
    );
    // The stored trajectory keeps the full observations.
    let recorded: Vec<&str> = result
        .trajectory
        .steps
        .iter()
        .flat_map(|step| &step.actions)
        .map(|record| record.observation.text())
        .filter(|text| text.starts_with("record"))
        .collect();
    assert_eq!(recorded, env.observations);
    assert!(!notes_of(&result.trajectory, "prompt").is_empty());
}

// ---------------------------------------------------------------------------------------------
// Harness files
// ---------------------------------------------------------------------------------------------

#[test]
fn every_shipped_harness_file_validates() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../harnesses");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|ext| ext.to_str()) != Some("toml") {
            continue;
        }
        let report = validate_file(&path).unwrap_or_else(|error| panic!("{error}"));
        names.push(report.name);
    }
    names.sort();
    assert!(
        names.contains(&"small-model".to_string()),
        "small-model.toml is shipped: {names:?}"
    );
    assert!(names.len() >= 3, "{names:?}");
}

#[test]
fn the_small_model_harness_orders_choice_between_parser_and_retry() {
    let harness = Harness::new(&builtin_harness("small-model").unwrap()).unwrap();
    assert_eq!(
        harness.processors_at(kiln_harness::Hook::AfterModel),
        ["parser", "choice", "retry"]
    );
    assert_eq!(
        harness.processors_at(kiln_harness::Hook::BeforeModel),
        ["tools", "prompt"]
    );
}
