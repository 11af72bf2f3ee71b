//! What an agent sends to an environment and what comes back.
//!
//! These are also the message bodies of the env-server protocol (JSON lines on stdio), so an
//! environment behaves the same in-process, as a subprocess, or inside a container.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::chat::{ToolCall, ToolSchema};

/// One agent action. An assistant turn with several tool calls is stepped one call at a time, so the
/// `before_tool`/`after_tool` hooks see each call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action {
    /// A text message: to the simulated user (τ²), or a text command (ALFWorld `go to cabinet 1`,
    /// WebShop `search[red shoes]`).
    Message { text: String },
    /// A tool call.
    ToolCall { call: ToolCall },
}

/// What the environment answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Observation {
    /// Result of a tool call. `is_error` mirrors τ²'s error flag (`Error: ...` outputs).
    ToolResult {
        call_id: String,
        name: String,
        content: String,
        is_error: bool,
    },
    /// A message from the (simulated) user.
    User { text: String },
    /// Text from a text environment (room description, web page).
    Text { text: String },
}

impl Observation {
    pub fn text(&self) -> &str {
        match self {
            Observation::ToolResult { content, .. } => content,
            Observation::User { text } | Observation::Text { text } => text,
        }
    }
}

/// Result of one [`Action`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepResult {
    pub observation: Observation,
    /// The episode is over (goal reached, user stopped, transfer, environment limit).
    pub done: bool,
    /// Why the environment ended the episode, when `done`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination: Option<crate::outcome::Termination>,
    /// Admissible actions after this step, for environments that list them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admissible_actions: Option<Vec<String>>,
    /// Environment-specific extras, recorded in the trajectory.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub info: Value,
}

/// Static description of an environment instance after reset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvInfo {
    /// Environment id, e.g. `tau2-retail`.
    pub env: String,
    /// Text the harness may place in the system prompt (τ² policy, task instruction).
    #[serde(default)]
    pub instructions: String,
    /// Tools the agent may call (empty for pure text environments).
    #[serde(default)]
    pub tools: Vec<ToolSchema>,
    /// Messages already in the conversation before the agent's first turn, oldest first (τ²: the
    /// agent's fixed greeting, then the user's first message; ALFWorld: the room description).
    #[serde(default)]
    pub opening: Vec<crate::chat::Message>,
    /// Admissible actions at the start, for environments that list them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admissible_actions: Option<Vec<String>>,
}
