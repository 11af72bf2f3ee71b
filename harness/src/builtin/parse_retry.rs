//! `parse_retry`: when the reply could not be parsed, re-asks the model with a corrective message,
//! up to `max_retries` times per step; after that the loop ends the episode with `ParseFailure`.
//!
//! It reads the parse error the parser left at `after_model`, so it must run after the parser
//! (`after = ["<parser id>"]`, or a higher `phase`).

use async_trait::async_trait;
use kiln_protocol::Hook;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::ProcessorError;
use crate::events::AfterModelEvent;
use crate::processor::{BuiltinKind, ConfigError, Processor, ProcessorConfig};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ParseRetryConfig {
    pub max_retries: u32,
    /// The corrective message; `{error}` is replaced by the parse error.
    pub message: String,
}

impl Default for ParseRetryConfig {
    fn default() -> Self {
        Self {
            max_retries: 2,
            message: "Your last reply could not be used: {error}. Reply again: either call a tool \
                      in the required format or write a plain message."
                .to_string(),
        }
    }
}

impl ProcessorConfig for ParseRetryConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.message.trim().is_empty() {
            return Err(ConfigError::new("message", "must not be empty"));
        }
        Ok(())
    }
}

pub fn kind() -> BuiltinKind<ParseRetryConfig> {
    BuiltinKind {
        name: "parse_retry",
        summary: "re-ask with a corrective message when the reply does not parse, up to N times",
        hooks: &[Hook::AfterModel],
        group: Some("parse_retry"),
        build: |config| Box::new(ParseRetry { config }),
    }
}

/// The corrective message for `error`, or `None` when the retries of this step are spent.
pub fn corrective_message(config: &ParseRetryConfig, error: &str, attempt: u32) -> Option<String> {
    if attempt >= config.max_retries {
        return None;
    }
    Some(config.message.replace("{error}", error))
}

struct ParseRetry {
    config: ParseRetryConfig,
}

#[async_trait]
impl Processor for ParseRetry {
    async fn after_model(&mut self, event: &mut AfterModelEvent<'_>) -> Result<(), ProcessorError> {
        let Some(error) = event.parse_error().map(str::to_string) else {
            return Ok(());
        };
        let attempt = event.attempt();
        let Some(message) = corrective_message(&self.config, &error, attempt) else {
            return Ok(());
        };
        event.note(json!({"retry": attempt + 1, "error": error}));
        event.request_retry(message);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin::test_support::{env_with_tools, task};
    use crate::events::StepContext;
    use crate::processor::ProcessorKind;
    use kiln_models::ChatResponse;
    use kiln_protocol::{Message, Usage};

    #[test]
    fn retries_until_the_budget_is_spent() {
        let config = ParseRetryConfig::default();
        let first = corrective_message(&config, "bad JSON", 0).unwrap();
        assert!(first.contains("bad JSON"));
        assert!(corrective_message(&config, "bad JSON", 1).is_some());
        assert_eq!(corrective_message(&config, "bad JSON", 2), None);
    }

    #[tokio::test]
    async fn requests_a_retry_only_for_a_parse_error() {
        let task = task();
        let env = env_with_tools(&[]);
        let conversation = Vec::new();
        let empty = ChatResponse {
            message: Message::assistant(""),
            usage: Usage::default(),
            finish_reason: None,
            tokens: None,
        };
        let fine = ChatResponse {
            message: Message::assistant("hello"),
            ..empty.clone()
        };
        let mut processor = kind().instantiate(&serde_json::Value::Null).unwrap();

        let ctx = StepContext::new(&task, &env, 0, &conversation);
        let mut event = AfterModelEvent::new(ctx, 0, &empty);
        processor.after_model(&mut event).await.unwrap();
        assert!(
            event
                .retry_requested()
                .unwrap()
                .contains("the reply is empty")
        );

        let mut event = AfterModelEvent::new(ctx, 2, &empty);
        processor.after_model(&mut event).await.unwrap();
        assert_eq!(event.retry_requested(), None);

        let mut event = AfterModelEvent::new(ctx, 0, &fine);
        processor.after_model(&mut event).await.unwrap();
        assert_eq!(event.retry_requested(), None);
    }
}
