//! One event type per hook. Each event exposes read access to the episode's context and mutable
//! access only to what a processor may change at that hook, so the rules are enforced by the
//! types rather than by convention:
//!
//! | hook | may change |
//! |---|---|
//! | `task_start` | system prompt, opening messages, natively offered tools, tool catalogue text, sampling, recording policy |
//! | `step_start` | inject messages into the conversation, stop the episode |
//! | `before_model` | the prompt's messages, the offered tools, sampling, stop sequences |
//! | `after_model` | the assistant message to record, the parsed actions or a parse error, request a retry, stop; may score candidate replies through the episode's model ([`Scorer`]) |
//! | `before_tool` | rewrite the action, or veto it with a synthetic observation |
//! | `after_tool` | the observation the agent will see |
//! | `step_end` | inject messages into the conversation, stop the episode |
//! | `task_end` | nothing (reads the final outcome and trajectory) |
//!
//! Every event can carry notes (`note`), which the loop records in the trajectory tagged with the
//! processor id and hook.
//!
//! Only `after_model` reaches the model, and only to score ([`AfterModelEvent::scorer`]): scoring
//! reads likelihoods and changes nothing, so it cannot bypass the rules above. Generation stays
//! the loop's job.

use kiln_models::{CandidateScore, ChatModel, ChatResponse, ModelError};
use kiln_protocol::trajectory::{ActionRecord, ModelTurn};
use kiln_protocol::{
    Action, EnvInfo, Hook, Message, Observation, Outcome, SamplingParams, TaskSpec, Termination,
    ToolSchema, Trajectory,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A processor's request to end the episode.
#[derive(Debug, Clone, PartialEq)]
pub struct StopRequest {
    pub termination: Termination,
    pub reason: String,
}

/// What the trajectory records of each prompt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptRecording {
    /// The exact messages sent to the model, after context processors.
    Full,
    /// Only the conversation messages added since the previous step (compact; the default).
    #[default]
    Delta,
    /// No prompt messages at all.
    Off,
}

/// How the trajectory is recorded; set at `task_start` (see the `trajectory_recorder` processor).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordingPolicy {
    pub prompts: PromptRecording,
    /// Keep token ids and logprobs that local backends return (needed for training).
    pub tokens: bool,
}

impl Default for RecordingPolicy {
    fn default() -> Self {
        Self {
            prompts: PromptRecording::Delta,
            tokens: true,
        }
    }
}

/// Read-only context shared by the per-step events.
#[derive(Debug, Clone, Copy)]
pub struct StepContext<'e> {
    task: &'e TaskSpec,
    env: &'e EnvInfo,
    step: u32,
    conversation: &'e [Message],
    admissible_actions: Option<&'e [String]>,
}

impl<'e> StepContext<'e> {
    pub fn new(
        task: &'e TaskSpec,
        env: &'e EnvInfo,
        step: u32,
        conversation: &'e [Message],
    ) -> Self {
        Self {
            task,
            env,
            step,
            conversation,
            admissible_actions: None,
        }
    }
    /// The same context with the environment's current admissible actions.
    pub fn with_admissible_actions(mut self, actions: Option<&'e [String]>) -> Self {
        self.admissible_actions = actions;
        self
    }
    /// The actions the environment accepts now, for environments that list them (ALFWorld,
    /// WebShop): the latest list the environment gave, at reset or after a step. `None` when the
    /// environment lists none (τ²).
    pub fn admissible_actions(&self) -> Option<&'e [String]> {
        self.admissible_actions
    }
    pub fn task(&self) -> &'e TaskSpec {
        self.task
    }
    /// The environment's description after reset: tools, instructions, opening.
    pub fn env(&self) -> &'e EnvInfo {
        self.env
    }
    /// 0-based index of the current step (model turn).
    pub fn step(&self) -> u32 {
        self.step
    }
    /// The full conversation so far (system prompt, opening, every turn and observation).
    pub fn conversation(&self) -> &'e [Message] {
        self.conversation
    }
}

/// Notes a processor attaches to the trajectory.
#[derive(Debug, Default)]
pub(crate) struct Notes(Vec<Value>);

impl Notes {
    fn push(&mut self, value: Value) {
        self.0.push(value);
    }
    pub(crate) fn take(&mut self) -> Vec<Value> {
        std::mem::take(&mut self.0)
    }
}

macro_rules! impl_notes {
    ($($event:ident),*) => {$(
        impl $event<'_> {
            /// Records a note in the trajectory, tagged with this processor's id and the hook.
            pub fn note(&mut self, note: Value) {
                self.notes.push(note);
            }
        }
    )*};
}

/// `task_start`: set up the episode's context before the first step.
#[derive(Debug)]
pub struct TaskStartEvent<'e> {
    task: &'e TaskSpec,
    env: &'e EnvInfo,
    system_prompt: Option<String>,
    opening: Vec<Message>,
    native_tools: Vec<ToolSchema>,
    tool_text: String,
    sampling: SamplingParams,
    recording: RecordingPolicy,
    pub(crate) notes: Notes,
}

impl<'e> TaskStartEvent<'e> {
    /// Starts from the environment's defaults: all its tools offered natively, its opening
    /// messages, no system prompt.
    pub fn new(task: &'e TaskSpec, env: &'e EnvInfo, sampling: SamplingParams) -> Self {
        Self {
            task,
            env,
            system_prompt: None,
            opening: env.opening.clone(),
            native_tools: env.tools.clone(),
            tool_text: String::new(),
            sampling,
            recording: RecordingPolicy::default(),
            notes: Notes::default(),
        }
    }
    pub fn task(&self) -> &'e TaskSpec {
        self.task
    }
    pub fn env(&self) -> &'e EnvInfo {
        self.env
    }
    pub fn system_prompt(&self) -> Option<&str> {
        self.system_prompt.as_deref()
    }
    pub fn set_system_prompt(&mut self, prompt: Option<String>) {
        self.system_prompt = prompt;
    }
    pub fn opening(&self) -> &[Message] {
        &self.opening
    }
    pub fn opening_mut(&mut self) -> &mut Vec<Message> {
        &mut self.opening
    }
    /// Tools offered through the backend's native tool calling for the whole episode.
    pub fn native_tools(&self) -> &[ToolSchema] {
        &self.native_tools
    }
    pub fn native_tools_mut(&mut self) -> &mut Vec<ToolSchema> {
        &mut self.native_tools
    }
    /// A text rendering of the tools for the system prompt (`{tools}`); empty when not wanted.
    pub fn tool_text(&self) -> &str {
        &self.tool_text
    }
    pub fn set_tool_text(&mut self, text: String) {
        self.tool_text = text;
    }
    pub fn sampling(&self) -> &SamplingParams {
        &self.sampling
    }
    pub fn sampling_mut(&mut self) -> &mut SamplingParams {
        &mut self.sampling
    }
    pub fn recording(&self) -> RecordingPolicy {
        self.recording
    }
    pub fn set_recording(&mut self, recording: RecordingPolicy) {
        self.recording = recording;
    }
    pub(crate) fn into_setup(self) -> EpisodeSetup {
        EpisodeSetup {
            system_prompt: self.system_prompt,
            opening: self.opening,
            native_tools: self.native_tools,
            sampling: self.sampling,
            recording: self.recording,
        }
    }
}

/// What `task_start` produced; the loop's starting state.
#[derive(Debug)]
pub(crate) struct EpisodeSetup {
    pub system_prompt: Option<String>,
    pub opening: Vec<Message>,
    pub native_tools: Vec<ToolSchema>,
    pub sampling: SamplingParams,
    pub recording: RecordingPolicy,
}

/// `step_start`: before anything happens in a step; may inject messages or stop the episode.
#[derive(Debug)]
pub struct StepStartEvent<'e> {
    ctx: StepContext<'e>,
    injected: Vec<Message>,
    stop: Option<StopRequest>,
    pub(crate) notes: Notes,
}

impl<'e> StepStartEvent<'e> {
    pub fn new(ctx: StepContext<'e>) -> Self {
        Self {
            ctx,
            injected: Vec::new(),
            stop: None,
            notes: Notes::default(),
        }
    }
    pub fn ctx(&self) -> &StepContext<'e> {
        &self.ctx
    }
    /// Appends a message to the conversation before the model is called.
    pub fn inject(&mut self, message: Message) {
        self.injected.push(message);
    }
    pub fn injected(&self) -> &[Message] {
        &self.injected
    }
    /// Ends the episode before the model is called.
    pub fn stop(&mut self, termination: Termination, reason: impl Into<String>) {
        self.stop = Some(StopRequest {
            termination,
            reason: reason.into(),
        });
    }
    pub fn stop_request(&self) -> Option<&StopRequest> {
        self.stop.as_ref()
    }
    pub(crate) fn into_parts(self) -> (Vec<Message>, Option<StopRequest>) {
        (self.injected, self.stop)
    }
}

/// `before_model`: shape the request: messages, offered tools, sampling, stop sequences. Edits
/// here change this request only, never the stored conversation.
#[derive(Debug)]
pub struct BeforeModelEvent<'e> {
    ctx: StepContext<'e>,
    messages: Vec<Message>,
    tools: Vec<ToolSchema>,
    sampling: SamplingParams,
    stop_sequences: Vec<String>,
    pub(crate) notes: Notes,
}

impl<'e> BeforeModelEvent<'e> {
    pub fn new(
        ctx: StepContext<'e>,
        tools: Vec<ToolSchema>,
        sampling: SamplingParams,
        stop_sequences: Vec<String>,
    ) -> Self {
        Self {
            messages: ctx.conversation().to_vec(),
            ctx,
            tools,
            sampling,
            stop_sequences,
            notes: Notes::default(),
        }
    }
    pub fn ctx(&self) -> &StepContext<'e> {
        &self.ctx
    }
    pub fn messages(&self) -> &[Message] {
        &self.messages
    }
    pub fn messages_mut(&mut self) -> &mut Vec<Message> {
        &mut self.messages
    }
    pub fn tools(&self) -> &[ToolSchema] {
        &self.tools
    }
    pub fn tools_mut(&mut self) -> &mut Vec<ToolSchema> {
        &mut self.tools
    }
    pub fn sampling(&self) -> &SamplingParams {
        &self.sampling
    }
    pub fn sampling_mut(&mut self) -> &mut SamplingParams {
        &mut self.sampling
    }
    pub fn stop_sequences(&self) -> &[String] {
        &self.stop_sequences
    }
    pub fn stop_sequences_mut(&mut self) -> &mut Vec<String> {
        &mut self.stop_sequences
    }
    pub(crate) fn into_request(self) -> kiln_models::ChatRequest {
        kiln_models::ChatRequest {
            messages: self.messages,
            tools: self.tools,
            sampling: self.sampling,
            stop: self.stop_sequences,
        }
    }
}

/// The episode's model, lent to `after_model` for likelihood scoring only (see
/// [`ChatModel::score`]); a processor cannot generate through it.
#[derive(Clone, Copy)]
pub struct Scorer<'e> {
    model: &'e dyn ChatModel,
}

impl<'e> Scorer<'e> {
    pub fn new(model: &'e dyn ChatModel) -> Self {
        Self { model }
    }
    /// The model's label, for notes.
    pub fn label(&self) -> String {
        self.model.label()
    }
    /// Log-likelihood of each candidate as the assistant's reply after `messages`.
    pub async fn score(
        &self,
        messages: &[Message],
        candidates: &[String],
    ) -> Result<Vec<CandidateScore>, ModelError> {
        self.model.score(messages, candidates).await
    }
}

impl std::fmt::Debug for Scorer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scorer")
            .field("model", &self.model.label())
            .finish()
    }
}

/// `after_model`: interpret the model's reply. The loop pre-fills `actions` with the plain
/// reading (native tool calls, else non-empty text as a message, else a parse error); a parser
/// processor replaces it. A processor may request a retry with corrective feedback, or stop.
#[derive(Debug)]
pub struct AfterModelEvent<'e> {
    ctx: StepContext<'e>,
    attempt: u32,
    response: &'e ChatResponse,
    prompt: &'e [Message],
    scorer: Option<Scorer<'e>>,
    message: Message,
    actions: Vec<Action>,
    parse_error: Option<String>,
    retry: Option<String>,
    stop: Option<StopRequest>,
    pub(crate) notes: Notes,
}

impl<'e> AfterModelEvent<'e> {
    pub fn new(ctx: StepContext<'e>, attempt: u32, response: &'e ChatResponse) -> Self {
        let (actions, parse_error) = plain_reading(&response.message);
        Self {
            ctx,
            attempt,
            response,
            prompt: &[],
            scorer: None,
            message: response.message.clone(),
            actions,
            parse_error,
            retry: None,
            stop: None,
            notes: Notes::default(),
        }
    }
    pub fn ctx(&self) -> &StepContext<'e> {
        &self.ctx
    }
    /// 0 for the first call of the step, then 1, 2, … for each retry.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
    /// The same event with the messages this reply answers (the loop sets them).
    pub fn with_prompt(mut self, prompt: &'e [Message]) -> Self {
        self.prompt = prompt;
        self
    }
    /// The same event with a scoring handle on the episode's model (the loop sets it).
    pub fn with_scorer(mut self, scorer: Scorer<'e>) -> Self {
        self.scorer = Some(scorer);
        self
    }
    /// The backend's reply, untouched.
    pub fn response(&self) -> &'e ChatResponse {
        self.response
    }
    /// The messages sent for this attempt, after `before_model` processors and retry feedback:
    /// what the model saw, so candidates are scored in the same context.
    pub fn prompt(&self) -> &'e [Message] {
        self.prompt
    }
    /// Scores candidate replies through the episode's model; `None` outside the loop.
    pub fn scorer(&self) -> Option<Scorer<'e>> {
        self.scorer
    }
    /// The assistant message that will be appended to the conversation.
    pub fn message(&self) -> &Message {
        &self.message
    }
    pub fn message_mut(&mut self) -> &mut Message {
        &mut self.message
    }
    pub fn actions(&self) -> &[Action] {
        &self.actions
    }
    /// Sets the parsed actions and clears any parse error.
    pub fn set_actions(&mut self, actions: Vec<Action>) {
        self.actions = actions;
        self.parse_error = None;
    }
    pub fn parse_error(&self) -> Option<&str> {
        self.parse_error.as_deref()
    }
    /// Marks the reply as malformed; clears the actions.
    pub fn set_parse_error(&mut self, error: impl Into<String>) {
        self.actions.clear();
        self.parse_error = Some(error.into());
    }
    /// Asks the loop to re-ask the model with `feedback` as a corrective user message.
    pub fn request_retry(&mut self, feedback: impl Into<String>) {
        self.retry = Some(feedback.into());
    }
    pub fn retry_requested(&self) -> Option<&str> {
        self.retry.as_deref()
    }
    pub fn stop(&mut self, termination: Termination, reason: impl Into<String>) {
        self.stop = Some(StopRequest {
            termination,
            reason: reason.into(),
        });
    }
    pub fn stop_request(&self) -> Option<&StopRequest> {
        self.stop.as_ref()
    }
    pub(crate) fn into_verdict(self) -> ModelVerdict {
        ModelVerdict {
            message: self.message,
            actions: self.actions,
            parse_error: self.parse_error,
            retry: self.retry,
            stop: self.stop,
        }
    }
}

/// What `after_model` decided.
#[derive(Debug)]
pub(crate) struct ModelVerdict {
    pub message: Message,
    pub actions: Vec<Action>,
    pub parse_error: Option<String>,
    pub retry: Option<String>,
    pub stop: Option<StopRequest>,
}

/// The reading of a reply when no parser processor is present: native tool calls, else the text
/// as a message; an empty reply is a parse error.
pub fn plain_reading(message: &Message) -> (Vec<Action>, Option<String>) {
    if !message.tool_calls.is_empty() {
        let actions = message
            .tool_calls
            .iter()
            .map(|call| Action::ToolCall { call: call.clone() })
            .collect();
        return (actions, None);
    }
    let text = message.content.trim();
    if text.is_empty() {
        return (Vec::new(), Some("the reply is empty".to_string()));
    }
    (
        vec![Action::Message {
            text: text.to_string(),
        }],
        None,
    )
}

/// `before_tool`: inspect one action before the environment sees it; rewrite it, or veto it with
/// a synthetic observation (the environment is then not stepped).
#[derive(Debug)]
pub struct BeforeToolEvent<'e> {
    ctx: StepContext<'e>,
    action: Action,
    veto: Option<Observation>,
    pub(crate) notes: Notes,
}

impl<'e> BeforeToolEvent<'e> {
    pub fn new(ctx: StepContext<'e>, action: Action) -> Self {
        Self {
            ctx,
            action,
            veto: None,
            notes: Notes::default(),
        }
    }
    pub fn ctx(&self) -> &StepContext<'e> {
        &self.ctx
    }
    pub fn action(&self) -> &Action {
        &self.action
    }
    pub fn action_mut(&mut self) -> &mut Action {
        &mut self.action
    }
    /// Skips the environment; the agent sees `observation` instead.
    pub fn veto(&mut self, observation: Observation) {
        self.veto = Some(observation);
    }
    /// Vetoes with an error text shaped like the action: a tool error for a tool call, a text
    /// observation for a message.
    pub fn veto_with_error(&mut self, text: impl Into<String>) {
        let text = text.into();
        let observation = match &self.action {
            Action::ToolCall { call } => Observation::ToolResult {
                call_id: call.id.clone(),
                name: call.name.clone(),
                content: text,
                is_error: true,
            },
            Action::Message { .. } => Observation::Text { text },
        };
        self.veto = Some(observation);
    }
    pub fn vetoed(&self) -> Option<&Observation> {
        self.veto.as_ref()
    }
    pub(crate) fn into_parts(self) -> (Action, Option<Observation>) {
        (self.action, self.veto)
    }
}

/// `after_tool`: edit the observation the agent will see. The environment's own result (done,
/// termination, info) is read-only.
#[derive(Debug)]
pub struct AfterToolEvent<'e> {
    ctx: StepContext<'e>,
    action: &'e Action,
    observation: Observation,
    done: bool,
    env_termination: Option<Termination>,
    pub(crate) notes: Notes,
}

impl<'e> AfterToolEvent<'e> {
    pub fn new(
        ctx: StepContext<'e>,
        action: &'e Action,
        observation: Observation,
        done: bool,
        env_termination: Option<Termination>,
    ) -> Self {
        Self {
            ctx,
            action,
            observation,
            done,
            env_termination,
            notes: Notes::default(),
        }
    }
    pub fn ctx(&self) -> &StepContext<'e> {
        &self.ctx
    }
    pub fn action(&self) -> &'e Action {
        self.action
    }
    pub fn observation(&self) -> &Observation {
        &self.observation
    }
    pub fn observation_mut(&mut self) -> &mut Observation {
        &mut self.observation
    }
    /// The environment ended the episode with this action.
    pub fn done(&self) -> bool {
        self.done
    }
    pub fn env_termination(&self) -> Option<Termination> {
        self.env_termination
    }
    pub(crate) fn into_observation(self) -> Observation {
        self.observation
    }
}

/// `step_end`: after every action of the step; may inject messages for the next step or stop.
#[derive(Debug)]
pub struct StepEndEvent<'e> {
    ctx: StepContext<'e>,
    model: &'e ModelTurn,
    actions: &'e [ActionRecord],
    env_done: bool,
    injected: Vec<Message>,
    stop: Option<StopRequest>,
    pub(crate) notes: Notes,
}

impl<'e> StepEndEvent<'e> {
    pub fn new(
        ctx: StepContext<'e>,
        model: &'e ModelTurn,
        actions: &'e [ActionRecord],
        env_done: bool,
    ) -> Self {
        Self {
            ctx,
            model,
            actions,
            env_done,
            injected: Vec::new(),
            stop: None,
            notes: Notes::default(),
        }
    }
    pub fn ctx(&self) -> &StepContext<'e> {
        &self.ctx
    }
    pub fn model_turn(&self) -> &'e ModelTurn {
        self.model
    }
    /// The actions of this step and what came back, in order.
    pub fn actions(&self) -> &'e [ActionRecord] {
        self.actions
    }
    /// The environment already ended the episode in this step.
    pub fn env_done(&self) -> bool {
        self.env_done
    }
    /// Appends a message to the conversation for the next step.
    pub fn inject(&mut self, message: Message) {
        self.injected.push(message);
    }
    pub fn injected(&self) -> &[Message] {
        &self.injected
    }
    pub fn stop(&mut self, termination: Termination, reason: impl Into<String>) {
        self.stop = Some(StopRequest {
            termination,
            reason: reason.into(),
        });
    }
    pub fn stop_request(&self) -> Option<&StopRequest> {
        self.stop.as_ref()
    }
    pub(crate) fn into_parts(self) -> (Vec<Message>, Option<StopRequest>) {
        (self.injected, self.stop)
    }
}

/// `task_end`: the episode is scored; processors observe the outcome and trajectory (for memory,
/// metrics, training bridges) and may only add notes.
#[derive(Debug)]
pub struct TaskEndEvent<'e> {
    task: &'e TaskSpec,
    outcome: &'e Outcome,
    trajectory: &'e Trajectory,
    pub(crate) notes: Notes,
}

impl<'e> TaskEndEvent<'e> {
    pub fn new(task: &'e TaskSpec, outcome: &'e Outcome, trajectory: &'e Trajectory) -> Self {
        Self {
            task,
            outcome,
            trajectory,
            notes: Notes::default(),
        }
    }
    pub fn task(&self) -> &'e TaskSpec {
        self.task
    }
    pub fn outcome(&self) -> &'e Outcome {
        self.outcome
    }
    pub fn trajectory(&self) -> &'e Trajectory {
        self.trajectory
    }
}

impl_notes!(
    TaskStartEvent,
    StepStartEvent,
    BeforeModelEvent,
    AfterModelEvent,
    BeforeToolEvent,
    AfterToolEvent,
    StepEndEvent,
    TaskEndEvent
);

/// Ties an event type to its hook and to the processor method that handles it.
pub(crate) trait HookEvent: Send {
    const HOOK: Hook;
    fn notes(&mut self) -> &mut Notes;
    fn dispatch<'a>(
        processor: &'a mut dyn crate::Processor,
        event: &'a mut Self,
    ) -> crate::processor::HookFuture<'a>;
}

macro_rules! impl_hook_event {
    ($event:ident, $hook:expr, $method:ident) => {
        impl<'e> HookEvent for $event<'e> {
            const HOOK: Hook = $hook;
            fn notes(&mut self) -> &mut Notes {
                &mut self.notes
            }
            fn dispatch<'a>(
                processor: &'a mut dyn crate::Processor,
                event: &'a mut Self,
            ) -> crate::processor::HookFuture<'a> {
                processor.$method(event)
            }
        }
    };
}

impl_hook_event!(TaskStartEvent, Hook::TaskStart, task_start);
impl_hook_event!(StepStartEvent, Hook::StepStart, step_start);
impl_hook_event!(BeforeModelEvent, Hook::BeforeModel, before_model);
impl_hook_event!(AfterModelEvent, Hook::AfterModel, after_model);
impl_hook_event!(BeforeToolEvent, Hook::BeforeTool, before_tool);
impl_hook_event!(AfterToolEvent, Hook::AfterTool, after_tool);
impl_hook_event!(StepEndEvent, Hook::StepEnd, step_end);
impl_hook_event!(TaskEndEvent, Hook::TaskEnd, task_end);
