//! `history_window`: bounds the prompt to the leading system messages plus the last N messages,
//! at `before_model`. The stored conversation is untouched; only the request shrinks.
//!
//! A tool result is never separated from the assistant message that called it: when the cut
//! would fall on tool results, the window grows backwards to include their call (so it may hold a
//! few more than N messages) rather than dropping the freshest observations.

use async_trait::async_trait;
use kiln_protocol::{Hook, Message, Role};
use serde::{Deserialize, Serialize};

use crate::error::ProcessorError;
use crate::events::BeforeModelEvent;
use crate::processor::{BuiltinKind, ConfigError, Processor, ProcessorConfig};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistoryWindowConfig {
    /// Messages kept after the leading system messages.
    pub max_messages: usize,
}

impl Default for HistoryWindowConfig {
    fn default() -> Self {
        Self { max_messages: 40 }
    }
}

impl ProcessorConfig for HistoryWindowConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_messages == 0 {
            return Err(ConfigError::new("max_messages", "must be at least 1"));
        }
        Ok(())
    }
}

pub fn kind() -> BuiltinKind<HistoryWindowConfig> {
    BuiltinKind {
        name: "history_window",
        summary: "keep the system messages plus the last N messages, never splitting a tool call from its result",
        hooks: &[Hook::BeforeModel],
        group: Some("context_window"),
        build: |config| Box::new(HistoryWindow { config }),
    }
}

/// The windowed copy of `messages`.
pub fn window(messages: &[Message], max_messages: usize) -> Vec<Message> {
    let head = messages
        .iter()
        .take_while(|message| message.role == Role::System)
        .count();
    let rest = &messages[head..];
    if rest.len() <= max_messages {
        return messages.to_vec();
    }
    let mut start = rest.len() - max_messages;
    while start > 0 && rest[start].role == Role::Tool {
        start -= 1;
    }
    let mut kept = messages[..head].to_vec();
    kept.extend_from_slice(&rest[start..]);
    kept
}

struct HistoryWindow {
    config: HistoryWindowConfig,
}

#[async_trait]
impl Processor for HistoryWindow {
    async fn before_model(
        &mut self,
        event: &mut BeforeModelEvent<'_>,
    ) -> Result<(), ProcessorError> {
        let windowed = window(event.messages(), self.config.max_messages);
        *event.messages_mut() = windowed;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_protocol::ToolCall;
    use serde_json::json;

    fn call(id: &str) -> ToolCall {
        ToolCall {
            id: id.into(),
            name: "lookup".into(),
            arguments: json!({}),
        }
    }

    fn conversation() -> Vec<Message> {
        vec![
            Message::system("policy"),
            Message::assistant("Hi! How can I help you today?"),
            Message::user("cancel my order"),
            Message::assistant_tool_calls("", vec![call("a"), call("b")]),
            Message::tool_result(&call("a"), "order A"),
            Message::tool_result(&call("b"), "order B"),
            Message::assistant("Which order?"),
            Message::user("order B"),
        ]
    }

    #[test]
    fn keeps_everything_when_short_enough() {
        assert_eq!(window(&conversation(), 7), conversation());
    }

    #[test]
    fn keeps_the_system_prompt_and_the_last_messages() {
        let kept = window(&conversation(), 2);
        let contents: Vec<&str> = kept.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(contents, ["policy", "Which order?", "order B"]);
    }

    #[test]
    fn never_starts_on_a_tool_result() {
        // The last 3 messages start at the second tool result: the window grows back to the call.
        let kept = window(&conversation(), 3);
        assert_eq!(kept[0].role, Role::System);
        assert_eq!(kept[1].role, Role::Assistant);
        assert_eq!(kept[1].tool_calls.len(), 2);
        assert_eq!(kept.len(), 1 + 5);
        for (index, message) in kept.iter().enumerate() {
            if message.role == Role::Tool {
                let id = message.tool_call_id.as_deref().unwrap();
                assert!(
                    kept[..index]
                        .iter()
                        .any(|m| m.tool_calls.iter().any(|c| c.id == id)),
                    "tool result {id} kept without its call"
                );
            }
        }
    }

    #[test]
    fn rejects_a_zero_window() {
        let error =
            crate::processor::parse_config::<HistoryWindowConfig>(&json!({"max_messages": 0}))
                .unwrap_err();
        assert_eq!(error.field, "max_messages");
    }
}
