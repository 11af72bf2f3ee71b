//! The harness as a first-class object.
//!
//! A harness is data ([`HarnessSpec`], TOML or JSON) naming processors that run at eight hooks of
//! an episode. This crate validates and orders them ([`Harness`]), gives each version a canonical
//! form and content hash ([`spec`]), changes versions only through the substitution algebra
//! ([`algebra`]), and runs episodes ([`run_episode`]).
//!
//! - [`events`]: one event type per hook, exposing only what a processor may change there.
//! - [`processor`]: the [`Processor`] trait, processor kinds and the registry.
//! - [`builtin`]: the built-in kinds (`system_prompt`, `history_window`, `tool_catalogue`,
//!   `tool_parser`, `parse_retry`, `step_limit`, `loop_detection`, `trajectory_recorder`,
//!   `compact_prompt`, `admissible_choice`) and `script`: Rhai processors under hard limits
//!   ([`builtin::script`]).
//! - [`defaults`]: the harness files shipped in `harnesses/`.
//! - [`commands`]: what `kiln harness validate|show|diff` prints.

pub mod algebra;
pub mod builtin;
pub mod commands;
pub mod defaults;
pub mod diff;
pub mod episode;
pub mod error;
pub mod events;
mod harness;
pub mod processor;
pub mod resolve;
pub mod spec;

pub use algebra::{HarnessEdit, apply_edit, apply_edits, insert, remove, replace};
pub use defaults::{builtin_harness, default_for_env, default_for_run};
pub use diff::{HarnessDiff, diff};
pub use episode::{EpisodeResult, run_episode};
pub use error::{HarnessError, HarnessErrorKind, Location, ProcessorError};
pub use harness::Harness;
pub use kiln_protocol::{HarnessSpec, Hook, ProcessorSpec};
pub use processor::{Processor, ProcessorKind, ProcessorRegistry, builtin_registry};
pub use spec::{SpecFormat, content_hash, load_spec, short_hash};
