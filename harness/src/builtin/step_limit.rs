//! `step_limit`: ends the episode with `MaxSteps` before step `max_steps` (0-based) would start,
//! so at most `max_steps` model turns happen.

use async_trait::async_trait;
use kiln_protocol::{Hook, Termination};
use serde::{Deserialize, Serialize};

use crate::error::ProcessorError;
use crate::events::StepStartEvent;
use crate::processor::{BuiltinKind, ConfigError, Processor, ProcessorConfig};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StepLimitConfig {
    pub max_steps: u32,
}

impl Default for StepLimitConfig {
    fn default() -> Self {
        Self { max_steps: 200 }
    }
}

impl ProcessorConfig for StepLimitConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_steps == 0 {
            return Err(ConfigError::new("max_steps", "must be at least 1"));
        }
        Ok(())
    }
}

pub fn kind() -> BuiltinKind<StepLimitConfig> {
    BuiltinKind {
        name: "step_limit",
        summary: "stop with max_steps after N model turns",
        hooks: &[Hook::StepStart],
        group: Some("step_limit"),
        build: |config| Box::new(StepLimit { config }),
    }
}

/// Whether step `step` (0-based) may not start.
pub fn limit_reached(config: &StepLimitConfig, step: u32) -> bool {
    step >= config.max_steps
}

struct StepLimit {
    config: StepLimitConfig,
}

#[async_trait]
impl Processor for StepLimit {
    async fn step_start(&mut self, event: &mut StepStartEvent<'_>) -> Result<(), ProcessorError> {
        if limit_reached(&self.config, event.ctx().step()) {
            let reason = format!("step limit of {} reached", self.config.max_steps);
            event.stop(Termination::MaxSteps, reason);
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
    use serde_json::json;

    #[tokio::test]
    async fn stops_exactly_at_the_limit() {
        let task = task();
        let env = env_with_tools(&[]);
        let conversation = Vec::new();
        let mut processor = kind().instantiate(&json!({"max_steps": 3})).unwrap();
        for step in 0..5 {
            let mut event = StepStartEvent::new(StepContext::new(&task, &env, step, &conversation));
            processor.step_start(&mut event).await.unwrap();
            let stopped = event.stop_request().map(|stop| stop.termination);
            let expected = (step >= 3).then_some(Termination::MaxSteps);
            assert_eq!(stopped, expected, "step {step}");
        }
    }

    #[test]
    fn zero_steps_is_rejected() {
        let error = kind()
            .normalize_config(&json!({"max_steps": 0}))
            .unwrap_err();
        assert_eq!(error.field, "max_steps");
    }
}
