//! The Critic: deterministic static checks on a candidate (parent spec, child spec, manifest).
//!
//! It rejects what the gate cannot see or must not trust: an incomplete or inconsistent manifest,
//! edits that read gold actions, answers, the expert/oracle, scorer internals or test files, task
//! ids and gold answer strings written into prompts, scripts or configs, budget widening beyond
//! what may be charged, and fatigued levers. Budget changes are computed from the config diff —
//! never taken from the manifest — and each one carries a charge the gate subtracts from the gain.
//! Every reason is reported, not only the first.
//!
//! Only what the candidate adds or changes is scanned: a processor identical to one of the parent
//! is the parent's responsibility, not this edit's.

use std::collections::{BTreeMap, BTreeSet};

use kiln_harness::{HarnessSpec, ProcessorSpec};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::candidate::{Bucket, Manifest};

/// Why a candidate is rejected (one kind per check, so tests and the journal can count them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonKind {
    /// A manifest field is missing, empty or malformed.
    ManifestIncomplete,
    /// The manifest predicts flips of tasks outside the search split.
    NonSearchPrediction,
    /// The diff touches a bucket the manifest does not declare.
    UndeclaredBucket,
    /// The diff changes a budget the manifest hides (its buckets do not cover it).
    HiddenBudgetChange,
    /// The child is the parent.
    NoChange,
    /// Reads gold actions, answers or the expert/oracle.
    ReadsGold,
    /// Reads scorer or reward internals.
    ReadsScorer,
    /// Reads test or data files.
    ReadsTestFiles,
    /// File or module access from a script or config.
    FileAccess,
    /// Network access.
    NetworkAccess,
    /// Dynamic code evaluation.
    DynamicCode,
    /// A task id written into a prompt, script or config.
    TaskIdLiteral,
    /// A gold answer string written into a prompt, script or config.
    GoldLiteral,
    /// A budget widened beyond what may be charged (or removed).
    BudgetWidening,
    /// A lever shipped in ≥ 2 of the last 3 rounds with a hit rate below 0.4.
    LeverFatigue,
}

/// One rejection reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reason {
    pub kind: ReasonKind,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processor: Option<String>,
}

/// Which budget a setting bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetKind {
    StepLimit,
    TokenCap,
    Timeout,
    Retries,
    LoopStop,
    ToolPermission,
}

/// One budget that the child widens, with its charge against the gain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetChange {
    pub kind: BudgetKind,
    /// `kind.key` of the setting (processor kind, config key), independent of processor ids.
    pub setting: String,
    /// None: unbounded (no processor sets it).
    pub before: Option<Value>,
    pub after: Option<Value>,
    /// Pass@1 points (fraction) the gate subtracts from the gain.
    pub charge: f64,
    /// Too wide to be charged: the candidate is rejected.
    pub rejected: bool,
    pub note: String,
}

/// The budget changes of a candidate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BudgetReport {
    pub changes: Vec<BudgetChange>,
    /// Sum of the charges of accepted widenings.
    pub charge: f64,
}

/// How much widening may be charged rather than rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetPolicy {
    /// Largest factor a numeric budget may grow by in one candidate, and since the seed.
    pub max_ratio: f64,
    /// Charge of any widening.
    pub base_charge: f64,
    /// Charge per doubling of a numeric budget.
    pub charge_per_doubling: f64,
    /// Charge per tool or permission added.
    pub tool_charge: f64,
}

impl Default for BudgetPolicy {
    fn default() -> Self {
        Self {
            max_ratio: 1.5,
            base_charge: 0.02,
            charge_per_doubling: 0.05,
            tool_charge: 0.05,
        }
    }
}

/// What a lever (operator) did in past rounds, from the scoreboard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeverHistory {
    pub operator: String,
    /// Rounds in which a candidate of this operator shipped.
    pub shipped_rounds: Vec<u32>,
    /// Cumulative hit rate: the share of its predicted flips that happened.
    pub hit_rate: f64,
}

/// Gold strings of an environment that no prompt, script or config may contain. Built by the
/// caller from the environment's data (see `kiln evolve check`), so this crate stays free of
/// environment code.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ForbiddenLiterals {
    pub env: String,
    /// Banned anywhere, matched case-insensitively as substrings.
    pub literals: Vec<ForbiddenLiteral>,
    /// Task ids outside the search split: banned as literals in scripts, as whole config values,
    /// and next to a task word (`task`, `goal`, `game`, `id`, `#`) in prompts. Plain numbers are
    /// not banned on their own: "step 3" is not a task id.
    pub task_ids: BTreeSet<String>,
}

/// One banned string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForbiddenLiteral {
    pub text: String,
    /// What it is (`target ASIN`, `gold argument order_id`, …).
    pub what: String,
    pub task: String,
}

/// Shortest literal kept: shorter strings are too common to be evidence of a leak.
pub const MIN_LITERAL_CHARS: usize = 5;

impl ForbiddenLiterals {
    pub fn new(env: impl Into<String>) -> Self {
        Self {
            env: env.into(),
            ..Self::default()
        }
    }

    /// Adds a literal unless it is shorter than [`MIN_LITERAL_CHARS`] or already there.
    pub fn add(&mut self, text: &str, what: &str, task: &str) {
        let text = text.trim();
        if text.chars().count() < MIN_LITERAL_CHARS
            || self
                .literals
                .iter()
                .any(|l| l.text.eq_ignore_ascii_case(text))
        {
            return;
        }
        self.literals.push(ForbiddenLiteral {
            text: text.to_string(),
            what: what.to_string(),
            task: task.to_string(),
        });
    }

    /// Drops the literals that are also gold of a search-split task (`public`): the search
    /// split's gold is fair game for demonstrations, so a string it shares with another task's
    /// gold (a catalog product two goals target, a common option phrase) is no evidence of a
    /// leak. Task ids stay banned.
    pub fn allow_public(&mut self, public: &ForbiddenLiterals) {
        let public: BTreeSet<String> = public
            .literals
            .iter()
            .map(|l| l.text.to_lowercase())
            .collect();
        self.literals
            .retain(|l| !public.contains(&l.text.to_lowercase()));
    }

    fn lowered(&self) -> Vec<(String, &ForbiddenLiteral)> {
        self.literals
            .iter()
            .map(|l| (l.text.to_lowercase(), l))
            .collect()
    }
}

/// Everything the critic knows besides the two specs.
#[derive(Debug, Clone, Default)]
pub struct CriticContext {
    pub forbidden: ForbiddenLiterals,
    /// Search-split task ids, when known: predictions may name only these.
    pub search_split: Option<BTreeSet<String>>,
    /// The seed harness, for widening accumulated over rounds (30 → 40 → 50).
    pub seed: Option<HarnessSpec>,
    pub lever_history: Vec<LeverHistory>,
    /// The round the candidate is for (lever fatigue looks at the three before it).
    pub round: u32,
    /// Sources of script files referenced by `file`, by the path as written.
    pub script_files: BTreeMap<String, String>,
    pub budget: BudgetPolicy,
}

/// Accept or reject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Accept,
    Reject,
}

/// The critic's verdict on one candidate (serializable for `R<n>/verdicts` and `audit.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CriticVerdict {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate_id: Option<String>,
    pub decision: Decision,
    pub reasons: Vec<Reason>,
    /// Buckets the diff actually touches.
    pub touched_buckets: Vec<Bucket>,
    pub budget: BudgetReport,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy_concern: Option<String>,
    /// Things worth knowing that do not reject (e.g. no manifest given).
    pub notes: Vec<String>,
}

impl CriticVerdict {
    pub fn accepted(&self) -> bool {
        self.decision == Decision::Accept
    }

    pub fn kinds(&self) -> BTreeSet<ReasonKind> {
        self.reasons.iter().map(|r| r.kind).collect()
    }
}

/// Reviews a candidate. `manifest` is None for a bare CANDIDATE.toml (manifest checks are then
/// skipped and noted).
pub fn review(
    parent: &HarnessSpec,
    child: &HarnessSpec,
    manifest: Option<&Manifest>,
    context: &CriticContext,
) -> CriticVerdict {
    let (parent, child) = comparable(parent, child);
    let mut reasons = Vec::new();
    let mut notes = Vec::new();
    let changed = changed_processors(&parent, &child);
    let touched = touched_buckets(&parent, &child);
    if touched.is_empty() && changed.is_empty() {
        reasons.push(reason(
            ReasonKind::NoChange,
            "the child is the parent",
            None,
        ));
    }
    for processor in &changed {
        scan_processor(processor, context, &mut reasons);
    }
    let budget = budget_report(&parent, &child, context, &mut reasons);
    let mut strategy_concern = None;
    match manifest {
        Some(manifest) => {
            check_manifest(manifest, context, &mut reasons);
            check_buckets(manifest, &touched, &budget, &mut reasons);
            strategy_concern = lever_fatigue(manifest, context, &mut reasons);
        }
        None => notes.push(
            "no manifest: manifest, bucket and lever checks skipped (the loop always has one)"
                .to_string(),
        ),
    }
    let decision = if reasons.is_empty() {
        Decision::Accept
    } else {
        Decision::Reject
    };
    CriticVerdict {
        candidate_id: manifest.map(|m| m.candidate_id.clone()),
        decision,
        reasons,
        touched_buckets: touched.into_iter().collect(),
        budget,
        strategy_concern,
        notes,
    }
}

fn reason(kind: ReasonKind, message: impl Into<String>, processor: Option<&str>) -> Reason {
    Reason {
        kind,
        message: message.into(),
        processor: processor.map(str::to_string),
    }
}

/// Both specs canonical when both validate, else both as written, so that an unchanged
/// processor compares equal either way.
fn comparable(parent: &HarnessSpec, child: &HarnessSpec) -> (HarnessSpec, HarnessSpec) {
    let registry = kiln_harness::builtin_registry();
    match (
        kiln_harness::spec::canonical_spec(parent, &registry),
        kiln_harness::spec::canonical_spec(child, &registry),
    ) {
        (Ok(parent), Ok(child)) => (parent, child),
        _ => (parent.clone(), child.clone()),
    }
}

/// The canonical spec (defaults filled) when it validates against the built-in kinds; the spec as
/// written otherwise (scripts, or a child the gate's canonical stage will reject anyway).
fn canonical_or_raw(spec: &HarnessSpec) -> HarnessSpec {
    kiln_harness::spec::canonical_spec(spec, &kiln_harness::builtin_registry())
        .unwrap_or_else(|_| spec.clone())
}

/// Child processors that are new or differ from the parent's processor of the same id.
fn changed_processors<'a>(parent: &HarnessSpec, child: &'a HarnessSpec) -> Vec<&'a ProcessorSpec> {
    child
        .processors
        .iter()
        .filter(|p| !parent.processors.iter().any(|q| q == *p))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Buckets

const PROMPT_KINDS: [&str; 2] = ["system_prompt", "compact_prompt"];
const PROMPT_KEYS: [&str; 5] = [
    "template",
    "message",
    "omitted_marker",
    "truncation_marker",
    "strategy",
];

fn is_tool_kind(kind: &str) -> bool {
    kind.contains("tool")
}

/// The buckets a diff touches, computed from the specs (not from the manifest).
pub fn touched_buckets(parent: &HarnessSpec, child: &HarnessSpec) -> BTreeSet<Bucket> {
    let mut buckets = BTreeSet::new();
    let by_id = |spec: &HarnessSpec| -> BTreeMap<String, ProcessorSpec> {
        spec.processors
            .iter()
            .map(|p| (p.id.clone(), p.clone()))
            .collect()
    };
    let old = by_id(parent);
    let new = by_id(child);
    for (id, processor) in &new {
        match old.get(id) {
            None => {
                buckets.insert(if is_tool_kind(&processor.kind) {
                    Bucket::Tools
                } else {
                    Bucket::Processor
                });
            }
            Some(before) if before != processor => {
                if before.kind != processor.kind
                    || before.hooks != processor.hooks
                    || before.phase != processor.phase
                    || before.after != processor.after
                    || before.group != processor.group
                {
                    buckets.insert(Bucket::Processor);
                }
                for key in changed_config_keys(&before.config, &processor.config) {
                    let leaf = key.rsplit('.').next().unwrap_or(&key).to_string();
                    let bucket = if processor.kind == "script" {
                        Bucket::Processor
                    } else if is_tool_kind(&processor.kind) {
                        Bucket::Tools
                    } else if PROMPT_KINDS.contains(&processor.kind.as_str())
                        && PROMPT_KEYS.contains(&leaf.as_str())
                    {
                        Bucket::Prompt
                    } else {
                        Bucket::Config
                    };
                    buckets.insert(bucket);
                }
            }
            Some(_) => {}
        }
    }
    for (id, processor) in &old {
        if !new.contains_key(id) {
            buckets.insert(if is_tool_kind(&processor.kind) {
                Bucket::Tools
            } else {
                Bucket::Processor
            });
        }
    }
    buckets
}

/// Dotted config keys whose value differs.
fn changed_config_keys(before: &Value, after: &Value) -> Vec<String> {
    let old = flatten("", before);
    let new = flatten("", after);
    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    keys.into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .cloned()
        .collect()
}

fn flatten(prefix: &str, value: &Value) -> BTreeMap<String, Value> {
    let mut flat = BTreeMap::new();
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flat.extend(flatten(&path, inner));
            }
        }
        Value::Null => {}
        other => {
            flat.insert(prefix.to_string(), other.clone());
        }
    }
    flat
}

// ---------------------------------------------------------------------------------------------
// Reads of gold, scorer, files; literals

/// Identifier words that name gold data or the expert.
const GOLD_WORDS: [&str; 12] = [
    "gold",
    "expert",
    "oracle",
    "answer",
    "answers",
    "solution",
    "solutions",
    "ground_truth",
    "groundtruth",
    "target_asin",
    "goal_options",
    "expected_output",
];
/// Identifier words that name the scorer's internals.
const SCORER_WORDS: [&str; 11] = [
    "scorer",
    "reward",
    "rewards",
    "evaluate",
    "evaluation",
    "evaluation_criteria",
    "judge",
    "nl_assertions",
    "env_assertions",
    "reward_basis",
    "db_hash",
];
/// Script calls or identifiers that reach files or modules.
const FILE_WORDS: [&str; 10] = [
    "import",
    "open",
    "read_file",
    "write_file",
    "read_to_string",
    "fs",
    "file",
    "path",
    "include",
    "load",
];
const NET_WORDS: [&str; 8] = [
    "http", "https", "fetch", "url", "socket", "curl", "request", "tcp",
];
const DYNAMIC_WORDS: [&str; 5] = ["eval", "exec", "system", "spawn", "command"];
/// Path fragments that mark test or data files.
const TEST_PATH_MARKS: [&str; 9] = [
    "test",
    "tasks",
    "gold",
    "data/",
    "kiln_home",
    ".cache/kiln",
    "split",
    "eval",
    "held",
];

/// Identifier tokens of a text: maximal runs of ASCII alphanumerics and `_`, lowercased.
fn identifiers(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|t| !t.is_empty())
        .map(str::to_ascii_lowercase)
        .collect()
}

/// The parts of an identifier split on `_` (so `gold_actions` yields `gold`).
fn parts(identifier: &str) -> impl Iterator<Item = &str> {
    std::iter::once(identifier).chain(identifier.split('_').filter(|p| !p.is_empty()))
}

fn identifier_hits<'a>(identifier: &str, words: &[&'a str]) -> Option<&'a str> {
    parts(identifier).find_map(|part| words.iter().copied().find(|w| *w == part))
}

/// Placeholders (`{name}`) in a template.
fn placeholders(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        let Some(end) = after.find('}') else { break };
        let name = &after[..end];
        if !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            found.push(name.to_ascii_lowercase());
        }
        rest = &after[end..];
    }
    found
}

fn scan_processor(processor: &ProcessorSpec, context: &CriticContext, reasons: &mut Vec<Reason>) {
    let id = Some(processor.id.as_str());
    // The kind itself (a processor kind that exposes gold would be a hack by construction).
    for ident in identifiers(&processor.kind) {
        if let Some(word) = identifier_hits(&ident, &GOLD_WORDS) {
            reasons.push(reason(
                ReasonKind::ReadsGold,
                format!("processor kind `{}` names `{word}`", processor.kind),
                id,
            ));
        } else if let Some(word) = identifier_hits(&ident, &SCORER_WORDS) {
            reasons.push(reason(
                ReasonKind::ReadsScorer,
                format!("processor kind `{}` names `{word}`", processor.kind),
                id,
            ));
        }
    }
    let flat = flatten("", &processor.config);
    for (key, value) in &flat {
        scan_config_key(processor, key, reasons);
        let texts = string_values(value);
        for text in &texts {
            if processor.kind == "script" && key == "source" {
                scan_script(processor, &format!("config.{key}"), text, context, reasons);
            } else if key == "file" || key.ends_with(".file") || key.ends_with("_file") {
                scan_file_reference(processor, key, text, context, reasons);
            } else {
                scan_text(processor, key, text, context, reasons);
            }
        }
    }
}

/// Every string inside a config value (arrays included).
fn string_values(value: &Value) -> Vec<String> {
    match value {
        Value::String(text) => vec![text.clone()],
        Value::Array(items) => items.iter().flat_map(string_values).collect(),
        Value::Object(map) => map.values().flat_map(string_values).collect(),
        _ => Vec::new(),
    }
}

fn scan_config_key(processor: &ProcessorSpec, key: &str, reasons: &mut Vec<Reason>) {
    let id = Some(processor.id.as_str());
    for ident in identifiers(key) {
        if let Some(word) = identifier_hits(&ident, &GOLD_WORDS) {
            reasons.push(reason(
                ReasonKind::ReadsGold,
                format!("config key `{key}` names `{word}`"),
                id,
            ));
            return;
        }
        if let Some(word) = identifier_hits(&ident, &SCORER_WORDS) {
            reasons.push(reason(
                ReasonKind::ReadsScorer,
                format!("config key `{key}` names `{word}`"),
                id,
            ));
            return;
        }
    }
}

/// Natural-language config text (prompts, messages): words like "expert" or "answer" are fine
/// in prose, so only identifier-shaped references (`gold_actions`, `{oracle}` placeholders,
/// `evaluation_criteria`) and literals count.
fn scan_text(
    processor: &ProcessorSpec,
    key: &str,
    text: &str,
    context: &CriticContext,
    reasons: &mut Vec<Reason>,
) {
    let id = Some(processor.id.as_str());
    for name in placeholders(text) {
        for ident in identifiers(&name) {
            if let Some(word) = identifier_hits(&ident, &GOLD_WORDS) {
                reasons.push(reason(
                    ReasonKind::ReadsGold,
                    format!("`config.{key}` has a placeholder `{{{name}}}` naming `{word}`"),
                    id,
                ));
            } else if let Some(word) = identifier_hits(&ident, &SCORER_WORDS) {
                reasons.push(reason(
                    ReasonKind::ReadsScorer,
                    format!("`config.{key}` has a placeholder `{{{name}}}` naming `{word}`"),
                    id,
                ));
            }
        }
    }
    for ident in identifiers(text) {
        // Only compound identifiers (with `_`): plain prose words are not references.
        if !ident.contains('_') {
            continue;
        }
        if let Some(word) = identifier_hits(&ident, &GOLD_WORDS) {
            reasons.push(reason(
                ReasonKind::ReadsGold,
                format!("`config.{key}` refers to `{ident}` ({word})"),
                id,
            ));
        } else if let Some(word) = identifier_hits(&ident, &SCORER_WORDS) {
            reasons.push(reason(
                ReasonKind::ReadsScorer,
                format!("`config.{key}` refers to `{ident}` ({word})"),
                id,
            ));
        }
    }
    scan_literals(
        processor,
        &format!("config.{key}"),
        text,
        false,
        context,
        reasons,
    );
}

/// A `file` reference: the path must stay next to the harness and name no test or data file;
/// the referenced script source, when the caller supplied it, is scanned like an inline one.
fn scan_file_reference(
    processor: &ProcessorSpec,
    key: &str,
    path: &str,
    context: &CriticContext,
    reasons: &mut Vec<Reason>,
) {
    let id = Some(processor.id.as_str());
    let lowered = path.to_ascii_lowercase();
    if path.starts_with('/') || path.starts_with('~') || path.split(['/', '\\']).any(|c| c == "..")
    {
        reasons.push(reason(
            ReasonKind::FileAccess,
            format!("`config.{key}` = `{path}` leaves the harness directory"),
            id,
        ));
    }
    if let Some(mark) = TEST_PATH_MARKS.iter().find(|m| lowered.contains(**m)) {
        reasons.push(reason(
            ReasonKind::ReadsTestFiles,
            format!("`config.{key}` = `{path}` names test or data files (`{mark}`)"),
            id,
        ));
    }
    if processor.kind != "script" {
        return;
    }
    match context.script_files.get(path) {
        Some(source) => scan_script(
            processor,
            &format!("config.{key} ({path})"),
            source,
            context,
            reasons,
        ),
        None => reasons.push(reason(
            ReasonKind::FileAccess,
            format!("script file `{path}` was not supplied, so it cannot be checked"),
            id,
        )),
    }
}

/// A Rhai script: every identifier is code, so gold/scorer words reject outright, as do file,
/// network and dynamic-code calls; string literals are checked for task ids and gold strings.
fn scan_script(
    processor: &ProcessorSpec,
    place: &str,
    source: &str,
    context: &CriticContext,
    reasons: &mut Vec<Reason>,
) {
    let id = Some(processor.id.as_str());
    let code = strip_comments(source);
    let (code_only, literals) = split_string_literals(&code);
    let mut seen = BTreeSet::new();
    for ident in identifiers(&code_only) {
        if !seen.insert(ident.clone()) {
            continue;
        }
        let checks: [(&[&str], ReasonKind); 2] = [
            (&GOLD_WORDS, ReasonKind::ReadsGold),
            (&SCORER_WORDS, ReasonKind::ReadsScorer),
        ];
        for (words, kind) in checks {
            if let Some(word) = identifier_hits(&ident, words) {
                reasons.push(reason(
                    kind,
                    format!("script {place} uses `{ident}` ({word})"),
                    id,
                ));
                break;
            }
        }
    }
    // File, network and dynamic-code access show as calls (`open(`, `fs::read`) or `import`;
    // a variable merely named `open` is not access.
    let mut seen = BTreeSet::new();
    for call in calls(&code_only) {
        if !seen.insert(call.clone()) {
            continue;
        }
        let checks: [(&[&str], ReasonKind); 3] = [
            (&FILE_WORDS, ReasonKind::FileAccess),
            (&NET_WORDS, ReasonKind::NetworkAccess),
            (&DYNAMIC_WORDS, ReasonKind::DynamicCode),
        ];
        for (words, kind) in checks {
            if let Some(word) = identifier_hits(&call, words) {
                reasons.push(reason(
                    kind,
                    format!("script {place} calls `{call}` ({word})"),
                    id,
                ));
                break;
            }
        }
    }
    // A task id compared in code (`task_id == 1503`, `goal == "1503"`).
    if let Some(task) = task_id_near_task_word(&code, &context.forbidden.task_ids) {
        reasons.push(reason(
            ReasonKind::TaskIdLiteral,
            format!("script {place} names task `{task}`"),
            id,
        ));
    }
    for literal in &literals {
        scan_literals(processor, place, literal, true, context, reasons);
        // A path in a string literal is a file reference too.
        let lowered = literal.to_ascii_lowercase();
        if (lowered.contains('/') || lowered.ends_with(".json") || lowered.ends_with(".jsonl"))
            && let Some(mark) = TEST_PATH_MARKS.iter().find(|m| lowered.contains(**m))
        {
            reasons.push(reason(
                ReasonKind::ReadsTestFiles,
                format!("script {place} names the path `{literal}` (`{mark}`)"),
                id,
            ));
        }
    }
}

/// Names called (`name(`) or used as a module path (`name::`), and `import`.
fn calls(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    let chars: Vec<char> = code.chars().collect();
    let mut index = 0;
    while index < chars.len() {
        if !(chars[index].is_ascii_alphanumeric() || chars[index] == '_') {
            index += 1;
            continue;
        }
        let start = index;
        while index < chars.len() && (chars[index].is_ascii_alphanumeric() || chars[index] == '_') {
            index += 1;
        }
        let name: String = chars[start..index]
            .iter()
            .collect::<String>()
            .to_ascii_lowercase();
        let mut next = index;
        while next < chars.len() && chars[next].is_whitespace() {
            next += 1;
        }
        let is_call = chars.get(next) == Some(&'(')
            || (chars.get(next) == Some(&':') && chars.get(next + 1) == Some(&':'));
        if is_call || name == "import" {
            found.push(name);
        }
    }
    found
}

/// Source without `//` and `/* */` comments (strings are kept; a `//` inside a string is rare in
/// a harness script and only makes the scan stricter).
fn strip_comments(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut chars = source.chars().peekable();
    let mut in_string: Option<char> = None;
    while let Some(c) = chars.next() {
        if let Some(quote) = in_string {
            out.push(c);
            if c == '\\' {
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            } else if c == quote {
                in_string = None;
            }
            continue;
        }
        match (c, chars.peek()) {
            ('"' | '`' | '\'', _) => {
                in_string = Some(c);
                out.push(c);
            }
            ('/', Some(&'/')) => {
                for next in chars.by_ref() {
                    if next == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            ('/', Some(&'*')) => {
                chars.next();
                let mut previous = ' ';
                for next in chars.by_ref() {
                    if previous == '*' && next == '/' {
                        break;
                    }
                    previous = next;
                }
                out.push(' ');
            }
            _ => out.push(c),
        }
    }
    out
}

/// The code with string literals blanked, and the literals' contents.
fn split_string_literals(code: &str) -> (String, Vec<String>) {
    let mut out = String::with_capacity(code.len());
    let mut literals = Vec::new();
    let mut chars = code.chars();
    while let Some(c) = chars.next() {
        if c != '"' && c != '`' && c != '\'' {
            out.push(c);
            continue;
        }
        let mut literal = String::new();
        while let Some(next) = chars.next() {
            if next == '\\' {
                if let Some(escaped) = chars.next() {
                    literal.push(escaped);
                }
                continue;
            }
            if next == c {
                break;
            }
            literal.push(next);
        }
        out.push(' ');
        literals.push(literal);
    }
    (out, literals)
}

/// Task ids and gold strings in one text. `code`: the text is a script literal, where a whole
/// literal equal to a task id is a hit.
fn scan_literals(
    processor: &ProcessorSpec,
    place: &str,
    text: &str,
    code: bool,
    context: &CriticContext,
    reasons: &mut Vec<Reason>,
) {
    let id = Some(processor.id.as_str());
    let lowered = text.to_lowercase();
    for (literal_lower, literal) in context.forbidden.lowered() {
        if lowered.contains(&literal_lower) {
            reasons.push(reason(
                ReasonKind::GoldLiteral,
                format!(
                    "{place} contains `{}`, the {} of {} task {}",
                    literal.text, literal.what, context.forbidden.env, literal.task
                ),
                id,
            ));
        }
    }
    let trimmed = text.trim();
    // A script string literal, or a whole config value, that is a task id.
    if !trimmed.is_empty()
        && trimmed == text
        && context.forbidden.task_ids.contains(trimmed)
        && (code || !is_number(trimmed))
    {
        reasons.push(reason(
            ReasonKind::TaskIdLiteral,
            format!("{place} is the task id `{trimmed}`"),
            id,
        ));
        return;
    }
    if let Some(task) = task_id_near_task_word(text, &context.forbidden.task_ids) {
        reasons.push(reason(
            ReasonKind::TaskIdLiteral,
            format!("{place} names task `{task}`"),
            id,
        ));
    }
}

fn is_number(text: &str) -> bool {
    !text.is_empty() && text.chars().all(|c| c.is_ascii_digit())
}

const TASK_WORDS: [&str; 7] = [
    "task", "goal", "game", "id", "episode", "instance", "problem",
];

/// A task id right after a task word (`task 12`, `goal #1503`, `task_id: "7"`), or any task id
/// that is not a plain number appearing as a whole token.
fn task_id_near_task_word(text: &str, task_ids: &BTreeSet<String>) -> Option<String> {
    if task_ids.is_empty() {
        return None;
    }
    // Tokens keep `-`, `.`, `/` so ids such as `pick_and_place-Book-None-Desk-301` stay whole.
    let tokens: Vec<String> = text
        .split(|c: char| {
            c.is_whitespace()
                || matches!(
                    c,
                    ',' | ';' | '"' | '\'' | '(' | ')' | '[' | ']' | '{' | '}' | '=' | ':'
                )
        })
        .map(|t| {
            t.trim_matches(|c: char| matches!(c, '#' | '.' | '!' | '?'))
                .to_string()
        })
        .filter(|t| !t.is_empty())
        .collect();
    for (index, token) in tokens.iter().enumerate() {
        if !task_ids.contains(token.as_str()) {
            continue;
        }
        let numeric = token.chars().all(|c| c.is_ascii_digit());
        if !numeric && token.chars().count() >= MIN_LITERAL_CHARS {
            return Some(token.clone());
        }
        // The nearest word before it (operators such as `==` skipped) is a task word.
        let before = tokens[..index]
            .iter()
            .rev()
            .take(3)
            .find(|t| t.chars().any(|c| c.is_ascii_alphanumeric()));
        if before.is_some_and(|word| {
            identifiers(word)
                .iter()
                .any(|ident| parts(ident).any(|p| TASK_WORDS.contains(&p)))
        }) {
            return Some(token.clone());
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Budget

/// Classifies a config key of a processor kind as a budget, with whether 0 means unbounded.
fn budget_kind(kind: &str, leaf: &str) -> Option<(BudgetKind, bool)> {
    if leaf == "max_steps" || leaf == "step_limit" || leaf == "max_turns" {
        return Some((BudgetKind::StepLimit, false));
    }
    if leaf.contains("tokens")
        && (leaf.starts_with("max") || leaf.ends_with("limit") || leaf.ends_with("cap"))
    {
        return Some((BudgetKind::TokenCap, true));
    }
    if leaf.contains("timeout")
        || (leaf.starts_with("max") && (leaf.ends_with("_seconds") || leaf.ends_with("_ms")))
    {
        return Some((BudgetKind::Timeout, true));
    }
    if leaf == "max_retries"
        || leaf == "retries"
        || leaf.ends_with("_retries")
        || leaf == "max_attempts"
    {
        return Some((BudgetKind::Retries, false));
    }
    if kind == "loop_detection" && leaf == "stop_after" {
        return Some((BudgetKind::LoopStop, false));
    }
    if matches!(
        leaf,
        "tools" | "allowed_tools" | "allow_tools" | "permissions" | "allow" | "extra_tools"
    ) {
        return Some((BudgetKind::ToolPermission, false));
    }
    None
}

/// Kinds whose absence leaves a budget unbounded (their default settings apply otherwise).
const LIMIT_KINDS: [(&str, &str, BudgetKind); 2] = [
    ("step_limit", "max_steps", BudgetKind::StepLimit),
    ("loop_detection", "stop_after", BudgetKind::LoopStop),
];

/// Effective budgets of a harness: `kind.key` → the tightest value over processors (or the
/// union of lists for tool permissions).
fn budgets(spec: &HarnessSpec) -> BTreeMap<String, (BudgetKind, bool, Value)> {
    let mut found: BTreeMap<String, (BudgetKind, bool, Value)> = BTreeMap::new();
    for processor in &spec.processors {
        for (key, value) in flatten("", &processor.config) {
            let leaf = key.rsplit('.').next().unwrap_or(&key);
            let Some((kind, zero_unbounded)) = budget_kind(&processor.kind, leaf) else {
                continue;
            };
            let setting = format!("{}.{key}", processor.kind);
            found
                .entry(setting)
                .and_modify(|entry| entry.2 = tighter(&entry.2, &value, zero_unbounded))
                .or_insert((kind, zero_unbounded, value.clone()));
        }
    }
    found
}

fn as_limit(value: &Value, zero_unbounded: bool) -> Option<f64> {
    let number = value.as_f64()?;
    if zero_unbounded && number == 0.0 {
        return None;
    }
    Some(number)
}

fn tighter(a: &Value, b: &Value, zero_unbounded: bool) -> Value {
    match (a, b) {
        (Value::Array(x), Value::Array(y)) => {
            let mut union = x.clone();
            union.extend(y.iter().filter(|v| !x.contains(v)).cloned());
            Value::Array(union)
        }
        _ => match (as_limit(a, zero_unbounded), as_limit(b, zero_unbounded)) {
            (Some(x), Some(y)) if y < x => b.clone(),
            (None, Some(_)) => b.clone(),
            _ => a.clone(),
        },
    }
}

fn budget_report(
    parent: &HarnessSpec,
    child: &HarnessSpec,
    context: &CriticContext,
    reasons: &mut Vec<Reason>,
) -> BudgetReport {
    let policy = &context.budget;
    let old = budgets(parent);
    let new = budgets(child);
    let seed = context.seed.as_ref().map(|s| budgets(&canonical_or_raw(s)));
    let mut report = BudgetReport::default();
    let settings: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for setting in settings {
        let before = old.get(setting);
        let after = new.get(setting);
        let (kind, zero_unbounded) = before
            .or(after)
            .map(|(k, z, _)| (*k, *z))
            .expect("a setting comes from one side");
        let before_value = before.map(|(_, _, v)| v.clone());
        let after_value = after.map(|(_, _, v)| v.clone());
        let change = if kind == BudgetKind::ToolPermission {
            tool_change(setting, before_value, after_value, policy)
        } else {
            let seed_value = seed
                .as_ref()
                .and_then(|s| s.get(setting))
                .map(|(_, _, v)| v.clone());
            numeric_change(
                kind,
                setting,
                before_value,
                after_value,
                seed_value,
                zero_unbounded,
                policy,
            )
        };
        if let Some(change) = change {
            report.changes.push(change);
        }
    }
    // A limit processor removed altogether leaves the budget unbounded.
    for (kind_name, key, kind) in LIMIT_KINDS {
        let had = parent.processors.iter().any(|p| p.kind == kind_name);
        let has = child.processors.iter().any(|p| p.kind == kind_name);
        let setting = format!("{kind_name}.{key}");
        if had && !has && !report.changes.iter().any(|c| c.setting == setting) {
            report.changes.push(BudgetChange {
                kind,
                setting,
                before: old
                    .get(&format!("{kind_name}.{key}"))
                    .map(|(_, _, v)| v.clone()),
                after: None,
                charge: 0.0,
                rejected: true,
                note: format!(
                    "the `{kind_name}` processor is removed: the budget becomes unbounded"
                ),
            });
        }
    }
    for change in &report.changes {
        if change.rejected {
            reasons.push(reason(
                ReasonKind::BudgetWidening,
                format!(
                    "{} widened: {} -> {} ({})",
                    change.setting,
                    show(&change.before),
                    show(&change.after),
                    change.note
                ),
                None,
            ));
        } else {
            report.charge += change.charge;
        }
    }
    // Scripts must not touch budgets: that would bypass this diff.
    for processor in changed_processors(parent, child) {
        if processor.kind != "script" {
            continue;
        }
        let source = processor
            .config
            .get("source")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| {
                let path = processor.config.get("file")?.as_str()?;
                context.script_files.get(path).cloned()
            })
            .unwrap_or_default();
        let touched: BTreeSet<String> = identifiers(&strip_comments(&source))
            .into_iter()
            .filter(|ident| budget_kind("", ident).is_some() || ident == "stop_after")
            .collect();
        if !touched.is_empty() {
            reasons.push(reason(
                ReasonKind::BudgetWidening,
                format!(
                    "script refers to budget settings ({}); budgets change only through config",
                    touched.into_iter().collect::<Vec<_>>().join(", ")
                ),
                Some(&processor.id),
            ));
        }
    }
    report
}

fn show(value: &Option<Value>) -> String {
    value
        .as_ref()
        .map_or_else(|| "unbounded".to_string(), Value::to_string)
}

/// Growth factor from `before` to `after`; counts that may be 0 (retries) grow as (n+1).
fn ratio(kind: BudgetKind, before: f64, after: f64) -> f64 {
    match kind {
        BudgetKind::Retries => (after + 1.0) / (before + 1.0),
        _ if before <= 0.0 => f64::INFINITY,
        _ => after / before,
    }
}

fn numeric_change(
    kind: BudgetKind,
    setting: &str,
    before: Option<Value>,
    after: Option<Value>,
    seed: Option<Value>,
    zero_unbounded: bool,
    policy: &BudgetPolicy,
) -> Option<BudgetChange> {
    let old = before.as_ref().map(|v| as_limit(v, zero_unbounded));
    let new = after.as_ref().map(|v| as_limit(v, zero_unbounded));
    // A setting on one side only: removed with its processor (limit kinds are handled apart) or
    // new (the processor's default applied before), so there is nothing to compare.
    let (Some(old), Some(new)) = (old, new) else {
        return None;
    };
    let growth = match (old, new) {
        (Some(o), Some(n)) => ratio(kind, o, n),
        (Some(_), None) => f64::INFINITY,
        (None, _) => return None,
    };
    if growth <= 1.0 + 1e-12 {
        return None;
    }
    let since_seed = match (seed.as_ref().and_then(|v| as_limit(v, zero_unbounded)), new) {
        (Some(s), Some(n)) => ratio(kind, s, n),
        (Some(_), None) => f64::INFINITY,
        _ => growth,
    };
    let worst = growth.max(since_seed);
    let rejected = !worst.is_finite() || worst > policy.max_ratio + 1e-12;
    let charge = if rejected {
        0.0
    } else {
        policy.base_charge + policy.charge_per_doubling * growth.log2()
    };
    let note = if !worst.is_finite() {
        "unbounded".to_string()
    } else if since_seed > growth {
        format!(
            "x{growth:.2} this round, x{since_seed:.2} since the seed (at most x{})",
            policy.max_ratio
        )
    } else if rejected {
        format!(
            "x{growth:.2} (at most x{} may be charged)",
            policy.max_ratio
        )
    } else {
        format!("x{growth:.2}, charged {charge:.3}")
    };
    Some(BudgetChange {
        kind,
        setting: setting.to_string(),
        before,
        after,
        charge,
        rejected,
        note,
    })
}

fn tool_change(
    setting: &str,
    before: Option<Value>,
    after: Option<Value>,
    policy: &BudgetPolicy,
) -> Option<BudgetChange> {
    let list = |value: &Option<Value>| -> Vec<String> {
        value.as_ref().map(string_values).unwrap_or_default()
    };
    let old = list(&before);
    let new = list(&after);
    let added: Vec<&String> = new.iter().filter(|t| !old.contains(t)).collect();
    let all = new
        .iter()
        .any(|t| t == "*" || t.eq_ignore_ascii_case("all"));
    if added.is_empty() && !all {
        return None;
    }
    let rejected = all;
    Some(BudgetChange {
        kind: BudgetKind::ToolPermission,
        setting: setting.to_string(),
        before,
        after,
        charge: if rejected {
            0.0
        } else {
            policy.tool_charge * added.len() as f64
        },
        rejected,
        note: if rejected {
            "every tool allowed".to_string()
        } else {
            format!(
                "added {}",
                added
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        },
    })
}

// ---------------------------------------------------------------------------------------------
// Manifest

fn valid_candidate_id(id: &str) -> bool {
    let Some(rest) = id.strip_prefix("C-R") else {
        return false;
    };
    let Some((round, index)) = rest.split_once('-') else {
        return false;
    };
    !round.is_empty()
        && round.chars().all(|c| c.is_ascii_digit())
        && index.len() >= 2
        && index.chars().all(|c| c.is_ascii_digit())
}

const SIGNATURE_KINDS: [&str; 3] = ["processor_invocation", "tool_call", "prompt_feature"];

fn check_manifest(manifest: &Manifest, context: &CriticContext, reasons: &mut Vec<Reason>) {
    let mut missing =
        |message: String| reasons.push(reason(ReasonKind::ManifestIncomplete, message, None));
    if !valid_candidate_id(&manifest.candidate_id) {
        missing(format!(
            "candidate_id `{}` is not of the form C-R<round>-<NN>",
            manifest.candidate_id
        ));
    }
    if manifest.buckets.is_empty() {
        missing("no bucket declared".to_string());
    }
    if manifest.operator.trim().is_empty() {
        missing("no operator named".to_string());
    }
    let pointers: usize = manifest
        .capability_evidence
        .iter()
        .map(|e| e.evidence.len())
        .sum();
    if manifest.capability_evidence.is_empty() || pointers == 0 {
        missing("no capability evidence with trace pointers".to_string());
    }
    if manifest
        .capability_evidence
        .iter()
        .any(|e| e.kind.trim().is_empty() || e.claim.trim().is_empty())
    {
        missing("a capability evidence entry has no type or claim".to_string());
    }
    match &manifest.attribution_signature {
        None => missing("no attribution signature".to_string()),
        Some(signature) => {
            if !SIGNATURE_KINDS.contains(&signature.kind.as_str()) {
                missing(format!(
                    "attribution signature type `{}` is not one of {}",
                    signature.kind,
                    SIGNATURE_KINDS.join(", ")
                ));
            }
            if signature.name.trim().is_empty() || signature.expected_min_calls == 0 {
                missing(
                    "the attribution signature needs a name and expected_min_calls ≥ 1".to_string(),
                );
            }
        }
    }
    let impact = &manifest.predicted_impact;
    if impact.tasks_will_unlock.is_empty() && impact.tasks_will_stabilize.is_empty() {
        missing("no predicted flips (tasks_will_unlock / tasks_will_stabilize)".to_string());
    }
    let Some(search) = &context.search_split else {
        return;
    };
    let outside: BTreeSet<&String> = impact
        .tasks_will_unlock
        .iter()
        .chain(&impact.tasks_will_stabilize)
        .chain(&impact.tasks_at_risk)
        .filter(|task| !search.contains(*task))
        .collect();
    if !outside.is_empty() {
        reasons.push(reason(
            ReasonKind::NonSearchPrediction,
            format!(
                "predicted flips name tasks outside the search split: {}",
                outside.into_iter().cloned().collect::<Vec<_>>().join(", ")
            ),
            None,
        ));
    }
    for pointer in manifest
        .capability_evidence
        .iter()
        .flat_map(|e| &e.evidence)
    {
        if !search.contains(&pointer.task) {
            reasons.push(reason(
                ReasonKind::NonSearchPrediction,
                format!("evidence {pointer} points at a task outside the search split"),
                None,
            ));
        }
    }
}

fn check_buckets(
    manifest: &Manifest,
    touched: &BTreeSet<Bucket>,
    budget: &BudgetReport,
    reasons: &mut Vec<Reason>,
) {
    let declared: BTreeSet<Bucket> = manifest.buckets.iter().copied().collect();
    let undeclared: Vec<Bucket> = touched.difference(&declared).copied().collect();
    if undeclared.is_empty() {
        return;
    }
    let budget_bucket = |change: &BudgetChange| {
        if change.kind == BudgetKind::ToolPermission {
            Bucket::Tools
        } else {
            Bucket::Config
        }
    };
    let hidden: Vec<&BudgetChange> = budget
        .changes
        .iter()
        .filter(|c| !declared.contains(&budget_bucket(c)) && !declared.contains(&Bucket::Processor))
        .collect();
    if !hidden.is_empty() {
        reasons.push(reason(
            ReasonKind::HiddenBudgetChange,
            format!(
                "the manifest declares {:?} but the diff changes budgets: {}",
                manifest.buckets,
                hidden
                    .iter()
                    .map(|c| format!("{} {} -> {}", c.setting, show(&c.before), show(&c.after)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None,
        ));
    }
    reasons.push(reason(
        ReasonKind::UndeclaredBucket,
        format!(
            "the diff touches {undeclared:?}, which the manifest ({:?}) does not declare",
            manifest.buckets
        ),
        None,
    ));
}

/// A lever (operator) that shipped in ≥ 2 of the last 3 rounds with a cumulative hit rate below
/// 0.4 is not shipped again; the strategy concern says so for the planner.
fn lever_fatigue(
    manifest: &Manifest,
    context: &CriticContext,
    reasons: &mut Vec<Reason>,
) -> Option<String> {
    let history = context
        .lever_history
        .iter()
        .find(|h| h.operator == manifest.operator)?;
    let window = context.round.saturating_sub(3)..context.round;
    let recent = history
        .shipped_rounds
        .iter()
        .filter(|r| window.contains(r))
        .count();
    if recent < 2 || history.hit_rate >= 0.4 {
        return None;
    }
    let concern = format!(
        "lever `{}` shipped in {recent} of the last 3 rounds with a hit rate of {:.2} (< 0.40): try an untried bucket or operator",
        manifest.operator, history.hit_rate
    );
    reasons.push(reason(ReasonKind::LeverFatigue, concern.clone(), None));
    Some(concern)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gold_shared_with_a_search_task_is_not_banned() {
        let mut forbidden = ForbiddenLiterals::new("webshop");
        forbidden.add("B03VWU0VBR", "target ASIN", "39");
        forbidden.add("B0D4URRTQV", "target ASIN", "40");
        forbidden.task_ids.insert("39".into());
        let mut public = ForbiddenLiterals::new("webshop");
        public.add("b03vwu0vbr", "target ASIN", "7");
        forbidden.allow_public(&public);
        let left: Vec<&str> = forbidden.literals.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(left, vec!["B0D4URRTQV"]);
        assert!(forbidden.task_ids.contains("39"), "task ids stay banned");
    }
}
