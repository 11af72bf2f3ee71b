//! `script`: a processor written in [Rhai](https://rhai.rs), run under hard limits. This is how
//! a meta-agent (or a person) adds behaviour without changing Kiln.
//!
//! # Writing one
//!
//! A script is a set of functions. Each function named after a hook (`task_start`, `step_start`,
//! `before_model`, `after_model`, `before_tool`, `after_tool`, `step_end`, `task_end`) takes the
//! hook's event and runs at that hook; other functions are helpers. `this` is a map that lives
//! for the episode (start it with `this.x = this.x ?? 0`). Nothing else is kept between calls.
//!
//! ```toml
//! [[processor]]
//! id = "revisit"
//! kind = "script"
//! # or: config = { file = "revisit.rhai" }  (next to the harness file; its text is embedded)
//! [processor.config]
//! source = '''
//! // Counts how often each observation was seen and warns when the agent goes in circles.
//! fn after_tool(event) {
//!     let text = event.observation.text ?? "";
//!     let seen = this.seen ?? #{};
//!     seen[text] = (seen[text] ?? 0) + 1;
//!     this.seen = seen;
//!     if seen[text] == 3 {
//!         event.observation.text = text + "\n(You have seen this 3 times. Try something new.)";
//!         event.note(#{revisited: seen[text]});
//!     }
//! }
//! '''
//! limits = { max_operations = 20000 }
//! ```
//!
//! The processor's `hooks` default to the hooks the script defines a function for; when listed,
//! they must match those functions exactly.
//!
//! # The event
//!
//! `event.name` (or `event["name"]`) reads a copy of a field; assigning to a field, or changing
//! it in place (`event.inject.push("hint")`), writes it. Each hook's event has exactly the fields
//! the built-in processors may change there (writable) plus read-only context; writing a
//! read-only field, a field the hook does not have, or a value of the wrong shape is an error.
//!
//! | hook | read-only | writable |
//! |---|---|---|
//! | `task_start` | `env` | `system_prompt` (string or `()`), `opening`, `native_tools`, `tool_text`, `sampling` |
//! | `step_start` | context | `inject` (messages to append; a string is a user message), `stop` |
//! | `before_model` | context | `messages`, `tools`, `sampling`, `stop_sequences` |
//! | `after_model` | context, `attempt`, `response`, `prompt` | `message`, `actions`, `parse_error`, `retry`, `stop` |
//! | `before_tool` | context | `action`, `veto` (`()`, an error text, or an observation) |
//! | `after_tool` | context, `action`, `done`, `env_termination` | `observation` |
//! | `step_end` | context, `model_turn`, `actions`, `env_done` | `inject`, `stop` |
//! | `task_end` | `outcome` | nothing |
//!
//! Context is `hook`, `step`, `env` (`#{id, instructions, tools}`), `admissible` (the actions
//! the environment accepts now, or `()`) and `conversation`. Scripts never see task ids, splits
//! or gold data, so behaviour cannot be keyed to a task. The recording policy is not exposed:
//! evolved code must not hide its own traces. `stop` takes a reason string (`agent_stop`) or
//! `#{termination, reason}` with `agent_stop`, `loop_detected`, `max_steps` or
//! `too_many_errors`. At `after_model`, a string `parse_error` marks the reply malformed (and
//! clears the actions); writing `actions` clears the parse error. `event.note(value)` records
//! data in the trajectory.
//!
//! # Limits and failures
//!
//! Every hook call runs under [`ScriptLimits`] (operations, call depth, expression depth, string,
//! array and map sizes; overridable in `limits` up to [`ScriptLimits::HARD`]). Scripts have no
//! I/O: no files, network, modules, `eval`, clock or ambient randomness. `print` and `debug` go
//! to the trajectory. `rand_int(lo, hi)` (inclusive), `rand_float()`, `rand_bool([p])`,
//! `rand_pick(array)` and `rand_shuffle(array)` draw from an RNG seeded per episode from the
//! task's seed, environment, task id and attempt ([`engine::episode_seed`]): the same episode
//! draws the same numbers.
//!
//! A call that errors or hits a limit changes nothing (its writes and notes are dropped), is
//! recorded in the trajectory as a `script_error` note with the line, column and the limit hit,
//! and disables the script for the rest of the episode. It never ends the episode.
//!
//! The canonical form holds the script's text (`source`): a `file` is read when the harness is
//! loaded ([`crate::spec::load_spec`]) and replaced by its text, so the content hash changes when
//! the script does, and moving or renaming the file does not.

pub mod compile;
pub mod engine;
pub mod event;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use kiln_protocol::{Hook, TaskSpec};
use rhai::{CallFnOptions, Dynamic, Engine, EvalAltResult, Map, Scope};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::warn;

pub use compile::{
    Program, ScriptError, ScriptErrorKind, ScriptSurface, called_functions, script_surface,
};
pub use engine::ScriptLimits;

use self::compile::{compile, location};
use self::engine::{EpisodeIo, build_engine, episode_seed, on_script_stack};
use self::event::{EventBuilder, EventData, ScriptEvent, Shape, Veto, Written, to_value};
use crate::error::ProcessorError;
use crate::events::{
    AfterModelEvent, AfterToolEvent, BeforeModelEvent, BeforeToolEvent, StepEndEvent,
    StepStartEvent, StopRequest, TaskEndEvent, TaskStartEvent,
};
use crate::processor::{ConfigError, Processor, ProcessorConfig, ProcessorKind, parse_config};

/// The kind's name in harness files.
pub const KIND: &str = "script";

/// `config` of a `script` processor.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScriptConfig {
    /// The script's text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// A path relative to the harness file, read (and replaced by `source`) when the harness
    /// is loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    pub limits: ScriptLimits,
}

impl ProcessorConfig for ScriptConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        match (&self.source, &self.file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "file",
                    "give either `source` (the script text) or `file` (a path next to the \
                     harness file), not both",
                ));
            }
            (None, Some(file)) => {
                return Err(ConfigError::new(
                    "file",
                    format!(
                        "`{file}` was not read: a script file is read, relative to the harness \
                         file, when the harness is loaded from a file; elsewhere give the text \
                         as `source`"
                    ),
                ));
            }
            (None, None) => {
                return Err(ConfigError::new(
                    "source",
                    "missing: give the script text (`source`) or a path next to the harness \
                     file (`file`)",
                ));
            }
            (Some(_), None) => {}
        }
        self.limits.check()
    }
}

impl ScriptConfig {
    fn source(&self) -> &str {
        self.source.as_deref().unwrap_or_default()
    }
}

/// The `script` kind.
#[derive(Debug, Default)]
pub struct ScriptKind;

pub fn kind() -> ScriptKind {
    ScriptKind
}

/// A compile error as a config error on `source`, keeping the script position.
fn source_error(error: ScriptError) -> ConfigError {
    ConfigError::new("source", error.message()).with_location(error.location())
}

/// Parses, checks and compiles a config.
fn program(config: &Value) -> Result<(ScriptConfig, Arc<Program>), ConfigError> {
    let parsed: ScriptConfig = parse_config(config)?;
    let program = compile(parsed.source(), &parsed.limits).map_err(source_error)?;
    if program.hooks.is_empty() {
        return Err(ConfigError::new(
            "source",
            format!(
                "the script defines no hook function; name a function after a hook, e.g. \
                 `fn step_end(event) {{ … }}` (hooks: {})",
                hook_names(&Hook::ALL)
            ),
        ));
    }
    Ok((parsed, program))
}

fn hook_names<'a>(hooks: impl IntoIterator<Item = &'a Hook>) -> String {
    hooks
        .into_iter()
        .map(|hook| hook.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl ProcessorKind for ScriptKind {
    fn name(&self) -> &'static str {
        KIND
    }
    fn summary(&self) -> &'static str {
        "a Rhai script run at the hooks it defines functions for, under hard limits"
    }
    fn hooks(&self) -> &'static [Hook] {
        &Hook::ALL
    }
    fn group(&self) -> Option<&'static str> {
        None
    }
    fn normalize_config(&self, config: &Value) -> Result<Value, ConfigError> {
        let (parsed, _) = program(config)?;
        serde_json::to_value(&parsed)
            .map_err(|error| ConfigError::new("", format!("cannot serialize config: {error}")))
    }
    fn default_hooks(&self, config: &Value) -> Vec<Hook> {
        match program(config) {
            Ok((_, program)) => program.hooks.iter().copied().collect(),
            Err(_) => Vec::new(),
        }
    }
    fn check_hooks(&self, config: &Value, hooks: &[Hook]) -> Result<(), ConfigError> {
        let (_, program) = program(config)?;
        if let Some(hook) = hooks.iter().find(|hook| !program.hooks.contains(hook)) {
            return Err(ConfigError::new(
                "",
                format!(
                    "`hooks` lists `{hook}` but the script defines no `fn {hook}(event)` (it \
                     defines: {})",
                    hook_names(&program.hooks)
                ),
            ));
        }
        if let Some(hook) = program.hooks.iter().find(|hook| !hooks.contains(hook)) {
            return Err(ConfigError::new(
                "",
                format!(
                    "the script defines `fn {hook}(event)` but `hooks` does not list `{hook}`; \
                     list it, or leave `hooks` out to use every hook the script defines"
                ),
            ));
        }
        Ok(())
    }
    fn instantiate(&self, config: &Value) -> Result<Box<dyn Processor>, ConfigError> {
        let (parsed, program) = program(config)?;
        Ok(Box::new(ScriptProcessor::new(program, &parsed.limits)))
    }
}

/// One episode's instance of a script.
pub struct ScriptProcessor {
    program: Arc<Program>,
    engine: Engine,
    io: EpisodeIo,
    /// `this`: the script's per-episode state.
    state: Dynamic,
    seeded: bool,
    disabled: bool,
}

/// What one hook call did.
#[derive(Debug, Default)]
pub struct HookOutcome {
    /// Converted writes, to apply to the real event; empty when the call failed.
    pub written: BTreeMap<&'static str, Written>,
    /// Notes for the trajectory: captured output, the script's notes, the failure.
    pub notes: Vec<Value>,
}

impl ScriptProcessor {
    pub fn new(program: Arc<Program>, limits: &ScriptLimits) -> Self {
        let io = EpisodeIo::new();
        Self {
            engine: build_engine(limits, &io),
            program,
            io,
            state: Dynamic::from_map(Map::new()),
            seeded: false,
            disabled: false,
        }
    }

    /// Whether a failure disabled the script for the rest of the episode.
    pub fn is_disabled(&self) -> bool {
        self.disabled
    }

    /// Runs the hook's function on `data`. Never fails: a failure is a note and disables the
    /// script.
    pub fn call(&mut self, task: &TaskSpec, data: EventData) -> HookOutcome {
        if self.disabled || !self.program.hooks.contains(&data.hook()) {
            return HookOutcome::default();
        }
        if !self.seeded {
            self.io.reseed(episode_seed(
                task.seed,
                &task.env,
                &task.task_id,
                task.attempt,
            ));
            self.seeded = true;
        }
        let hook = data.hook();
        let event = ScriptEvent::new(data);
        let argument = event.clone();
        let (engine, ast, state) = (&self.engine, &self.program.ast, &mut self.state);
        let result = on_script_stack(move || {
            let options = CallFnOptions::new()
                .eval_ast(false)
                .rewind_scope(true)
                .bind_this_ptr(state);
            engine
                .call_fn_with_options::<Dynamic>(
                    options,
                    &mut Scope::new(),
                    ast,
                    hook.as_str(),
                    (argument,),
                )
                .map(drop)
        });
        let mut data = event.close();
        let mut notes = Vec::new();
        let output = self.io.take_output();
        if !output.lines.is_empty() {
            let mut note = json!({"output": output.lines});
            if output.dropped > 0 {
                note["dropped_lines"] = json!(output.dropped);
            }
            notes.push(note);
        }
        let failure = match result {
            Ok(Ok(())) => {
                notes.extend(data.take_notes());
                return HookOutcome {
                    written: data.take_written(),
                    notes,
                };
            }
            Ok(Err(error)) => runtime_failure(error),
            Err(message) => json!({"message": message}),
        };
        self.disabled = true;
        warn!(hook = %hook, error = %failure, "script failed; disabled for the rest of the episode");
        let mut failure = failure;
        failure["hook"] = json!(hook.as_str());
        failure["disabled"] = json!(true);
        notes.push(json!({"script_error": failure}));
        HookOutcome {
            written: BTreeMap::new(),
            notes,
        }
    }
}

/// The root error of a call (inside nested function calls), its position and the limit it hit.
fn runtime_failure(error: Box<EvalAltResult>) -> Value {
    let mut root = error;
    while let EvalAltResult::ErrorInFunctionCall(_, _, inner, _)
    | EvalAltResult::ErrorInModule(_, inner, _) = *root
    {
        root = inner;
    }
    let limit = match &*root {
        EvalAltResult::ErrorTooManyOperations(_) => Some("max_operations"),
        EvalAltResult::ErrorStackOverflow(_) => Some("max_call_depth"),
        EvalAltResult::ErrorTooManyVariables(_) => Some("max_variables"),
        EvalAltResult::ErrorDataTooLarge(what, _) if what.contains("string") => {
            Some("max_string_bytes")
        }
        EvalAltResult::ErrorDataTooLarge(what, _) if what.contains("map") => Some("max_map_len"),
        EvalAltResult::ErrorDataTooLarge(..) => Some("max_array_len"),
        _ => None,
    };
    let position = root.take_position();
    let mut failure = json!({"message": root.to_string()});
    if let Some(location) = location(position) {
        failure["line"] = json!(location.line);
        failure["column"] = json!(location.column);
    }
    if let Some(limit) = limit {
        failure["limit"] = json!(limit);
    }
    failure
}

/// The writable fields of each hook's event, with their current values.
mod fields {
    use super::*;

    /// A stop an earlier processor requested, as a script sees it.
    fn stop_value(stop: &StopRequest) -> Value {
        json!({"termination": to_value(&stop.termination), "reason": stop.reason})
    }

    pub fn task_start(event: &TaskStartEvent<'_>) -> EventData {
        EventBuilder::new(Hook::TaskStart)
            .read("env", event::env_value(event.env()))
            .write(
                "system_prompt",
                Shape::OptionalText,
                json!(event.system_prompt()),
            )
            .write("opening", Shape::Messages, to_value(event.opening()))
            .write("native_tools", Shape::Tools, to_value(event.native_tools()))
            .write("tool_text", Shape::Text, json!(event.tool_text()))
            .write("sampling", Shape::Sampling, to_value(event.sampling()))
            .build()
    }

    pub fn step_start(event: &StepStartEvent<'_>) -> EventData {
        EventBuilder::new(Hook::StepStart)
            .context(event.ctx())
            .write("inject", Shape::Messages, json!([]))
            .once("stop", Shape::Stop, event.stop_request().map(stop_value))
            .build()
    }

    pub fn before_model(event: &BeforeModelEvent<'_>) -> EventData {
        EventBuilder::new(Hook::BeforeModel)
            .context(event.ctx())
            .write("messages", Shape::Messages, to_value(event.messages()))
            .write("tools", Shape::Tools, to_value(event.tools()))
            .write("sampling", Shape::Sampling, to_value(event.sampling()))
            .write(
                "stop_sequences",
                Shape::Strings,
                to_value(event.stop_sequences()),
            )
            .build()
    }

    pub fn after_model(event: &AfterModelEvent<'_>) -> EventData {
        let response = &event.response().message;
        EventBuilder::new(Hook::AfterModel)
            .context(event.ctx())
            .read("attempt", json!(event.attempt()))
            .read(
                "response",
                json!({"content": response.content, "tool_calls": to_value(&response.tool_calls)}),
            )
            .read("prompt", to_value(event.prompt()))
            .write("message", Shape::Message, to_value(event.message()))
            .write("actions", Shape::Actions, to_value(event.actions()))
            .write(
                "parse_error",
                Shape::OptionalText,
                json!(event.parse_error()),
            )
            .once(
                "retry",
                Shape::OptionalText,
                event.retry_requested().map(|text| json!(text)),
            )
            .once("stop", Shape::Stop, event.stop_request().map(stop_value))
            .build()
    }

    pub fn before_tool(event: &BeforeToolEvent<'_>) -> EventData {
        EventBuilder::new(Hook::BeforeTool)
            .context(event.ctx())
            .write("action", Shape::Action, to_value(event.action()))
            .once("veto", Shape::Veto, event.vetoed().map(to_value))
            .build()
    }

    pub fn after_tool(event: &AfterToolEvent<'_>) -> EventData {
        EventBuilder::new(Hook::AfterTool)
            .context(event.ctx())
            .read("action", to_value(event.action()))
            .read("done", json!(event.done()))
            .read("env_termination", to_value(&event.env_termination()))
            .write(
                "observation",
                Shape::Observation,
                to_value(event.observation()),
            )
            .build()
    }

    pub fn step_end(event: &StepEndEvent<'_>) -> EventData {
        let turn = event.model_turn();
        let actions: Vec<Value> = event
            .actions()
            .iter()
            .map(|record| {
                json!({
                    "action": to_value(&record.action),
                    "observation": to_value(&record.observation),
                })
            })
            .collect();
        EventBuilder::new(Hook::StepEnd)
            .context(event.ctx())
            .read(
                "model_turn",
                json!({
                    "raw_content": turn.raw_content,
                    "raw_tool_calls": to_value(&turn.raw_tool_calls),
                    "retries": turn.retries,
                }),
            )
            .read("actions", Value::Array(actions))
            .read("env_done", json!(event.env_done()))
            .write("inject", Shape::Messages, json!([]))
            .once("stop", Shape::Stop, event.stop_request().map(stop_value))
            .build()
    }

    pub fn task_end(event: &TaskEndEvent<'_>) -> EventData {
        let outcome = event.outcome();
        EventBuilder::new(Hook::TaskEnd)
            .read(
                "outcome",
                json!({
                    "success": outcome.success,
                    "reward": outcome.reward,
                    "termination": to_value(&outcome.termination),
                    "steps": outcome.steps,
                    "error": outcome.error,
                }),
            )
            .build()
    }
}

/// Notes go to the trajectory through the event, tagged with the processor id and hook.
macro_rules! record_notes {
    ($event:expr, $outcome:expr) => {
        for note in $outcome.notes.drain(..) {
            $event.note(note);
        }
    };
}

#[async_trait]
impl Processor for ScriptProcessor {
    async fn task_start(&mut self, event: &mut TaskStartEvent<'_>) -> Result<(), ProcessorError> {
        let mut outcome = self.call(event.task(), fields::task_start(event));
        for (field, value) in std::mem::take(&mut outcome.written) {
            match (field, value) {
                ("system_prompt", Written::OptionalText(prompt)) => event.set_system_prompt(prompt),
                ("opening", Written::Messages(opening)) => *event.opening_mut() = opening,
                ("native_tools", Written::Tools(tools)) => *event.native_tools_mut() = tools,
                ("tool_text", Written::Text(text)) => event.set_tool_text(text),
                ("sampling", Written::Sampling(sampling)) => *event.sampling_mut() = sampling,
                (field, value) => unreachable_write(field, &value),
            }
        }
        record_notes!(event, outcome);
        Ok(())
    }

    async fn step_start(&mut self, event: &mut StepStartEvent<'_>) -> Result<(), ProcessorError> {
        let task = event.ctx().task();
        let mut outcome = self.call(task, fields::step_start(event));
        for (field, value) in std::mem::take(&mut outcome.written) {
            match (field, value) {
                ("inject", Written::Messages(messages)) => {
                    for message in messages {
                        event.inject(message);
                    }
                }
                ("stop", Written::Stop(Some(stop))) => event.stop(stop.termination, stop.reason),
                ("stop", Written::Stop(None)) => {}
                (field, value) => unreachable_write(field, &value),
            }
        }
        record_notes!(event, outcome);
        Ok(())
    }

    async fn before_model(
        &mut self,
        event: &mut BeforeModelEvent<'_>,
    ) -> Result<(), ProcessorError> {
        let task = event.ctx().task();
        let mut outcome = self.call(task, fields::before_model(event));
        for (field, value) in std::mem::take(&mut outcome.written) {
            match (field, value) {
                ("messages", Written::Messages(messages)) => *event.messages_mut() = messages,
                ("tools", Written::Tools(tools)) => *event.tools_mut() = tools,
                ("sampling", Written::Sampling(sampling)) => *event.sampling_mut() = sampling,
                ("stop_sequences", Written::Strings(stops)) => *event.stop_sequences_mut() = stops,
                (field, value) => unreachable_write(field, &value),
            }
        }
        record_notes!(event, outcome);
        Ok(())
    }

    async fn after_model(&mut self, event: &mut AfterModelEvent<'_>) -> Result<(), ProcessorError> {
        let task = event.ctx().task();
        let mut outcome = self.call(task, fields::after_model(event));
        let mut written = std::mem::take(&mut outcome.written);
        // Actions and parse error go together: a parse error clears the actions, actions clear
        // the parse error.
        let actions = written.remove("actions");
        let parse_error = written.remove("parse_error");
        match (actions, parse_error) {
            (_, Some(Written::OptionalText(Some(error)))) => event.set_parse_error(error),
            (Some(Written::Actions(actions)), _) => event.set_actions(actions),
            (None, Some(Written::OptionalText(None))) => {
                let actions = event.actions().to_vec();
                event.set_actions(actions);
            }
            (None, None) => {}
            (actions, parse_error) => {
                for (field, value) in [("actions", actions), ("parse_error", parse_error)] {
                    if let Some(value) = value {
                        unreachable_write(field, &value);
                    }
                }
            }
        }
        for (field, value) in written {
            match (field, value) {
                ("message", Written::Message(message)) => *event.message_mut() = message,
                ("retry", Written::OptionalText(Some(feedback))) => event.request_retry(feedback),
                ("retry", Written::OptionalText(None)) => {}
                ("stop", Written::Stop(Some(stop))) => event.stop(stop.termination, stop.reason),
                ("stop", Written::Stop(None)) => {}
                (field, value) => unreachable_write(field, &value),
            }
        }
        record_notes!(event, outcome);
        Ok(())
    }

    async fn before_tool(&mut self, event: &mut BeforeToolEvent<'_>) -> Result<(), ProcessorError> {
        let task = event.ctx().task();
        let mut outcome = self.call(task, fields::before_tool(event));
        let mut written = std::mem::take(&mut outcome.written);
        // The action first, so an error veto is shaped like the action the script left.
        if let Some(value) = written.remove("action") {
            match value {
                Written::Action(action) => *event.action_mut() = action,
                value => unreachable_write("action", &value),
            }
        }
        for (field, value) in written {
            match (field, value) {
                ("veto", Written::Veto(Some(Veto::Observation(observation)))) => {
                    event.veto(observation)
                }
                ("veto", Written::Veto(Some(Veto::Error(text)))) => event.veto_with_error(text),
                ("veto", Written::Veto(None)) => {}
                (field, value) => unreachable_write(field, &value),
            }
        }
        record_notes!(event, outcome);
        Ok(())
    }

    async fn after_tool(&mut self, event: &mut AfterToolEvent<'_>) -> Result<(), ProcessorError> {
        let task = event.ctx().task();
        let mut outcome = self.call(task, fields::after_tool(event));
        for (field, value) in std::mem::take(&mut outcome.written) {
            match (field, value) {
                ("observation", Written::Observation(observation)) => {
                    *event.observation_mut() = observation
                }
                (field, value) => unreachable_write(field, &value),
            }
        }
        record_notes!(event, outcome);
        Ok(())
    }

    async fn step_end(&mut self, event: &mut StepEndEvent<'_>) -> Result<(), ProcessorError> {
        let task = event.ctx().task();
        let mut outcome = self.call(task, fields::step_end(event));
        for (field, value) in std::mem::take(&mut outcome.written) {
            match (field, value) {
                ("inject", Written::Messages(messages)) => {
                    for message in messages {
                        event.inject(message);
                    }
                }
                ("stop", Written::Stop(Some(stop))) => event.stop(stop.termination, stop.reason),
                ("stop", Written::Stop(None)) => {}
                (field, value) => unreachable_write(field, &value),
            }
        }
        record_notes!(event, outcome);
        Ok(())
    }

    async fn task_end(&mut self, event: &mut TaskEndEvent<'_>) -> Result<(), ProcessorError> {
        let task = event.task();
        let mut outcome = self.call(task, fields::task_end(event));
        for (field, value) in std::mem::take(&mut outcome.written) {
            unreachable_write(field, &value);
        }
        record_notes!(event, outcome);
        Ok(())
    }
}

/// A write the field tables do not produce (each field has one shape); logged, not applied.
fn unreachable_write(field: &str, value: &Written) {
    warn!(
        field,
        ?value,
        "script wrote a field this hook does not apply; ignored"
    );
}
