//! The Digester: trajectories and outcomes → one structured summary per task.
//!
//! Every signature is a deterministic function of the recorded episode (no model involved):
//!
//! | signature | what it counts |
//! |---|---|
//! | `invalid_action` | actions the environment rejected: ALFWorld `Nothing happens.`, WebShop `info.invalid` |
//! | `repeated_action_loop` | a run of ≥ 3 identical consecutive actions, an A B A B cycle, or a `loop_detection` warning/stop |
//! | `step_limit` | the episode ended at the step limit |
//! | `parse_failure` | parse retries spent, steps without an action, or a parse-failure ending |
//! | `tool_error` | tool results flagged as errors (τ²: `Error: …`) |
//! | `premature_stop` | the agent (or user) ended the episode unsolved before any limit |
//! | `context_overflow` | the prompt stayed over its budget after compaction, or a context-length model error |
//! | `timeout` | the episode ran past its wall-clock limit |
//! | `infra_error` | model, environment or harness failure |
//! | `admissible_fallback` | the generated action was not admissible and `admissible_choice` replaced it |
//! | `alfworld_receptacle_never_opened` | a receptacle seen closed and never opened |
//! | `alfworld_target_never_taken` | the goal's object was never picked up |
//! | `webshop_pagination_loop` | ≥ 3 `next >` / `< prev` clicks |
//! | `webshop_buy_without_options` | `buy now` on an item page with options, none clicked |
//! | `tau2_tool_error:<message>` | τ² tool-error strings, numbers and quoted values masked |
//!
//! A task's failure category is its failed attempts' most frequent category; an attempt's
//! category is the first that applies in [`FailureCategory`]'s order.

use std::collections::{BTreeMap, BTreeSet};

use kiln_protocol::{Action, HarnessSpec, Observation, Outcome, Termination, Trajectory};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::candidate::EvidencePointer;

/// Evidence pointers kept per signature and task (the first ones, in step order).
pub const EVIDENCE_PER_SIGNATURE: usize = 5;

/// A run of identical consecutive actions at least this long is a loop.
pub const LOOP_RUN: usize = 3;

/// Pagination clicks in one episode from which WebShop paging counts as a loop.
pub const PAGINATION_LOOP: usize = 3;

/// Why an attempt failed, most specific first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureCategory {
    /// Model, environment or harness failure: not the agent's behaviour.
    InfraError,
    Timeout,
    ContextOverflow,
    ParseFailure,
    /// Stopped by loop detection, or mostly repeating itself.
    Loop,
    /// Most actions were rejected by the environment.
    InvalidActions,
    StepLimit,
    ToolErrors,
    PrematureStop,
    /// Ended normally (purchase, goal check, stop) with a wrong or partial result.
    WrongResult,
}

impl FailureCategory {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureCategory::InfraError => "infra_error",
            FailureCategory::Timeout => "timeout",
            FailureCategory::ContextOverflow => "context_overflow",
            FailureCategory::ParseFailure => "parse_failure",
            FailureCategory::Loop => "loop",
            FailureCategory::InvalidActions => "invalid_actions",
            FailureCategory::StepLimit => "step_limit",
            FailureCategory::ToolErrors => "tool_errors",
            FailureCategory::PrematureStop => "premature_stop",
            FailureCategory::WrongResult => "wrong_result",
        }
    }
}

/// One signature in one attempt: how often, out of how many, and where.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignatureHit {
    pub count: u32,
    /// What `count` is out of (actions, steps or 1 for episode-level signatures).
    pub out_of: u32,
    pub evidence: Vec<EvidencePointer>,
}

impl SignatureHit {
    pub fn rate(&self) -> f64 {
        if self.out_of == 0 {
            0.0
        } else {
            f64::from(self.count) / f64::from(self.out_of)
        }
    }
}

/// The digest of one attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptDigest {
    pub run: String,
    pub attempt: u32,
    pub success: bool,
    pub reward: f64,
    pub termination: Termination,
    pub steps: u32,
    pub category: Option<FailureCategory>,
    pub signatures: BTreeMap<String, SignatureHit>,
}

/// Where a task stands across its attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Solved,
    Flaky,
    Failed,
}

/// A signature summed over a task's attempts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignatureSummary {
    /// Attempts that show it.
    pub attempts: u32,
    pub count: u32,
    pub out_of: u32,
    pub evidence: Vec<EvidencePointer>,
}

/// One task's structured summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskDigest {
    pub task_id: String,
    pub env: String,
    /// Task type or category (empty when the environment has none).
    #[serde(default)]
    pub cluster: String,
    pub attempts: u32,
    pub successes: u32,
    pub status: TaskStatus,
    pub mean_reward: f64,
    pub failure_category: Option<FailureCategory>,
    pub signatures: BTreeMap<String, SignatureSummary>,
    /// Processor ids of the harness that the signatures point at.
    pub implicated_processors: Vec<String>,
    /// Pointers to whole episodes (run/task/attempt), first failing ones first.
    pub episodes: Vec<EvidencePointer>,
    pub per_attempt: Vec<AttemptDigest>,
}

impl TaskDigest {
    pub fn pass_rate(&self) -> f64 {
        if self.attempts == 0 {
            0.0
        } else {
            f64::from(self.successes) / f64::from(self.attempts)
        }
    }

    pub fn has(&self, signature: &str) -> bool {
        self.signatures.contains_key(signature)
    }
}

/// One episode to digest.
#[derive(Debug, Clone, Copy)]
pub struct Episode<'a> {
    pub outcome: &'a Outcome,
    pub trajectory: Option<&'a Trajectory>,
}

/// Digests one attempt.
pub fn digest_attempt(episode: Episode<'_>) -> AttemptDigest {
    let outcome = episode.outcome;
    let mut signatures = BTreeMap::new();
    let whole = EvidencePointer {
        run: outcome.run_id.clone(),
        task: outcome.task_id.clone(),
        attempt: outcome.attempt,
        step: None,
    };
    let episode_level = |signatures: &mut BTreeMap<String, SignatureHit>, name: &str| {
        signatures.insert(
            name.to_string(),
            SignatureHit {
                count: 1,
                out_of: 1,
                evidence: vec![whole.clone()],
            },
        );
    };
    match outcome.termination {
        Termination::MaxSteps => episode_level(&mut signatures, "step_limit"),
        Termination::Timeout => episode_level(&mut signatures, "timeout"),
        Termination::ModelError | Termination::EnvError | Termination::HarnessError => {
            episode_level(&mut signatures, "infra_error")
        }
        Termination::ParseFailure => episode_level(&mut signatures, "parse_failure"),
        Termination::LoopDetected => episode_level(&mut signatures, "repeated_action_loop"),
        Termination::AgentStop
        | Termination::UserStop
        | Termination::Transfer
        | Termination::OutOfScope
            if !outcome.success =>
        {
            episode_level(&mut signatures, "premature_stop")
        }
        _ => {}
    }
    if outcome
        .error
        .as_deref()
        .is_some_and(mentions_context_length)
    {
        episode_level(&mut signatures, "context_overflow");
    }
    if let Some(trajectory) = episode.trajectory {
        step_signatures(trajectory, &outcome.env, &mut signatures);
    }
    let category = (!outcome.success).then(|| categorize(outcome, &signatures));
    AttemptDigest {
        run: outcome.run_id.clone(),
        attempt: outcome.attempt,
        success: outcome.success,
        reward: outcome.reward,
        termination: outcome.termination,
        steps: outcome.steps,
        category,
        signatures,
    }
}

fn mentions_context_length(message: &str) -> bool {
    let lower = message.to_lowercase();
    lower.contains("context length")
        || lower.contains("context window")
        || lower.contains("maximum context")
        || lower.contains("too many tokens")
        || lower.contains("prompt is too long")
}

/// Collects per-step evidence into `signatures` (merging with episode-level ones).
struct Collector<'a> {
    run: &'a str,
    task: &'a str,
    attempt: u32,
    hits: BTreeMap<String, (u32, u32, Vec<EvidencePointer>)>,
}

impl Collector<'_> {
    fn hit(&mut self, name: &str, step: u32) {
        let pointer = EvidencePointer {
            run: self.run.to_string(),
            task: self.task.to_string(),
            attempt: self.attempt,
            step: Some(step),
        };
        let entry = self.hits.entry(name.to_string()).or_default();
        entry.0 += 1;
        if entry.2.len() < EVIDENCE_PER_SIGNATURE {
            entry.2.push(pointer);
        }
    }

    fn out_of(&mut self, name: &str, total: u32) {
        if let Some(entry) = self.hits.get_mut(name) {
            entry.1 = total;
        }
    }
}

fn action_text(action: &Action) -> String {
    match action {
        Action::Message { text } => text.trim().to_string(),
        Action::ToolCall { call } => format!("{}({})", call.name, call.arguments),
    }
}

fn step_signatures(
    trajectory: &Trajectory,
    env: &str,
    signatures: &mut BTreeMap<String, SignatureHit>,
) {
    let mut collector = Collector {
        run: &trajectory.run_id,
        task: &trajectory.task_id,
        attempt: trajectory.attempt,
        hits: BTreeMap::new(),
    };
    let mut actions_total = 0u32;
    let mut previous: Option<String> = None;
    let mut run_length = 0usize;
    let mut history: Vec<String> = Vec::new();
    let mut in_cycle = false;
    for step in &trajectory.steps {
        for _ in 0..step.model.retries {
            collector.hit("parse_failure", step.index);
        }
        if step.actions.is_empty() {
            collector.hit("parse_failure", step.index);
        }
        for note in &step.events {
            step_note(note, step.index, &mut collector);
        }
        for record in &step.actions {
            actions_total += 1;
            let text = action_text(&record.action);
            if previous.as_deref() == Some(text.as_str()) {
                run_length += 1;
            } else {
                run_length = 1;
                previous = Some(text.clone());
            }
            if run_length == LOOP_RUN {
                collector.hit("repeated_action_loop", step.index);
            }
            // A two-step cycle (A B A B: pacing between two places) is a loop too.
            history.push(text.clone());
            let n = history.len();
            let cycling = n >= 4
                && history[n - 1] == history[n - 3]
                && history[n - 2] == history[n - 4]
                && history[n - 1] != history[n - 2];
            if cycling && !in_cycle {
                collector.hit("repeated_action_loop", step.index);
            }
            in_cycle = cycling;
            if observation_rejected(&record.observation, &record.info) {
                collector.hit("invalid_action", step.index);
            }
            if let Observation::ToolResult {
                is_error: true,
                content,
                ..
            } = &record.observation
            {
                collector.hit("tool_error", step.index);
                if env.starts_with("tau2") {
                    collector.hit(&format!("tau2_tool_error:{}", mask(content)), step.index);
                }
            }
        }
    }
    collector.out_of("invalid_action", actions_total);
    collector.out_of("tool_error", actions_total);
    let steps = trajectory.steps.len() as u32;
    collector.out_of("parse_failure", steps);
    collector.out_of("admissible_fallback", steps);
    collector.out_of("context_overflow", steps);
    collector.out_of("repeated_action_loop", steps);
    if env == "alfworld" {
        alfworld_signatures(trajectory, &mut collector);
    }
    if env == "webshop" {
        webshop_signatures(trajectory, &mut collector);
    }
    for (name, (count, out_of, evidence)) in collector.hits {
        let out_of = if out_of == 0 { count.max(1) } else { out_of };
        match signatures.get_mut(&name) {
            // An episode-level signature (e.g. a loop stop) gains the step evidence.
            Some(existing) => {
                existing.count = existing.count.max(count);
                existing.out_of = existing.out_of.max(out_of);
                for pointer in evidence {
                    if existing.evidence.len() < EVIDENCE_PER_SIGNATURE + 1 {
                        existing.evidence.push(pointer);
                    }
                }
            }
            None => {
                signatures.insert(
                    name,
                    SignatureHit {
                        count,
                        out_of,
                        evidence,
                    },
                );
            }
        }
    }
}

/// Notes processors leave on a step: `{"processor": id, "hook": h, "note": {...}}`.
fn step_note(note: &Value, step: u32, collector: &mut Collector<'_>) {
    let inner = note.get("note").unwrap_or(note);
    if inner.get("loop_warning").is_some() || inner.get("loop_detected").is_some() {
        collector.hit("repeated_action_loop", step);
    }
    if inner.get("retry").is_some() {
        // parse_retry's re-ask; the model turn's `retries` counts it already when recorded.
        return;
    }
    if let Some(choice) = inner.get("admissible_choice")
        && choice.get("changed").and_then(Value::as_bool) == Some(true)
        && choice.get("reason").and_then(Value::as_str) != Some("always")
    {
        collector.hit("admissible_fallback", step);
    }
    if let Some(compact) = inner.get("compact_prompt")
        && compact.get("over_budget").and_then(Value::as_bool) == Some(true)
    {
        collector.hit("context_overflow", step);
    }
    if let Some(message) = inner.get("model_error").and_then(Value::as_str)
        && mentions_context_length(message)
    {
        collector.hit("context_overflow", step);
    }
}

fn observation_rejected(observation: &Observation, info: &Value) -> bool {
    if info.get("invalid").is_some_and(|v| !v.is_null()) {
        return true;
    }
    matches!(observation, Observation::Text { text } if text.trim() == "Nothing happens.")
}

/// A tool-error message with its specifics masked, so equal errors cluster: digits become `#`,
/// quoted values `'…'`.
pub fn mask(message: &str) -> String {
    let mut masked = String::new();
    let mut quote: Option<char> = None;
    for c in message.trim().chars() {
        if let Some(open) = quote {
            if c == open {
                masked.push('…');
                masked.push(c);
                quote = None;
            }
            continue;
        }
        if c == '\'' || c == '"' {
            quote = Some(c);
            masked.push(c);
        } else if c.is_ascii_digit() {
            if !masked.ends_with('#') {
                masked.push('#');
            }
        } else {
            masked.push(c);
        }
    }
    masked.chars().take(80).collect()
}

fn alfworld_signatures(trajectory: &Trajectory, collector: &mut Collector<'_>) {
    let mut closed: BTreeMap<String, u32> = BTreeMap::new();
    let mut opened: BTreeSet<String> = BTreeSet::new();
    let mut taken: BTreeSet<String> = BTreeSet::new();
    for step in &trajectory.steps {
        for record in &step.actions {
            let action = action_text(&record.action);
            if let Some(target) = action.strip_prefix("open ") {
                opened.insert(target.trim().to_string());
            }
            let text = record.observation.text();
            for sentence in text.split('.') {
                let sentence = sentence.trim();
                if let Some(rest) = sentence.strip_prefix("The ")
                    && let Some(name) = rest.strip_suffix(" is closed")
                {
                    closed.entry(name.to_string()).or_insert(step.index);
                }
                if let Some(rest) = sentence.strip_prefix("You pick up the ")
                    && let Some((object, _)) = rest.split_once(" from ")
                {
                    taken.insert(object_type(object));
                }
            }
        }
    }
    for (name, step) in &closed {
        if !opened.contains(name) {
            collector.hit("alfworld_receptacle_never_opened", *step);
        }
    }
    if let Some(target) = alfworld_goal_object(trajectory)
        && !taken.contains(&target)
    {
        let last = trajectory.steps.last().map_or(0, |step| step.index);
        collector.hit("alfworld_target_never_taken", last);
    }
}

/// `cellphone 2` → `cellphone`.
fn object_type(name: &str) -> String {
    match name.trim().rsplit_once(' ') {
        Some((kind, number)) if number.chars().all(|c| c.is_ascii_digit()) => kind.to_string(),
        _ => name.trim().to_string(),
    }
}

/// The object type of the goal sentence (`Your task is to: put a clean cloth in cabinet.`).
pub fn alfworld_goal_object(trajectory: &Trajectory) -> Option<String> {
    let text = trajectory
        .opening
        .iter()
        .map(|message| message.content.as_str())
        .find(|content| content.contains("Your task is to: "))?;
    let goal = text.split("Your task is to: ").nth(1)?.trim();
    let goal = goal.trim_end_matches('.');
    let words: Vec<&str> = goal.split_whitespace().collect();
    // put a|some [clean|hot|cool] X in|on R; look at X under the lamp; examine the X with…;
    // clean|heat|cool some X and put it in R; put|find two X in|and …
    let skip = [
        "put", "a", "an", "some", "clean", "hot", "cool", "cold", "two", "find", "look", "at",
        "examine", "the", "heat",
    ];
    let stop = ["in", "on", "under", "with", "and", "in/on"];
    let mut object = Vec::new();
    for word in words {
        if stop.contains(&word) {
            break;
        }
        if object.is_empty() && skip.contains(&word) {
            continue;
        }
        object.push(word);
    }
    (!object.is_empty()).then(|| object.join(" "))
}

fn webshop_signatures(trajectory: &Trajectory, collector: &mut Collector<'_>) {
    let mut pagination = 0usize;
    let mut option_clicked = false;
    let mut item_has_options = false;
    for step in &trajectory.steps {
        for record in &step.actions {
            let action = action_text(&record.action).to_lowercase();
            let Some(value) = action
                .strip_prefix("click[")
                .and_then(|rest| rest.strip_suffix(']'))
            else {
                continue;
            };
            if record.info.get("invalid").is_some_and(|v| !v.is_null()) {
                continue;
            }
            match value.trim() {
                "next >" | "< prev" => {
                    pagination += 1;
                    if pagination == PAGINATION_LOOP {
                        collector.hit("webshop_pagination_loop", step.index);
                    }
                }
                "buy now" => {
                    if item_has_options && !option_clicked {
                        collector.hit("webshop_buy_without_options", step.index);
                    }
                }
                "back to search" | "description" | "features" | "reviews" => {}
                _ => {
                    let page = record.info.get("page").and_then(Value::as_str);
                    // Clicking a product opens its page: options start unclicked.
                    let clickables = record.info.get("clickables").and_then(Value::as_array);
                    let was_option = clickables
                        .is_some_and(|list| list.iter().any(|c| c.as_str() == Some(value.trim())))
                        && page == Some("item")
                        && item_has_options;
                    if was_option {
                        option_clicked = true;
                    } else if page == Some("item") {
                        option_clicked = false;
                        item_has_options = clickables.is_some_and(|list| {
                            list.iter().any(|c| {
                                !matches!(
                                    c.as_str(),
                                    Some(
                                        "back to search"
                                            | "< prev"
                                            | "next >"
                                            | "description"
                                            | "features"
                                            | "reviews"
                                            | "buy now"
                                    )
                                )
                            })
                        });
                    }
                }
            }
        }
    }
}

fn categorize(outcome: &Outcome, signatures: &BTreeMap<String, SignatureHit>) -> FailureCategory {
    let has = |name: &str| signatures.contains_key(name);
    let rate = |name: &str| signatures.get(name).map_or(0.0, SignatureHit::rate);
    match outcome.termination {
        Termination::ModelError | Termination::EnvError | Termination::HarnessError => {
            return FailureCategory::InfraError;
        }
        Termination::Timeout => return FailureCategory::Timeout,
        _ => {}
    }
    if has("context_overflow") && rate("context_overflow") >= 0.5 {
        return FailureCategory::ContextOverflow;
    }
    if outcome.termination == Termination::ParseFailure || rate("parse_failure") >= 0.5 {
        return FailureCategory::ParseFailure;
    }
    if outcome.termination == Termination::LoopDetected {
        return FailureCategory::Loop;
    }
    if rate("invalid_action") >= 0.5 {
        return FailureCategory::InvalidActions;
    }
    if outcome.termination == Termination::MaxSteps {
        return FailureCategory::StepLimit;
    }
    if outcome.termination == Termination::TooManyErrors || rate("tool_error") >= 0.5 {
        return FailureCategory::ToolErrors;
    }
    if has("premature_stop") && outcome.reward <= 0.0 {
        return FailureCategory::PrematureStop;
    }
    FailureCategory::WrongResult
}

/// Which processor kinds a signature points at.
pub fn implicated_kinds(signature: &str) -> &'static [&'static str] {
    match signature.split(':').next().unwrap_or_default() {
        "invalid_action" | "admissible_fallback" => &["admissible_choice", "tool_parser"],
        "repeated_action_loop" | "webshop_pagination_loop" => &["loop_detection"],
        "step_limit" => &["step_limit"],
        "parse_failure" => &["tool_parser", "parse_retry"],
        "context_overflow" => &["compact_prompt", "history_window"],
        "tool_error" | "tau2_tool_error" => &["tool_catalogue"],
        "premature_stop"
        | "alfworld_receptacle_never_opened"
        | "alfworld_target_never_taken"
        | "webshop_buy_without_options" => &["compact_prompt", "system_prompt"],
        _ => &[],
    }
}

/// Digests every task of `episodes`, grouping attempts by task id; `cluster` names each task's
/// cluster, `harness` (the parent) resolves implicated processor kinds to its ids. Tasks come
/// out in id order; the result depends only on the inputs.
pub fn digest_tasks(
    episodes: &[Episode<'_>],
    cluster: &dyn Fn(&str) -> String,
    harness: Option<&HarnessSpec>,
) -> Vec<TaskDigest> {
    let mut by_task: BTreeMap<&str, Vec<AttemptDigest>> = BTreeMap::new();
    let mut env_of: BTreeMap<&str, &str> = BTreeMap::new();
    for episode in episodes {
        by_task
            .entry(episode.outcome.task_id.as_str())
            .or_default()
            .push(digest_attempt(*episode));
        env_of.insert(
            episode.outcome.task_id.as_str(),
            episode.outcome.env.as_str(),
        );
    }
    by_task
        .into_iter()
        .map(|(task, mut attempts)| {
            attempts.sort_by(|a, b| (&a.run, a.attempt).cmp(&(&b.run, b.attempt)));
            summarize(task, env_of[task], cluster(task), attempts, harness)
        })
        .collect()
}

fn summarize(
    task: &str,
    env: &str,
    cluster: String,
    attempts: Vec<AttemptDigest>,
    harness: Option<&HarnessSpec>,
) -> TaskDigest {
    let total = attempts.len() as u32;
    let successes = attempts.iter().filter(|a| a.success).count() as u32;
    let status = match successes {
        0 => TaskStatus::Failed,
        s if s == total => TaskStatus::Solved,
        _ => TaskStatus::Flaky,
    };
    let mut categories: BTreeMap<FailureCategory, u32> = BTreeMap::new();
    for category in attempts.iter().filter_map(|a| a.category) {
        *categories.entry(category).or_default() += 1;
    }
    // Most frequent; ties go to the more specific (earlier) category.
    let failure_category = categories
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
        .map(|(category, _)| *category);
    let mut signatures: BTreeMap<String, SignatureSummary> = BTreeMap::new();
    for attempt in &attempts {
        for (name, hit) in &attempt.signatures {
            let summary = signatures
                .entry(name.clone())
                .or_insert_with(|| SignatureSummary {
                    attempts: 0,
                    count: 0,
                    out_of: 0,
                    evidence: Vec::new(),
                });
            summary.attempts += 1;
            summary.count += hit.count;
            summary.out_of += hit.out_of;
            for pointer in &hit.evidence {
                if summary.evidence.len() < EVIDENCE_PER_SIGNATURE {
                    summary.evidence.push(pointer.clone());
                }
            }
        }
    }
    let implicated_processors = implicated(signatures.keys(), harness);
    let mut episodes: Vec<EvidencePointer> = attempts
        .iter()
        .map(|a| EvidencePointer {
            run: a.run.clone(),
            task: task.to_string(),
            attempt: a.attempt,
            step: None,
        })
        .collect();
    // Failing attempts first: they are what evidence is about.
    episodes.sort_by_key(|pointer| {
        attempts
            .iter()
            .any(|a| a.run == pointer.run && a.attempt == pointer.attempt && a.success)
    });
    let mean_reward = if total == 0 {
        0.0
    } else {
        attempts.iter().map(|a| a.reward).sum::<f64>() / f64::from(total)
    };
    TaskDigest {
        task_id: task.to_string(),
        env: env.to_string(),
        cluster,
        attempts: total,
        successes,
        status,
        mean_reward,
        failure_category,
        signatures,
        implicated_processors,
        episodes,
        per_attempt: attempts,
    }
}

fn implicated<'a>(
    signatures: impl Iterator<Item = &'a String>,
    harness: Option<&HarnessSpec>,
) -> Vec<String> {
    let kinds: BTreeSet<&str> = signatures
        .flat_map(|name| implicated_kinds(name).iter().copied())
        .collect();
    let Some(harness) = harness else {
        return kinds.into_iter().map(str::to_string).collect();
    };
    harness
        .processors
        .iter()
        .filter(|processor| kinds.contains(processor.kind.as_str()))
        .map(|processor| processor.id.clone())
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn outcome_json(
        run: &str,
        task: &str,
        attempt: u32,
        success: bool,
        termination: &str,
    ) -> String {
        serde_json::json!({
            "schema": 1, "run_id": run, "env": "toy", "split": "train", "task_id": task,
            "attempt": attempt, "success": success, "success_judged_only": success,
            "reward": if success { 1.0 } else { 0.0 }, "components": {},
            "termination": termination, "error": null, "harness_hash": "h", "model": "m",
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "calls": 0},
            "wall_ms": 1, "steps": 1, "started_at": 0, "finished_at": 1
        })
        .to_string()
    }

    pub fn trajectory_json(
        run: &str,
        task: &str,
        attempt: u32,
        actions: &[&str],
        observations: &[&str],
    ) -> String {
        serde_json::to_string(&trajectory(
            "toy",
            run,
            task,
            attempt,
            "",
            actions,
            observations,
        ))
        .unwrap()
    }

    pub fn outcome(env: &str, task: &str, success: bool, termination: &str) -> Outcome {
        let mut value: Value =
            serde_json::from_str(&outcome_json("r", task, 0, success, termination)).unwrap();
        value["env"] = Value::from(env);
        serde_json::from_value(value).unwrap()
    }

    pub fn trajectory(
        env: &str,
        run: &str,
        task: &str,
        attempt: u32,
        opening: &str,
        actions: &[&str],
        observations: &[&str],
    ) -> Trajectory {
        let steps: Vec<Value> = actions
            .iter()
            .zip(observations)
            .enumerate()
            .map(|(index, (action, observation))| {
                serde_json::json!({
                    "index": index, "started_at": 0, "ended_at": 0, "prompt": [],
                    "model": {"raw_content": action, "usage": {"prompt_tokens": 0, "completion_tokens": 0, "calls": 1}, "latency_ms": 0},
                    "actions": [{"action": {"type": "message", "text": action},
                                 "observation": {"type": "text", "text": observation},
                                 "started_at": 0, "ended_at": 0}]
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "run_id": run, "env": env, "task_id": task, "attempt": attempt, "harness_hash": "h",
            "model": {"backend": "oracle"},
            "opening": [{"role": "user", "content": opening}],
            "steps": steps,
        }))
        .unwrap()
    }

    fn digest(outcome: &Outcome, trajectory: &Trajectory) -> AttemptDigest {
        digest_attempt(Episode {
            outcome,
            trajectory: Some(trajectory),
        })
    }

    #[test]
    fn alfworld_signatures_on_a_constructed_episode() {
        let opening = "-= Welcome to TextWorld, ALFRED! =-\n\nYou are in the middle of a room.\n\nYour task is to: put a clean cloth in cabinet.";
        let trajectory = trajectory(
            "alfworld",
            "r",
            "train/x/0001",
            0,
            opening,
            &[
                "go to cabinet 1",
                "take cloth",
                "take cloth",
                "take cloth",
                "go to drawer 2",
            ],
            &[
                "You arrive at cabinet 1. The cabinet 1 is closed.",
                "Nothing happens.",
                "Nothing happens.",
                "Nothing happens.",
                "You arrive at drawer 2. The drawer 2 is closed.",
            ],
        );
        let outcome = outcome("alfworld", "train/x/0001", false, "max_steps");
        let digest = digest(&outcome, &trajectory);
        let invalid = &digest.signatures["invalid_action"];
        assert_eq!((invalid.count, invalid.out_of), (3, 5));
        assert_eq!(invalid.evidence[0].to_string(), "r/train/x/0001/0/1");
        assert_eq!(digest.signatures["repeated_action_loop"].count, 1);
        assert_eq!(
            digest.signatures["repeated_action_loop"].evidence[0].step,
            Some(3)
        );
        assert!(digest.signatures.contains_key("step_limit"));
        assert_eq!(
            digest.signatures["alfworld_receptacle_never_opened"].count,
            2
        );
        assert_eq!(digest.signatures["alfworld_target_never_taken"].count, 1);
        assert_eq!(digest.category, Some(FailureCategory::InvalidActions));
        assert_eq!(alfworld_goal_object(&trajectory).as_deref(), Some("cloth"));
    }

    #[test]
    fn webshop_pagination_and_buy_without_options() {
        let mut trajectory = trajectory(
            "webshop",
            "r",
            "1600",
            0,
            "",
            &[
                "search[red shoes]",
                "click[next >]",
                "click[next >]",
                "click[< prev]",
                "click[b0abc]",
                "click[buy now]",
            ],
            &[
                "results",
                "results 2",
                "results 3",
                "results 2",
                "item",
                "done",
            ],
        );
        trajectory.steps[4].actions[0].info = serde_json::json!({
            "page": "item",
            "clickables": ["back to search", "< prev", "buy now", "red", "blue"]
        });
        let outcome = outcome("webshop", "1600", false, "env_done");
        let digest = digest(&outcome, &trajectory);
        assert_eq!(digest.signatures["webshop_pagination_loop"].count, 1);
        assert_eq!(digest.signatures["webshop_buy_without_options"].count, 1);
        assert_eq!(digest.category, Some(FailureCategory::WrongResult));

        // With an option clicked first, the purchase is not flagged.
        let mut with_option = trajectory.clone();
        let mut option_step = with_option.steps[4].clone();
        option_step.index = 5;
        option_step.actions[0].action = Action::Message {
            text: "click[red]".into(),
        };
        with_option.steps.insert(5, option_step);
        with_option.steps[6].index = 6;
        let digest = self::digest(&outcome, &with_option);
        assert!(
            !digest
                .signatures
                .contains_key("webshop_buy_without_options")
        );
        // Invalid clicks are flagged from `info.invalid`.
        with_option.steps[1].actions[0].info = serde_json::json!({"invalid": "no such button"});
        let digest = self::digest(&outcome, &with_option);
        assert_eq!(digest.signatures["invalid_action"].count, 1);
        assert!(!digest.signatures.contains_key("webshop_pagination_loop"));
    }

    #[test]
    fn tau2_tool_errors_cluster_by_masked_message() {
        let mut trajectory = trajectory("tau2-retail", "r", "5", 0, "", &["a", "b"], &["x", "y"]);
        for (index, content) in [
            "Error: Order #W2378156 not found",
            "Error: Order #W9999999 not found",
        ]
        .iter()
        .enumerate()
        {
            trajectory.steps[index].actions[0].observation = Observation::ToolResult {
                call_id: "c".into(),
                name: "get_order_details".into(),
                content: content.to_string(),
                is_error: true,
            };
        }
        let outcome = outcome("tau2-retail", "5", false, "agent_stop");
        let digest = digest(&outcome, &trajectory);
        assert_eq!(digest.signatures["tool_error"].count, 2);
        assert_eq!(
            digest.signatures["tau2_tool_error:Error: Order #W# not found"].count,
            2
        );
        assert!(digest.signatures.contains_key("premature_stop"));
        assert_eq!(digest.category, Some(FailureCategory::ToolErrors));
        assert_eq!(
            mask("Error: user 'bob_12' has 3 orders"),
            "Error: user '…' has # orders"
        );
    }

    #[test]
    fn notes_give_parse_failures_context_overflow_loops_and_fallbacks() {
        let mut trajectory = trajectory("alfworld", "r", "t", 0, "", &["a", "b"], &["x", "y"]);
        trajectory.steps[0].model.retries = 1;
        trajectory.steps[0].events = vec![
            serde_json::json!({"processor": "prompt", "hook": "before_model", "note": {"compact_prompt": {"over_budget": true}}}),
            serde_json::json!({"processor": "choice", "hook": "after_model", "note": {"admissible_choice": {"reason": "not_admissible", "changed": true}}}),
        ];
        trajectory.steps[1].events = vec![
            serde_json::json!({"processor": "loops", "hook": "step_end", "note": {"loop_warning": 3}}),
        ];
        trajectory.steps[1].actions.clear();
        let outcome = outcome("alfworld", "t", false, "timeout");
        let digest = digest(&outcome, &trajectory);
        assert_eq!(digest.signatures["parse_failure"].count, 2);
        assert_eq!(digest.signatures["context_overflow"].count, 1);
        assert_eq!(digest.signatures["admissible_fallback"].count, 1);
        assert_eq!(digest.signatures["repeated_action_loop"].count, 1);
        assert!(digest.signatures.contains_key("timeout"));
        assert_eq!(digest.category, Some(FailureCategory::Timeout));
        let mut errored = outcome.clone();
        errored.termination = Termination::ModelError;
        errored.error = Some("prompt is too long for the context window".into());
        let digest = digest_attempt(Episode {
            outcome: &errored,
            trajectory: None,
        });
        assert_eq!(digest.category, Some(FailureCategory::InfraError));
        assert!(digest.signatures.contains_key("context_overflow"));
    }

    #[test]
    fn tasks_summarize_attempts_and_name_implicated_processors() {
        let good = trajectory("alfworld", "r", "t", 1, "", &["look"], &["ok"]);
        let bad = trajectory("alfworld", "r", "t", 0, "", &["x"], &["Nothing happens."]);
        let mut failed = outcome("alfworld", "t", false, "loop_detected");
        failed.attempt = 0;
        let mut solved = outcome("alfworld", "t", true, "env_done");
        solved.attempt = 1;
        let episodes = [
            Episode {
                outcome: &solved,
                trajectory: Some(&good),
            },
            Episode {
                outcome: &failed,
                trajectory: Some(&bad),
            },
        ];
        let harness: HarnessSpec =
            toml::from_str(kiln_harness::defaults::SMALL_MODEL_TOML).unwrap();
        let digests = digest_tasks(&episodes, &|_| "pick".to_string(), Some(&harness));
        assert_eq!(digests.len(), 1);
        let task = &digests[0];
        assert_eq!((task.attempts, task.successes), (2, 1));
        assert_eq!(task.status, TaskStatus::Flaky);
        assert_eq!(task.failure_category, Some(FailureCategory::Loop));
        assert_eq!(task.cluster, "pick");
        assert_eq!(task.episodes[0].attempt, 0, "failing attempt first");
        assert!(task.implicated_processors.contains(&"loops".to_string()));
        assert!(task.implicated_processors.contains(&"choice".to_string()));
        // Same input, same digest.
        assert_eq!(
            digest_tasks(&episodes, &|_| "pick".to_string(), Some(&harness)),
            digests
        );
    }
}
