//! `tool_parser`: turns the model's reply into actions at `after_model`.
//!
//! Accepted forms, tried in this order:
//! 1. **Native tool calls** (`native = true`): the backend's OpenAI-style `tool_calls`; each call is
//!    one action. Calls without an id get `call_<step>_<n>`.
//! 2. **Text formats** (`formats`, first one that finds a call wins):
//!    - `tool_call_tags`: `<tool_call>{"name": "get_order", "arguments": {"order_id": "#W1"}}</tool_call>`,
//!      one block per call. `arguments` may also be spelled `parameters`, may be a JSON string
//!      holding an object, or may be absent (`{}`). Code fences inside the block are ignored, and
//!      the last block may be left unclosed (a stop sequence often cuts the closing tag).
//!    - `action`: ReAct lines `Action: get_order[{"order_id": "#W1"}]` (empty brackets = `{}`).
//!      In an environment without tools (ALFWorld, WebShop) the text after `Action:` is a text
//!      command instead (`Action: search[red shoes]` sends `search[red shoes]`), and so is any
//!      `Action:` line without brackets.
//! 3. Otherwise non-empty text is an `Action::Message` with the whole reply; an empty reply is a
//!    parse error.
//!
//! Malformed calls (bad JSON, no name) are parse errors, which `parse_retry` can turn into a
//! re-ask. Calls parsed from text are also written into the recorded assistant message's
//! `tool_calls`, so the conversation has one shape whichever way the model called.

use async_trait::async_trait;
use kiln_protocol::{Action, Hook, Message, ToolCall};
use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::sync::OnceLock;

use crate::error::ProcessorError;
use crate::events::AfterModelEvent;
use crate::processor::{BuiltinKind, ConfigError, Processor, ProcessorConfig};

/// A plain-text tool call format (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextCallFormat {
    ToolCallTags,
    Action,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ToolParserConfig {
    /// Accept the backend's native tool calls.
    pub native: bool,
    /// Text formats to look for, in order.
    pub formats: Vec<TextCallFormat>,
}

impl Default for ToolParserConfig {
    fn default() -> Self {
        Self {
            native: true,
            formats: vec![TextCallFormat::ToolCallTags, TextCallFormat::Action],
        }
    }
}

impl ProcessorConfig for ToolParserConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for (index, format) in self.formats.iter().enumerate() {
            if self.formats[..index].contains(format) {
                return Err(ConfigError::new(
                    "formats",
                    format!("`{}` is listed twice", format_name(*format)),
                ));
            }
        }
        Ok(())
    }
}

fn format_name(format: TextCallFormat) -> &'static str {
    match format {
        TextCallFormat::ToolCallTags => "tool_call_tags",
        TextCallFormat::Action => "action",
    }
}

pub fn kind() -> BuiltinKind<ToolParserConfig> {
    BuiltinKind {
        name: "tool_parser",
        summary: "native tool calls plus <tool_call>{…}</tool_call> and `Action: name[json]` text; other text is a message",
        hooks: &[Hook::AfterModel],
        group: Some("tool_parser"),
        build: |config| Box::new(ToolParser { config }),
    }
}

/// What a reply parsed into.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedReply {
    pub actions: Vec<Action>,
    /// Calls found in the text (empty for native calls and plain messages).
    pub text_calls: Vec<ToolCall>,
}

/// Parses one reply. `has_tools`: the environment offers tools (decides how `Action:` lines
/// without JSON read). `step` seeds generated call ids.
pub fn parse_reply(
    message: &Message,
    config: &ToolParserConfig,
    has_tools: bool,
    step: u32,
) -> Result<ParsedReply, String> {
    if !message.tool_calls.is_empty() {
        if !config.native {
            return Err(
                "native tool calls are not accepted here; write the call as text in the required format"
                    .to_string(),
            );
        }
        let actions = message
            .tool_calls
            .iter()
            .enumerate()
            .map(|(index, call)| Action::ToolCall {
                call: with_id(call.clone(), step, index),
            })
            .collect();
        return Ok(ParsedReply {
            actions,
            text_calls: Vec::new(),
        });
    }
    let text = message.content.trim();
    for format in &config.formats {
        let found = match format {
            TextCallFormat::ToolCallTags => parse_tool_call_tags(text)?,
            TextCallFormat::Action => parse_action_lines(text, has_tools)?,
        };
        if found.is_empty() {
            continue;
        }
        return Ok(into_reply(found, step));
    }
    if text.is_empty() {
        return Err("the reply is empty".to_string());
    }
    Ok(ParsedReply {
        actions: vec![Action::Message {
            text: text.to_string(),
        }],
        text_calls: Vec::new(),
    })
}

/// One thing found in text: a call (name, arguments) or a text command.
#[derive(Debug, Clone, PartialEq)]
enum Found {
    Call { name: String, arguments: Value },
    Command(String),
}

fn into_reply(found: Vec<Found>, step: u32) -> ParsedReply {
    let mut actions = Vec::new();
    let mut text_calls = Vec::new();
    for item in found {
        match item {
            Found::Call { name, arguments } => {
                let call = ToolCall {
                    id: call_id(step, text_calls.len()),
                    name,
                    arguments,
                };
                text_calls.push(call.clone());
                actions.push(Action::ToolCall { call });
            }
            Found::Command(text) => actions.push(Action::Message { text }),
        }
    }
    ParsedReply {
        actions,
        text_calls,
    }
}

fn call_id(step: u32, index: usize) -> String {
    format!("call_{step}_{index}")
}

fn with_id(mut call: ToolCall, step: u32, index: usize) -> ToolCall {
    if call.id.is_empty() {
        call.id = call_id(step, index);
    }
    call
}

const OPEN_TAG: &str = "<tool_call>";
const CLOSE_TAG: &str = "</tool_call>";

/// Every `<tool_call>…</tool_call>` block in order; the last may be unclosed.
fn parse_tool_call_tags(text: &str) -> Result<Vec<Found>, String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find(OPEN_TAG) {
        let body_start = open + OPEN_TAG.len();
        let (body, next) = match rest[body_start..].find(CLOSE_TAG) {
            Some(close) => (
                &rest[body_start..body_start + close],
                body_start + close + CLOSE_TAG.len(),
            ),
            None => (&rest[body_start..], rest.len()),
        };
        found.push(parse_call_json(strip_fences(body))?);
        rest = &rest[next..];
    }
    Ok(found)
}

fn strip_fences(body: &str) -> &str {
    let body = body.trim();
    let body = body
        .strip_prefix("```json")
        .or_else(|| body.strip_prefix("```"))
        .unwrap_or(body);
    body.strip_suffix("```").unwrap_or(body).trim()
}

fn parse_call_json(body: &str) -> Result<Found, String> {
    let value: Value = serde_json::from_str(body)
        .map_err(|error| format!("the JSON inside <tool_call> is invalid: {error}"))?;
    let Value::Object(mut object) = value else {
        return Err("<tool_call> must hold a JSON object with `name` and `arguments`".to_string());
    };
    let Some(Value::String(name)) = object.remove("name") else {
        return Err("<tool_call> is missing a string `name`".to_string());
    };
    let arguments = object
        .remove("arguments")
        .or_else(|| object.remove("parameters"))
        .unwrap_or(Value::Object(Map::new()));
    let arguments = arguments_object(&name, arguments)?;
    Ok(Found::Call { name, arguments })
}

/// Arguments must be an object, or a string holding one.
fn arguments_object(name: &str, arguments: Value) -> Result<Value, String> {
    match arguments {
        Value::Object(_) => Ok(arguments),
        Value::Null => Ok(Value::Object(Map::new())),
        Value::String(text) if text.trim().is_empty() => Ok(Value::Object(Map::new())),
        Value::String(text) => match serde_json::from_str::<Value>(&text) {
            Ok(parsed @ Value::Object(_)) => Ok(parsed),
            _ => Err(format!("the arguments of `{name}` must be a JSON object")),
        },
        _ => Err(format!("the arguments of `{name}` must be a JSON object")),
    }
}

fn action_line_regex() -> &'static Regex {
    static REGEX: OnceLock<Regex> = OnceLock::new();
    REGEX.get_or_init(|| {
        Regex::new(r"(?m)^[ \t]*Action[ \t]*:[ \t]*").expect("the action line pattern is valid")
    })
}

fn action_call_regex() -> &'static Regex {
    static REGEX: OnceLock<Regex> = OnceLock::new();
    REGEX.get_or_init(|| {
        Regex::new(r"(?s)^([A-Za-z_][A-Za-z0-9_.\-]*)[ \t]*\[(.*)\]$")
            .expect("the action call pattern is valid")
    })
}

fn section_end_regex() -> &'static Regex {
    static REGEX: OnceLock<Regex> = OnceLock::new();
    REGEX.get_or_init(|| {
        Regex::new(r"(?m)^[ \t]*(Action|Observation|Thought)[ \t]*:")
            .expect("the section pattern is valid")
    })
}

/// Every `Action:` section in order. A section runs to the next `Action:`/`Observation:`/
/// `Thought:` line or the end, so JSON arguments may span lines.
fn parse_action_lines(text: &str, has_tools: bool) -> Result<Vec<Found>, String> {
    let mut found = Vec::new();
    for marker in action_line_regex().find_iter(text) {
        let rest = &text[marker.end()..];
        let end = section_end_regex()
            .find(rest)
            .map_or(rest.len(), |next| next.start());
        let section = rest[..end].trim();
        if section.is_empty() {
            return Err("`Action:` is not followed by an action".to_string());
        }
        found.push(parse_action(section, has_tools)?);
    }
    Ok(found)
}

fn parse_action(section: &str, has_tools: bool) -> Result<Found, String> {
    if !has_tools {
        return Ok(Found::Command(section.to_string()));
    }
    let Some(captures) = action_call_regex().captures(section) else {
        return Ok(Found::Command(section.to_string()));
    };
    let name = captures[1].to_string();
    let inner = captures[2].trim();
    if inner.is_empty() {
        return Ok(Found::Call {
            name,
            arguments: Value::Object(Map::new()),
        });
    }
    let arguments: Value = serde_json::from_str(inner).map_err(|error| {
        format!("the arguments of `{name}` in `Action: {name}[…]` are not valid JSON: {error}")
    })?;
    let arguments = arguments_object(&name, arguments)?;
    Ok(Found::Call { name, arguments })
}

/// A call rendered in a text format (used to describe the format and to show past native calls
/// to a text-only model).
pub fn render_call(format: TextCallFormat, name: &str, arguments: &Value) -> String {
    match format {
        TextCallFormat::ToolCallTags => {
            let body = serde_json::json!({"name": name, "arguments": arguments});
            format!("{OPEN_TAG}{body}{CLOSE_TAG}")
        }
        TextCallFormat::Action => format!("Action: {name}[{arguments}]"),
    }
}

struct ToolParser {
    config: ToolParserConfig,
}

#[async_trait]
impl Processor for ToolParser {
    async fn after_model(&mut self, event: &mut AfterModelEvent<'_>) -> Result<(), ProcessorError> {
        let has_tools = !event.ctx().env().tools.is_empty();
        let step = event.ctx().step();
        match parse_reply(&event.response().message, &self.config, has_tools, step) {
            Ok(parsed) => {
                if !parsed.text_calls.is_empty() {
                    event.message_mut().tool_calls = parsed.text_calls;
                }
                event.set_actions(parsed.actions);
            }
            Err(error) => event.set_parse_error(error),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(text: &str) -> Result<ParsedReply, String> {
        parse_reply(
            &Message::assistant(text),
            &ToolParserConfig::default(),
            true,
            3,
        )
    }

    fn single_call(reply: &ParsedReply) -> &ToolCall {
        assert_eq!(reply.actions.len(), 1, "{reply:?}");
        let Action::ToolCall { call } = &reply.actions[0] else {
            panic!("expected a tool call, got {:?}", reply.actions[0]);
        };
        call
    }

    #[test]
    fn native_calls_become_actions_keeping_their_ids() {
        let call = ToolCall {
            id: "g0".into(),
            name: "find_user".into(),
            arguments: json!({"email": "a@b.c"}),
        };
        let unnamed = ToolCall {
            id: String::new(),
            ..call.clone()
        };
        let message = Message::assistant_tool_calls("thinking", vec![call.clone(), unnamed]);
        let reply = parse_reply(&message, &ToolParserConfig::default(), true, 5).unwrap();
        let ids: Vec<String> = reply
            .actions
            .iter()
            .map(|action| match action {
                Action::ToolCall { call } => call.id.clone(),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(ids, ["g0", "call_5_1"]);
        assert!(reply.text_calls.is_empty());
    }

    #[test]
    fn native_calls_are_refused_when_disabled() {
        let config = ToolParserConfig {
            native: false,
            ..ToolParserConfig::default()
        };
        let call = ToolCall {
            id: "x".into(),
            name: "n".into(),
            arguments: json!({}),
        };
        let message = Message::assistant_tool_calls("", vec![call]);
        assert!(parse_reply(&message, &config, true, 0).is_err());
    }

    #[test]
    fn tagged_calls_parse_in_order_with_generated_ids() {
        let reply = parse(
            "Let me look.\n<tool_call>{\"name\": \"get_order\", \"arguments\": {\"order_id\": \"#W1\"}}</tool_call>\n\
             <tool_call>\n```json\n{\"name\": \"get_user\", \"parameters\": \"{\\\"id\\\": 2}\"}\n```\n</tool_call>",
        )
        .unwrap();
        assert_eq!(reply.text_calls.len(), 2);
        assert_eq!(reply.text_calls[0].name, "get_order");
        assert_eq!(reply.text_calls[0].arguments, json!({"order_id": "#W1"}));
        assert_eq!(reply.text_calls[0].id, "call_3_0");
        assert_eq!(reply.text_calls[1].name, "get_user");
        assert_eq!(reply.text_calls[1].arguments, json!({"id": 2}));
        assert_eq!(reply.text_calls[1].id, "call_3_1");
    }

    #[test]
    fn an_unclosed_last_tag_still_parses() {
        let reply = parse("<tool_call>{\"name\": \"list_all_product_types\"}").unwrap();
        let call = single_call(&reply);
        assert_eq!(call.name, "list_all_product_types");
        assert_eq!(call.arguments, json!({}));
    }

    #[test]
    fn malformed_tagged_calls_are_errors() {
        let bad_json =
            parse("<tool_call>{\"name\": \"x\", \"arguments\": {</tool_call>").unwrap_err();
        assert!(bad_json.contains("invalid"), "{bad_json}");
        let no_name = parse("<tool_call>{\"arguments\": {}}</tool_call>").unwrap_err();
        assert!(no_name.contains("name"), "{no_name}");
        let bad_arguments =
            parse("<tool_call>{\"name\": \"x\", \"arguments\": [1]}</tool_call>").unwrap_err();
        assert!(bad_arguments.contains("`x`"), "{bad_arguments}");
    }

    #[test]
    fn action_lines_parse_json_arguments_across_lines() {
        let reply = parse(
            "Thought: I need the order.\nAction: get_order_details[{\n  \"order_id\": \"#W2\"\n}]\nObservation: (not yet)",
        )
        .unwrap();
        let call = single_call(&reply);
        assert_eq!(call.name, "get_order_details");
        assert_eq!(call.arguments, json!({"order_id": "#W2"}));
        let empty = parse("Action: list_all_airports[]").unwrap();
        assert_eq!(single_call(&empty).arguments, json!({}));
    }

    #[test]
    fn action_lines_with_bad_json_are_errors() {
        let error = parse("Action: get_order_details[order #W2]").unwrap_err();
        assert!(error.contains("get_order_details"), "{error}");
    }

    #[test]
    fn action_lines_are_text_commands_in_environments_without_tools() {
        let config = ToolParserConfig::default();
        let reply = parse_reply(
            &Message::assistant("Thought: shop.\nAction: search[red shoes]"),
            &config,
            false,
            0,
        )
        .unwrap();
        assert_eq!(
            reply.actions,
            [Action::Message {
                text: "search[red shoes]".into()
            }]
        );
        let plain = parse_reply(
            &Message::assistant("Action: go to cabinet 1"),
            &config,
            false,
            0,
        )
        .unwrap();
        assert_eq!(
            plain.actions,
            [Action::Message {
                text: "go to cabinet 1".into()
            }]
        );
    }

    #[test]
    fn text_without_a_call_is_a_message_and_empty_text_an_error() {
        let reply = parse("  Your order #W1 is cancelled.  ").unwrap();
        assert_eq!(
            reply.actions,
            [Action::Message {
                text: "Your order #W1 is cancelled.".into()
            }]
        );
        assert_eq!(parse("   ").unwrap_err(), "the reply is empty");
    }

    #[test]
    fn only_the_configured_formats_are_recognised() {
        let config = ToolParserConfig {
            native: true,
            formats: vec![TextCallFormat::Action],
        };
        let text = "<tool_call>{\"name\": \"x\"}</tool_call>";
        let reply = parse_reply(&Message::assistant(text), &config, true, 0).unwrap();
        assert_eq!(reply.actions, [Action::Message { text: text.into() }]);
    }

    #[test]
    fn rendered_calls_parse_back() {
        let arguments = json!({"order_id": "#W9", "item_ids": ["1", "2"]});
        for format in [TextCallFormat::ToolCallTags, TextCallFormat::Action] {
            let config = ToolParserConfig {
                native: false,
                formats: vec![format],
            };
            let text = render_call(format, "modify", &arguments);
            let reply = parse_reply(&Message::assistant(&text), &config, true, 0).unwrap();
            let call = single_call(&reply);
            assert_eq!(
                (call.name.as_str(), &call.arguments),
                ("modify", &arguments)
            );
        }
    }

    #[test]
    fn duplicate_formats_are_rejected() {
        let error = crate::processor::parse_config::<ToolParserConfig>(
            &json!({"formats": ["action", "action"]}),
        )
        .unwrap_err();
        assert_eq!(error.field, "formats");
    }
}
