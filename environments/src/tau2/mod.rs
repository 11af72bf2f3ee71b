//! τ²-bench retail and airline, ported faithfully from the reference tools (see
//! `../shared/specs/tau2.md`): the same tool semantics and error strings, the same DB hash.

pub mod airline;
pub mod db;
pub mod env;
pub mod eval;
pub mod py;
pub mod pyjson;
pub mod retail;
pub mod tasks;
pub mod user;

/// A tool failure. The agent sees `Error: {0}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ToolError(pub String);

impl ToolError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// What the agent sees for a tool result, and whether it is an error, exactly as the reference
/// servers' `_content_from_result` and `Error: {exc}` produce it: strings unquoted, records as
/// `json.dumps(value, ensure_ascii=False)`. Shared by both domains.
pub fn render_output(result: &Result<serde_json::Value, ToolError>) -> (String, bool) {
    match result {
        Ok(serde_json::Value::String(text)) => (text.clone(), false),
        Ok(value) => (pyjson::dumps_unicode(value), false),
        Err(error) => (format!("Error: {error}"), true),
    }
}

/// The two τ² domains Kiln ships.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Domain {
    Retail,
    Airline,
}
