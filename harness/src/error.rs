//! The error type of every harness operation that can reject input: loading, validating, ordering
//! and editing a harness.
//!
//! Errors carry what a user needs to fix the input: the file, line and column when known, the
//! processor id and the field. The episode loop never returns these; it turns failures into an
//! outcome's termination.

use std::fmt;
use std::path::{Path, PathBuf};

/// What kind of problem a [`HarnessError`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HarnessErrorKind {
    /// The file could not be read.
    Io,
    /// The file extension is neither `.toml` nor `.json`.
    UnsupportedFormat,
    /// The text is not valid TOML/JSON or does not match the spec's shape.
    Syntax,
    /// A processor names a kind the registry does not know.
    UnknownKind,
    /// Two processors share an id.
    DuplicateId,
    /// A processor's `config` is invalid for its kind.
    InvalidConfig,
    /// A processor is attached to a hook its kind does not run at.
    InvalidHook,
    /// Two processors hold the same singleton group.
    GroupConflict,
    /// A replacement would move a processor into another singleton group (or out of any group).
    CrossGroupReplace,
    /// An edit names a processor id that the harness does not have.
    UnknownId,
    /// `after` constraints form a cycle.
    Cycle,
    /// An `after` constraint contradicts the phases of two processors that share a hook.
    OrderConflict,
    /// A processor could not be instantiated for an episode.
    Instantiate,
    /// A script processor's source does not compile or breaks a script rule; the location is
    /// in the script (or mapped into the harness file for an inline script).
    Script,
}

/// A line/column position in a harness file, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

/// A rejected harness or edit. `kind()` says what failed; `Display` names the file, position,
/// processor and field when they are known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct HarnessError {
    kind: HarnessErrorKind,
    /// Boxed so `Result<_, HarnessError>` stays small.
    details: Box<Details>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Details {
    message: String,
    file: Option<PathBuf>,
    location: Option<Location>,
    processor: Option<String>,
    field: Option<String>,
}

impl HarnessError {
    pub fn new(kind: HarnessErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            details: Box::new(Details {
                message: message.into(),
                file: None,
                location: None,
                processor: None,
                field: None,
            }),
        }
    }

    pub fn kind(&self) -> HarnessErrorKind {
        self.kind
    }

    /// The bare message, without file, processor or field.
    pub fn message(&self) -> &str {
        &self.details.message
    }

    pub fn file(&self) -> Option<&Path> {
        self.details.file.as_deref()
    }

    pub fn location(&self) -> Option<Location> {
        self.details.location
    }

    /// Id of the processor the error is about.
    pub fn processor(&self) -> Option<&str> {
        self.details.processor.as_deref()
    }

    /// Dotted path of the offending field (`config.max_steps`, `hooks`, `processor.kind`).
    pub fn field(&self) -> Option<&str> {
        self.details.field.as_deref()
    }

    pub fn with_file(mut self, file: impl Into<PathBuf>) -> Self {
        self.details.file = Some(file.into());
        self
    }

    pub fn with_location(mut self, location: Option<Location>) -> Self {
        if location.is_some() {
            self.details.location = location;
        }
        self
    }

    pub fn with_processor(mut self, id: impl Into<String>) -> Self {
        self.details.processor = Some(id.into());
        self
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.details.field = Some(field.into());
        self
    }

    /// The same error with another message (e.g. prefixed with the edit that caused it).
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.details.message = message.into();
        self
    }
}

impl fmt::Display for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let details = &self.details;
        if let Some(file) = &details.file {
            write!(f, "{}", file.display())?;
            if let Some(Location { line, column }) = details.location {
                write!(f, ":{line}:{column}")?;
            }
            f.write_str(": ")?;
        } else if let Some(Location { line, column }) = details.location {
            write!(f, "line {line}, column {column}: ")?;
        }
        if let Some(processor) = &details.processor {
            write!(f, "processor `{processor}`: ")?;
        }
        if let Some(field) = &details.field {
            write!(f, "field `{field}`: ")?;
        }
        f.write_str(&details.message)
    }
}

/// A processor failed while handling a hook. The episode ends with `HarnessError`; the message is
/// recorded in the outcome.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ProcessorError {
    message: String,
}

impl ProcessorError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_file_position_processor_and_field() {
        let error = HarnessError::new(HarnessErrorKind::InvalidConfig, "must be at least 1")
            .with_file("harnesses/x.toml")
            .with_location(Some(Location { line: 7, column: 3 }))
            .with_processor("limit")
            .with_field("config.max_steps");
        assert_eq!(
            error.to_string(),
            "harnesses/x.toml:7:3: processor `limit`: field `config.max_steps`: must be at least 1"
        );
        assert_eq!(error.kind(), HarnessErrorKind::InvalidConfig);
    }

    #[test]
    fn display_without_file_keeps_the_position() {
        let error = HarnessError::new(HarnessErrorKind::Syntax, "expected `=`")
            .with_location(Some(Location { line: 2, column: 9 }));
        assert_eq!(error.to_string(), "line 2, column 9: expected `=`");
    }
}
