//! τ²'s reward, component by component, as `../shared/specs/tau2.md` states it.
//!
//! - Reward 0 unless the episode ended by an agent or user stop. A user `###TRANSFER###` is a user
//!   stop in τ² (graded); `###OUT-OF-SCOPE###` means the run was aborted and is not graded.
//! - **DB**: the agent's write calls replayed on a fresh DB vs every gold action (errors ignored)
//!   replayed on another; 1 iff the τ² hashes are equal. Gold actions `[]` mean the DB must not
//!   change; `null` means DB reward 1.
//! - **COMMUNICATE**: every required string, lowercased, appears in some agent message once commas
//!   are removed from that message.
//! - **NL_ASSERTION**: a judge model decides each assertion. Without a judge the component is
//!   *unjudged* (`value: None`): it is left out of the reward, `success` is false, and
//!   `success_judged_only` says what success would be without it. It is never silently passed.
//! - Reward = product of the judged components in `reward_basis`; success iff every component is
//!   judged and the reward is 1 (±1e-6).
//!
//! Replays and hashes go through [`DbLayout`], which makes "fresh DB, replay, τ² hash" cost a
//! few milliseconds instead of a full clone and a full serialisation of the DB.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use kiln_protocol::{ComponentScore, Message, Role, Termination, ToolCall};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::db::db_hash;
use super::env::{is_write_tool, replay};
use super::tasks::{RewardType, Tau2Task};
use super::{Domain, pyjson};
use crate::{AuxModel, EnvError, EnvErrorKind, Evaluation};

/// Tolerance of "reward = 1".
pub const SUCCESS_EPSILON: f64 = 1e-6;

/// What scoring needs from a finished episode.
pub struct ScoringInput<'a> {
    pub task: &'a Tau2Task,
    pub domain: Domain,
    /// The domain's initial DB, prepared for fast replays.
    pub layout: &'a Arc<DbLayout>,
    /// Every agent tool call, in order.
    pub agent_calls: &'a [ToolCall],
    /// The whole conversation (greeting, messages, tool calls and results).
    pub transcript: &'a [Message],
    /// The τ² hash of the episode's final DB, recorded in the outcome.
    pub final_db_hash: String,
}

/// Whether τ² grades an episode that ended this way.
pub fn is_graded(termination: Termination) -> bool {
    matches!(
        termination,
        Termination::AgentStop | Termination::UserStop | Termination::Transfer
    )
}

/// Scores an episode. `gold_db_hash` is called only when the DB component needs it (callers cache
/// it per task); `judge` decides NL assertions.
pub async fn evaluate(
    input: ScoringInput<'_>,
    termination: Termination,
    gold_db_hash: impl Fn() -> String + Send,
    judge: Option<&dyn AuxModel>,
) -> Result<Evaluation, EnvError> {
    if !is_graded(termination) {
        return Ok(Evaluation {
            reward: 0.0,
            components: BTreeMap::new(),
            success: false,
            success_judged_only: false,
            db_hash: Some(input.final_db_hash),
            info: json!({ "graded": false, "note": format!("episode ended by {termination:?}; τ² gives reward 0") }),
        });
    }
    let mut components = BTreeMap::new();
    for basis in dedup(input.task.reward_basis()) {
        let score = match basis {
            RewardType::Db => db_component(
                input.task,
                || agent_db_hash(input.domain, input.layout, input.agent_calls),
                &gold_db_hash,
            ),
            RewardType::Communicate => communicate_component(
                input.task.communicate_info(),
                &agent_texts(input.transcript),
            ),
            RewardType::NlAssertion => {
                nl_assertion_component(input.task.nl_assertions(), input.transcript, judge).await?
            }
            RewardType::Action | RewardType::EnvAssertion => ComponentScore {
                value: None,
                unjudged: true,
                detail: Some(format!(
                    "Kiln does not evaluate {} (no retail or airline task uses it)",
                    basis.as_str()
                )),
            },
        };
        components.insert(basis.as_str().to_string(), score);
    }
    let (reward, success, success_judged_only) = combine(&components);
    Ok(Evaluation {
        reward,
        components,
        success,
        success_judged_only,
        db_hash: Some(input.final_db_hash),
        info: json!({ "graded": true }),
    })
}

fn dedup(basis: &[RewardType]) -> Vec<RewardType> {
    let mut unique = Vec::with_capacity(basis.len());
    for item in basis {
        if !unique.contains(item) {
            unique.push(*item);
        }
    }
    unique
}

/// `(reward, success, success_judged_only)`: the product of the judged components; success needs
/// every component judged.
pub fn combine(components: &BTreeMap<String, ComponentScore>) -> (f64, bool, bool) {
    let reward: f64 = components
        .values()
        .filter_map(|score| score.value)
        .product();
    let all_judged = components.values().all(|score| score.value.is_some());
    let reward_is_one = (reward - 1.0).abs() <= SUCCESS_EPSILON;
    (reward, all_judged && reward_is_one, reward_is_one)
}

/// The τ² hash of a fresh DB after replaying the agent's write calls (failed ones included: a
/// call that fails half-way keeps its partial changes, in the episode and in the replay alike).
pub fn agent_db_hash(domain: Domain, layout: &Arc<DbLayout>, agent_calls: &[ToolCall]) -> String {
    let writes = agent_calls
        .iter()
        .filter(|call| is_write_tool(domain, &call.name))
        .filter_map(|call| match &call.arguments {
            Value::Object(args) => Some((call.name.as_str(), args)),
            _ => None,
        });
    layout.replay_hash(domain, writes)
}

/// The τ² hash of a fresh DB after replaying every gold action of `task`, errors ignored.
pub fn gold_db_hash(domain: Domain, layout: &Arc<DbLayout>, task: &Tau2Task) -> String {
    layout.replay_hash(
        domain,
        task.gold_actions()
            .iter()
            .map(|action| (action.name.as_str(), &action.arguments)),
    )
}

/// DB: 1 iff the agent's replayed DB hashes like the gold one; 1 without comparing when the task
/// has no gold actions (`null`). With `[]` the gold DB is the untouched one, so any write fails.
pub fn db_component(
    task: &Tau2Task,
    agent_hash: impl FnOnce() -> String,
    gold_hash: impl FnOnce() -> String,
) -> ComponentScore {
    let has_gold = task
        .evaluation_criteria
        .as_ref()
        .is_some_and(|criteria| criteria.actions.is_some());
    if !has_gold {
        return ComponentScore {
            value: Some(1.0),
            unjudged: false,
            detail: Some("no gold actions: DB not checked".to_string()),
        };
    }
    let (agent, gold) = (agent_hash(), gold_hash());
    let (value, detail) = if agent == gold {
        (
            1.0,
            format!("DB matches the gold DB (hash {})", short(&gold)),
        )
    } else {
        (
            0.0,
            format!(
                "DB differs: agent hash {} vs gold hash {}",
                short(&agent),
                short(&gold)
            ),
        )
    };
    ComponentScore {
        value: Some(value),
        unjudged: false,
        detail: Some(detail),
    }
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(16)]
}

/// The agent's text messages (what COMMUNICATE searches).
pub fn agent_texts(transcript: &[Message]) -> Vec<&str> {
    transcript
        .iter()
        .filter(|message| message.role == Role::Assistant && !message.content.is_empty())
        .map(|message| message.content.as_str())
        .collect()
}

/// COMMUNICATE: 1 iff every string of `info`, lowercased, is in some agent message lowercased
/// with its commas removed (τ²'s exact rule; the required strings keep their own commas).
pub fn communicate_component(info: &[String], agent_messages: &[&str]) -> ComponentScore {
    let normalized: Vec<String> = agent_messages
        .iter()
        .map(|message| message.to_lowercase().replace(',', ""))
        .collect();
    let missing: Vec<&str> = info
        .iter()
        .filter(|required| {
            let required = required.to_lowercase();
            !normalized.iter().any(|message| message.contains(&required))
        })
        .map(String::as_str)
        .collect();
    let detail = if info.is_empty() {
        "nothing to communicate".to_string()
    } else if missing.is_empty() {
        format!("all {} required strings communicated", info.len())
    } else {
        format!("not communicated: {}", missing.join(" | "))
    };
    ComponentScore {
        value: Some(if missing.is_empty() { 1.0 } else { 0.0 }),
        unjudged: false,
        detail: Some(detail),
    }
}

const JUDGE_SYSTEM_PROMPT: &str = "\
TASK
- You will be given a list of expected outcomes and a conversation collected during a test case run.
- The conversation is between a customer service agent and a customer.
- Decide, for each expected outcome separately, whether the agent satisfies it.

FORMAT
- Answer with a JSON object only, with a `results` list holding one entry per expected outcome:
- `expectedOutcome`: the expected outcome you are grading, repeated from the input
- `reasoning`: a short explanation of your decision
- `metExpectation`: `true` if the agent satisfies the expected outcome, `false` otherwise

Example:
{\"results\": [{\"expectedOutcome\": \"<an expected outcome>\", \"reasoning\": \"<why>\", \"metExpectation\": true}]}";

/// NL_ASSERTION: 1 iff the judge finds every assertion met; 1 when there are none; unjudged
/// (`value: None`) without a judge. A judge that fails or answers unparseably twice is an
/// [`EnvErrorKind::AuxModel`] error, never a pass.
pub async fn nl_assertion_component(
    assertions: &[String],
    transcript: &[Message],
    judge: Option<&dyn AuxModel>,
) -> Result<ComponentScore, EnvError> {
    if assertions.is_empty() {
        return Ok(ComponentScore {
            value: Some(1.0),
            unjudged: false,
            detail: Some("no NL assertions".to_string()),
        });
    }
    let Some(judge) = judge else {
        return Ok(ComponentScore {
            value: None,
            unjudged: true,
            detail: Some(format!(
                "{} NL assertions need a judge model and none is configured",
                assertions.len()
            )),
        });
    };
    let prompt = judge_prompt(assertions, transcript);
    let mut last_problem = String::new();
    for _ in 0..2 {
        let answer = judge.complete(&prompt).await.map_err(|error| {
            EnvError::new(
                EnvErrorKind::AuxModel,
                format!("judge model {} failed: {error}", judge.label()),
            )
        })?;
        match parse_judgement(&answer, assertions.len()) {
            Ok(verdicts) => return Ok(nl_score(assertions, &verdicts)),
            Err(problem) => last_problem = problem,
        }
    }
    Err(EnvError::new(
        EnvErrorKind::AuxModel,
        format!(
            "judge model {} gave no usable verdict for the NL assertions: {last_problem}",
            judge.label()
        ),
    ))
}

/// The judge's messages: instructions, then the conversation (`role: content` lines) and the
/// expected outcomes.
pub fn judge_prompt(assertions: &[String], transcript: &[Message]) -> Vec<Message> {
    let conversation: Vec<String> = transcript.iter().map(transcript_line).collect();
    let outcomes = serde_json::to_string(assertions).unwrap_or_default();
    let user_prompt = format!(
        "conversation:\n{}\n\nexpectedOutcomes:\n{outcomes}",
        conversation.join("\n")
    );
    vec![
        Message::system(JUDGE_SYSTEM_PROMPT),
        Message::user(user_prompt),
    ]
}

fn transcript_line(message: &Message) -> String {
    let role = match message.role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    };
    if message.tool_calls.is_empty() {
        return format!("{role}: {}", message.content);
    }
    let calls: Vec<String> = message
        .tool_calls
        .iter()
        .map(|call| format!("{}({})", call.name, call.arguments))
        .collect();
    format!("{role}: [tool call] {}", calls.join(", "))
}

/// One verdict per assertion, in order, from the judge's JSON (code fences and surrounding text
/// tolerated). Fewer verdicts than assertions is an error: a missing verdict is not a pass.
pub fn parse_judgement(answer: &str, expected: usize) -> Result<Vec<(bool, String)>, String> {
    let start = answer.find('{').ok_or("no JSON object in the answer")?;
    let end = answer.rfind('}').ok_or("no JSON object in the answer")?;
    let parsed: Value = serde_json::from_str(&answer[start..=end])
        .map_err(|error| format!("invalid JSON ({error})"))?;
    let results = parsed
        .get("results")
        .and_then(Value::as_array)
        .ok_or("no `results` list")?;
    let verdicts: Vec<(bool, String)> = results
        .iter()
        .map(|result| {
            let met = result
                .get("metExpectation")
                .and_then(Value::as_bool)
                .ok_or("a result lacks a boolean `metExpectation`")?;
            let reasoning = result
                .get("reasoning")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            Ok((met, reasoning))
        })
        .collect::<Result<_, &str>>()?;
    if verdicts.len() != expected {
        return Err(format!(
            "{} verdicts for {expected} assertions",
            verdicts.len()
        ));
    }
    Ok(verdicts)
}

fn nl_score(assertions: &[String], verdicts: &[(bool, String)]) -> ComponentScore {
    let failed: Vec<String> = assertions
        .iter()
        .zip(verdicts)
        .filter(|(_, (met, _))| !met)
        .map(|(assertion, (_, reasoning))| format!("{assertion} ({reasoning})"))
        .collect();
    let detail = if failed.is_empty() {
        format!("all {} NL assertions met", assertions.len())
    } else {
        format!("not met: {}", failed.join(" | "))
    };
    ComponentScore {
        value: Some(if failed.is_empty() { 1.0 } else { 0.0 }),
        unjudged: false,
        detail: Some(detail),
    }
}

/// pass^k for one task: the chance that `k` attempts drawn without replacement from `trials`
/// attempts with `successes` successes all succeed, C(successes, k) / C(trials, k). Reports average
/// it over tasks. `None` when `k` exceeds `trials` or `successes` exceeds `trials`.
pub fn pass_hat_k(successes: u32, trials: u32, k: u32) -> Option<f64> {
    if k > trials || successes > trials {
        return None;
    }
    if successes < k {
        return Some(0.0);
    }
    let ratio = (0..k)
        .map(|i| f64::from(successes - i) / f64::from(trials - i))
        .product();
    Some(ratio)
}

// ---------------------------------------------------------------------------------------------
// Fast replay: fresh DBs and τ² hashes without cloning or re-serialising the whole DB
// ---------------------------------------------------------------------------------------------

/// A domain's initial DB prepared for many "fresh DB → tool calls → τ² hash" cycles.
///
/// Cloning the airline DB costs tens of milliseconds and so does serialising it for the hash,
/// while a task changes a handful of records. So the layout keeps, once: the sorted JSON text of
/// every top-level record (`db[table][id]`) with the SHA-256 state just before it, a flat,
/// contiguous image of every initial record, and a small pool of mutable copies of the DB.
/// One cycle then compares the copy with the flat image (an exact, allocation-free walk) to find
/// the changed records, resumes SHA-256 at the first of them, re-serialises only those, feeds
/// the cached text of the rest, and restores the copy by replacing only what changed. Hashes are
/// exactly [`db_hash`]'s (tests check it on every task); DBs whose top level is not
/// `{table: {id: …}}` fall back to it.
pub struct DbLayout {
    base: Arc<Value>,
    tables: Option<Vec<TableLayout>>,
    image: FlatImage,
    base_hash: String,
    pool: Mutex<Vec<Value>>,
}

/// Copies of the DB kept for reuse; more concurrent users than this clone their own.
const POOL_LIMIT: usize = 4;

struct TableLayout {
    key: String,
    /// `{"key": {` for the first table, `, "key": {` after.
    open: String,
    /// Records in sorted id order.
    records: Vec<RecordLayout>,
    /// Id → position in `records`.
    positions: HashMap<String, usize>,
    /// Records in the initial insertion order, as ranges of the flat image.
    in_order: Vec<FlatRecord>,
    /// SHA-256 state after the last record, before the table's closing `}`.
    state_at_close: Sha256,
}

struct RecordLayout {
    id: String,
    /// `"id": <sorted JSON of the record>`, without the `, ` separator.
    piece: String,
    /// SHA-256 state before this record's separator (or right after `{` for the first record).
    state_before: Sha256,
}

/// One initial record in the flat image: its id and its tokens.
struct FlatRecord {
    id: (u32, u32),
    tokens: std::ops::Range<u32>,
}

/// The initial records as one token array (pre-order) and one string arena: comparing a DB
/// against it reads contiguous memory instead of a second pointer-linked tree.
#[derive(Default)]
struct FlatImage {
    tokens: Vec<Token>,
    strings: String,
}

#[derive(Clone, Copy, PartialEq)]
enum Token {
    Null,
    Bool(bool),
    Unsigned(u64),
    Signed(i64),
    /// Bits of the float: `0.0` and `-0.0` print differently.
    Float(u64),
    /// Start and length in the string arena.
    String(u32, u32),
    Array(u32),
    /// Entry count; each entry is a `Key` token then the value's tokens.
    Object(u32),
    Key(u32, u32),
}

impl FlatImage {
    fn intern(&mut self, text: &str) -> (u32, u32) {
        let start = self.strings.len();
        self.strings.push_str(text);
        (start as u32, text.len() as u32)
    }

    fn text(&self, (start, len): (u32, u32)) -> &str {
        &self.strings[start as usize..(start + len) as usize]
    }

    fn push(&mut self, value: &Value) {
        let token = match value {
            Value::Null => Token::Null,
            Value::Bool(flag) => Token::Bool(*flag),
            Value::Number(number) => number_token(number),
            Value::String(text) => {
                let (start, len) = self.intern(text);
                Token::String(start, len)
            }
            Value::Array(items) => {
                self.tokens.push(Token::Array(items.len() as u32));
                items.iter().for_each(|item| self.push(item));
                return;
            }
            Value::Object(map) => {
                self.tokens.push(Token::Object(map.len() as u32));
                for (key, item) in map {
                    let (start, len) = self.intern(key);
                    self.tokens.push(Token::Key(start, len));
                    self.push(item);
                }
                return;
            }
        };
        self.tokens.push(token);
    }

    /// Whether `value` is exactly the record stored at `tokens`.
    fn matches(&self, value: &Value, tokens: &std::ops::Range<u32>) -> bool {
        let mut cursor = tokens.start as usize;
        self.matches_at(value, &mut cursor) && cursor == tokens.end as usize
    }

    fn matches_at(&self, value: &Value, cursor: &mut usize) -> bool {
        let Some(&token) = self.tokens.get(*cursor) else {
            return false;
        };
        *cursor += 1;
        match (value, token) {
            (Value::Null, Token::Null) => true,
            (Value::Bool(flag), Token::Bool(expected)) => *flag == expected,
            (Value::Number(number), expected) => number_token(number) == expected,
            (Value::String(text), Token::String(start, len)) => text == self.text((start, len)),
            (Value::Array(items), Token::Array(len)) => {
                items.len() == len as usize
                    && items.iter().all(|item| self.matches_at(item, cursor))
            }
            (Value::Object(map), Token::Object(len)) => {
                map.len() == len as usize
                    && map.iter().all(|(key, item)| {
                        let Some(&Token::Key(start, key_len)) = self.tokens.get(*cursor) else {
                            return false;
                        };
                        *cursor += 1;
                        key == self.text((start, key_len)) && self.matches_at(item, cursor)
                    })
            }
            _ => false,
        }
    }
}

fn number_token(number: &serde_json::Number) -> Token {
    if let Some(unsigned) = number.as_u64() {
        return Token::Unsigned(unsigned);
    }
    if let Some(signed) = number.as_i64() {
        return Token::Signed(signed);
    }
    Token::Float(number.as_f64().unwrap_or(f64::NAN).to_bits())
}

/// How one table of a DB differs from the initial one.
#[derive(Default)]
struct TableDiff {
    changed: HashSet<String>,
    added: Vec<String>,
    removed: Vec<String>,
    /// Keys are no longer in their original order (restore by cloning the whole table).
    reordered: bool,
}

impl TableDiff {
    fn is_empty(&self) -> bool {
        self.changed.is_empty()
            && self.added.is_empty()
            && self.removed.is_empty()
            && !self.reordered
    }
}

impl DbLayout {
    /// Serialises `base` once, record by record (about one [`db_hash`] of work).
    pub fn new(base: Arc<Value>) -> Self {
        let mut image = FlatImage::default();
        let (tables, base_hash) = match build_tables(&base, &mut image) {
            Some((tables, hash)) => (Some(tables), hash),
            None => (None, db_hash(&base)),
        };
        Self {
            base,
            tables,
            image,
            base_hash,
            pool: Mutex::new(Vec::new()),
        }
    }

    /// The initial DB.
    pub fn base(&self) -> &Arc<Value> {
        &self.base
    }

    /// The τ² hash of the initial DB.
    pub fn base_hash(&self) -> &str {
        &self.base_hash
    }

    /// The τ² hash of `db`, a DB that started as a copy of the initial one: equal to
    /// [`db_hash`]`(db)`, computed from the records that changed.
    pub fn hash(&self, db: &Value) -> String {
        let Some(tables) = &self.tables else {
            return db_hash(db);
        };
        match self.diff(tables, db) {
            Some(diffs) => hash_with_diffs(tables, &self.base_hash, db, &diffs),
            None => db_hash(db),
        }
    }

    /// A fresh copy of the initial DB, from the pool when one is free. It goes back to the pool,
    /// restored, when dropped.
    pub fn fresh(self: &Arc<Self>) -> PooledDb {
        PooledDb {
            db: Some(self.take()),
            layout: Arc::clone(self),
        }
    }

    /// Replays `calls` on a fresh DB (results and errors ignored) and returns its τ² hash.
    pub fn replay_hash<'a>(
        &self,
        domain: Domain,
        calls: impl IntoIterator<Item = (&'a str, &'a Map<String, Value>)>,
    ) -> String {
        let mut db = self.take();
        replay(domain, &mut db, calls);
        let Some(tables) = &self.tables else {
            return db_hash(&db);
        };
        let Some(diffs) = self.diff(tables, &db) else {
            return db_hash(&db);
        };
        let hash = hash_with_diffs(tables, &self.base_hash, &db, &diffs);
        if restore(tables, &self.base, &mut db, &diffs) {
            self.keep(db);
        }
        hash
    }

    fn take(&self) -> Value {
        let pooled = self
            .pool
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop();
        pooled.unwrap_or_else(|| (*self.base).clone())
    }

    fn keep(&self, db: Value) {
        let mut pool = self
            .pool
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if pool.len() < POOL_LIMIT {
            pool.push(db);
        }
    }

    /// Restores `db` to the initial state (only its changed records) and keeps it for reuse.
    fn give_back(&self, mut db: Value) {
        let Some(tables) = &self.tables else {
            return;
        };
        let Some(diffs) = self.diff(tables, &db) else {
            return;
        };
        if restore(tables, &self.base, &mut db, &diffs) {
            self.keep(db);
        }
    }

    /// Per-table differences of `db` from the initial DB; `None` when the top level differs.
    fn diff(&self, tables: &[TableLayout], db: &Value) -> Option<Vec<TableDiff>> {
        let (base_top, top) = (self.base.as_object()?, db.as_object()?);
        if top.len() != base_top.len() {
            return None;
        }
        tables
            .iter()
            .map(|layout| {
                let base_table = base_top.get(&layout.key)?.as_object()?;
                let table = top.get(&layout.key)?.as_object()?;
                Some(self.diff_table(layout, base_table, table))
            })
            .collect()
    }

    /// Compares records in insertion order against the flat image (how the tools leave them:
    /// updates in place, new records appended); any other reshuffle is handled by key lookups.
    fn diff_table(
        &self,
        layout: &TableLayout,
        base: &Map<String, Value>,
        table: &Map<String, Value>,
    ) -> TableDiff {
        let mut diff = TableDiff::default();
        let mut in_order = table.len() >= layout.in_order.len();
        if in_order {
            for ((id, record), flat) in table.iter().zip(&layout.in_order) {
                if id != self.image.text(flat.id) {
                    in_order = false;
                    break;
                }
                if !self.image.matches(record, &flat.tokens) {
                    diff.changed.insert(id.clone());
                }
            }
        }
        if in_order {
            diff.added = table.keys().skip(layout.in_order.len()).cloned().collect();
            return diff;
        }
        let mut diff = TableDiff {
            reordered: true,
            ..TableDiff::default()
        };
        for (id, base_record) in base {
            match table.get(id) {
                None => diff.removed.push(id.clone()),
                Some(record) if record != base_record || !same_floats(record, base_record) => {
                    diff.changed.insert(id.clone());
                }
                Some(_) => {}
            }
        }
        diff.added = table
            .keys()
            .filter(|id| !base.contains_key(*id))
            .cloned()
            .collect();
        diff
    }
}

/// A mutable DB from a [`DbLayout`]'s pool; returned to it, restored, on drop.
pub struct PooledDb {
    db: Option<Value>,
    layout: Arc<DbLayout>,
}

impl std::ops::Deref for PooledDb {
    type Target = Value;
    fn deref(&self) -> &Value {
        self.db.as_ref().expect("present until drop")
    }
}

impl std::ops::DerefMut for PooledDb {
    fn deref_mut(&mut self) -> &mut Value {
        self.db.as_mut().expect("present until drop")
    }
}

impl Drop for PooledDb {
    fn drop(&mut self) {
        if let Some(db) = self.db.take() {
            self.layout.give_back(db);
        }
    }
}

/// `Value`'s `==` treats `0.0` and `-0.0` as equal; the hash text does not. Used only on the rare
/// reordered-table path, where records are compared as trees.
fn same_floats(left: &Value, right: &Value) -> bool {
    let mut left_image = FlatImage::default();
    left_image.push(left);
    let mut right_image = FlatImage::default();
    right_image.push(right);
    left_image.tokens == right_image.tokens
}

fn quoted(text: &str) -> String {
    pyjson::dumps_sorted(&Value::String(text.to_string()))
}

fn sorted_keys(map: &Map<String, Value>) -> Vec<&String> {
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort_unstable();
    keys
}

fn record_piece(id: &str, record: &Value) -> String {
    format!("{}: {}", quoted(id), pyjson::dumps_sorted(record))
}

/// The per-record layout, the flat image and the hash of the initial DB; `None` unless the DB
/// is `{table: {id: …}}`.
fn build_tables(base: &Value, image: &mut FlatImage) -> Option<(Vec<TableLayout>, String)> {
    let top = base.as_object()?;
    let mut hasher = Sha256::new();
    let mut tables = Vec::with_capacity(top.len());
    for (index, key) in sorted_keys(top).into_iter().enumerate() {
        let table = top[key].as_object()?;
        let open = format!("{}{}: {{", if index == 0 { "{" } else { ", " }, quoted(key));
        hasher.update(open.as_bytes());
        let mut records = Vec::with_capacity(table.len());
        for (position, id) in sorted_keys(table).into_iter().enumerate() {
            let state_before = hasher.clone();
            if position > 0 {
                hasher.update(b", ");
            }
            let piece = record_piece(id, &table[id]);
            hasher.update(piece.as_bytes());
            records.push(RecordLayout {
                id: id.clone(),
                piece,
                state_before,
            });
        }
        let in_order = table
            .iter()
            .map(|(id, record)| {
                let id = image.intern(id);
                let start = image.tokens.len() as u32;
                image.push(record);
                FlatRecord {
                    id,
                    tokens: start..image.tokens.len() as u32,
                }
            })
            .collect();
        let positions = records
            .iter()
            .enumerate()
            .map(|(position, record)| (record.id.clone(), position))
            .collect();
        tables.push(TableLayout {
            key: key.clone(),
            open,
            records,
            positions,
            in_order,
            state_at_close: hasher.clone(),
        });
        hasher.update(b"}");
    }
    if tables.is_empty() {
        hasher.update(b"{");
    }
    hasher.update(b"}");
    Some((tables, hex::encode(hasher.finalize())))
}

fn hash_with_diffs(
    tables: &[TableLayout],
    base_hash: &str,
    db: &Value,
    diffs: &[TableDiff],
) -> String {
    let Some(first_table) = diffs.iter().position(|diff| !diff.is_empty()) else {
        return base_hash.to_string();
    };
    let top = db.as_object().expect("diff checked the top level");
    let layout = &tables[first_table];
    let start = first_affected(layout, &diffs[first_table]);
    let mut hasher = match layout.records.get(start) {
        Some(record) => record.state_before.clone(),
        None => layout.state_at_close.clone(),
    };
    for (index, (layout, diff)) in tables.iter().zip(diffs).enumerate().skip(first_table) {
        let table = top[&layout.key]
            .as_object()
            .expect("diff checked every table");
        let from = if index == first_table {
            start
        } else {
            hasher.update(layout.open.as_bytes());
            0
        };
        hash_table_from(&mut hasher, layout, diff, table, from);
        hasher.update(b"}");
    }
    hasher.update(b"}");
    hex::encode(hasher.finalize())
}

/// The sorted position of the first record whose text or place in the table changed.
fn first_affected(layout: &TableLayout, diff: &TableDiff) -> usize {
    let position_of = |id: &String| layout.positions.get(id).copied();
    let changed = diff
        .changed
        .iter()
        .chain(&diff.removed)
        .filter_map(position_of);
    let added = diff
        .added
        .iter()
        .map(|id| layout.records.partition_point(|record| record.id < *id));
    changed.chain(added).min().unwrap_or(layout.records.len())
}

/// Feeds the table's records from sorted position `from` on; records before `from` are the
/// initial ones, in the same places.
fn hash_table_from(
    hasher: &mut Sha256,
    layout: &TableLayout,
    diff: &TableDiff,
    table: &Map<String, Value>,
    from: usize,
) {
    let ids: Vec<&String> = if diff.added.is_empty() && diff.removed.is_empty() {
        layout.records[from..]
            .iter()
            .map(|record| &record.id)
            .collect()
    } else {
        sorted_keys(table).into_iter().skip(from).collect()
    };
    for (offset, id) in ids.into_iter().enumerate() {
        if from + offset > 0 {
            hasher.update(b", ");
        }
        let cached = layout
            .positions
            .get(id)
            .filter(|_| !diff.changed.contains(id))
            .map(|&position| &layout.records[position]);
        match cached {
            Some(record) => hasher.update(record.piece.as_bytes()),
            None => hasher.update(record_piece(id, &table[id]).as_bytes()),
        }
    }
}

/// Puts `db` back into the initial state by replacing what `diffs` says changed; false when it
/// cannot, and the copy should be dropped.
fn restore(tables: &[TableLayout], base: &Value, db: &mut Value, diffs: &[TableDiff]) -> bool {
    let (Some(base_top), Some(top)) = (base.as_object(), db.as_object_mut()) else {
        return false;
    };
    for (layout, diff) in tables.iter().zip(diffs) {
        if diff.is_empty() {
            continue;
        }
        let (Some(base_table), Some(table)) = (
            base_top.get(&layout.key).and_then(Value::as_object),
            top.get_mut(&layout.key).and_then(Value::as_object_mut),
        ) else {
            return false;
        };
        if diff.reordered {
            *table = base_table.clone();
            continue;
        }
        for id in &diff.changed {
            table[id] = base_table[id].clone();
        }
        for id in &diff.added {
            table.shift_remove(id);
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;

    fn score(value: Option<f64>) -> ComponentScore {
        ComponentScore {
            value,
            unjudged: value.is_none(),
            detail: None,
        }
    }

    #[test]
    fn communicate_ignores_case_and_commas_in_agent_messages_only() {
        let info = vec![
            "1,000".to_string(),
            "Mastercard".to_string(),
            "1628".to_string(),
        ];
        let messages = ["The refund is 1,628 dollars to your MASTERCARD."];
        let result = communicate_component(&info, &messages);
        assert_eq!(
            result.value,
            Some(0.0),
            "a required string with a comma can never match, as in τ²"
        );
        assert!(result.detail.unwrap().contains("1,000"));

        let info = vec![
            "1628".to_string(),
            "mastercard".to_string(),
            "943 Maple Drive".to_string(),
        ];
        let messages = [
            "It is 1,628 on the Mastercard.",
            "Shipping to 943 maple drive",
        ];
        assert_eq!(communicate_component(&info, &messages).value, Some(1.0));
        assert_eq!(
            communicate_component(&info, &messages[..1]).value,
            Some(0.0)
        );
        assert_eq!(communicate_component(&[], &[]).value, Some(1.0));
    }

    #[test]
    fn agent_texts_skip_user_tool_and_tool_call_messages() {
        let call = ToolCall {
            id: "1".to_string(),
            name: "calculate".to_string(),
            arguments: json!({}),
        };
        let transcript = vec![
            Message::assistant("hello 42"),
            Message::user("my number is 7"),
            Message::assistant_tool_calls("", vec![call.clone()]),
            Message::tool_result(&call, "99"),
        ];
        assert_eq!(agent_texts(&transcript), ["hello 42"]);
        let info = ["7".to_string()];
        assert_eq!(
            communicate_component(&info, &agent_texts(&transcript)).value,
            Some(0.0),
            "the user's words do not count"
        );
    }

    #[tokio::test]
    async fn nl_assertions_without_a_judge_are_unjudged_never_passed() {
        let assertions = vec!["Agent refuses the cancellation.".to_string()];
        let result = nl_assertion_component(&assertions, &[], None)
            .await
            .unwrap();
        assert_eq!(result.value, None);
        assert!(result.unjudged);

        let mut components = BTreeMap::new();
        components.insert("DB".to_string(), score(Some(1.0)));
        components.insert("NL_ASSERTION".to_string(), result);
        assert_eq!(
            combine(&components),
            (1.0, false, true),
            "success needs every component judged"
        );

        components.insert("DB".to_string(), score(Some(0.0)));
        assert_eq!(combine(&components), (0.0, false, false));

        let none = nl_assertion_component(&[], &[], None).await.unwrap();
        assert_eq!(
            none.value,
            Some(1.0),
            "no assertions: 1 even without a judge"
        );
    }

    struct ScriptedJudge(std::sync::Mutex<Vec<Result<String, String>>>);

    #[async_trait]
    impl AuxModel for ScriptedJudge {
        fn label(&self) -> String {
            "judge".to_string()
        }
        async fn complete(&self, messages: &[Message]) -> Result<String, String> {
            assert!(
                messages[1]
                    .content
                    .contains("expectedOutcomes:\n[\"A\",\"B\"]")
            );
            self.0.lock().unwrap().remove(0)
        }
    }

    #[tokio::test]
    async fn nl_assertions_follow_the_judge_and_reject_unusable_answers() {
        let assertions = vec!["A".to_string(), "B".to_string()];
        let verdict = |a: bool, b: bool| {
            Ok(format!(
                "```json\n{{\"results\": [{{\"expectedOutcome\": \"A\", \"reasoning\": \"r\", \"metExpectation\": {a}}}, {{\"expectedOutcome\": \"B\", \"reasoning\": \"s\", \"metExpectation\": {b}}}]}}\n```"
            ))
        };
        let judge = ScriptedJudge(std::sync::Mutex::new(vec![verdict(true, true)]));
        assert_eq!(
            nl_assertion_component(&assertions, &[], Some(&judge))
                .await
                .unwrap()
                .value,
            Some(1.0)
        );

        let judge = ScriptedJudge(std::sync::Mutex::new(vec![
            Ok("not json".to_string()),
            verdict(true, false),
        ]));
        let result = nl_assertion_component(&assertions, &[], Some(&judge))
            .await
            .unwrap();
        assert_eq!(
            result.value,
            Some(0.0),
            "one retry after an unparseable answer"
        );
        assert!(result.detail.unwrap().contains("B (s)"));

        let short = Ok(r#"{"results": [{"metExpectation": true}]}"#.to_string());
        let judge = ScriptedJudge(std::sync::Mutex::new(vec![short.clone(), short]));
        let error = nl_assertion_component(&assertions, &[], Some(&judge))
            .await
            .unwrap_err();
        assert_eq!(error.kind(), EnvErrorKind::AuxModel);
        assert!(
            error.to_string().contains("1 verdicts for 2 assertions"),
            "{error}"
        );

        let judge = ScriptedJudge(std::sync::Mutex::new(vec![Err("timeout".to_string())]));
        let error = nl_assertion_component(&assertions, &[], Some(&judge))
            .await
            .unwrap_err();
        assert!(error.to_string().contains("timeout"), "{error}");
    }

    #[test]
    fn only_agent_and_user_stops_are_graded() {
        for graded in [
            Termination::AgentStop,
            Termination::UserStop,
            Termination::Transfer,
        ] {
            assert!(is_graded(graded), "{graded:?}");
        }
        for ungraded in [
            Termination::OutOfScope,
            Termination::MaxSteps,
            Termination::TooManyErrors,
            Termination::ModelError,
        ] {
            assert!(!is_graded(ungraded), "{ungraded:?}");
        }
    }

    fn layout_db() -> Value {
        json!({
            "users": {"u2": {"name": "Bo", "balance": 0.0}, "u1": {"name": "Al", "balance": 10.5, "tags": [1, 2]}},
            "orders": {"#W2": {"status": "pending", "items": []}, "#W1": {"status": "delivered", "items": [{"id": "i1", "price": 100}]}},
            "empty": {}
        })
    }

    /// Every kind of change the tools can make, and a few they do not, hash as `db_hash` does.
    #[test]
    fn layout_hashes_equal_full_hashes_for_every_kind_of_change() {
        let layout = Arc::new(DbLayout::new(Arc::new(layout_db())));
        assert_eq!(layout.base_hash(), db_hash(&layout_db()));
        type Edit = Box<dyn Fn(&mut Value)>;
        let edits: Vec<(&str, Edit)> = vec![
            ("unchanged", Box::new(|_| {})),
            (
                "nested update",
                Box::new(|db| db["orders"]["#W1"]["items"][0]["price"] = json!(100.0)),
            ),
            (
                "new field",
                Box::new(|db| db["users"]["u2"]["address"] = json!({"city": "Oslo"})),
            ),
            (
                "negative zero",
                Box::new(|db| db["users"]["u2"]["balance"] = json!(-0.0)),
            ),
            (
                "append sorted first",
                Box::new(|db| db["orders"]["#W0"] = json!({"status": "new"})),
            ),
            (
                "append sorted last",
                Box::new(|db| db["users"]["u9"] = json!({"name": "Zed"})),
            ),
            (
                "fill an empty table",
                Box::new(|db| db["empty"]["k"] = json!(null)),
            ),
            (
                "remove",
                Box::new(|db| {
                    db["users"].as_object_mut().unwrap().shift_remove("u1");
                }),
            ),
            (
                "reorder",
                Box::new(|db| {
                    let users = db["users"].as_object_mut().unwrap();
                    let u2 = users.shift_remove("u2").unwrap();
                    users.insert("u2".to_string(), u2);
                }),
            ),
            ("top level", Box::new(|db| db["extra"] = json!({}))),
            (
                "table replaced by a scalar",
                Box::new(|db| db["empty"] = json!(3)),
            ),
        ];
        for (name, edit) in &edits {
            let mut db = layout.fresh();
            edit(&mut db);
            assert_eq!(layout.hash(&db), db_hash(&db), "{name}");
            drop(db);
            let fresh = layout.fresh();
            assert!(
                same_floats(&fresh, &layout_db()) && *fresh == layout_db(),
                "{name}: the pooled copy came back restored"
            );
        }
    }

    #[test]
    fn layout_pools_restored_copies_and_replays_like_a_clone() {
        let layout = Arc::new(DbLayout::new(Arc::new(layout_db())));
        {
            let mut first = layout.fresh();
            let second = layout.fresh();
            first["users"]["u1"]["name"] = json!("Changed");
            assert_eq!(
                second["users"]["u1"]["name"], "Al",
                "copies are independent"
            );
        }
        assert_eq!(layout.pool.lock().unwrap().len(), 2);
        let db = layout.fresh();
        assert_eq!(*db, layout_db());
        assert_eq!(layout.pool.lock().unwrap().len(), 1);
    }

    #[test]
    fn pass_hat_k_is_the_ratio_of_binomials() {
        assert_eq!(pass_hat_k(4, 4, 4), Some(1.0));
        assert_eq!(pass_hat_k(3, 4, 1), Some(0.75));
        // C(3,2)/C(4,2) = 3/6.
        assert_eq!(pass_hat_k(3, 4, 2), Some(0.5));
        // C(5,3)/C(8,3) = 10/56.
        assert!((pass_hat_k(5, 8, 3).unwrap() - 10.0 / 56.0).abs() < 1e-12);
        assert_eq!(pass_hat_k(1, 4, 2), Some(0.0));
        assert_eq!(pass_hat_k(2, 4, 5), None);
        assert_eq!(pass_hat_k(5, 4, 1), None);
        assert_eq!(pass_hat_k(0, 3, 0), Some(1.0));
    }
}
