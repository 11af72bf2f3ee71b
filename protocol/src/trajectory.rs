//! The full record of one episode: one line of `trajectories.jsonl`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::UnixMillis;
use crate::chat::{Message, ToolCall, Usage};
use crate::env::{Action, Observation};
use crate::model_spec::ModelSpec;

/// Everything that happened in one episode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trajectory {
    #[serde(default = "crate::default_schema")]
    pub schema: u32,
    pub run_id: String,
    pub env: String,
    pub task_id: String,
    pub attempt: u32,
    pub harness_hash: String,
    pub model: ModelSpec,
    /// The conversation before the agent's first turn (system prompt, opening messages).
    pub opening: Vec<Message>,
    pub steps: Vec<Step>,
    /// Notes processors attached outside any step (task_start / task_end).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<Value>,
}

/// One agent step: one model turn and the actions it produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub index: u32,
    pub started_at: UnixMillis,
    pub ended_at: UnixMillis,
    /// Messages sent to the model at this step (after context processors), when the harness records
    /// prompts; new messages since the previous step otherwise (see `prompt_is_delta`).
    pub prompt: Vec<Message>,
    #[serde(default)]
    pub prompt_is_delta: bool,
    pub model: ModelTurn,
    pub actions: Vec<ActionRecord>,
    /// Notes processors attached during the step (parse retries, loop warnings, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<Value>,
}

/// What the model produced at one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelTurn {
    /// Raw text as the backend returned it.
    pub raw_content: String,
    /// Tool calls as the backend returned them (native tool calling).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub raw_tool_calls: Vec<ToolCall>,
    pub usage: Usage,
    pub latency_ms: u64,
    /// Local models: prompt token ids, completion token ids and their logprobs (for training).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<TokenRecord>,
    /// Parse retries spent at this step.
    #[serde(default)]
    pub retries: u32,
}

/// Token-level record for local models.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub prompt_ids: Vec<u32>,
    pub completion_ids: Vec<u32>,
    /// Log-probabilities of the behaviour policy at each completion token: `log_softmax(logits /
    /// logprob_temperature)`.
    pub completion_logprobs: Vec<f32>,
    /// The temperature the log-probabilities are at: the sampling temperature, 1 for greedy.
    #[serde(default = "unit_temperature")]
    pub logprob_temperature: f32,
    /// Leading prompt tokens whose keys and values came from the model's prefix cache; the
    /// other `prompt_ids.len() - reused_prompt_tokens` were computed for this call.
    #[serde(default)]
    pub reused_prompt_tokens: u64,
}

fn unit_temperature() -> f32 {
    1.0
}

impl TokenRecord {
    /// Prompt tokens computed for this call (not reused from the prefix cache).
    pub fn computed_prompt_tokens(&self) -> u64 {
        (self.prompt_ids.len() as u64).saturating_sub(self.reused_prompt_tokens)
    }
}

/// One action and what came back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionRecord {
    pub action: Action,
    pub observation: Observation,
    pub started_at: UnixMillis,
    pub ended_at: UnixMillis,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub info: Value,
}
