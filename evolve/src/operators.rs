//! The rules evolver's operators: generic harness edits keyed by digest signatures and
//! parameterized from the evidence. Each works on the processors the parent already has (found by
//! kind, not id) and only narrows budgets (fewer tokens, earlier warnings), never widens them:
//! the Critic charges widening against the gain.
//!
//! Not here yet: temperature (no built-in processor sets it) and visited-state tracking as its own
//! processor (it needs script processors); the loop breaker's advice carries the visited-state hint.

use kiln_harness::builtin::compact_prompt::CompactPromptConfig;
use kiln_harness::builtin::loop_detection::LoopDetectionConfig;
use kiln_harness::builtin::parse_retry::ParseRetryConfig;
use kiln_harness::builtin::system_prompt::SystemPromptConfig;
use kiln_harness::{HarnessEdit, HarnessSpec, Hook, ProcessorSpec};
use serde_json::Value;

use crate::candidate::{AttributionSignature, Bucket};
use crate::digest::{TaskDigest, TaskStatus};
use crate::evolver::{Demonstration, shows};
use crate::rng::Rng;

/// What an operator sees.
pub struct OperatorContext<'a> {
    pub env: &'a str,
    pub parent: &'a HarnessSpec,
    /// Search-split digests.
    pub digests: &'a [&'a TaskDigest],
    /// Search-split demonstrations.
    pub demonstrations: &'a [&'a Demonstration],
}

impl OperatorContext<'_> {
    fn unsolved(&self) -> impl Iterator<Item = &&TaskDigest> {
        self.digests
            .iter()
            .filter(|d| d.status != TaskStatus::Solved)
    }

    /// Unsolved tasks showing one of `triggers`.
    fn unsolved_with(&self, triggers: &[&str]) -> usize {
        self.unsolved().filter(|d| shows(d, triggers)).count()
    }

    /// Signatures among unsolved tasks, most tasks first (ties by name).
    fn ranked_signatures(&self) -> Vec<(String, usize)> {
        let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
        for digest in self.unsolved() {
            for name in digest.signatures.keys() {
                *counts.entry(name.clone()).or_default() += 1;
            }
        }
        let mut ranked: Vec<(String, usize)> = counts.into_iter().collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked
    }
}

/// An operator's edit of the parent.
#[derive(Debug, Clone, PartialEq)]
pub struct BuiltEdit {
    pub edits: Vec<HarnessEdit>,
    pub rationale: String,
    pub attribution: AttributionSignature,
}

/// One operator of the library.
pub struct Operator {
    pub name: &'static str,
    pub buckets: &'static [Bucket],
    /// Signatures that make it applicable (and whose tasks it predicts to flip).
    pub triggers: &'static [&'static str],
    /// Prior pseudo-counts (hits, misses) before any measurement: the paper's ALFWorld lever hit
    /// rates (prompt ≈ .63 → 5:3, config ≈ .71 → 5:2).
    pub prior: (u32, u32),
    pub build: fn(&OperatorContext<'_>, &mut Rng) -> Option<BuiltEdit>,
}

const PROMPT_PRIOR: (u32, u32) = (5, 3);
const CONFIG_PRIOR: (u32, u32) = (5, 2);

/// The library, in a fixed order (the bandit's tie-break).
pub fn library() -> Vec<Operator> {
    vec![
        Operator {
            name: "strategy_lines",
            buckets: &[Bucket::Prompt],
            triggers: STRATEGY_TRIGGERS,
            prior: PROMPT_PRIOR,
            build: strategy_lines,
        },
        Operator {
            name: "few_shot",
            buckets: &[Bucket::Prompt],
            triggers: FEW_SHOT_TRIGGERS,
            prior: PROMPT_PRIOR,
            build: few_shot,
        },
        Operator {
            name: "loop_breaker",
            buckets: &[Bucket::Config],
            triggers: &["repeated_action_loop", "webshop_pagination_loop"],
            prior: CONFIG_PRIOR,
            build: loop_breaker,
        },
        Operator {
            name: "admissible_always",
            buckets: &[Bucket::Config],
            triggers: &["invalid_action", "admissible_fallback"],
            prior: CONFIG_PRIOR,
            build: admissible_always,
        },
        Operator {
            name: "observation_trim",
            buckets: &[Bucket::Config],
            triggers: &["context_overflow"],
            prior: CONFIG_PRIOR,
            build: observation_trim,
        },
        Operator {
            name: "reply_cap",
            buckets: &[Bucket::Config],
            triggers: &["parse_failure", "context_overflow"],
            prior: CONFIG_PRIOR,
            build: reply_cap,
        },
        Operator {
            name: "retry_message",
            buckets: &[Bucket::Config],
            triggers: &["parse_failure"],
            prior: CONFIG_PRIOR,
            build: retry_message,
        },
    ]
}

/// Strategy lines by signature, generic first, then per environment.
const STRATEGY_LINES: &[(&str, &str)] = &[
    (
        "invalid_action",
        "Write only actions that are valid here, spelled exactly as the environment spells them.",
    ),
    (
        "repeated_action_loop",
        "If an action changed nothing, do not repeat it: try a different one.",
    ),
    (
        "step_limit",
        "Work toward the goal directly; every step counts.",
    ),
    ("premature_stop", "Do not stop before the task is done."),
    (
        "parse_failure",
        "Reply with exactly one line: Action: <action>.",
    ),
    (
        "tool_error",
        "Before calling a tool, check its required arguments; after an error, read it and fix the call.",
    ),
    (
        "alfworld_receptacle_never_opened",
        "Closed receptacles hide objects: open them (open <receptacle>) to look inside.",
    ),
    (
        "alfworld_target_never_taken",
        "First find the object the task names and take it (take <object> from <receptacle>), then finish the task.",
    ),
    (
        "webshop_pagination_loop",
        "Pick a matching product from the first page of results instead of paging.",
    ),
    (
        "webshop_buy_without_options",
        "On a product page, click the options the instruction asks for (size, color) before Buy Now.",
    ),
];

const STRATEGY_TRIGGERS: &[&str] = &[
    "invalid_action",
    "repeated_action_loop",
    "step_limit",
    "premature_stop",
    "parse_failure",
    "tool_error",
    "alfworld_receptacle_never_opened",
    "alfworld_target_never_taken",
    "webshop_pagination_loop",
    "webshop_buy_without_options",
];

const FEW_SHOT_TRIGGERS: &[&str] = &[
    "invalid_action",
    "repeated_action_loop",
    "step_limit",
    "premature_stop",
    "alfworld_receptacle_never_opened",
    "alfworld_target_never_taken",
    "webshop_buy_without_options",
    "webshop_pagination_loop",
];

fn by_kind<'a>(spec: &'a HarnessSpec, kinds: &[&str]) -> Option<&'a ProcessorSpec> {
    spec.processors
        .iter()
        .find(|processor| kinds.contains(&processor.kind.as_str()))
}

/// `processor` with `config[key] = value` (a missing config becomes an object).
fn with_config(processor: &ProcessorSpec, key: &str, value: Value) -> ProcessorSpec {
    let mut changed = processor.clone();
    if !changed.config.is_object() {
        changed.config = Value::Object(Default::default());
    }
    changed.config[key] = value;
    changed
}

fn config_u64(processor: &ProcessorSpec, key: &str, default: u64) -> u64 {
    processor
        .config
        .get(key)
        .and_then(Value::as_u64)
        .unwrap_or(default)
}

fn config_str(processor: &ProcessorSpec, key: &str, default: &str) -> String {
    processor
        .config
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or(default)
        .to_string()
}

/// The prompt processor (`compact_prompt` or `system_prompt`) and its template.
fn prompt_template(parent: &HarnessSpec) -> Option<(&ProcessorSpec, String)> {
    let processor = by_kind(parent, &["compact_prompt", "system_prompt"])?;
    let default = if processor.kind == "compact_prompt" {
        CompactPromptConfig::default().template
    } else {
        SystemPromptConfig::default().template
    };
    Some((processor, config_str(processor, "template", &default)))
}

fn replace(processor: ProcessorSpec) -> HarnessEdit {
    HarnessEdit::Replace {
        id: processor.id.clone(),
        processor,
    }
}

fn processor_signature(id: &str) -> AttributionSignature {
    AttributionSignature {
        kind: "processor_invocation".into(),
        name: id.to_string(),
        expected_min_calls: 1,
    }
}

fn strategy_lines(ctx: &OperatorContext<'_>, rng: &mut Rng) -> Option<BuiltEdit> {
    let (processor, template) = prompt_template(ctx.parent)?;
    // Two or three lines, for the most common signatures that have one and are not in yet.
    let wanted = 2 + rng.below(2) as usize;
    let lines: Vec<&str> = ctx
        .ranked_signatures()
        .iter()
        .filter_map(|(name, _)| {
            STRATEGY_LINES
                .iter()
                .find(|(signature, _)| signature == name)
                .map(|(_, line)| *line)
        })
        .filter(|line| !template.contains(line))
        .take(wanted)
        .collect();
    if lines.is_empty() {
        return None;
    }
    let block: Vec<String> = lines.iter().map(|line| format!("- {line}")).collect();
    let template = format!("{}\n\nStrategy:\n{}", template.trim_end(), block.join("\n"));
    Some(BuiltEdit {
        edits: vec![replace(with_config(
            processor,
            "template",
            Value::from(template),
        ))],
        rationale: format!(
            "Adds {} strategy line(s) to the prompt for the most common failure signatures of the search split.",
            lines.len()
        ),
        attribution: AttributionSignature {
            kind: "prompt_feature".into(),
            name: "strategy_lines".into(),
            expected_min_calls: 1,
        },
    })
}

fn few_shot(ctx: &OperatorContext<'_>, rng: &mut Rng) -> Option<BuiltEdit> {
    let (processor, template) = prompt_template(ctx.parent)?;
    if template.contains("\nExample (") || ctx.demonstrations.is_empty() {
        return None;
    }
    // The cluster with the most unsolved search tasks that has a demonstration.
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for digest in ctx.unsolved().filter(|d| shows(d, FEW_SHOT_TRIGGERS)) {
        *counts.entry(digest.cluster.as_str()).or_default() += 1;
    }
    let mut clusters: Vec<(&str, usize)> = counts
        .into_iter()
        .filter(|(cluster, _)| ctx.demonstrations.iter().any(|d| d.cluster == *cluster))
        .collect();
    clusters.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let cluster = clusters.first()?.0;
    let mut demos: Vec<&&Demonstration> = ctx
        .demonstrations
        .iter()
        .filter(|d| d.cluster == cluster)
        .collect();
    demos.sort_by(|a, b| a.task_id.cmp(&b.task_id));
    let demo = demos[rng.below(demos.len() as u64) as usize];
    let label = if cluster.is_empty() { "task" } else { cluster };
    let template = format!(
        "{}\n\nExample ({label}):\n{}",
        template.trim_end(),
        demo.text
    );
    Some(BuiltEdit {
        edits: vec![replace(with_config(
            processor,
            "template",
            Value::from(template),
        ))],
        rationale: format!(
            "Adds a worked example of a `{label}` task ({} solution of search task `{}`): most unsolved search tasks are of this type.",
            demo.source, demo.task_id
        ),
        attribution: AttributionSignature {
            kind: "prompt_feature".into(),
            name: format!("few_shot:{label}"),
            expected_min_calls: 1,
        },
    })
}

fn loop_breaker(ctx: &OperatorContext<'_>, _rng: &mut Rng) -> Option<BuiltEdit> {
    if ctx.unsolved_with(&["repeated_action_loop", "webshop_pagination_loop"]) == 0 {
        return None;
    }
    let processor = by_kind(ctx.parent, &["loop_detection"])?;
    let defaults = LoopDetectionConfig::default();
    let warn_after = config_u64(processor, "warn_after", u64::from(defaults.warn_after));
    let advice = match ctx.env {
        "alfworld" => {
            "You have taken the same action {count} times and nothing changed. Do something else: go to a place you have not checked yet, or open a closed receptacle."
        }
        "webshop" => {
            "You have taken the same action {count} times and nothing changed. Click a product on this page, or go back to search with other words."
        }
        _ => {
            "You have taken the same action {count} times and nothing changed. Stop repeating it and try a different action."
        }
    };
    let current = config_str(processor, "message", &defaults.message);
    let new_warn = warn_after.saturating_sub(1).max(2);
    if new_warn == warn_after && current == advice {
        return None;
    }
    // stop_after is left alone: the loop stop is a budget, and this edit must not widen it.
    let changed = with_config(
        &with_config(processor, "warn_after", Value::from(new_warn)),
        "message",
        Value::from(advice),
    );
    // loop_detection has no singleton group, so it is swapped by remove + insert at its hook.
    let mut inserted = changed;
    if inserted.hooks.is_empty() {
        inserted.hooks = vec![Hook::StepEnd];
    }
    let at = inserted.hooks[0];
    Some(BuiltEdit {
        edits: vec![
            HarnessEdit::Remove {
                id: processor.id.clone(),
            },
            HarnessEdit::Insert {
                at,
                processor: inserted,
            },
        ],
        rationale: format!(
            "Warns about repeated actions after {new_warn} repeats (was {warn_after}) with concrete advice on what to do instead."
        ),
        attribution: processor_signature(&processor.id),
    })
}

fn admissible_always(ctx: &OperatorContext<'_>, _rng: &mut Rng) -> Option<BuiltEdit> {
    if ctx.unsolved_with(&["invalid_action", "admissible_fallback"]) == 0 {
        return None;
    }
    let processor = by_kind(ctx.parent, &["admissible_choice"])?;
    if config_str(processor, "mode", "fallback") == "always" {
        return None;
    }
    Some(BuiltEdit {
        edits: vec![replace(with_config(processor, "mode", Value::from("always")))],
        rationale: "Chooses every action among the admissible ones by likelihood, since generated actions are often invalid.".into(),
        attribution: processor_signature(&processor.id),
    })
}

fn observation_trim(ctx: &OperatorContext<'_>, _rng: &mut Rng) -> Option<BuiltEdit> {
    if ctx.unsolved_with(&["context_overflow"]) == 0 {
        return None;
    }
    let processor = by_kind(ctx.parent, &["compact_prompt"])?;
    let current = config_u64(
        processor,
        "observation_chars",
        CompactPromptConfig::default().observation_chars as u64,
    );
    let trimmed = (current * 3 / 5).max(200);
    if current == 0 || trimmed >= current {
        return None;
    }
    Some(BuiltEdit {
        edits: vec![replace(with_config(
            processor,
            "observation_chars",
            Value::from(trimmed),
        ))],
        rationale: format!(
            "Cuts observations to {trimmed} characters (was {current}) so more turns fit the prompt budget."
        ),
        attribution: processor_signature(&processor.id),
    })
}

fn reply_cap(ctx: &OperatorContext<'_>, _rng: &mut Rng) -> Option<BuiltEdit> {
    if ctx.unsolved_with(&["parse_failure", "context_overflow"]) == 0 {
        return None;
    }
    let processor = by_kind(ctx.parent, &["compact_prompt"])?;
    let current = config_u64(processor, "max_completion_tokens", 0);
    let capped = if current == 0 {
        64
    } else {
        (current / 2).max(32)
    };
    if current != 0 && capped >= current {
        return None;
    }
    Some(BuiltEdit {
        edits: vec![replace(with_config(
            processor,
            "max_completion_tokens",
            Value::from(capped),
        ))],
        rationale: format!(
            "Caps replies at {capped} tokens (was {}): one action line needs few, and long replies fail to parse.",
            if current == 0 {
                "the model's limit".to_string()
            } else {
                current.to_string()
            }
        ),
        attribution: processor_signature(&processor.id),
    })
}

fn retry_message(ctx: &OperatorContext<'_>, _rng: &mut Rng) -> Option<BuiltEdit> {
    if ctx.unsolved_with(&["parse_failure"]) == 0 {
        return None;
    }
    let processor = by_kind(ctx.parent, &["parse_retry"])?;
    let message = "Your last reply could not be used: {error}. Reply with exactly one line in the required format and nothing else.";
    if config_str(processor, "message", &ParseRetryConfig::default().message) == message {
        return None;
    }
    Some(BuiltEdit {
        edits: vec![replace(with_config(
            processor,
            "message",
            Value::from(message),
        ))],
        rationale:
            "A stricter corrective message after a reply that does not parse (retries unchanged)."
                .into(),
        attribution: processor_signature(&processor.id),
    })
}
