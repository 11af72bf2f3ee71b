//! The harness as data. The runtime (ordering, canonical form, hashing) lives in `kiln-harness`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The eight lifecycle hooks, in run order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hook {
    TaskStart,
    StepStart,
    BeforeModel,
    AfterModel,
    BeforeTool,
    AfterTool,
    StepEnd,
    TaskEnd,
}

impl Hook {
    pub const ALL: [Hook; 8] = [
        Hook::TaskStart,
        Hook::StepStart,
        Hook::BeforeModel,
        Hook::AfterModel,
        Hook::BeforeTool,
        Hook::AfterTool,
        Hook::StepEnd,
        Hook::TaskEnd,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Hook::TaskStart => "task_start",
            Hook::StepStart => "step_start",
            Hook::BeforeModel => "before_model",
            Hook::AfterModel => "after_model",
            Hook::BeforeTool => "before_tool",
            Hook::AfterTool => "after_tool",
            Hook::StepEnd => "step_end",
            Hook::TaskEnd => "task_end",
        }
    }
}

impl std::fmt::Display for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A harness: an ordered set of processors plus metadata. Serialized as TOML or JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HarnessSpec {
    #[serde(default = "crate::default_schema")]
    pub schema: u32,
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Environments this harness is written for (informational; empty = any).
    #[serde(default)]
    pub envs: Vec<String>,
    #[serde(default, rename = "processor")]
    pub processors: Vec<ProcessorSpec>,
}

/// One processor instance in a harness.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessorSpec {
    /// Unique id within the harness; edits and `after` constraints refer to it.
    pub id: String,
    /// Built-in processor kind (e.g. `system_prompt`, `step_limit`) or `script`.
    pub kind: String,
    /// Hooks it runs at. Empty means the kind's default hooks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<Hook>,
    /// Coarse ordering: lower phases run first at a hook.
    #[serde(default)]
    pub phase: i32,
    /// Soft ordering: run after these processor ids when they share a hook (ignored if absent).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    /// Singleton group: at most one processor of a harness may hold a given group (e.g. `tool_parser`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Kind-specific configuration.
    #[serde(default, skip_serializing_if = "is_empty_config")]
    pub config: Value,
}

fn is_empty_config(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Object(map) => map.is_empty(),
        _ => false,
    }
}
