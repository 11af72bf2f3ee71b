//! `admissible_choice`: for environments that list admissible actions (ALFWorld, WebShop), picks
//! the next action among them by the model's likelihood instead of trusting free generation.
//! Small models often write an action that is almost right (`go to the cabinet 1`); scoring every
//! admissible command and taking the likeliest turns that near-miss into a valid step.
//!
//! At `after_model` (run it after the parser, and before `parse_retry` so a chosen action clears
//! the parse error instead of triggering a re-ask):
//! - `mode = "fallback"` (default): the generated reply is kept when it is exactly one text
//!   action that is admissible (matched ignoring case and repeated spaces; the environment's
//!   spelling is then used). Otherwise (not admissible, several actions, a tool call, or a parse
//!   error) the action is chosen by score.
//! - `mode = "always"`: the action is always chosen by score; the generation only guides which
//!   candidates are scored when there are too many.
//! - `mode = "sample"`: for training rollouts: like `always`, but the action is *sampled* from the
//!   softmax of the compared scores divided by `temperature` (default 1), with a generator seeded
//!   from the episode seed, task, attempt and step (a rerun draws the same). The note records the
//!   chosen action's probability and log-probability: the behaviour policy of that choice, which a
//!   greedy choice would not give (every attempt identical, every GRPO group without variance).
//!
//! Scoring: each candidate is rendered with `template` (`{action}` is replaced; use
//! `"Action: {action}"` with the ReAct text format) and scored as the assistant's reply to the
//! exact prompt the model saw ([`crate::events::AfterModelEvent::prompt`]). `normalize = "sum"`
//! ranks by total log-likelihood (favours short actions); `"mean"` (default) by log-likelihood per
//! token. Ties keep the environment's order.
//!
//! Cost bound: at most `max_candidates` are scored. When the environment lists more, duplicates are
//! dropped and the candidates sharing the most words with the generated reply are kept (ties keep
//! the environment's order, so with an empty reply the first `max_candidates` are scored).
//!
//! Free-text placeholders (WebShop's `search[...]`) are scored too, filled in with
//! `fill_placeholders`: the bracketed argument of the reply when it has one (`serch[red shoes]`),
//! and the segments of the latest observation of at least [`MIN_FILL_WORDS`] words (split at
//! lines and `[SEP]`; WebShop's instruction is one). So a reply that is no action at all (a chat
//! message) still becomes the likeliest admissible action, on every page, instead of being sent
//! as is and looping on "invalid action".
//!
//! The chosen action replaces the parsed actions, and the recorded assistant message becomes the
//! rendered candidate, so the conversation shows the action that was really taken (the raw reply
//! stays in the step's model turn). Each scored step notes the mode, why it scored, the generated
//! and chosen actions, and the top `record_top` candidates with their scores.
//!
//! When the model cannot score (`ModelErrorKind::Unavailable`, e.g. an HTTP backend), the first
//! such step gets a note saying so, the generated action is left unchanged, and `task_end` notes
//! how many steps went unscored; the processor keeps trying, since a local model may refuse only
//! an over-long prompt. Other scoring errors are noted on their step and also leave the action
//! unchanged: scoring is an aid, never a reason to end the episode.

use std::collections::BTreeSet;

use async_trait::async_trait;
use kiln_models::{CandidateScore, ModelErrorKind};
use kiln_protocol::{Action, Hook, Message, Role};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::debug;

use crate::builtin::script::engine::{Rng, episode_seed};
use crate::error::ProcessorError;
use crate::events::{AfterModelEvent, TaskEndEvent};
use crate::processor::{BuiltinKind, ConfigError, Processor, ProcessorConfig};

/// When to choose by score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChoiceMode {
    /// Every step with admissible actions.
    Always,
    /// Only when the generated action is not admissible.
    Fallback,
    /// Every step, sampled from the candidates' softmax at `temperature`.
    Sample,
}

/// How candidate log-likelihoods are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Normalize {
    /// Total log-likelihood.
    Sum,
    /// Log-likelihood per token (length-normalised).
    Mean,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdmissibleChoiceConfig {
    pub mode: ChoiceMode,
    pub normalize: Normalize,
    /// Most candidates scored per step (see the module docs for how they are cut).
    pub max_candidates: usize,
    /// How a candidate is written as the assistant's reply; must contain `{action}`.
    pub template: String,
    /// Candidates recorded in the step's note, best first.
    pub record_top: usize,
    /// Score filled-in free-text placeholders (see the module docs); off leaves a reply on a
    /// page that admits only free text unchanged.
    pub fill_placeholders: bool,
    /// `mode = "sample"`: the softmax temperature over the compared scores.
    pub temperature: f64,
}

impl Default for AdmissibleChoiceConfig {
    fn default() -> Self {
        Self {
            mode: ChoiceMode::Fallback,
            normalize: Normalize::Mean,
            max_candidates: 32,
            template: "{action}".to_string(),
            record_top: 5,
            fill_placeholders: true,
            temperature: 1.0,
        }
    }
}

const ACTION_PLACEHOLDER: &str = "{action}";

impl ProcessorConfig for AdmissibleChoiceConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_candidates == 0 {
            return Err(ConfigError::new("max_candidates", "must be at least 1"));
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(ConfigError::new(
                "temperature",
                format!("must be a positive number, got {}", self.temperature),
            ));
        }
        if !self.template.contains(ACTION_PLACEHOLDER) {
            return Err(ConfigError::new(
                "template",
                format!("must contain the `{ACTION_PLACEHOLDER}` placeholder"),
            ));
        }
        Ok(())
    }
}

pub fn kind() -> BuiltinKind<AdmissibleChoiceConfig> {
    BuiltinKind {
        name: "admissible_choice",
        summary: "choose the next action among the environment's admissible actions by model likelihood (always, as a fallback, or sampled for training)",
        hooks: &[Hook::AfterModel, Hook::TaskEnd],
        group: Some("admissible_choice"),
        build: |config| {
            Box::new(AdmissibleChoice {
                config,
                unavailable_steps: 0,
            })
        },
    }
}

/// Why a step's action is chosen by score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChoiceReason {
    /// `mode = "always"`.
    Always,
    /// `mode = "sample"`.
    Sample,
    /// The reply did not parse.
    ParseError,
    /// The reply parsed, but not into a single admissible text action.
    NotAdmissible,
}

impl ChoiceReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ChoiceReason::Always => "always",
            ChoiceReason::Sample => "sample",
            ChoiceReason::ParseError => "parse_error",
            ChoiceReason::NotAdmissible => "not_admissible",
        }
    }
}

/// What to do with a step's generated actions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The generation is admissible as written.
    Keep,
    /// The generation is admissible up to case and spacing; use the environment's spelling.
    Canonical(String),
    /// Choose by score.
    Score(ChoiceReason),
}

/// Decides whether a step needs scoring. `generated` is the single text action of the reply, if
/// the reply is exactly one text action.
pub fn decide(
    mode: ChoiceMode,
    parse_failed: bool,
    generated: Option<&str>,
    admissible: &[String],
) -> Decision {
    match mode {
        ChoiceMode::Always => return Decision::Score(ChoiceReason::Always),
        ChoiceMode::Sample => return Decision::Score(ChoiceReason::Sample),
        ChoiceMode::Fallback => {}
    }
    if parse_failed {
        return Decision::Score(ChoiceReason::ParseError);
    }
    let Some(generated) = generated else {
        return Decision::Score(ChoiceReason::NotAdmissible);
    };
    if admissible
        .iter()
        .any(|action| fills_placeholder(generated, action))
    {
        return Decision::Keep;
    }
    if is_placeholder(generated.trim()) {
        // The placeholder copied verbatim names no action.
        return Decision::Score(ChoiceReason::NotAdmissible);
    }
    match find_admissible(generated, admissible) {
        Some(exact) if exact == generated => Decision::Keep,
        Some(exact) => Decision::Canonical(exact.to_string()),
        None => Decision::Score(ChoiceReason::NotAdmissible),
    }
}

/// The admissible action `text` names: an exact match, else one equal up to case and spacing.
pub fn find_admissible<'a>(text: &str, admissible: &'a [String]) -> Option<&'a str> {
    if let Some(exact) = admissible.iter().find(|action| action.as_str() == text) {
        return Some(exact);
    }
    let wanted = normalize_action(text);
    admissible
        .iter()
        .find(|action| normalize_action(action) == wanted)
        .map(String::as_str)
}

/// Marks an admissible action whose argument is free text (WebShop's `search[...]`): any
/// non-empty argument is admissible, and the placeholder itself is never a candidate.
const PLACEHOLDER: &str = "[...]";

/// Whether `action` is a free-text placeholder such as `search[...]`.
pub fn is_placeholder(action: &str) -> bool {
    action.ends_with(PLACEHOLDER)
}

/// Whether `generated` fills the placeholder `action` (`search[red shoes]` fills `search[...]`;
/// the verb is matched ignoring case).
pub fn fills_placeholder(generated: &str, action: &str) -> bool {
    let Some(verb) = action.strip_suffix(PLACEHOLDER) else {
        return false;
    };
    let generated = generated.trim();
    let Some(head) = generated.get(..verb.len()) else {
        return false;
    };
    let Some(argument) = generated[verb.len()..]
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
    else {
        return false;
    };
    head.eq_ignore_ascii_case(verb) && !argument.trim().is_empty() && argument != "..."
}

/// Lowercase, trimmed, single spaces.
fn normalize_action(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// The text of the reply's only action, when it is one text action.
pub fn single_text_action(actions: &[Action]) -> Option<&str> {
    match actions {
        [Action::Message { text }] => Some(text),
        _ => None,
    }
}

/// The candidates to score: the admissible actions without duplicates, cut to `max` by the number
/// of words each shares with `hint` (ties keep the environment's order), returned in the
/// environment's order.
pub fn select_candidates(admissible: &[String], hint: &str, max: usize) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let unique: Vec<&String> = admissible
        .iter()
        .filter(|action| !is_placeholder(action) && seen.insert(action.as_str()))
        .collect();
    if unique.len() <= max {
        return unique.into_iter().cloned().collect();
    }
    let hint_words = words(hint);
    let mut ranked: Vec<(usize, usize)> = unique
        .iter()
        .enumerate()
        .map(|(index, action)| (index, words(action).intersection(&hint_words).count()))
        .collect();
    // Stable: equal overlaps keep the environment's order.
    ranked.sort_by_key(|&(_, overlap)| std::cmp::Reverse(overlap));
    let mut kept: Vec<usize> = ranked
        .into_iter()
        .take(max)
        .map(|(index, _)| index)
        .collect();
    kept.sort_unstable();
    kept.into_iter()
        .map(|index| unique[index].clone())
        .collect()
}

fn words(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Fewest words an observation segment needs to fill a free-text placeholder: shorter ones are
/// page furniture (`Search`, `Back to Search`).
pub const MIN_FILL_WORDS: usize = 3;

/// Most characters of a fill, so one long segment cannot blow up the scored prompt.
const MAX_FILL_CHARS: usize = 200;

/// Most fills per placeholder.
const MAX_FILLS: usize = 4;

/// The texts that may fill a free-text placeholder, in order: the bracketed argument of `reply`,
/// then the segments of `observation` (split at lines and `[SEP]`, labels such as
/// `Observation:` kept only when the rest is long enough) with at least [`MIN_FILL_WORDS`] words.
/// Deduplicated ignoring case, each cut to [`MAX_FILL_CHARS`], at most [`MAX_FILLS`].
pub fn placeholder_fills(reply: &str, observation: &str) -> Vec<String> {
    let mut fills: Vec<String> = Vec::new();
    let mut push = |text: &str| {
        let text: String = text
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .replace(['[', ']'], "");
        let text = cut_chars(&text, MAX_FILL_CHARS);
        if text.is_empty() || text == "..." || fills.len() >= MAX_FILLS {
            return;
        }
        if !fills.iter().any(|fill| fill.eq_ignore_ascii_case(&text)) {
            fills.push(text);
        }
    };
    if let Some(argument) = bracketed_argument(reply) {
        push(argument);
    }
    for segment in observation.split('\n').flat_map(|line| line.split("[SEP]")) {
        let segment = segment.trim();
        let segment = segment
            .strip_prefix("Observation:")
            .unwrap_or(segment)
            .trim();
        if segment.split_whitespace().count() >= MIN_FILL_WORDS {
            push(segment);
        }
    }
    fills
}

/// The text between the first `[` of `text` and the next `]`, when non-empty.
fn bracketed_argument(text: &str) -> Option<&str> {
    let (_, rest) = text.split_once('[')?;
    let (argument, _) = rest.split_once(']')?;
    let argument = argument.trim();
    (!argument.is_empty()).then_some(argument)
}

/// The first `max` characters of `text`, cut back to a word boundary when it was longer.
fn cut_chars(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let cut: String = text.chars().take(max).collect();
    match cut.rsplit_once(' ') {
        Some((head, _)) if !head.is_empty() => head.to_string(),
        _ => cut,
    }
}

/// Every free-text placeholder of `admissible` filled with every fill: `search[...]` and
/// `red shoes` give `search[red shoes]`.
pub fn fill_placeholders(admissible: &[String], fills: &[String]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    admissible
        .iter()
        .filter_map(|action| action.strip_suffix(PLACEHOLDER))
        .filter(|verb| seen.insert(*verb))
        .flat_map(|verb| fills.iter().map(move |fill| format!("{verb}[{fill}]")))
        .collect()
}

/// The content of the last non-assistant message of `prompt`: the latest observation.
fn latest_observation(prompt: &[Message]) -> &str {
    prompt
        .iter()
        .rev()
        .find(|message| message.role != Role::Assistant)
        .map(|message| message.content.as_str())
        .unwrap_or("")
}

/// `template` with the action filled in.
pub fn render_candidate(template: &str, action: &str) -> String {
    template.replace(ACTION_PLACEHOLDER, action)
}

/// One scored candidate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RankedCandidate {
    pub action: String,
    pub logprob: f64,
    pub tokens: usize,
    /// The value compared: `logprob`, or `logprob / tokens` with `normalize = "mean"`.
    pub score: f64,
}

/// The candidates best first. A NaN score ranks last; ties keep the candidates' order.
pub fn rank(
    candidates: &[String],
    scores: &[CandidateScore],
    normalize: Normalize,
) -> Vec<RankedCandidate> {
    let mut ranked: Vec<RankedCandidate> = candidates
        .iter()
        .zip(scores)
        .map(|(action, score)| RankedCandidate {
            action: action.clone(),
            logprob: score.logprob,
            tokens: score.tokens,
            score: compared_score(score, normalize),
        })
        .collect();
    ranked.sort_by(|a, b| b.score.total_cmp(&a.score));
    ranked
}

/// A candidate drawn from the softmax of the compared scores.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Draw {
    pub index: usize,
    /// Its probability under that softmax: the behaviour probability of the choice.
    pub probability: f64,
}

/// The softmax over `ranked` scores at `temperature`, and one draw from it. NaN scores get
/// probability 0 (unless every score is NaN: then the first candidate, with probability 1).
pub fn sample_candidate(ranked: &[RankedCandidate], temperature: f64, rng: &mut Rng) -> Draw {
    let max = ranked
        .iter()
        .map(|c| c.score)
        .filter(|s| !s.is_nan())
        .fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return Draw {
            index: 0,
            probability: 1.0,
        };
    }
    let weights: Vec<f64> = ranked
        .iter()
        .map(|c| {
            if c.score.is_nan() {
                0.0
            } else {
                ((c.score - max) / temperature).exp()
            }
        })
        .collect();
    let total: f64 = weights.iter().sum();
    let mut target = rng.unit() * total;
    let mut index = weights.len() - 1;
    for (i, weight) in weights.iter().enumerate() {
        if target < *weight {
            index = i;
            break;
        }
        target -= weight;
    }
    Draw {
        index,
        probability: weights[index] / total,
    }
}

/// The generator seed of one step's choice.
fn choice_seed(episode: u64, step: u32) -> u64 {
    Rng::new(episode ^ u64::from(step).wrapping_mul(0xa076_1d64_78bd_642f)).next_u64()
}

fn compared_score(score: &CandidateScore, normalize: Normalize) -> f64 {
    let value = match normalize {
        Normalize::Sum => score.logprob,
        Normalize::Mean => score.logprob / score.tokens.max(1) as f64,
    };
    if value.is_nan() {
        f64::NEG_INFINITY
    } else {
        value
    }
}

struct AdmissibleChoice {
    config: AdmissibleChoiceConfig,
    /// Steps whose scoring the model refused as unavailable.
    unavailable_steps: u32,
}

impl AdmissibleChoice {
    /// Scores the candidates and applies the best one; notes what happened either way.
    async fn choose(
        &mut self,
        event: &mut AfterModelEvent<'_>,
        admissible: &[String],
        reason: ChoiceReason,
    ) {
        let generated = single_text_action(event.actions()).map(str::to_string);
        let Some(scorer) = event.scorer() else {
            event.note(json!({"admissible_choice": "no model to score with; action unchanged"}));
            return;
        };
        let hint = generated
            .clone()
            .unwrap_or_else(|| event.response().message.content.clone());
        let mut candidates = select_candidates(admissible, &hint, self.config.max_candidates);
        if self.config.fill_placeholders {
            let fills = placeholder_fills(&hint, latest_observation(event.prompt()));
            let room = self.config.max_candidates.saturating_sub(candidates.len());
            candidates.extend(fill_placeholders(admissible, &fills).into_iter().take(room));
        }
        if candidates.is_empty() {
            // Only free-text placeholders and nothing to fill them with.
            event.note(json!({"admissible_choice": "only free-text actions are admissible and nothing fills them; action unchanged"}));
            return;
        }
        let rendered: Vec<String> = candidates
            .iter()
            .map(|action| render_candidate(&self.config.template, action))
            .collect();
        let scoring_started = std::time::Instant::now();
        let scores = match scorer.score(event.prompt(), &rendered).await {
            Ok(scores) => scores,
            Err(error) if error.kind() == ModelErrorKind::Unavailable => {
                self.unavailable_steps += 1;
                if self.unavailable_steps == 1 {
                    event.note(json!({
                        "admissible_choice": "scoring unavailable; generated actions are kept",
                        "model": scorer.label(),
                        "error": error.to_string(),
                    }));
                }
                return;
            }
            Err(error) => {
                event.note(json!({
                    "admissible_choice": "scoring failed; action unchanged",
                    "error": error.to_string(),
                }));
                return;
            }
        };
        if scores.len() != candidates.len() {
            event.note(json!({
                "admissible_choice": "the model returned a score count that does not match the candidates; action unchanged",
                "candidates": candidates.len(),
                "scores": scores.len(),
            }));
            return;
        }
        let score_ms = scoring_started.elapsed().as_millis() as u64;
        let scored_tokens: usize = scores.iter().map(|score| score.tokens).sum();
        let ranked = rank(&candidates, &scores, self.config.normalize);
        let Some(best) = ranked.first() else {
            return;
        };
        let mut chosen = best.action.clone();
        let mut sampled = None;
        if self.config.mode == ChoiceMode::Sample {
            let task = event.ctx().task();
            let seed = choice_seed(
                episode_seed(task.seed, &task.env, &task.task_id, task.attempt),
                event.ctx().step(),
            );
            let draw = sample_candidate(&ranked, self.config.temperature, &mut Rng::new(seed));
            chosen = ranked[draw.index].action.clone();
            sampled = Some(json!({
                "temperature": self.config.temperature,
                "probability": draw.probability,
                "logprob": draw.probability.ln(),
            }));
        }
        let changed = generated.as_deref() != Some(chosen.as_str());
        debug!(
            step = event.ctx().step(),
            reason = reason.as_str(),
            chosen = %chosen,
            changed,
            scored = candidates.len(),
            "admissible action chosen by score"
        );
        event.note(json!({
            "admissible_choice": {
                "mode": self.config.mode,
                "reason": reason.as_str(),
                "normalize": self.config.normalize,
                "generated": generated,
                "chosen": chosen,
                "changed": changed,
                "admissible": admissible.len(),
                "scored": candidates.len(),
                "scored_tokens": scored_tokens,
                "score_ms": score_ms,
                "sampled": sampled,
                "top": ranked.iter().take(self.config.record_top).collect::<Vec<_>>(),
            }
        }));
        *event.message_mut() = Message::assistant(render_candidate(&self.config.template, &chosen));
        event.set_actions(vec![Action::Message { text: chosen }]);
    }
}

#[async_trait]
impl Processor for AdmissibleChoice {
    async fn after_model(&mut self, event: &mut AfterModelEvent<'_>) -> Result<(), ProcessorError> {
        let Some(admissible) = event.ctx().admissible_actions() else {
            return Ok(());
        };
        if admissible.is_empty() {
            return Ok(());
        }
        let decision = decide(
            self.config.mode,
            event.parse_error().is_some(),
            single_text_action(event.actions()),
            admissible,
        );
        match decision {
            Decision::Keep => {}
            Decision::Canonical(action) => {
                event.note(json!({"admissible_choice": {"canonical": action}}));
                *event.message_mut() =
                    Message::assistant(render_candidate(&self.config.template, &action));
                event.set_actions(vec![Action::Message { text: action }]);
            }
            Decision::Score(reason) => self.choose(event, admissible, reason).await,
        }
        Ok(())
    }

    async fn task_end(&mut self, event: &mut TaskEndEvent<'_>) -> Result<(), ProcessorError> {
        if self.unavailable_steps > 0 {
            event.note(json!({
                "admissible_choice": "scoring was unavailable; these steps kept their generated actions",
                "unscored_steps": self.unavailable_steps,
            }));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processor::parse_config;

    fn actions(list: &[&str]) -> Vec<String> {
        list.iter().map(|action| action.to_string()).collect()
    }

    fn score(logprob: f64, tokens: usize) -> CandidateScore {
        CandidateScore { logprob, tokens }
    }

    #[test]
    fn sample_mode_draws_from_the_softmax_and_records_the_probability() {
        let candidate = |action: &str, score: f64| RankedCandidate {
            action: action.into(),
            logprob: score,
            tokens: 1,
            score,
        };
        // Probabilities 3/4 and 1/4 at temperature 1; 9/10 and 1/10 at 1/2.
        let ranked = [candidate("go north", 3f64.ln()), candidate("look", 0.0)];
        let mut rng = Rng::new(7);
        let mut counts = [0u32; 2];
        for _ in 0..4000 {
            let draw = sample_candidate(&ranked, 1.0, &mut rng);
            let expected = if draw.index == 0 { 0.75 } else { 0.25 };
            assert!((draw.probability - expected).abs() < 1e-12, "{draw:?}");
            counts[draw.index] += 1;
        }
        let share = f64::from(counts[0]) / 4000.0;
        assert!((share - 0.75).abs() < 0.03, "{counts:?}");
        let cold = sample_candidate(&ranked, 0.5, &mut Rng::new(1));
        let expected = if cold.index == 0 { 0.9 } else { 0.1 };
        assert!((cold.probability - expected).abs() < 1e-12, "{cold:?}");
        // The same seed draws the same.
        let a = sample_candidate(&ranked, 1.0, &mut Rng::new(42));
        let b = sample_candidate(&ranked, 1.0, &mut Rng::new(42));
        assert_eq!(a, b);
        // A NaN score is never drawn.
        let with_nan = [candidate("bad", f64::NAN), candidate("look", 0.0)];
        for seed in 0..50 {
            assert_eq!(
                sample_candidate(&with_nan, 1.0, &mut Rng::new(seed)).index,
                1
            );
        }
        assert_eq!(
            decide(
                ChoiceMode::Sample,
                false,
                Some("look"),
                &["look".to_string()]
            ),
            Decision::Score(ChoiceReason::Sample)
        );
        let bad = AdmissibleChoiceConfig {
            temperature: 0.0,
            ..AdmissibleChoiceConfig::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn free_text_placeholders_admit_any_argument_and_are_never_candidates() {
        let admissible = actions(&["search[...]"]);
        let fallback = ChoiceMode::Fallback;
        assert_eq!(
            decide(
                fallback,
                false,
                Some("search[red running shoes]"),
                &admissible
            ),
            Decision::Keep
        );
        assert_eq!(
            decide(fallback, false, Some("Search[ shoes ]"), &admissible),
            Decision::Keep
        );
        for not_filled in [
            "search[]",
            "search[...]",
            "search red shoes",
            "click[b0001]",
        ] {
            assert_eq!(
                decide(fallback, false, Some(not_filled), &admissible),
                Decision::Score(ChoiceReason::NotAdmissible),
                "{not_filled}"
            );
        }
        let mixed = actions(&["search[...]", "click[buy now]", "click[< prev]"]);
        assert_eq!(
            select_candidates(&mixed, "buy", 10),
            ["click[buy now]", "click[< prev]"]
        );
    }

    #[test]
    fn fallback_keeps_admissible_generations_and_scores_the_rest() {
        let admissible = actions(&["go to cabinet 1", "look", "inventory"]);
        let fallback = ChoiceMode::Fallback;
        assert_eq!(
            decide(fallback, false, Some("look"), &admissible),
            Decision::Keep
        );
        assert_eq!(
            decide(fallback, false, Some("  Go to  Cabinet 1 "), &admissible),
            Decision::Canonical("go to cabinet 1".into())
        );
        assert_eq!(
            decide(fallback, false, Some("go to the cabinet"), &admissible),
            Decision::Score(ChoiceReason::NotAdmissible)
        );
        assert_eq!(
            decide(fallback, false, None, &admissible),
            Decision::Score(ChoiceReason::NotAdmissible)
        );
        assert_eq!(
            decide(fallback, true, None, &admissible),
            Decision::Score(ChoiceReason::ParseError)
        );
        assert_eq!(
            decide(ChoiceMode::Always, false, Some("look"), &admissible),
            Decision::Score(ChoiceReason::Always)
        );
    }

    #[test]
    fn only_a_single_text_action_counts_as_the_generation() {
        let look = Action::Message {
            text: "look".into(),
        };
        assert_eq!(
            single_text_action(std::slice::from_ref(&look)),
            Some("look")
        );
        assert_eq!(single_text_action(&[look.clone(), look]), None);
        assert_eq!(single_text_action(&[]), None);
    }

    #[test]
    fn candidates_are_deduplicated_and_cut_by_word_overlap() {
        let admissible = actions(&[
            "look",
            "inventory",
            "go to cabinet 1",
            "go to cabinet 2",
            "look",
            "take apple 1 from countertop 1",
        ]);
        assert_eq!(
            select_candidates(&admissible, "", 10),
            actions(&[
                "look",
                "inventory",
                "go to cabinet 1",
                "go to cabinet 2",
                "take apple 1 from countertop 1"
            ])
        );
        // "cabinet 2" shares 4 words with the hint, "cabinet 1" 3; the rest fewer.
        assert_eq!(
            select_candidates(&admissible, "Action: go to the cabinet 2", 2),
            actions(&["go to cabinet 1", "go to cabinet 2"])
        );
        // No overlap at all: the environment's order decides.
        assert_eq!(
            select_candidates(&admissible, "", 2),
            actions(&["look", "inventory"])
        );
    }

    #[test]
    fn mean_normalisation_can_reverse_the_sum_ranking() {
        let candidates = actions(&["look", "take apple 1 from countertop 1"]);
        // The long action is less likely in total but more likely per token.
        let scores = [score(-2.0, 1), score(-6.0, 8)];
        let by_sum = rank(&candidates, &scores, Normalize::Sum);
        assert_eq!(by_sum[0].action, "look");
        let by_mean = rank(&candidates, &scores, Normalize::Mean);
        assert_eq!(by_mean[0].action, "take apple 1 from countertop 1");
        assert!((by_mean[0].score - (-0.75)).abs() < 1e-12);
    }

    #[test]
    fn ranking_puts_nan_last_and_keeps_order_on_ties() {
        let candidates = actions(&["a", "b", "c"]);
        let scores = [score(f64::NAN, 1), score(-1.0, 1), score(-1.0, 1)];
        let ranked = rank(&candidates, &scores, Normalize::Sum);
        let order: Vec<&str> = ranked.iter().map(|c| c.action.as_str()).collect();
        assert_eq!(order, ["b", "c", "a"]);
    }

    #[test]
    fn config_rejects_zero_candidates_and_a_template_without_placeholder() {
        let error =
            parse_config::<AdmissibleChoiceConfig>(&json!({"max_candidates": 0})).unwrap_err();
        assert_eq!(error.field, "max_candidates");
        let error =
            parse_config::<AdmissibleChoiceConfig>(&json!({"template": "Action:"})).unwrap_err();
        assert_eq!(error.field, "template");
        let error =
            parse_config::<AdmissibleChoiceConfig>(&json!({"mode": "sometimes"})).unwrap_err();
        assert_eq!(error.field, "mode");
    }

    #[test]
    fn placeholders_are_filled_from_the_reply_argument_and_long_observation_segments() {
        let observation = "Observation: WebShop [SEP] Instruction: [SEP] i need a red dress under 30 dollars [SEP] Search";
        assert_eq!(
            placeholder_fills("I'm sorry for the confusion.", observation),
            ["i need a red dress under 30 dollars"]
        );
        assert_eq!(
            placeholder_fills("Action: serch[ red  dress ]", observation),
            ["red dress", "i need a red dress under 30 dollars"]
        );
        // The placeholder copied back and page furniture fill nothing.
        assert!(placeholder_fills("search[...]", "WebShop [SEP] Search").is_empty());
        let long = "word ".repeat(100);
        let fills = placeholder_fills("", &long);
        assert!(fills[0].chars().count() <= MAX_FILL_CHARS && fills[0].ends_with("word"));
        let admissible = actions(&["search[...]", "click[back]", "search[...]"]);
        assert_eq!(
            fill_placeholders(&admissible, &actions(&["red dress", "blue hat"])),
            ["search[red dress]", "search[blue hat]"]
        );
    }

    #[test]
    fn candidates_render_through_the_template() {
        assert_eq!(
            render_candidate("Action: {action}", "go to cabinet 1"),
            "Action: go to cabinet 1"
        );
    }
}
