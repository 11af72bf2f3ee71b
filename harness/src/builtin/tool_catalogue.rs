//! `tool_catalogue`: decides how the environment's tools reach the model.
//!
//! - `native`: offered through the backend's tool-calling API only (the loop's default).
//! - `text`: described in the system prompt (`{tools}`, see `system_prompt`) with instructions for
//!   `call_format`; nothing is offered natively, and at `before_model` the prompt is rewritten for a
//!   model without tool support: tool results become user messages prefixed with
//!   `observation_prefix`, and past calls appear as text in the assistant messages. With the
//!   `action` format the prefix (trimmed) is also a stop sequence, so a ReAct model does not invent
//!   its own observations.
//! - `both`: native tools plus the text description.

use async_trait::async_trait;
use kiln_protocol::{Hook, Message, Role, ToolSchema};
use serde::{Deserialize, Serialize};

use crate::builtin::tool_parser::{TextCallFormat, render_call};
use crate::error::ProcessorError;
use crate::events::{BeforeModelEvent, TaskStartEvent};
use crate::processor::{BuiltinKind, Processor, ProcessorConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatalogueMode {
    Native,
    Text,
    Both,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ToolCatalogueConfig {
    pub mode: CatalogueMode,
    /// The call format the text catalogue teaches.
    pub call_format: TextCallFormat,
    /// Prefix of a tool result shown as text (`text` mode).
    pub observation_prefix: String,
}

impl Default for ToolCatalogueConfig {
    fn default() -> Self {
        Self {
            mode: CatalogueMode::Native,
            call_format: TextCallFormat::ToolCallTags,
            observation_prefix: "Observation: ".to_string(),
        }
    }
}

impl ProcessorConfig for ToolCatalogueConfig {}

pub fn kind() -> BuiltinKind<ToolCatalogueConfig> {
    BuiltinKind {
        name: "tool_catalogue",
        summary: "offer tools natively, as text in the system prompt, or both",
        hooks: &[Hook::TaskStart, Hook::BeforeModel],
        group: Some("tool_catalogue"),
        build: |config| Box::new(ToolCatalogue { config }),
    }
}

/// The text description of `tools` and of how to call them.
pub fn render_catalogue(tools: &[ToolSchema], format: TextCallFormat) -> String {
    if tools.is_empty() {
        return String::new();
    }
    let mut text = String::from("# Tools\n\nYou can call these tools:\n");
    for tool in tools {
        text.push_str(&format!("\n- {}: {}\n", tool.name, tool.description.trim()));
        text.push_str(&format!("  arguments (JSON Schema): {}\n", tool.parameters));
    }
    let example = render_call(
        format,
        "TOOL_NAME",
        &serde_json::json!({"ARGUMENT": "VALUE"}),
    );
    text.push_str(&format!(
        "\nTo call a tool, write exactly:\n{example}\nOne call per line; arguments are a JSON object. \
         To reply without calling a tool, write plain text."
    ));
    text
}

/// The prompt as a model without native tool support should see it.
pub fn textualize(
    messages: &[Message],
    format: TextCallFormat,
    observation_prefix: &str,
) -> Vec<Message> {
    messages
        .iter()
        .map(|message| match message.role {
            Role::Tool => Message::user(format!("{observation_prefix}{}", message.content)),
            Role::Assistant if !message.tool_calls.is_empty() => {
                Message::assistant(assistant_text(message, format))
            }
            _ => message.clone(),
        })
        .collect()
}

/// An assistant turn's text; native calls the text does not already show are rendered in.
fn assistant_text(message: &Message, format: TextCallFormat) -> String {
    if !message.content.trim().is_empty() {
        return message.content.clone();
    }
    message
        .tool_calls
        .iter()
        .map(|call| render_call(format, &call.name, &call.arguments))
        .collect::<Vec<_>>()
        .join("\n")
}

struct ToolCatalogue {
    config: ToolCatalogueConfig,
}

#[async_trait]
impl Processor for ToolCatalogue {
    async fn task_start(&mut self, event: &mut TaskStartEvent<'_>) -> Result<(), ProcessorError> {
        let tools = event.env().tools.clone();
        match self.config.mode {
            CatalogueMode::Native => *event.native_tools_mut() = tools,
            CatalogueMode::Text => {
                event.native_tools_mut().clear();
                event.set_tool_text(render_catalogue(&tools, self.config.call_format));
            }
            CatalogueMode::Both => {
                event.set_tool_text(render_catalogue(&tools, self.config.call_format));
                *event.native_tools_mut() = tools;
            }
        }
        Ok(())
    }

    async fn before_model(
        &mut self,
        event: &mut BeforeModelEvent<'_>,
    ) -> Result<(), ProcessorError> {
        if self.config.mode != CatalogueMode::Text {
            return Ok(());
        }
        event.tools_mut().clear();
        let rewritten = textualize(
            event.messages(),
            self.config.call_format,
            &self.config.observation_prefix,
        );
        *event.messages_mut() = rewritten;
        let stop = self.config.observation_prefix.trim().to_string();
        if self.config.call_format == TextCallFormat::Action
            && !stop.is_empty()
            && !event.stop_sequences().contains(&stop)
        {
            event.stop_sequences_mut().push(stop);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin::test_support::{env_with_tools, task};
    use crate::events::StepContext;
    use crate::processor::ProcessorKind;
    use kiln_protocol::{SamplingParams, ToolCall};
    use serde_json::json;

    #[test]
    fn catalogue_lists_every_tool_and_the_call_format() {
        let env = env_with_tools(&["get_order", "cancel_order"]);
        let text = render_catalogue(&env.tools, TextCallFormat::Action);
        assert!(text.contains("- get_order: Does get_order."));
        assert!(text.contains("- cancel_order: Does cancel_order."));
        assert!(text.contains("Action: TOOL_NAME[{\"ARGUMENT\":\"VALUE\"}]"));
        assert_eq!(render_catalogue(&[], TextCallFormat::Action), "");
    }

    #[test]
    fn textualize_turns_tool_messages_into_text() {
        let call = ToolCall {
            id: "c".into(),
            name: "get_order".into(),
            arguments: json!({"id": "1"}),
        };
        let messages = vec![
            Message::system("s"),
            Message::assistant_tool_calls("", vec![call.clone()]),
            Message::tool_result(&call, "{\"status\": \"pending\"}"),
        ];
        let text = textualize(&messages, TextCallFormat::Action, "Observation: ");
        assert_eq!(text[0], messages[0]);
        assert_eq!(
            text[1],
            Message::assistant("Action: get_order[{\"id\":\"1\"}]")
        );
        assert_eq!(
            text[2],
            Message::user("Observation: {\"status\": \"pending\"}")
        );
        assert!(text.iter().all(|m| m.tool_calls.is_empty()));
    }

    async fn task_start_with(mode: CatalogueMode) -> (Vec<String>, String) {
        let task = task();
        let env = env_with_tools(&["a", "b"]);
        let mut event = TaskStartEvent::new(&task, &env, SamplingParams::default());
        let config = serde_json::to_value(ToolCatalogueConfig {
            mode,
            ..ToolCatalogueConfig::default()
        })
        .unwrap();
        let mut processor = kind().instantiate(&config).unwrap();
        processor.task_start(&mut event).await.unwrap();
        let names = event
            .native_tools()
            .iter()
            .map(|t| t.name.clone())
            .collect();
        (names, event.tool_text().to_string())
    }

    #[tokio::test]
    async fn modes_decide_native_tools_and_text() {
        let (native, text) = task_start_with(CatalogueMode::Native).await;
        assert_eq!(native, ["a", "b"]);
        assert!(text.is_empty());
        let (native, text) = task_start_with(CatalogueMode::Text).await;
        assert!(native.is_empty());
        assert!(text.contains("- a:") && text.contains("<tool_call>"));
        let (native, text) = task_start_with(CatalogueMode::Both).await;
        assert_eq!(native, ["a", "b"]);
        assert!(!text.is_empty());
    }

    #[tokio::test]
    async fn text_mode_strips_native_tools_and_adds_the_observation_stop() {
        let task = task();
        let env = env_with_tools(&["a"]);
        let conversation = vec![Message::user("hi")];
        let ctx = StepContext::new(&task, &env, 0, &conversation);
        let mut event = BeforeModelEvent::new(
            ctx,
            env.tools.clone(),
            SamplingParams::default(),
            Vec::new(),
        );
        let config = json!({"mode": "text", "call_format": "action"});
        let mut processor = kind().instantiate(&config).unwrap();
        processor.before_model(&mut event).await.unwrap();
        assert!(event.tools().is_empty());
        assert_eq!(event.stop_sequences(), ["Observation:"]);
    }
}
