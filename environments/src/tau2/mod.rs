//! τ²-bench retail and airline, ported faithfully from the reference tools (see
//! `../shared/specs/tau2.md`): the same tool semantics and error strings, the same DB hash.

pub mod airline;
pub mod db;
pub mod pyjson;
pub mod retail;

/// A tool failure. The agent sees `Error: {0}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ToolError(pub String);

impl ToolError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// The two τ² domains Kiln ships.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Domain {
    Retail,
    Airline,
}
