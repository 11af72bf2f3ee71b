//! Kiln's wire and file types.
//!
//! Everything that crosses a process boundary or lands in a run directory is defined here: tasks,
//! outcomes, trajectories, harness and model specs, the chat message shapes shared by models and
//! environments, and the NATS/Docker names other tools rely on. This crate does no I/O.
//!
//! Every top-level record carries a `schema` number ([`SCHEMA_VERSION`]) so readers can reject or
//! migrate files written by another Kiln version.

pub mod chat;
pub mod env;
pub mod env_server;
pub mod harness_spec;
pub mod model_spec;
pub mod names;
pub mod outcome;
pub mod rng;
pub mod task;
pub mod trajectory;

pub use chat::{Message, Role, ToolCall, ToolSchema, Usage};
pub use env::{Action, EnvInfo, Observation, StepResult};
pub use harness_spec::{HarnessSpec, Hook, ProcessorSpec};
pub use model_spec::{ModelSpec, ModelSpecError, SamplingParams};
pub use outcome::{ComponentScore, Outcome, Termination};
pub use task::TaskSpec;
pub use trajectory::{ActionRecord, ModelTurn, Step, Trajectory};

/// Version of the on-disk and on-wire record formats defined in this crate.
pub const SCHEMA_VERSION: u32 = 1;

/// Milliseconds since the Unix epoch; the timestamp unit used in every record.
pub type UnixMillis = u64;

/// Serde default for `schema` fields: records written before the field existed are version 1.
pub fn default_schema() -> u32 {
    SCHEMA_VERSION
}
