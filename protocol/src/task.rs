//! A unit of work: one attempt of one task.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model_spec::ModelSpec;

/// One attempt of one benchmark task, as dispatched to a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    #[serde(default = "crate::default_schema")]
    pub schema: u32,
    pub run_id: String,
    /// Environment id, e.g. `tau2-retail`.
    pub env: String,
    pub split: String,
    /// The benchmark's own task id, as a string.
    pub task_id: String,
    /// 0-based attempt index.
    pub attempt: u32,
    /// Content hash of the harness to run (the worker fetches it from the run's harness store).
    pub harness_hash: String,
    pub model: ModelSpec,
    /// Environment options (τ²: `{"user": "scripted"}`); opaque to the dispatcher.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub env_options: Value,
    /// Seed for anything random in the episode; derived from (run, task, attempt).
    #[serde(default)]
    pub seed: u64,
    /// Wall-clock limit of the episode in seconds (0 = none).
    #[serde(default)]
    pub timeout_s: u64,
}

impl TaskSpec {
    /// The key outcomes are deduplicated by: (run, task, attempt).
    pub fn key(&self) -> (String, String, u32) {
        (self.run_id.clone(), self.task_id.clone(), self.attempt)
    }
}
