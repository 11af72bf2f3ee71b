//! `compact_prompt`: a prompt format for small context windows (SmolLM2 and the like).
//!
//! - `task_start`: a terse system prompt from `template` (`{env}`, `{instructions}`, `{tools}`, as
//!   in `system_prompt`, which this kind replaces: both hold the `system_prompt` group). `{tools}`
//!   lists each tool as one line, `name(arg: type, opt?: type) — first sentence of its description`,
//!   followed by one example call in `call_format`. Instructions longer than
//!   `instructions_chars` are cut with the truncation marker.
//! - `before_model` (the request only; the stored conversation is untouched):
//!   1. every observation after the head (tool results, and user messages, which carry text
//!      observations in ALFWorld/WebShop) longer than `observation_chars` keeps its beginning
//!      plus `truncation_marker`;
//!   2. while the prompt is over `max_chars` characters (about 4 per token), whole turns are
//!      dropped oldest first. The head (everything up to and including the first user message:
//!      system prompt, opening, task) and the latest `min_turns` turns are always kept, so the
//!      prompt may stay over budget; the note then says `over_budget`. A turn is an assistant
//!      message with every message up to the next assistant message, so a tool call is never
//!      separated from its results, whether the messages are native or already turned into text
//!      by `tool_catalogue`. When turns were dropped, `omitted_marker` is appended to the last
//!      head message so the model knows history is missing.
//!   3. the number of dropped turns is rounded up to a multiple of `trim_chunk_turns` (still
//!      keeping `min_turns`). With chunks of n turns the kept prompt keeps the same beginning for
//!      about n steps, so a model server's prefix cache reuses everything but the new turn;
//!      dropping one turn per step would change the prompt right after the head at every step.
//!   4. `stop` is added to the request's stop sequences (`["\n"]`: a reply is one action line,
//!      so it cannot run on by echoing the observation).
//!
//! A step whose request was shortened gets a note with what was cut.

use async_trait::async_trait;
use kiln_protocol::{Hook, Message, Role, ToolSchema};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::builtin::system_prompt::{self, SystemPromptConfig};
use crate::builtin::tool_parser::{TextCallFormat, render_call};
use crate::error::ProcessorError;
use crate::events::{BeforeModelEvent, TaskStartEvent};
use crate::processor::{BuiltinKind, ConfigError, Processor, ProcessorConfig};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompactPromptConfig {
    /// System prompt template with `{env}`, `{instructions}`, `{tools}`.
    pub template: String,
    /// The call format shown in the example call under the tool list.
    pub call_format: TextCallFormat,
    /// Characters of the environment's instructions kept (0: all).
    pub instructions_chars: usize,
    /// Characters of each observation kept (0: all).
    pub observation_chars: usize,
    /// Appended to a cut text; `{omitted}` is the number of characters cut.
    pub truncation_marker: String,
    /// Budget of the whole prompt in characters (0: none).
    pub max_chars: usize,
    /// Latest turns kept even when over budget.
    pub min_turns: usize,
    /// Appended to the last head message when turns were dropped; `{count}` is how many. Empty:
    /// no marker.
    pub omitted_marker: String,
    /// Caps the tokens one reply may generate (0: the model spec's limit). A compact step is one
    /// short action; a small model that does not stop would otherwise run to the spec's limit.
    pub max_completion_tokens: u32,
    /// Turns are dropped in multiples of this many (1: one at a time), so the prompt's beginning
    /// stays the same for several steps.
    pub trim_chunk_turns: usize,
    /// Stop sequences added to every request (a reply ends at the first one).
    pub stop: Vec<String>,
}

impl Default for CompactPromptConfig {
    fn default() -> Self {
        Self {
            template: "You are an agent in {env}. Be brief.\n\n{instructions}\n\n{tools}"
                .to_string(),
            call_format: TextCallFormat::Action,
            instructions_chars: 0,
            observation_chars: 1500,
            truncation_marker: " …[{omitted} characters cut]".to_string(),
            max_chars: 8000,
            min_turns: 1,
            omitted_marker: "[{count} earlier turns omitted]".to_string(),
            max_completion_tokens: 0,
            trim_chunk_turns: 1,
            stop: Vec::new(),
        }
    }
}

impl ProcessorConfig for CompactPromptConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.template.trim().is_empty() {
            return Err(ConfigError::new("template", "must not be empty"));
        }
        if self.trim_chunk_turns == 0 {
            return Err(ConfigError::new(
                "trim_chunk_turns",
                "must be at least 1 (turns are dropped one at a time with 1)",
            ));
        }
        if self.stop.iter().any(String::is_empty) {
            return Err(ConfigError::new("stop", "stop sequences must not be empty"));
        }
        if self.min_turns == 0 {
            return Err(ConfigError::new(
                "min_turns",
                "must be at least 1 (the latest turn is always kept)",
            ));
        }
        Ok(())
    }
}

pub fn kind() -> BuiltinKind<CompactPromptConfig> {
    BuiltinKind {
        name: "compact_prompt",
        summary: "terse system prompt with one-line tool signatures; observations cut to a budget, oldest turns dropped to fit a total budget",
        hooks: &[Hook::TaskStart, Hook::BeforeModel],
        group: Some("system_prompt"),
        build: |config| Box::new(CompactPrompt { config }),
    }
}

/// Longest first sentence kept in a tool signature.
const MAX_SUMMARY_CHARS: usize = 160;

/// The tool list as one line per tool plus an example call; empty without tools.
pub fn render_signatures(tools: &[ToolSchema], format: TextCallFormat) -> String {
    if tools.is_empty() {
        return String::new();
    }
    let mut text = String::from("Tools:\n");
    for tool in tools {
        text.push_str(&signature(tool));
        text.push('\n');
    }
    let example = render_call(format, "tool_name", &json!({"arg": "value"}));
    text.push_str(&format!("Call a tool with: {example}"));
    text
}

/// `name(arg: type, opt?: type) — first sentence`.
pub fn signature(tool: &ToolSchema) -> String {
    let required: Vec<&str> = tool.parameters["required"]
        .as_array()
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let arguments: Vec<String> = tool.parameters["properties"]
        .as_object()
        .map(|properties| {
            properties
                .iter()
                .map(|(name, schema)| {
                    let optional = if required.contains(&name.as_str()) {
                        ""
                    } else {
                        "?"
                    };
                    format!("{name}{optional}: {}", type_name(schema))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut line = format!("{}({})", tool.name, arguments.join(", "));
    let summary = first_sentence(&tool.description);
    if !summary.is_empty() {
        line.push_str(" — ");
        line.push_str(&summary);
    }
    line
}

/// A short type for a JSON Schema: `string`, `integer[]`, `"a"|"b"`, `string|null`, `any`.
pub fn type_name(schema: &Value) -> String {
    if let Some(values) = schema["enum"].as_array() {
        return values
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("|");
    }
    if let Some(reference) = schema["$ref"].as_str() {
        return reference
            .rsplit('/')
            .next()
            .unwrap_or(reference)
            .to_string();
    }
    match &schema["type"] {
        Value::String(name) if name == "array" => format!("{}[]", type_name(&schema["items"])),
        Value::String(name) => name.clone(),
        Value::Array(names) => names
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join("|"),
        _ => alternatives(schema).unwrap_or_else(|| "any".to_string()),
    }
}

/// `anyOf`/`oneOf` as `a|b`, without repeats.
fn alternatives(schema: &Value) -> Option<String> {
    let options = schema["anyOf"]
        .as_array()
        .or_else(|| schema["oneOf"].as_array())?;
    let mut names: Vec<String> = Vec::new();
    for name in options.iter().map(type_name) {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    Some(names.join("|"))
}

/// The description's first sentence (up to the first `. ` or line break), at most
/// [`MAX_SUMMARY_CHARS`] characters.
pub fn first_sentence(description: &str) -> String {
    let text = description.trim();
    let line = text.lines().next().unwrap_or("").trim();
    let sentence = match line.find(". ") {
        Some(end) => &line[..=end],
        None => line,
    };
    truncate_chars(sentence, MAX_SUMMARY_CHARS, "…")
}

fn truncate_chars(text: &str, max: usize, ellipsis: &str) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}{ellipsis}", &text[..cut]),
        None => text.to_string(),
    }
}

/// `text` cut to `max` characters plus the marker (with `{omitted}` filled), or `None` when it
/// fits or `max` is 0.
pub fn truncate_observation(text: &str, max: usize, marker: &str) -> Option<String> {
    if max == 0 {
        return None;
    }
    let (cut, _) = text.char_indices().nth(max)?;
    let omitted = text[cut..].chars().count();
    let marker = marker.replace("{omitted}", &omitted.to_string());
    Some(format!("{}{marker}", &text[..cut]))
}

/// Characters a message costs in the budget: its text plus its native calls.
pub fn message_chars(message: &Message) -> usize {
    let calls: usize = message
        .tool_calls
        .iter()
        .map(|call| call.name.chars().count() + call.arguments.to_string().chars().count())
        .sum();
    message.content.chars().count() + calls
}

/// Index just past the head: everything up to and including the first user message, or the
/// leading system messages when there is no user message.
pub fn head_len(messages: &[Message]) -> usize {
    match messages
        .iter()
        .position(|message| message.role == Role::User)
    {
        Some(first_user) => first_user + 1,
        None => messages
            .iter()
            .take_while(|message| message.role == Role::System)
            .count(),
    }
}

/// Splits the messages after the head into turns: each assistant message starts one; messages
/// before the first assistant message form a turn of their own.
pub fn turns(rest: &[Message]) -> Vec<&[Message]> {
    let mut turns = Vec::new();
    let mut start = 0;
    for (index, message) in rest.iter().enumerate() {
        if message.role == Role::Assistant && index > start {
            turns.push(&rest[start..index]);
            start = index;
        }
    }
    if start < rest.len() {
        turns.push(&rest[start..]);
    }
    turns
}

/// What [`compact`] cut.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CompactReport {
    pub truncated_observations: usize,
    pub dropped_turns: usize,
    pub chars_before: usize,
    pub chars_after: usize,
    /// Still over `max_chars` after dropping every droppable turn.
    pub over_budget: bool,
}

impl CompactReport {
    pub fn changed(&self) -> bool {
        self.truncated_observations > 0 || self.dropped_turns > 0
    }
}

/// The compacted request messages (see the module docs) and what was cut.
pub fn compact(
    messages: &[Message],
    config: &CompactPromptConfig,
) -> (Vec<Message>, CompactReport) {
    let mut report = CompactReport {
        chars_before: messages.iter().map(message_chars).sum(),
        ..CompactReport::default()
    };
    let head_end = head_len(messages);
    let mut head = messages[..head_end].to_vec();
    let mut rest = messages[head_end..].to_vec();
    for message in rest
        .iter_mut()
        .filter(|message| matches!(message.role, Role::Tool | Role::User))
    {
        if let Some(cut) = truncate_observation(
            &message.content,
            config.observation_chars,
            &config.truncation_marker,
        ) {
            message.content = cut;
            report.truncated_observations += 1;
        }
    }

    let turns = turns(&rest);
    let turn_chars: Vec<usize> = turns
        .iter()
        .map(|turn| turn.iter().map(message_chars).sum())
        .collect();
    let head_chars: usize = head.iter().map(message_chars).sum();
    let mut total = head_chars + turn_chars.iter().sum::<usize>();
    let mut dropped = 0;
    if config.max_chars > 0 {
        while total > config.max_chars && turns.len() - dropped > config.min_turns {
            total -= turn_chars[dropped];
            dropped += 1;
            if dropped == 1 {
                total += omitted_marker_chars(config, dropped);
            }
        }
    }
    // A chunk larger than half of what fits would hit the `min_turns` floor and move the cut
    // every step (the opposite of the point), so the chunk shrinks with a small budget.
    let fitting = turns.len() - dropped;
    let chunk = config.trim_chunk_turns.min((fitting / 2).max(1));
    dropped = chunked(dropped, chunk, turns.len().saturating_sub(config.min_turns));
    report.dropped_turns = dropped;
    if dropped > 0 {
        mark_omitted(&mut head, config, dropped);
    }
    let mut kept = head;
    for turn in &turns[dropped..] {
        kept.extend_from_slice(turn);
    }
    report.chars_after = kept.iter().map(message_chars).sum();
    report.over_budget = config.max_chars > 0 && report.chars_after > config.max_chars;
    (kept, report)
}

/// `dropped` rounded up to a multiple of `chunk`, but never past `droppable`.
pub fn chunked(dropped: usize, chunk: usize, droppable: usize) -> usize {
    if dropped == 0 || chunk <= 1 {
        return dropped;
    }
    dropped
        .div_ceil(chunk)
        .saturating_mul(chunk)
        .min(droppable)
        .max(dropped)
}

fn omitted_marker_text(config: &CompactPromptConfig, count: usize) -> String {
    config.omitted_marker.replace("{count}", &count.to_string())
}

/// Characters the omitted marker adds (with its separator), estimated with `count` dropped turns.
fn omitted_marker_chars(config: &CompactPromptConfig, count: usize) -> usize {
    if config.omitted_marker.is_empty() {
        return 0;
    }
    // Later counts may add a digit or two; the final total is measured, not estimated.
    omitted_marker_text(config, count).chars().count() + 2
}

fn mark_omitted(head: &mut Vec<Message>, config: &CompactPromptConfig, count: usize) {
    if config.omitted_marker.is_empty() {
        return;
    }
    let marker = omitted_marker_text(config, count);
    match head.last_mut() {
        Some(last) => {
            last.content.push_str("\n\n");
            last.content.push_str(&marker);
        }
        None => head.push(Message::user(marker)),
    }
}

struct CompactPrompt {
    config: CompactPromptConfig,
}

#[async_trait]
impl Processor for CompactPrompt {
    async fn task_start(&mut self, event: &mut TaskStartEvent<'_>) -> Result<(), ProcessorError> {
        let env = event.env();
        let instructions = if self.config.instructions_chars == 0 {
            env.instructions.clone()
        } else {
            truncate_observation(
                &env.instructions,
                self.config.instructions_chars,
                &self.config.truncation_marker,
            )
            .unwrap_or_else(|| env.instructions.clone())
        };
        let tools = render_signatures(&env.tools, self.config.call_format);
        let template = SystemPromptConfig {
            template: self.config.template.clone(),
            append_tools: true,
        };
        let prompt = system_prompt::render(&template, instructions.trim(), &tools, &env.env);
        event.set_system_prompt(Some(prompt));
        Ok(())
    }

    async fn before_model(
        &mut self,
        event: &mut BeforeModelEvent<'_>,
    ) -> Result<(), ProcessorError> {
        let cap = self.config.max_completion_tokens;
        if cap > 0 && event.sampling().max_tokens > cap {
            event.sampling_mut().max_tokens = cap;
        }
        for stop in &self.config.stop {
            if !event.stop_sequences().contains(stop) {
                event.stop_sequences_mut().push(stop.clone());
            }
        }
        let (compacted, report) = compact(event.messages(), &self.config);
        if !report.changed() {
            return Ok(());
        }
        event.note(json!({"compact_prompt": report, "budget": self.config.max_chars}));
        *event.messages_mut() = compacted;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin::test_support::{env_with_tools, task};
    use crate::processor::ProcessorKind;
    use kiln_protocol::{SamplingParams, ToolCall};

    fn tool(name: &str, description: &str, parameters: Value) -> ToolSchema {
        ToolSchema {
            name: name.into(),
            description: description.into(),
            parameters,
        }
    }

    #[test]
    fn signatures_are_one_line_with_types_and_the_first_sentence() {
        let exchange = tool(
            "exchange_items",
            "Exchange items of a delivered order. The order must be delivered.\nMore details.",
            json!({
                "type": "object",
                "properties": {
                    "order_id": {"type": "string"},
                    "item_ids": {"type": "array", "items": {"type": "string"}},
                    "reason": {"type": "string", "enum": ["no longer needed", "ordered by mistake"]},
                    "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                },
                "required": ["order_id", "item_ids", "reason"],
            }),
        );
        assert_eq!(
            signature(&exchange),
            "exchange_items(order_id: string, item_ids: string[], reason: \"no longer needed\"|\"ordered by mistake\", note?: string|null) — Exchange items of a delivered order."
        );
        let bare = tool("think", "", json!({"type": "object"}));
        assert_eq!(signature(&bare), "think()");
    }

    #[test]
    fn the_tool_block_ends_with_an_example_call() {
        let env = env_with_tools(&["get_order"]);
        let text = render_signatures(&env.tools, TextCallFormat::Action);
        assert_eq!(
            text,
            "Tools:\nget_order(id?: string) — Does get_order.\nCall a tool with: Action: tool_name[{\"arg\":\"value\"}]"
        );
        assert_eq!(render_signatures(&[], TextCallFormat::Action), "");
    }

    #[test]
    fn observations_keep_their_beginning_and_a_marker() {
        let cut = truncate_observation("abcdefghij", 4, " …[{omitted} cut]").unwrap();
        assert_eq!(cut, "abcd …[6 cut]");
        assert_eq!(truncate_observation("abcd", 4, "x"), None);
        assert_eq!(truncate_observation("abcdefgh", 0, "x"), None);
        // Character, not byte, boundaries.
        assert_eq!(truncate_observation("ééééé", 2, "|").unwrap(), "éé|");
    }

    fn call(id: &str) -> ToolCall {
        ToolCall {
            id: id.into(),
            name: "lookup".into(),
            arguments: json!({"id": id}),
        }
    }

    /// System, greeting, task, then three tool turns and a closing exchange.
    fn long_conversation() -> Vec<Message> {
        let mut messages = vec![
            Message::system("policy"),
            Message::assistant("Hi! How can I help?"),
            Message::user("Find my three orders."),
        ];
        for id in ["a", "b", "c"] {
            messages.push(Message::assistant_tool_calls("", vec![call(id)]));
            messages.push(Message::tool_result(&call(id), "x".repeat(100)));
        }
        messages.push(Message::assistant("Found them."));
        messages.push(Message::user("thanks"));
        messages
    }

    fn config(max_chars: usize) -> CompactPromptConfig {
        CompactPromptConfig {
            max_chars,
            observation_chars: 0,
            ..CompactPromptConfig::default()
        }
    }

    #[test]
    fn turns_start_at_assistant_messages() {
        let messages = long_conversation();
        let head = head_len(&messages);
        assert_eq!(head, 3);
        let turns = turns(&messages[head..]);
        let sizes: Vec<usize> = turns.iter().map(|turn| turn.len()).collect();
        assert_eq!(sizes, [2, 2, 2, 2]);
        assert!(turns.iter().all(|turn| turn[0].role == Role::Assistant));
    }

    #[test]
    fn nothing_changes_within_budget() {
        let messages = long_conversation();
        let (kept, report) = compact(&messages, &config(10_000));
        assert_eq!(kept, messages);
        assert!(!report.changed());
        assert_eq!(report.chars_before, report.chars_after);
    }

    #[test]
    fn the_oldest_turns_go_first_and_the_head_stays() {
        let messages = long_conversation();
        let total: usize = messages.iter().map(message_chars).sum();
        // A tool turn costs 116 characters and the marker 27: one dropped turn makes room.
        let budget = total - 80;
        let (kept, report) = compact(&messages, &config(budget));
        assert_eq!(report.dropped_turns, 1);
        assert!(!report.over_budget);
        assert!(report.chars_after <= budget);
        assert_eq!(&kept[..2], &messages[..2]);
        assert!(kept[2].content.starts_with("Find my three orders."));
        assert!(kept[2].content.ends_with("[1 earlier turns omitted]"));
        // Turn "a" is gone, "b" is the first kept.
        assert_eq!(kept[3].tool_calls[0].id, "b");
        assert_eq!(kept.last().unwrap().content, "thanks");
    }

    #[test]
    fn an_impossible_budget_keeps_the_head_and_the_latest_turns() {
        let messages = long_conversation();
        let tight = CompactPromptConfig {
            min_turns: 2,
            omitted_marker: String::new(),
            ..config(10)
        };
        let (kept, report) = compact(&messages, &tight);
        assert_eq!(report.dropped_turns, 2);
        assert!(report.over_budget);
        assert_eq!(&kept[..3], &messages[..3]);
        assert_eq!(kept[3].tool_calls[0].id, "c");
        assert_eq!(kept.len(), 3 + 4);
    }

    #[test]
    fn observations_after_the_head_are_truncated() {
        let mut messages = long_conversation();
        messages[2].content = "t".repeat(50);
        let cut = CompactPromptConfig {
            observation_chars: 10,
            ..config(0)
        };
        let (kept, report) = compact(&messages, &cut);
        assert_eq!(report.truncated_observations, 3);
        assert_eq!(
            kept[2].content, messages[2].content,
            "the task is never cut"
        );
        assert_eq!(kept[4].content, "xxxxxxxxxx …[90 characters cut]");
        assert_eq!(kept.last().unwrap().content, "thanks");
    }

    #[tokio::test]
    async fn task_start_sets_a_terse_system_prompt() {
        let task = task();
        let env = env_with_tools(&["lookup"]);
        let mut event = TaskStartEvent::new(&task, &env, SamplingParams::default());
        let config = json!({"template": "Agent in {env}.\n{instructions}\n{tools}", "instructions_chars": 6});
        let mut processor = kind().instantiate(&config).unwrap();
        processor.task_start(&mut event).await.unwrap();
        assert_eq!(
            event.system_prompt().unwrap(),
            "Agent in test-env.\nFollow …[12 characters cut]\nTools:\nlookup(id?: string) — Does lookup.\nCall a tool with: Action: tool_name[{\"arg\":\"value\"}]"
        );
    }

    /// The request messages of every step of a growing ReAct-text episode: a head, then one
    /// assistant action and one observation per step.
    fn prompts_over_steps(config: &CompactPromptConfig, steps: usize) -> Vec<Vec<Message>> {
        let mut conversation = vec![
            Message::system("You are an agent."),
            Message::user("Your task is to: put a clean apple in the fridge."),
        ];
        let mut prompts = Vec::new();
        for step in 0..steps {
            prompts.push(compact(&conversation, config).0);
            conversation.push(Message::assistant(format!("Action: go to cabinet {step}")));
            conversation.push(Message::user(format!(
                "Observation: You arrive at cabinet {step}. It is closed.{}",
                " ".repeat(step % 7)
            )));
        }
        prompts
    }

    /// Steps whose prompt does not start with the whole previous prompt.
    fn prefix_breaks(prompts: &[Vec<Message>]) -> usize {
        prompts
            .windows(2)
            .filter(|pair| !pair[1].starts_with(&pair[0]))
            .count()
    }

    #[test]
    fn chunked_trimming_keeps_the_prompt_prefix_stable() {
        // A budget that holds about 20 turns, so a chunk of 8 fits well inside it.
        let one_at_a_time = config(1600);
        let chunked = CompactPromptConfig {
            trim_chunk_turns: 8,
            ..config(1600)
        };
        let steps = 80;
        let single = prompts_over_steps(&one_at_a_time, steps);
        let batched = prompts_over_steps(&chunked, steps);
        // Both stay within budget (the latest turns fit easily).
        for prompt in single.iter().chain(&batched) {
            assert!(prompt.iter().map(message_chars).sum::<usize>() <= 1600);
        }
        let single_breaks = prefix_breaks(&single);
        let batched_breaks = prefix_breaks(&batched);
        // One turn at a time: once over budget, nearly every step changes the prompt's beginning.
        assert!(single_breaks >= 50, "{single_breaks}");
        // In chunks of 8: at most one break per 8 steps.
        assert!(
            batched_breaks <= steps.div_ceil(8),
            "{batched_breaks} breaks in {steps} steps"
        );
        // A budget smaller than the chunk: the chunk shrinks instead of moving the cut every step.
        let tight = CompactPromptConfig {
            trim_chunk_turns: 8,
            ..config(600)
        };
        let tight_breaks = prefix_breaks(&prompts_over_steps(&tight, steps));
        assert!(
            tight_breaks < single_breaks / 2,
            "{tight_breaks} breaks with a tight budget vs {single_breaks} one turn at a time"
        );
        // The head (system prompt and task) always leads.
        for prompt in &batched {
            assert_eq!(prompt[0].content, "You are an agent.");
            assert!(prompt[1].content.starts_with("Your task is to:"));
        }
    }

    #[test]
    fn chunks_round_the_drop_up_but_keep_the_latest_turns() {
        assert_eq!(chunked(0, 8, 20), 0);
        assert_eq!(chunked(1, 8, 20), 8);
        assert_eq!(chunked(8, 8, 20), 8);
        assert_eq!(chunked(9, 8, 20), 16);
        assert_eq!(chunked(9, 8, 12), 12);
        assert_eq!(chunked(5, 1, 20), 5);
    }

    #[tokio::test]
    async fn configured_stop_sequences_are_added_to_the_request_once() {
        let env = env_with_tools(&[]);
        let task = task();
        let conversation = vec![Message::user("Your task is to: look.")];
        let ctx = crate::events::StepContext::new(&task, &env, 0, &conversation);
        let mut event = BeforeModelEvent::new(
            ctx,
            Vec::new(),
            SamplingParams::default(),
            vec!["\n".to_string()],
        );
        let mut processor = kind()
            .instantiate(&json!({"stop": ["\n", "Observation:"]}))
            .unwrap();
        processor.before_model(&mut event).await.unwrap();
        assert_eq!(event.stop_sequences(), ["\n", "Observation:"]);
        let error = kind().normalize_config(&json!({"stop": [""]})).unwrap_err();
        assert_eq!(error.field, "stop");
        let error = kind()
            .normalize_config(&json!({"trim_chunk_turns": 0}))
            .unwrap_err();
        assert_eq!(error.field, "trim_chunk_turns");
    }

    #[test]
    fn zero_min_turns_is_rejected() {
        let error = kind()
            .normalize_config(&json!({"min_turns": 0}))
            .unwrap_err();
        assert_eq!(error.field, "min_turns");
    }
}
