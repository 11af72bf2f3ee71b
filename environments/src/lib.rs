//! The [`Environment`] trait and Kiln's benchmarks.
//!
//! Each benchmark lives in its own module with its scorer. An environment that needs a model (τ²'s
//! simulated user, an NL-assertion judge) gets it through [`AuxModel`], which the worker fills with
//! a chat model; this crate never depends on `kiln-models`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use kiln_protocol::{Action, ComponentScore, EnvInfo, Message, StepResult, TaskSpec, Termination};
use serde_json::Value;

pub mod agentgym;
pub mod alfworld;
pub mod catalog;
pub mod env_server;
pub mod faults;
pub mod gaia;
pub mod options;
pub mod swebench;
pub mod tau2;
pub mod webshop;
pub mod wiki;

/// What went wrong in an environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvErrorKind {
    /// No environment with that id.
    UnknownEnv,
    /// No split with that name.
    UnknownSplit,
    /// No task with that id in the environment.
    UnknownTask,
    /// Data files are missing or corrupt (the message names the file and what was expected).
    Data,
    /// Options passed to the environment are invalid.
    InvalidOptions,
    /// A model the environment needs (simulated user, judge) failed.
    AuxModel,
    /// The environment process or container failed or broke the protocol.
    Crashed,
    /// `step` or `evaluate` called in the wrong state (before reset, after done).
    State,
}

/// An environment error. `kind()` says what failed; the message names the input.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct EnvError {
    kind: EnvErrorKind,
    message: String,
}

impl EnvError {
    pub fn new(kind: EnvErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
    pub fn kind(&self) -> EnvErrorKind {
        self.kind
    }
}

/// The scored end of an episode.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// Product of judged components.
    pub reward: f64,
    pub components: BTreeMap<String, ComponentScore>,
    /// Every component judged and reward = 1 (±1e-6).
    pub success: bool,
    /// Success counting only judged components.
    pub success_judged_only: bool,
    /// τ²: the final DB hash as tau2 computes it.
    pub db_hash: Option<String>,
    pub info: Value,
}

/// A model an environment uses internally (simulated user, judge). Plain text in, text out.
#[async_trait]
pub trait AuxModel: Send + Sync {
    fn label(&self) -> String;
    async fn complete(&self, messages: &[Message]) -> Result<String, String>;
}

/// One environment instance, used by one episode at a time.
#[async_trait]
pub trait Environment: Send {
    /// Starts the task; returns tools, instructions and the opening messages.
    async fn reset(&mut self, task: &TaskSpec) -> Result<EnvInfo, EnvError>;
    /// Applies one agent action.
    async fn step(&mut self, action: &Action) -> Result<StepResult, EnvError>;
    /// Scores the episode. `termination` is how the episode ended (τ² gives reward 0 unless the
    /// agent or user stopped).
    async fn evaluate(&mut self, termination: Termination) -> Result<Evaluation, EnvError>;
    /// The gold actions of the current task, in order, for the oracle model (None if unknown).
    fn oracle_plan(&self) -> Option<Vec<Action>>;
    /// Releases resources. Idempotent.
    async fn close(&mut self) -> Result<(), EnvError> {
        Ok(())
    }
}

/// Where data and auxiliary models come from when creating environments.
#[derive(Clone, Default)]
pub struct EnvContext {
    /// Root of Kiln's data cache (`$KILN_HOME`, default `~/.cache/kiln`), filled by `ops/setup`.
    pub data_dir: PathBuf,
    /// Model for a model-driven simulated user.
    pub user_model: Option<Arc<dyn AuxModel>>,
    /// Model for NL-assertion judging.
    pub judge_model: Option<Arc<dyn AuxModel>>,
}

/// A split and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitInfo {
    pub name: String,
    pub tasks: usize,
}

/// Where AEGIS draws its three frozen evolution splits from: names of the environment's own
/// splits. `search` and `gate` may name the same split (they are then drawn disjointly from it);
/// `held_out` must differ from both, so the final report measures tasks evolution never saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvolutionSources {
    /// Rollouts AEGIS learns from.
    pub search: String,
    /// Acceptance (the per-task no-regression gate).
    pub gate: String,
    /// The final report only.
    pub held_out: String,
}

impl EvolutionSources {
    pub fn new(search: &str, gate: &str, held_out: &str) -> Self {
        Self {
            search: search.to_string(),
            gate: gate.to_string(),
            held_out: held_out.to_string(),
        }
    }
}

/// Creates environment instances of one kind and lists their tasks.
pub trait EnvironmentFactory: Send + Sync {
    /// Environment id (`tau2-retail`).
    fn id(&self) -> &str;
    /// One line for `kiln envs`.
    fn description(&self) -> &str;
    fn splits(&self) -> Vec<SplitInfo>;
    /// Task ids of a split, in benchmark order.
    fn task_ids(&self, split: &str) -> Result<Vec<String>, EnvError>;
    /// The split a run uses when none is given: the benchmark's usual evaluation split.
    fn default_split(&self) -> &str {
        "test"
    }
    /// A fresh instance. `options` are the task's `env_options`.
    fn create(&self, options: &Value) -> Result<Box<dyn Environment>, EnvError>;
    /// The splits AEGIS evolves on, gates with and reports on; `None` when the environment has
    /// no split layout fit for evolution.
    fn evolution_sources(&self) -> Option<EvolutionSources> {
        None
    }
    /// The cluster a task belongs to (its task type or category), for stratified split draws,
    /// demonstrations by type and variant routing; empty when the environment has none.
    fn task_cluster(&self, task_id: &str) -> String {
        let _ = task_id;
        String::new()
    }
}

/// Kiln's data cache: `$KILN_HOME`, else `~/.cache/kiln`. `ops/setup` fills it.
pub fn default_data_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("KILN_HOME") {
        return PathBuf::from(home);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("kiln")
}
