//! The episode loop: drives one model against one environment through a harness's processors and
//! records everything that happened.
//!
//! Order: `reset` → `models.for_episode(env.oracle_plan())` → `task_start` → per step
//! { `step_start` → `before_model` → model call → `after_model` (parse; retry) → per action
//! { `before_tool` → `env.step` → `after_tool` } → `step_end` } → `evaluate` → `task_end`.
//!
//! [`run_episode`] never fails: a model error, an environment error, a processor error, an
//! unparseable reply or the wall-clock limit becomes the outcome's `termination` and `error`, and
//! the environment's evaluation still runs unless the environment itself failed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kiln_environments::{Environment, Evaluation};
use kiln_models::{ChatModel, ChatRequest, ChatResponse, ModelFactory};
use kiln_protocol::trajectory::{ActionRecord, ModelTurn, Step};
use kiln_protocol::{
    Action, EnvInfo, Message, ModelSpec, Observation, Outcome, Role, SamplingParams, StepResult,
    TaskSpec, Termination, ToolSchema, Trajectory, UnixMillis, Usage,
};
use serde_json::{Value, json};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::events::{
    AfterModelEvent, AfterToolEvent, BeforeModelEvent, BeforeToolEvent, HookEvent, PromptRecording,
    RecordingPolicy, Scorer, StepContext, StepEndEvent, StepStartEvent, StopRequest, TaskEndEvent,
    TaskStartEvent,
};
use crate::harness::{Harness, Slot};

/// Parse retries allowed in one step whatever the processors ask, so a faulty processor cannot
/// loop forever.
pub const MAX_RETRIES_PER_STEP: u32 = 16;
/// Steps allowed when no processor limits them.
pub const MAX_STEPS_SAFETY_CAP: u32 = 10_000;
/// How long the environment's evaluation may take after the episode ended.
pub const EVALUATION_TIMEOUT: Duration = Duration::from_secs(300);

/// The scored outcome and the full record of one episode.
#[derive(Debug, Clone, PartialEq)]
pub struct EpisodeResult {
    pub outcome: Outcome,
    pub trajectory: Trajectory,
}

/// Runs one episode. See the module docs for the order of events; never returns an error.
pub async fn run_episode(
    harness: &Harness,
    models: &dyn ModelFactory,
    env: &mut dyn Environment,
    task: &TaskSpec,
    worker: Option<&str>,
) -> EpisodeResult {
    let span = info_span!(
        "episode",
        run_id = %task.run_id,
        task_id = %task.task_id,
        attempt = task.attempt,
        harness = %harness.short_hash(),
    );
    run(harness, models, env, task, worker)
        .instrument(span)
        .await
}

async fn run(
    harness: &Harness,
    models: &dyn ModelFactory,
    env: &mut dyn Environment,
    task: &TaskSpec,
    worker: Option<&str>,
) -> EpisodeResult {
    let started_at = now_ms();
    let clock = Instant::now();
    if !task.harness_hash.is_empty() && task.harness_hash != harness.hash() {
        warn!(
            expected = %task.harness_hash,
            actual = %harness.hash(),
            "the task names another harness version; recording the one that ran"
        );
    }
    let mut episode = Episode::new(harness, task, models.label());
    let ending = match episode_limit(task) {
        None => episode.drive(models, env).await,
        Some(limit) => match tokio::time::timeout(limit, episode.drive(models, env)).await {
            Ok(ending) => ending,
            Err(_) => Ending::failure(
                Termination::Timeout,
                format!("the episode ran past its limit of {}s", limit.as_secs()),
            ),
        },
    };
    let evaluation = episode.evaluate(env, &ending).await;
    let outcome = episode.outcome(&ending, evaluation, started_at, clock, worker);
    let mut trajectory = episode.trajectory(&ending);
    episode.task_end(&outcome, &mut trajectory).await;
    info!(
        termination = ?outcome.termination,
        reward = outcome.reward,
        steps = outcome.steps,
        wall_ms = outcome.wall_ms,
        "episode finished"
    );
    EpisodeResult {
        outcome,
        trajectory,
    }
}

fn episode_limit(task: &TaskSpec) -> Option<Duration> {
    (task.timeout_s > 0).then(|| Duration::from_secs(task.timeout_s))
}

fn now_ms() -> UnixMillis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as UnixMillis)
}

/// How the loop ended.
#[derive(Debug, Clone)]
struct Ending {
    termination: Termination,
    /// Error message for the outcome (infrastructure failures and parse failures).
    error: Option<String>,
    /// Why a processor or the environment ended the episode, for the trajectory.
    reason: Option<String>,
}

impl Ending {
    fn failure(termination: Termination, error: String) -> Self {
        Self {
            termination,
            error: Some(error),
            reason: None,
        }
    }
    fn stopped(stop: StopRequest) -> Self {
        Self {
            termination: stop.termination,
            error: None,
            reason: Some(stop.reason),
        }
    }
    fn env_done(termination: Termination) -> Self {
        Self {
            termination,
            error: None,
            reason: Some("the environment ended the episode".to_string()),
        }
    }
}

enum StepFlow {
    Continue,
    End(Ending),
}

/// The state of one running episode.
struct Episode<'a> {
    harness: &'a Harness,
    task: &'a TaskSpec,
    slots: Vec<Slot>,
    reset_done: bool,
    model_label: String,
    conversation: Vec<Message>,
    /// The environment's latest list of admissible actions (from reset, then each step that
    /// gives one; a vetoed action leaves it as it was).
    admissible: Option<Vec<String>>,
    opening: Vec<Message>,
    native_tools: Vec<ToolSchema>,
    sampling: SamplingParams,
    recording: RecordingPolicy,
    /// Conversation length when the last prompt was recorded (for deltas).
    recorded_len: usize,
    steps: Vec<Step>,
    /// Trajectory-level notes (task_start, stops, task_end).
    events: Vec<Value>,
    usage: Usage,
}

impl<'a> Episode<'a> {
    fn new(harness: &'a Harness, task: &'a TaskSpec, model_label: String) -> Self {
        Self {
            harness,
            task,
            slots: Vec::new(),
            reset_done: false,
            model_label,
            conversation: Vec::new(),
            admissible: None,
            opening: Vec::new(),
            native_tools: Vec::new(),
            sampling: base_sampling(task),
            recording: RecordingPolicy::default(),
            recorded_len: 0,
            steps: Vec::new(),
            events: Vec::new(),
            usage: Usage::default(),
        }
    }

    /// Reset, model, processors, `task_start`, then the steps.
    async fn drive(&mut self, models: &dyn ModelFactory, env: &mut dyn Environment) -> Ending {
        let info = match env.reset(self.task).await {
            Ok(info) => info,
            Err(error) => {
                return Ending::failure(
                    Termination::EnvError,
                    format!("environment reset failed: {error}"),
                );
            }
        };
        self.reset_done = true;
        self.admissible = info.admissible_actions.clone();
        let plan = env.oracle_plan();
        let model = match models.for_episode(plan.as_deref()) {
            Ok(model) => model,
            Err(error) => {
                return Ending::failure(
                    Termination::ModelError,
                    format!("model unavailable: {error}"),
                );
            }
        };
        self.model_label = model.label();
        self.slots = match self.harness.instantiate() {
            Ok(slots) => slots,
            Err(error) => return Ending::failure(Termination::HarnessError, error.to_string()),
        };
        if let Err(ending) = self.task_start(&info).await {
            return ending;
        }
        self.run_steps(&info, model.as_ref(), env).await
    }

    async fn task_start(&mut self, info: &EnvInfo) -> Result<(), Ending> {
        let mut event = TaskStartEvent::new(self.task, info, self.sampling.clone());
        dispatch(&mut self.slots, &mut event, &mut self.events).await?;
        let setup = event.into_setup();
        self.conversation = setup
            .system_prompt
            .map(Message::system)
            .into_iter()
            .chain(setup.opening)
            .collect();
        self.opening = self.conversation.clone();
        self.recorded_len = self.conversation.len();
        self.native_tools = setup.native_tools;
        self.sampling = setup.sampling;
        self.recording = setup.recording;
        Ok(())
    }

    async fn run_steps(
        &mut self,
        info: &EnvInfo,
        model: &dyn ChatModel,
        env: &mut dyn Environment,
    ) -> Ending {
        loop {
            let index = self.steps.len() as u32;
            if index >= MAX_STEPS_SAFETY_CAP {
                return Ending::stopped(StopRequest {
                    termination: Termination::MaxSteps,
                    reason: format!("safety cap of {MAX_STEPS_SAFETY_CAP} steps reached"),
                });
            }
            if let StepFlow::End(ending) = self.run_step(index, info, model, env).await {
                return ending;
            }
        }
    }

    async fn run_step(
        &mut self,
        index: u32,
        info: &EnvInfo,
        model: &dyn ChatModel,
        env: &mut dyn Environment,
    ) -> StepFlow {
        let started_at = now_ms();
        let mut notes = Vec::new();
        debug!(step = index, "step started");

        let step_start = {
            let ctx = StepContext::new(self.task, info, index, &self.conversation)
                .with_admissible_actions(self.admissible.as_deref());
            let mut event = StepStartEvent::new(ctx);
            dispatch(&mut self.slots, &mut event, &mut notes)
                .await
                .map(|()| event.into_parts())
        };
        let (injected, stop) = match step_start {
            Ok(parts) => parts,
            Err(ending) => {
                self.events.append(&mut notes);
                return StepFlow::End(ending);
            }
        };
        self.conversation.extend(injected);
        if let Some(stop) = stop {
            // No model call happened: the step is not recorded, its notes go to the episode.
            self.events.append(&mut notes);
            return StepFlow::End(Ending::stopped(stop));
        }

        let request = {
            let ctx = StepContext::new(self.task, info, index, &self.conversation)
                .with_admissible_actions(self.admissible.as_deref());
            let mut event = BeforeModelEvent::new(
                ctx,
                self.native_tools.clone(),
                self.sampling.clone(),
                Vec::new(),
            );
            dispatch(&mut self.slots, &mut event, &mut notes)
                .await
                .map(|()| event.into_request())
        };
        let request = match request {
            Ok(request) => request,
            Err(ending) => {
                self.events.append(&mut notes);
                return StepFlow::End(ending);
            }
        };
        let (prompt, prompt_is_delta) = self.prompt_record(&request);
        let mut step = Step {
            index,
            started_at,
            ended_at: started_at,
            prompt,
            prompt_is_delta,
            model: empty_turn(),
            actions: Vec::new(),
            events: Vec::new(),
        };

        let (message, actions) = match self
            .call_model(index, info, model, request, &mut step, &mut notes)
            .await
        {
            Ok(parsed) => parsed,
            Err(ending) => {
                self.finish_step(step, notes);
                return StepFlow::End(ending);
            }
        };
        self.conversation.push(message);

        let mut env_ending = None;
        for action in actions {
            match self.run_action(index, info, action, env, &mut notes).await {
                Ok((record, done)) => {
                    step.actions.push(record);
                    if let Some(termination) = done {
                        env_ending = Some(Ending::env_done(termination));
                        break;
                    }
                }
                Err(ending) => {
                    self.finish_step(step, notes);
                    return StepFlow::End(ending);
                }
            }
        }

        let step_end = {
            let ctx = StepContext::new(self.task, info, index, &self.conversation)
                .with_admissible_actions(self.admissible.as_deref());
            let mut event =
                StepEndEvent::new(ctx, &step.model, &step.actions, env_ending.is_some());
            dispatch(&mut self.slots, &mut event, &mut notes)
                .await
                .map(|()| event.into_parts())
        };
        let (injected, stop) = match step_end {
            Ok(parts) => parts,
            Err(ending) => {
                self.finish_step(step, notes);
                return StepFlow::End(ending);
            }
        };
        self.conversation.extend(injected);
        self.finish_step(step, notes);
        if let Some(ending) = env_ending {
            return StepFlow::End(ending);
        }
        match stop {
            Some(stop) => StepFlow::End(Ending::stopped(stop)),
            None => StepFlow::Continue,
        }
    }

    /// What the trajectory keeps of this step's prompt.
    fn prompt_record(&mut self, request: &ChatRequest) -> (Vec<Message>, bool) {
        let recorded = match self.recording.prompts {
            PromptRecording::Full => (request.messages.clone(), false),
            PromptRecording::Delta => (self.conversation[self.recorded_len..].to_vec(), true),
            PromptRecording::Off => (Vec::new(), false),
        };
        self.recorded_len = self.conversation.len();
        recorded
    }

    fn finish_step(&mut self, mut step: Step, notes: Vec<Value>) {
        step.ended_at = now_ms();
        step.events = notes;
        self.steps.push(step);
    }

    /// Calls the model, runs `after_model`, and retries while a processor asks to. Returns the
    /// assistant message to record and the actions to take.
    async fn call_model(
        &mut self,
        index: u32,
        info: &EnvInfo,
        model: &dyn ChatModel,
        mut request: ChatRequest,
        step: &mut Step,
        notes: &mut Vec<Value>,
    ) -> Result<(Message, Vec<Action>), Ending> {
        loop {
            let call_started = Instant::now();
            let result = model.chat(&request).await;
            step.model.latency_ms += call_started.elapsed().as_millis() as u64;
            let response = match result {
                Ok(response) => response,
                Err(error) => {
                    let message = format!("model call failed: {error}");
                    notes.push(json!({"model_error": message}));
                    return Err(Ending::failure(Termination::ModelError, message));
                }
            };
            self.record_response(&response, &mut step.model);

            let verdict = {
                let ctx = StepContext::new(self.task, info, index, &self.conversation)
                    .with_admissible_actions(self.admissible.as_deref());
                let mut event = AfterModelEvent::new(ctx, step.model.retries, &response)
                    .with_prompt(&request.messages)
                    .with_scorer(Scorer::new(model));
                dispatch(&mut self.slots, &mut event, notes).await?;
                event.into_verdict()
            };
            if let Some(stop) = verdict.stop {
                return Err(Ending::stopped(stop));
            }
            if let Some(feedback) = verdict.retry
                && step.model.retries < MAX_RETRIES_PER_STEP
            {
                notes.push(json!({
                    "parse_retry": step.model.retries + 1,
                    "raw_content": response.message.content,
                    "error": verdict.parse_error,
                }));
                request
                    .messages
                    .push(Message::assistant(response.message.content.clone()));
                request.messages.push(Message::user(feedback));
                step.model.retries += 1;
                continue;
            }
            if let Some(error) = verdict.parse_error {
                return Err(Ending::failure(
                    Termination::ParseFailure,
                    format!("the model's reply could not be parsed: {error}"),
                ));
            }
            return Ok((verdict.message, verdict.actions));
        }
    }

    fn record_response(&mut self, response: &ChatResponse, turn: &mut ModelTurn) {
        let usage = Usage {
            calls: response.usage.calls.max(1),
            ..response.usage
        };
        turn.usage.add(usage);
        self.usage.add(usage);
        turn.raw_content = response.message.content.clone();
        turn.raw_tool_calls = response.message.tool_calls.clone();
        turn.tokens = if self.recording.tokens {
            response.tokens.clone()
        } else {
            None
        };
    }

    /// `before_tool` → environment (unless vetoed) → `after_tool` for one action. Returns the
    /// record and, when the environment ended the episode, how.
    async fn run_action(
        &mut self,
        index: u32,
        info: &EnvInfo,
        action: Action,
        env: &mut dyn Environment,
        notes: &mut Vec<Value>,
    ) -> Result<(ActionRecord, Option<Termination>), Ending> {
        let started_at = now_ms();
        let (action, veto) = {
            let ctx = StepContext::new(self.task, info, index, &self.conversation)
                .with_admissible_actions(self.admissible.as_deref());
            let mut event = BeforeToolEvent::new(ctx, action);
            dispatch(&mut self.slots, &mut event, notes).await?;
            event.into_parts()
        };
        let result = match veto {
            Some(observation) => StepResult {
                observation,
                done: false,
                termination: None,
                admissible_actions: None,
                info: json!({"vetoed": true}),
            },
            None => env.step(&action).await.map_err(|error| {
                let message = format!("environment step failed: {error}");
                notes.push(json!({"env_error": message, "action": action}));
                Ending::failure(Termination::EnvError, message)
            })?,
        };
        if let Some(admissible) = &result.admissible_actions {
            self.admissible = Some(admissible.clone());
        }
        let observation = {
            let ctx = StepContext::new(self.task, info, index, &self.conversation)
                .with_admissible_actions(self.admissible.as_deref());
            let mut event = AfterToolEvent::new(
                ctx,
                &action,
                result.observation.clone(),
                result.done,
                result.termination,
            );
            dispatch(&mut self.slots, &mut event, notes).await?;
            event.into_observation()
        };
        if observation != result.observation {
            notes.push(json!({"observation_edited": true, "env_observation": result.observation}));
        }
        self.conversation
            .push(observation_message(&action, &observation));
        let done = result
            .done
            .then(|| result.termination.unwrap_or(Termination::EnvDone));
        let record = ActionRecord {
            action,
            observation,
            started_at,
            ended_at: now_ms(),
            info: result.info,
        };
        Ok((record, done))
    }

    /// Scores the episode unless the environment never started or failed.
    async fn evaluate(
        &mut self,
        env: &mut dyn Environment,
        ending: &Ending,
    ) -> Option<Result<Evaluation, String>> {
        if !self.reset_done || ending.termination == Termination::EnvError {
            return None;
        }
        let evaluated =
            tokio::time::timeout(EVALUATION_TIMEOUT, env.evaluate(ending.termination)).await;
        Some(match evaluated {
            Ok(Ok(evaluation)) => Ok(evaluation),
            Ok(Err(error)) => Err(format!("evaluation failed: {error}")),
            Err(_) => Err(format!(
                "evaluation took longer than {}s",
                EVALUATION_TIMEOUT.as_secs()
            )),
        })
    }

    fn outcome(
        &self,
        ending: &Ending,
        evaluation: Option<Result<Evaluation, String>>,
        started_at: UnixMillis,
        clock: Instant,
        worker: Option<&str>,
    ) -> Outcome {
        let mut termination = ending.termination;
        let mut error = ending.error.clone();
        let evaluation = match evaluation {
            Some(Ok(evaluation)) => Some(evaluation),
            Some(Err(message)) => {
                warn!(error = %message, "evaluation failed");
                if error.is_none() {
                    termination = Termination::EnvError;
                }
                error = Some(match error {
                    Some(previous) => format!("{previous}; {message}"),
                    None => message,
                });
                None
            }
            None => None,
        };
        let errored = termination.is_error();
        let (reward, components, success, success_judged_only, db_hash) = match evaluation {
            Some(evaluation) => (
                if errored { 0.0 } else { evaluation.reward },
                evaluation.components,
                evaluation.success && !errored,
                evaluation.success_judged_only && !errored,
                evaluation.db_hash,
            ),
            None => (0.0, BTreeMap::new(), false, false, None),
        };
        Outcome {
            schema: kiln_protocol::SCHEMA_VERSION,
            run_id: self.task.run_id.clone(),
            env: self.task.env.clone(),
            split: self.task.split.clone(),
            task_id: self.task.task_id.clone(),
            attempt: self.task.attempt,
            success,
            success_judged_only,
            reward,
            components,
            termination,
            error,
            harness_hash: self.harness.hash().to_string(),
            model: self.model_label.clone(),
            usage: self.usage,
            wall_ms: clock.elapsed().as_millis() as u64,
            steps: self.steps.len() as u32,
            db_hash,
            worker: worker.map(str::to_string),
            started_at,
            finished_at: now_ms(),
        }
    }

    fn trajectory(&mut self, ending: &Ending) -> Trajectory {
        let mut events = std::mem::take(&mut self.events);
        events.push(json!({
            "end": {
                "termination": ending.termination,
                "reason": ending.reason,
                "error": ending.error,
            }
        }));
        Trajectory {
            schema: kiln_protocol::SCHEMA_VERSION,
            run_id: self.task.run_id.clone(),
            env: self.task.env.clone(),
            task_id: self.task.task_id.clone(),
            attempt: self.task.attempt,
            harness_hash: self.harness.hash().to_string(),
            model: self.task.model.clone(),
            opening: self.opening.clone(),
            steps: std::mem::take(&mut self.steps),
            events,
        }
    }

    /// `task_end`: processors see the final outcome; a failure here is noted, the outcome stands.
    async fn task_end(&mut self, outcome: &Outcome, trajectory: &mut Trajectory) {
        let mut notes = Vec::new();
        let result = {
            let mut event = TaskEndEvent::new(self.task, outcome, trajectory);
            dispatch(&mut self.slots, &mut event, &mut notes).await
        };
        if let Err(ending) = result {
            warn!(error = ?ending.error, "a processor failed at task_end");
            notes.push(json!({"task_end_error": ending.error}));
        }
        trajectory.events.extend(notes);
    }
}

/// Sampling from the task's model spec, seeded from the task when the spec has no seed.
fn base_sampling(task: &TaskSpec) -> SamplingParams {
    let mut sampling = match &task.model {
        ModelSpec::OpenAi { sampling, .. } | ModelSpec::Local { sampling, .. } => sampling.clone(),
        ModelSpec::Oracle => SamplingParams::default(),
    };
    if sampling.seed.is_none() {
        sampling.seed = Some(task.seed);
    }
    sampling
}

fn empty_turn() -> ModelTurn {
    ModelTurn {
        raw_content: String::new(),
        raw_tool_calls: Vec::new(),
        usage: Usage::default(),
        latency_ms: 0,
        tokens: None,
        retries: 0,
    }
}

/// The conversation message an observation becomes: a tool result answers its call; user and
/// text observations are user messages.
fn observation_message(action: &Action, observation: &Observation) -> Message {
    match observation {
        Observation::ToolResult {
            call_id,
            name,
            content,
            ..
        } => Message {
            role: Role::Tool,
            content: content.clone(),
            tool_calls: Vec::new(),
            tool_call_id: Some(call_id.clone()),
            name: Some(name.clone()),
        },
        Observation::User { text } | Observation::Text { text } => {
            if let Action::ToolCall { call } = action {
                // A text observation for a tool call still has to answer the call.
                return Message {
                    role: Role::Tool,
                    content: text.clone(),
                    tool_calls: Vec::new(),
                    tool_call_id: Some(call.id.clone()),
                    name: Some(call.name.clone()),
                };
            }
            Message::user(text.clone())
        }
    }
}

/// Runs `event` through every processor attached to its hook, in order. Notes are tagged with
/// the processor id and hook; the first failure ends the episode with `HarnessError`.
async fn dispatch<E: HookEvent>(
    slots: &mut [Slot],
    event: &mut E,
    notes: &mut Vec<Value>,
) -> Result<(), Ending> {
    for slot in slots
        .iter_mut()
        .filter(|slot| slot.hooks.contains(&E::HOOK))
    {
        let result = E::dispatch(slot.processor.as_mut(), event).await;
        for note in event.notes().take() {
            notes.push(json!({"processor": slot.id, "hook": E::HOOK.as_str(), "note": note}));
        }
        if let Err(error) = result {
            let message = format!("processor `{}` failed at {}: {error}", slot.id, E::HOOK);
            warn!(processor = %slot.id, hook = %E::HOOK, error = %error, "processor failed");
            return Err(Ending::failure(Termination::HarnessError, message));
        }
    }
    Ok(())
}
