//! `trajectory_recorder`: chooses what the trajectory keeps of each step's prompt (`full`: the
//! exact messages sent; `delta`: only the conversation messages added since the previous step;
//! `off`) and whether token ids and logprobs of local models are kept (`tokens`, needed for
//! training). Without this processor the loop records deltas and tokens.

use async_trait::async_trait;
use kiln_protocol::Hook;
use serde::{Deserialize, Serialize};

use crate::error::ProcessorError;
use crate::events::{PromptRecording, RecordingPolicy, TaskStartEvent};
use crate::processor::{BuiltinKind, Processor, ProcessorConfig};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrajectoryRecorderConfig {
    pub prompts: PromptRecording,
    pub tokens: bool,
}

impl Default for TrajectoryRecorderConfig {
    fn default() -> Self {
        let policy = RecordingPolicy::default();
        Self {
            prompts: policy.prompts,
            tokens: policy.tokens,
        }
    }
}

impl ProcessorConfig for TrajectoryRecorderConfig {}

pub fn kind() -> BuiltinKind<TrajectoryRecorderConfig> {
    BuiltinKind {
        name: "trajectory_recorder",
        summary: "what the trajectory records: full prompts or deltas, token ids",
        hooks: &[Hook::TaskStart],
        group: Some("trajectory_recorder"),
        build: |config| Box::new(TrajectoryRecorder { config }),
    }
}

struct TrajectoryRecorder {
    config: TrajectoryRecorderConfig,
}

#[async_trait]
impl Processor for TrajectoryRecorder {
    async fn task_start(&mut self, event: &mut TaskStartEvent<'_>) -> Result<(), ProcessorError> {
        event.set_recording(RecordingPolicy {
            prompts: self.config.prompts,
            tokens: self.config.tokens,
        });
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

    #[tokio::test]
    async fn sets_the_recording_policy() {
        let task = task();
        let env = env_with_tools(&[]);
        let mut event = TaskStartEvent::new(&task, &env, SamplingParams::default());
        assert_eq!(event.recording(), RecordingPolicy::default());
        let mut processor = kind()
            .instantiate(&json!({"prompts": "full", "tokens": false}))
            .unwrap();
        processor.task_start(&mut event).await.unwrap();
        assert_eq!(
            event.recording(),
            RecordingPolicy {
                prompts: PromptRecording::Full,
                tokens: false
            }
        );
    }

    #[test]
    fn unknown_prompt_modes_name_the_field() {
        let error = kind()
            .normalize_config(&json!({"prompts": "everything"}))
            .unwrap_err();
        assert_eq!(error.field, "prompts");
    }
}
