//! [`Tau2Environment`]: one τ² retail or airline conversation behind the [`Environment`] trait,
//! and [`Tau2Factory`], which loads a domain's data once and hands out cheap instances.
//!
//! The episode follows τ²'s half-duplex orchestrator: the agent greets ([`GREETING`]), the user
//! answers, then every agent action is either a tool call (answered by the domain's tools on this
//! episode's own DB) or a text message (answered by the simulated user). It ends on the agent's
//! `###STOP###`, a user stop token (`###STOP###`, `###TRANSFER###`, `###OUT-OF-SCOPE###`), after
//! [`MAX_STEPS`] steps or [`MAX_ERRORS`] tool errors.
//!
//! Steps are counted as τ² counts them, one per message passed: the user's first message counts
//! one; a text message counts one for the agent's message and one for the user's reply; a tool
//! call counts one for the agent's message and one for the tool's answer. τ² answers several
//! parallel tool calls of one assistant message in a single step, but Kiln steps calls one at a
//! time and cannot see that grouping, so parallel calls count two each here: an episode that
//! uses them reaches the limit slightly earlier than in τ².
//!
//! Each episode's DB is a pooled copy of the domain's initial DB ([`DbLayout`]): taken at reset,
//! restored record by record and returned when the episode is dropped (next reset or drop), so a
//! reset never clones megabytes. Tool arguments that are not a JSON object (a model's unparsable
//! arguments kept as text) are answered with a tool error, counted like any other.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use kiln_protocol::{
    Action, EnvInfo, Message, Observation, StepResult, TaskSpec, Termination, ToolCall, ToolSchema,
};
use serde_json::{Map, Value, json};

use super::db::{DbCache, db_path, domain_name};
use super::eval::{self, DbLayout, PooledDb, ScoringInput};
use super::tasks::{Splits, Tau2Task, load_splits, load_tasks};
use super::user::{GREETING, STOP, SimulatedUser, UserMode, build_user};
use super::{Domain, ToolError, airline, render_output, retail};
use crate::options::{invalid_options, options_object, positive_u32, unknown_option};
use crate::{
    AuxModel, EnvContext, EnvError, EnvErrorKind, Environment, EnvironmentFactory, Evaluation,
    SplitInfo,
};

/// τ²'s step limit (messages passed).
pub const MAX_STEPS: u32 = 200;
/// τ²'s tool-error limit.
pub const MAX_ERRORS: u32 = 10;

/// The environment id of a domain (`tau2-retail`, `tau2-airline`).
pub fn env_id(domain: Domain) -> &'static str {
    match domain {
        Domain::Retail => "tau2-retail",
        Domain::Airline => "tau2-airline",
    }
}

/// Runs one tool of `domain` on `db`.
pub fn call_tool(
    domain: Domain,
    db: &mut Value,
    name: &str,
    args: &Map<String, Value>,
) -> Result<Value, ToolError> {
    match domain {
        Domain::Retail => retail::call_tool(db, name, args),
        Domain::Airline => airline::call_tool(db, name, args),
    }
}

/// Whether `name` changes the DB in `domain` (only those calls are replayed for the DB reward).
pub fn is_write_tool(domain: Domain, name: &str) -> bool {
    match domain {
        Domain::Retail => retail::is_write_tool(name),
        Domain::Airline => airline::is_write_tool(name),
    }
}

/// The tools the agent is offered in `domain`.
pub fn tool_schemas(domain: Domain) -> Vec<ToolSchema> {
    match domain {
        Domain::Retail => retail::tool_schemas(),
        Domain::Airline => airline::tool_schemas(),
    }
}

/// Replays `calls` in order on `db`, ignoring their results (errors included), as τ² does when
/// it rebuilds a DB state.
pub fn replay<'a>(
    domain: Domain,
    db: &mut Value,
    calls: impl IntoIterator<Item = (&'a str, &'a Map<String, Value>)>,
) {
    for (name, args) in calls {
        let _ = call_tool(domain, db, name, args);
    }
}

/// The folder holding a domain's files: `<data_dir>/data/tau2/<domain>`.
pub fn domain_dir(data_dir: &Path, domain: Domain) -> PathBuf {
    data_dir.join("data").join("tau2").join(domain_name(domain))
}

/// Everything the instances of one domain share, loaded once: tasks, splits, policy, tool
/// schemas, the normalised initial DB (from the process-wide [`DbCache`], so every factory of a
/// data directory shares one copy), and each task's gold DB hash (computed on first use).
pub struct DomainData {
    domain: Domain,
    policy: String,
    tools: Vec<ToolSchema>,
    tasks: Vec<Tau2Task>,
    index: HashMap<String, usize>,
    splits: Splits,
    layout: Arc<DbLayout>,
    gold_hashes: Vec<OnceLock<String>>,
}

impl DomainData {
    /// Loads `<data_dir>/data/tau2/<domain>/{db.json,policy.md,tasks.json,split_tasks.json}`.
    /// Missing files are a [`EnvErrorKind::Data`] error that says to run `ops/setup tau2`.
    pub fn load(data_dir: &Path, domain: Domain) -> Result<Self, EnvError> {
        let dir = domain_dir(data_dir, domain);
        let missing: Vec<&str> = ["db.json", "policy.md", "tasks.json", "split_tasks.json"]
            .into_iter()
            .filter(|file| !dir.join(file).is_file())
            .collect();
        if !missing.is_empty() {
            return Err(EnvError::new(
                EnvErrorKind::Data,
                format!(
                    "{} data is missing from {} ({}): run ops/setup tau2",
                    env_id(domain),
                    dir.display(),
                    missing.join(", ")
                ),
            ));
        }
        let policy_path = dir.join("policy.md");
        let policy = std::fs::read_to_string(&policy_path).map_err(|error| {
            EnvError::new(
                EnvErrorKind::Data,
                format!(
                    "{}: cannot read the policy text ({error})",
                    policy_path.display()
                ),
            )
        })?;
        let tasks = load_tasks(&dir.join("tasks.json"))?;
        let splits = load_splits(&dir.join("split_tasks.json"), &tasks)?;
        let base_db = DbCache::global().initial(&db_path(data_dir, domain), domain)?;
        let layout = Arc::new(DbLayout::new(base_db));
        let index = tasks
            .iter()
            .enumerate()
            .map(|(position, task)| (task.id.clone(), position))
            .collect();
        let gold_hashes = tasks.iter().map(|_| OnceLock::new()).collect();
        tracing::debug!(
            env = env_id(domain),
            tasks = tasks.len(),
            "loaded tau2 domain data"
        );
        Ok(Self {
            domain,
            policy,
            tools: tool_schemas(domain),
            tasks,
            index,
            splits,
            layout,
            gold_hashes,
        })
    }

    pub fn domain(&self) -> Domain {
        self.domain
    }

    /// `policy.md`, the agent's instructions.
    pub fn policy(&self) -> &str {
        &self.policy
    }

    pub fn tools(&self) -> &[ToolSchema] {
        &self.tools
    }

    /// Every task, in `tasks.json` order.
    pub fn tasks(&self) -> &[Tau2Task] {
        &self.tasks
    }

    pub fn splits(&self) -> &Splits {
        &self.splits
    }

    /// The normalised initial DB every episode starts from (clone it, or take a pooled copy from
    /// [`DomainData::layout`], to mutate).
    pub fn base_db(&self) -> &Arc<Value> {
        self.layout.base()
    }

    /// The initial DB prepared for fast fresh copies, replays and hashes.
    pub fn layout(&self) -> &Arc<DbLayout> {
        &self.layout
    }

    /// The position of task `id`, or an [`EnvErrorKind::UnknownTask`] error.
    pub fn task_index(&self, id: &str) -> Result<usize, EnvError> {
        self.index.get(id).copied().ok_or_else(|| {
            EnvError::new(
                EnvErrorKind::UnknownTask,
                format!(
                    "{} has no task `{id}` ({} tasks; see its splits for their ids)",
                    env_id(self.domain),
                    self.tasks.len()
                ),
            )
        })
    }

    /// The τ² hash of the DB after replaying task `position`'s gold actions on a fresh DB,
    /// computed once per task (replaying is deterministic).
    pub fn gold_db_hash(&self, position: usize) -> &str {
        self.gold_hashes[position]
            .get_or_init(|| eval::gold_db_hash(self.domain, &self.layout, &self.tasks[position]))
    }
}

/// Options a τ² task accepts in `env_options`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tau2Options {
    /// Who plays the customer: `scripted` (default), `model` or `none`.
    pub user: UserMode,
    /// Step limit; τ²'s is [`MAX_STEPS`].
    pub max_steps: u32,
    /// Tool-error limit; τ²'s is [`MAX_ERRORS`].
    pub max_errors: u32,
}

impl Default for Tau2Options {
    fn default() -> Self {
        Self {
            user: UserMode::Scripted,
            max_steps: MAX_STEPS,
            max_errors: MAX_ERRORS,
        }
    }
}

impl Tau2Options {
    const KEYS: [&str; 3] = ["user", "max_steps", "max_errors"];

    /// Parses `{"user": "scripted"|"model"|"none", "max_steps": N, "max_errors": N}`; `null` or
    /// `{}` gives the defaults. Unknown keys and wrong types are [`EnvErrorKind::InvalidOptions`].
    pub fn from_value(options: &Value) -> Result<Self, EnvError> {
        let mut parsed = Self::default();
        let Some(map) = options_object("tau2", options)? else {
            return Ok(parsed);
        };
        for (key, value) in map {
            match key.as_str() {
                "user" => {
                    let mode = value.as_str().ok_or_else(|| {
                        invalid_options(format!("tau2 option user must be a string, got {value}"))
                    })?;
                    parsed.user = UserMode::parse(mode)?;
                }
                "max_steps" => parsed.max_steps = positive_u32("tau2", key, value)?,
                "max_errors" => parsed.max_errors = positive_u32("tau2", key, value)?,
                other => return Err(unknown_option("tau2", other, &Self::KEYS.join(", "))),
            }
        }
        Ok(parsed)
    }
}

/// Creates [`Tau2Environment`]s of one domain. The domain's data is loaded on first use and then
/// shared (one DB in memory per factory); `create` only parses options.
pub struct Tau2Factory {
    domain: Domain,
    data_dir: PathBuf,
    user_model: Option<Arc<dyn AuxModel>>,
    judge_model: Option<Arc<dyn AuxModel>>,
    data: OnceLock<Result<Arc<DomainData>, EnvError>>,
}

impl Tau2Factory {
    pub fn new(domain: Domain, ctx: &EnvContext) -> Self {
        Self {
            domain,
            data_dir: ctx.data_dir.clone(),
            user_model: ctx.user_model.clone(),
            judge_model: ctx.judge_model.clone(),
            data: OnceLock::new(),
        }
    }

    /// The domain's shared data, loading it on first call.
    pub fn data(&self) -> Result<&Arc<DomainData>, EnvError> {
        self.data
            .get_or_init(|| DomainData::load(&self.data_dir, self.domain).map(Arc::new))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// A fresh environment, typed (the trait's `create` boxes it).
    pub fn create_tau2(&self, options: &Value) -> Result<Tau2Environment, EnvError> {
        let options = Tau2Options::from_value(options)?;
        Tau2Environment::new(
            self.data()?.clone(),
            options,
            self.user_model.clone(),
            self.judge_model.clone(),
        )
    }
}

impl EnvironmentFactory for Tau2Factory {
    fn id(&self) -> &str {
        env_id(self.domain)
    }

    fn description(&self) -> &str {
        match self.domain {
            Domain::Retail => {
                "τ²-bench retail: customer service for an online store (114 tasks, 16 tools)"
            }
            Domain::Airline => {
                "τ²-bench airline: customer service for an airline (50 tasks, 14 tools)"
            }
        }
    }

    /// Empty when the data is not installed (`create` and `task_ids` then say how to install it).
    fn splits(&self) -> Vec<SplitInfo> {
        let Ok(data) = self.data() else {
            return Vec::new();
        };
        data.splits()
            .sizes()
            .map(|(name, tasks)| SplitInfo {
                name: name.to_string(),
                tasks,
            })
            .collect()
    }

    fn task_ids(&self, split: &str) -> Result<Vec<String>, EnvError> {
        Ok(self.data()?.splits().task_ids(split)?.to_vec())
    }

    /// tau2's own `split_tasks.json`: search and gate drawn disjointly from `train`, held-out =
    /// `test`.
    fn evolution_sources(&self) -> Option<crate::EvolutionSources> {
        Some(crate::EvolutionSources::new("train", "train", "test"))
    }

    fn create(&self, options: &Value) -> Result<Box<dyn crate::Environment>, EnvError> {
        Ok(Box::new(self.create_tau2(options)?))
    }
}

/// One τ² episode at a time: see the module docs.
pub struct Tau2Environment {
    data: Arc<DomainData>,
    options: Tau2Options,
    user_model: Option<Arc<dyn AuxModel>>,
    judge_model: Option<Arc<dyn AuxModel>>,
    episode: Option<Episode>,
}

struct Episode {
    task: usize,
    /// A pooled copy of the initial DB, restored and returned when the episode is dropped.
    db: PooledDb,
    user: Box<dyn SimulatedUser>,
    /// The whole conversation: greeting, user and agent messages, tool calls and results.
    transcript: Vec<Message>,
    /// The agent's tool calls in order, for the DB replay.
    agent_calls: Vec<ToolCall>,
    steps: u32,
    errors: u32,
    ended: Option<Termination>,
    /// The user's first message already ended the conversation (a model user may stop at once):
    /// the first step reports it.
    ended_at_opening: Option<Termination>,
}

impl Tau2Environment {
    /// Fails when `options.user` is `model` and no user model is given.
    pub fn new(
        data: Arc<DomainData>,
        options: Tau2Options,
        user_model: Option<Arc<dyn AuxModel>>,
        judge_model: Option<Arc<dyn AuxModel>>,
    ) -> Result<Self, EnvError> {
        if options.user == UserMode::Model && user_model.is_none() {
            return Err(invalid_options(
                "tau2 option user = \"model\" needs a user model, and none is configured (EnvContext.user_model)".to_string(),
            ));
        }
        Ok(Self {
            data,
            options,
            user_model,
            judge_model,
            episode: None,
        })
    }

    pub fn options(&self) -> Tau2Options {
        self.options
    }

    /// The current episode's DB, `None` before the first reset.
    pub fn db(&self) -> Option<&Value> {
        self.episode.as_ref().map(|episode| &*episode.db)
    }

    /// The current episode's conversation so far.
    pub fn transcript(&self) -> &[Message] {
        self.episode
            .as_ref()
            .map(|episode| episode.transcript.as_slice())
            .unwrap_or(&[])
    }

    /// Steps counted so far (τ²'s way, see the module docs).
    pub fn step_count(&self) -> u32 {
        self.episode.as_ref().map_or(0, |episode| episode.steps)
    }

    /// Tool calls that returned an error so far.
    pub fn tool_errors(&self) -> u32 {
        self.episode.as_ref().map_or(0, |episode| episode.errors)
    }

    fn episode_mut(&mut self) -> Result<&mut Episode, EnvError> {
        let episode = self
            .episode
            .as_mut()
            .ok_or_else(|| state_error("step called before reset"))?;
        if let Some(ended) = episode.ended {
            return Err(state_error(&format!(
                "step called after the episode ended ({ended:?})"
            )));
        }
        Ok(episode)
    }

    fn step_tool_call(&mut self, call: &ToolCall) -> Result<StepResult, EnvError> {
        let domain = self.data.domain();
        let limits = self.options;
        let episode = self.episode_mut()?;
        episode.steps += 1;
        let result = match &call.arguments {
            Value::Object(args) => call_tool(domain, &mut episode.db, &call.name, args),
            other => Err(ToolError::new(format!(
                "tool arguments must be a JSON object, got {other}"
            ))),
        };
        let (content, is_error) = render_output(&result);
        if is_error {
            episode.errors += 1;
        }
        tracing::debug!(tool = %call.name, is_error, steps = episode.steps, "tau2 tool call");
        episode
            .transcript
            .push(Message::assistant_tool_calls("", vec![call.clone()]));
        episode
            .transcript
            .push(Message::tool_result(call, content.clone()));
        episode.agent_calls.push(call.clone());
        episode.user.observe_tool_call(&call.name, !is_error);
        episode.steps += 1;
        let termination = limit_reached(episode, limits);
        let observation = Observation::ToolResult {
            call_id: call.id.clone(),
            name: call.name.clone(),
            content,
            is_error,
        };
        Ok(finish_step(episode, observation, termination))
    }

    async fn step_message(&mut self, text: &str) -> Result<StepResult, EnvError> {
        let limits = self.options;
        let episode = self.episode_mut()?;
        episode.steps += 1;
        episode.transcript.push(Message::assistant(text));
        let agent_stop = text.contains(STOP).then_some(Termination::AgentStop);
        if let Some(termination) = limit_reached(episode, limits).or(agent_stop) {
            let note = match termination {
                Termination::AgentStop => "(the agent ended the conversation)",
                _ => "(the step limit was reached)",
            };
            return Ok(finish_step(
                episode,
                Observation::Text {
                    text: note.to_string(),
                },
                Some(termination),
            ));
        }
        let reply = episode.user.reply(text).await?;
        episode.steps += 1;
        episode.transcript.push(Message::user(reply.clone()));
        let termination = limit_reached(episode, limits).or_else(|| episode.user.stop_in(&reply));
        Ok(finish_step(
            episode,
            Observation::User { text: reply },
            termination,
        ))
    }
}

fn state_error(message: &str) -> EnvError {
    EnvError::new(EnvErrorKind::State, format!("tau2: {message}"))
}

/// τ²'s limit check after a step: the step limit, then the error limit (which wins when both).
fn limit_reached(episode: &Episode, limits: Tau2Options) -> Option<Termination> {
    if episode.errors >= limits.max_errors {
        return Some(Termination::TooManyErrors);
    }
    if episode.steps >= limits.max_steps {
        return Some(Termination::MaxSteps);
    }
    None
}

fn finish_step(
    episode: &mut Episode,
    observation: Observation,
    termination: Option<Termination>,
) -> StepResult {
    episode.ended = termination;
    StepResult {
        observation,
        done: termination.is_some(),
        termination,
        admissible_actions: None,
        info: json!({ "steps": episode.steps, "tool_errors": episode.errors }),
    }
}

/// The gold actions as tool calls (ids `gold-<i>`), then one message carrying every
/// `communicate_info` string, then `###STOP###`.
pub fn oracle_plan(task: &Tau2Task) -> Vec<Action> {
    let mut plan: Vec<Action> = task
        .gold_actions()
        .iter()
        .enumerate()
        .map(|(index, action)| Action::ToolCall {
            call: ToolCall {
                id: format!("gold-{index}"),
                name: action.name.clone(),
                arguments: Value::Object(action.arguments.clone()),
            },
        })
        .collect();
    let info = task.communicate_info();
    let summary = if info.is_empty() {
        "Your request has been handled.".to_string()
    } else {
        format!(
            "Your request has been handled. Details: {}.",
            info.join("; ")
        )
    };
    plan.push(Action::Message { text: summary });
    plan.push(Action::Message {
        text: STOP.to_string(),
    });
    plan
}

#[async_trait]
impl Environment for Tau2Environment {
    async fn reset(&mut self, spec: &TaskSpec) -> Result<EnvInfo, EnvError> {
        let data = self.data.clone();
        let domain = data.domain();
        if spec.env != env_id(domain) {
            tracing::warn!(expected = env_id(domain), got = %spec.env, "task spec names another environment");
        }
        let position = data.task_index(&spec.task_id)?;
        let task = &data.tasks()[position];
        if task
            .initial_state
            .as_ref()
            .is_some_and(|state| !state.is_null())
        {
            return Err(EnvError::new(
                EnvErrorKind::Data,
                format!(
                    "{} task `{}` has an initial_state, which Kiln's τ² port does not support",
                    env_id(domain),
                    task.id
                ),
            ));
        }
        let mut user = build_user(
            self.options.user,
            task,
            &|name| is_write_tool(domain, name),
            self.user_model.clone(),
        )?;
        let first_message = user.opening().await?;
        let transcript = vec![
            Message::assistant(GREETING),
            Message::user(first_message.clone()),
        ];
        let ended_at_opening = user.stop_in(&first_message);
        tracing::debug!(env = env_id(domain), task = %task.id, user = %user.label(), "tau2 reset");
        self.episode = Some(Episode {
            task: position,
            db: data.layout().fresh(),
            user,
            transcript: transcript.clone(),
            agent_calls: Vec::new(),
            steps: 1,
            errors: 0,
            ended: None,
            ended_at_opening,
        });
        Ok(EnvInfo {
            env: env_id(domain).to_string(),
            instructions: data.policy().to_string(),
            tools: data.tools().to_vec(),
            opening: transcript,
            admissible_actions: None,
        })
    }

    async fn step(&mut self, action: &Action) -> Result<StepResult, EnvError> {
        if let Some(episode) = self.episode.as_mut()
            && let Some(termination) = episode.ended_at_opening.take()
        {
            let note = Observation::Text {
                text: "(the user ended the conversation in its first message)".to_string(),
            };
            return Ok(finish_step(episode, note, Some(termination)));
        }
        match action {
            Action::ToolCall { call } => self.step_tool_call(call),
            Action::Message { text } => self.step_message(text).await,
        }
    }

    async fn evaluate(&mut self, termination: Termination) -> Result<Evaluation, EnvError> {
        let episode = self
            .episode
            .as_ref()
            .ok_or_else(|| state_error("evaluate called before reset"))?;
        let data = &self.data;
        let task = &data.tasks()[episode.task];
        let input = ScoringInput {
            task,
            domain: data.domain(),
            layout: data.layout(),
            agent_calls: &episode.agent_calls,
            transcript: &episode.transcript,
            final_db_hash: data.layout().hash(&episode.db),
        };
        let position = episode.task;
        let mut evaluation = eval::evaluate(
            input,
            termination,
            || data.gold_db_hash(position).to_string(),
            self.judge_model.as_deref(),
        )
        .await?;
        if let Value::Object(info) = &mut evaluation.info {
            info.insert("user".to_string(), json!(episode.user.label()));
            info.insert("steps".to_string(), json!(episode.steps));
            info.insert("tool_errors".to_string(), json!(episode.errors));
        }
        Ok(evaluation)
    }

    fn oracle_plan(&self) -> Option<Vec<Action>> {
        let episode = self.episode.as_ref()?;
        Some(oracle_plan(&self.data.tasks()[episode.task]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_with_defaults_and_reject_bad_input() {
        assert_eq!(
            Tau2Options::from_value(&Value::Null).unwrap(),
            Tau2Options::default()
        );
        let parsed =
            Tau2Options::from_value(&json!({"user": "none", "max_steps": 20, "max_errors": 3}))
                .unwrap();
        assert_eq!(
            parsed,
            Tau2Options {
                user: UserMode::None,
                max_steps: 20,
                max_errors: 3
            }
        );
        for bad in [
            json!({"user": "robot"}),
            json!({"user": 1}),
            json!({"max_steps": 0}),
            json!({"speed": 1}),
            json!([1]),
        ] {
            let error = Tau2Options::from_value(&bad).unwrap_err();
            assert_eq!(error.kind(), EnvErrorKind::InvalidOptions, "{bad}");
        }
        let error = Tau2Options::from_value(&json!({"speed": 1})).unwrap_err();
        assert!(
            error.to_string().contains("user, max_steps, max_errors"),
            "{error}"
        );
    }

    #[test]
    fn missing_data_says_to_run_setup() {
        let dir = tempfile::tempdir().unwrap();
        let error = DomainData::load(dir.path(), Domain::Airline).err().unwrap();
        assert_eq!(error.kind(), EnvErrorKind::Data);
        assert!(error.to_string().contains("run ops/setup tau2"), "{error}");
        assert!(error.to_string().contains("db.json"), "{error}");
    }
}
