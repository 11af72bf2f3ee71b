//! `system_prompt`: renders the episode's system prompt from a template at `task_start`.
//!
//! Placeholders: `{instructions}` (the environment's instructions, e.g. the τ² policy), `{tools}`
//! (the tool catalogue text set by `tool_catalogue`, empty in native mode) and `{env}` (the
//! environment id). Any other braces are kept verbatim, so JSON examples need no escaping. Run it
//! after `tool_catalogue` (`after = ["…"]`) so `{tools}` is filled.

use async_trait::async_trait;
use kiln_protocol::Hook;
use serde::{Deserialize, Serialize};

use crate::error::ProcessorError;
use crate::events::TaskStartEvent;
use crate::processor::{BuiltinKind, ConfigError, Processor, ProcessorConfig};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SystemPromptConfig {
    pub template: String,
    /// When the template has no `{tools}` placeholder and there is catalogue text, append it.
    pub append_tools: bool,
}

impl Default for SystemPromptConfig {
    fn default() -> Self {
        Self {
            template: "{instructions}\n\n{tools}".to_string(),
            append_tools: true,
        }
    }
}

impl ProcessorConfig for SystemPromptConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.template.trim().is_empty() {
            return Err(ConfigError::new("template", "must not be empty"));
        }
        Ok(())
    }
}

pub fn kind() -> BuiltinKind<SystemPromptConfig> {
    BuiltinKind {
        name: "system_prompt",
        summary: "system prompt from a template with {instructions}, {tools}, {env}",
        hooks: &[Hook::TaskStart],
        group: Some("system_prompt"),
        build: |config| Box::new(SystemPrompt { config }),
    }
}

/// Renders `template`; see the module docs for the placeholders.
pub fn render(config: &SystemPromptConfig, instructions: &str, tools: &str, env: &str) -> String {
    let mut prompt = config
        .template
        .replace("{instructions}", instructions)
        .replace("{env}", env);
    if config.template.contains("{tools}") {
        prompt = prompt.replace("{tools}", tools);
    } else if config.append_tools && !tools.trim().is_empty() {
        prompt.push_str("\n\n");
        prompt.push_str(tools);
    }
    collapse_blank_lines(prompt.trim())
}

/// Empty placeholders leave runs of blank lines; keep at most one.
fn collapse_blank_lines(text: &str) -> String {
    let mut collapsed = text.to_string();
    while collapsed.contains("\n\n\n") {
        collapsed = collapsed.replace("\n\n\n", "\n\n");
    }
    collapsed
}

struct SystemPrompt {
    config: SystemPromptConfig,
}

#[async_trait]
impl Processor for SystemPrompt {
    async fn task_start(&mut self, event: &mut TaskStartEvent<'_>) -> Result<(), ProcessorError> {
        let prompt = render(
            &self.config,
            &event.env().instructions,
            event.tool_text(),
            &event.env().env,
        );
        event.set_system_prompt(Some(prompt));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin::test_support::{env_with_tools, task};
    use crate::processor::ProcessorKind;
    use kiln_protocol::SamplingParams;
    use serde_json::json;

    #[test]
    fn fills_every_placeholder_and_keeps_other_braces() {
        let config = SystemPromptConfig {
            template: "Env {env}.\n<policy>{instructions}</policy>\n{tools}\nReply as {\"a\": 1}"
                .into(),
            append_tools: true,
        };
        let prompt = render(&config, "Be kind.", "TOOLS", "tau2-retail");
        assert_eq!(
            prompt,
            "Env tau2-retail.\n<policy>Be kind.</policy>\nTOOLS\nReply as {\"a\": 1}"
        );
    }

    #[test]
    fn appends_tool_text_only_when_the_template_has_no_placeholder() {
        let config = SystemPromptConfig {
            template: "{instructions}".into(),
            append_tools: true,
        };
        assert_eq!(render(&config, "P", "T", "e"), "P\n\nT");
        assert_eq!(render(&config, "P", "", "e"), "P");
        let placeholder = SystemPromptConfig {
            template: "A\n\n{tools}\n\nB".into(),
            append_tools: true,
        };
        assert_eq!(render(&placeholder, "", "", "e"), "A\n\nB");
        let no_append = SystemPromptConfig {
            append_tools: false,
            ..config
        };
        assert_eq!(render(&no_append, "P", "T", "e"), "P");
    }

    #[test]
    fn rejects_an_empty_template_naming_the_field() {
        let error = kind()
            .normalize_config(&json!({"template": "  "}))
            .unwrap_err();
        assert_eq!(error.field, "template");
    }

    #[tokio::test]
    async fn sets_the_system_prompt_at_task_start() {
        let task = task();
        let env = env_with_tools(&["lookup"]);
        let mut event = TaskStartEvent::new(&task, &env, SamplingParams::default());
        event.set_tool_text("CATALOGUE".into());
        let mut processor = kind().instantiate(&serde_json::Value::Null).unwrap();
        processor.task_start(&mut event).await.unwrap();
        assert_eq!(
            event.system_prompt(),
            Some("Follow the policy.\n\nCATALOGUE")
        );
    }
}
