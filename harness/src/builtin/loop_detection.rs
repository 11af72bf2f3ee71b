//! `loop_detection`: watches the actions of each step (at `step_end`). When the same action (same
//! tool and arguments, or same message text) has been taken `warn_after` times in a row, it injects
//! an advice message once; at `stop_after` in a row it ends the episode with `LoopDetected`.

use async_trait::async_trait;
use kiln_protocol::{Action, Hook, Message, Role, Termination};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::ProcessorError;
use crate::events::StepEndEvent;
use crate::processor::{BuiltinKind, ConfigError, Processor, ProcessorConfig};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoopDetectionConfig {
    pub warn_after: u32,
    pub stop_after: u32,
    /// The advice; `{count}` is replaced by the number of repeats.
    pub message: String,
    /// Role of the advice message: `user` (works with every chat template) or `system`.
    pub role: Role,
}

impl Default for LoopDetectionConfig {
    fn default() -> Self {
        Self {
            warn_after: 3,
            stop_after: 5,
            message: "You have taken the same action {count} times in a row and it is not making \
                      progress. Do something different."
                .to_string(),
            role: Role::User,
        }
    }
}

impl ProcessorConfig for LoopDetectionConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.warn_after < 2 {
            return Err(ConfigError::new("warn_after", "must be at least 2"));
        }
        if self.stop_after <= self.warn_after {
            return Err(ConfigError::new(
                "stop_after",
                format!("must be greater than warn_after ({})", self.warn_after),
            ));
        }
        if !matches!(self.role, Role::User | Role::System) {
            return Err(ConfigError::new("role", "must be `user` or `system`"));
        }
        Ok(())
    }
}

pub fn kind() -> BuiltinKind<LoopDetectionConfig> {
    BuiltinKind {
        name: "loop_detection",
        summary: "advise after N identical actions in a row, stop with loop_detected after M",
        hooks: &[Hook::StepEnd],
        group: None,
        build: |config| {
            Box::new(LoopDetection {
                config,
                tracker: RepeatTracker::default(),
                warned: false,
            })
        },
    }
}

/// Identity of an action for repeat detection: the tool call id does not count.
pub fn signature(action: &Action) -> String {
    match action {
        Action::ToolCall { call } => {
            let arguments = crate::spec::sorted_json(&call.arguments);
            format!("tool {} {arguments}", call.name)
        }
        Action::Message { text } => format!("message {}", text.trim()),
    }
}

/// Counts how many times in a row the latest action was taken.
#[derive(Debug, Default)]
pub struct RepeatTracker {
    last: Option<String>,
    count: u32,
}

impl RepeatTracker {
    /// Records an action; returns the current run length (1 for a new action).
    pub fn observe(&mut self, action: &Action) -> u32 {
        let signature = signature(action);
        if self.last.as_deref() == Some(signature.as_str()) {
            self.count += 1;
        } else {
            self.last = Some(signature);
            self.count = 1;
        }
        self.count
    }
}

struct LoopDetection {
    config: LoopDetectionConfig,
    tracker: RepeatTracker,
    /// Advice was given for the current run of repeats.
    warned: bool,
}

#[async_trait]
impl Processor for LoopDetection {
    async fn step_end(&mut self, event: &mut StepEndEvent<'_>) -> Result<(), ProcessorError> {
        let mut count = 0;
        for record in event.actions() {
            count = self.tracker.observe(&record.action);
            if count == 1 {
                self.warned = false;
            }
        }
        if count >= self.config.stop_after {
            event.note(json!({"loop_detected": count}));
            event.stop(
                Termination::LoopDetected,
                format!("the same action was repeated {count} times in a row"),
            );
            return Ok(());
        }
        if count >= self.config.warn_after && !self.warned {
            self.warned = true;
            let text = self.config.message.replace("{count}", &count.to_string());
            let advice = match self.config.role {
                Role::System => Message::system(text),
                _ => Message::user(text),
            };
            event.note(json!({"loop_warning": count}));
            event.inject(advice);
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
    use kiln_protocol::trajectory::{ActionRecord, ModelTurn};
    use kiln_protocol::{Observation, ToolCall, Usage};

    fn record(id: &str, arguments: serde_json::Value) -> ActionRecord {
        let call = ToolCall {
            id: id.into(),
            name: "search".into(),
            arguments,
        };
        ActionRecord {
            action: Action::ToolCall { call },
            observation: Observation::Text {
                text: "none".into(),
            },
            started_at: 0,
            ended_at: 0,
            info: serde_json::Value::Null,
        }
    }

    fn turn() -> ModelTurn {
        ModelTurn {
            raw_content: String::new(),
            raw_tool_calls: Vec::new(),
            usage: Usage::default(),
            latency_ms: 0,
            tokens: None,
            retries: 0,
        }
    }

    #[test]
    fn signature_ignores_call_ids_and_key_order() {
        let a = record("1", json!({"a": 1, "b": 2})).action;
        let b = record("2", json!({"b": 2, "a": 1})).action;
        let c = record("3", json!({"a": 1, "b": 3})).action;
        assert_eq!(signature(&a), signature(&b));
        assert_ne!(signature(&a), signature(&c));
    }

    #[tokio::test]
    async fn warns_once_then_stops() {
        let task = task();
        let env = env_with_tools(&["search"]);
        let conversation = Vec::new();
        let turn = turn();
        let config = json!({"warn_after": 2, "stop_after": 4});
        let mut processor = kind().instantiate(&config).unwrap();
        let mut seen = Vec::new();
        for step in 0..4 {
            let actions = [record(&step.to_string(), json!({"q": "x"}))];
            let ctx = StepContext::new(&task, &env, step, &conversation);
            let mut event = StepEndEvent::new(ctx, &turn, &actions, false);
            processor.step_end(&mut event).await.unwrap();
            let (injected, stop) = event.into_parts();
            seen.push((injected.len(), stop.map(|s| s.termination)));
        }
        assert_eq!(
            seen,
            [
                (0, None),
                (1, None),
                (0, None),
                (0, Some(Termination::LoopDetected))
            ]
        );
    }

    #[tokio::test]
    async fn a_different_action_resets_the_count() {
        let task = task();
        let env = env_with_tools(&["search"]);
        let conversation = Vec::new();
        let turn = turn();
        let mut processor = kind().instantiate(&json!({})).unwrap();
        for step in 0..10 {
            let actions = [record("x", json!({"q": step % 2}))];
            let ctx = StepContext::new(&task, &env, step, &conversation);
            let mut event = StepEndEvent::new(ctx, &turn, &actions, false);
            processor.step_end(&mut event).await.unwrap();
            assert!(event.stop_request().is_none());
            assert!(event.injected().is_empty());
        }
    }

    #[test]
    fn thresholds_are_validated() {
        let error = kind()
            .normalize_config(&json!({"warn_after": 4, "stop_after": 4}))
            .unwrap_err();
        assert_eq!(error.field, "stop_after");
        let error = kind()
            .normalize_config(&json!({"role": "assistant"}))
            .unwrap_err();
        assert_eq!(error.field, "role");
    }
}
