//! The [`Processor`] trait, processor kinds and the registry that turns a [`ProcessorSpec`] into a
//! live processor.
//!
//! A processor is instantiated once per episode from its spec, so it may keep per-episode state
//! (counters, seen actions) in `self`. A kind ([`ProcessorKind`]) is the shared, stateless
//! factory: it knows the kind's hooks, its singleton group, and how to validate and normalize a
//! config.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use kiln_protocol::Hook;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Location, ProcessorError};
use crate::events::{
    AfterModelEvent, AfterToolEvent, BeforeModelEvent, BeforeToolEvent, StepEndEvent,
    StepStartEvent, TaskEndEvent, TaskStartEvent,
};

/// The future a hook method returns (what `async_trait` generates).
pub(crate) type HookFuture<'a> =
    Pin<Box<dyn Future<Output = Result<(), ProcessorError>> + Send + 'a>>;

/// Code that runs at one or more hooks of an episode. Every method defaults to doing nothing; a
/// kind implements the hooks it runs at. Returning an error ends the episode with
/// `HarnessError`.
#[async_trait]
pub trait Processor: Send {
    async fn task_start(&mut self, _event: &mut TaskStartEvent<'_>) -> Result<(), ProcessorError> {
        Ok(())
    }
    async fn step_start(&mut self, _event: &mut StepStartEvent<'_>) -> Result<(), ProcessorError> {
        Ok(())
    }
    async fn before_model(
        &mut self,
        _event: &mut BeforeModelEvent<'_>,
    ) -> Result<(), ProcessorError> {
        Ok(())
    }
    async fn after_model(
        &mut self,
        _event: &mut AfterModelEvent<'_>,
    ) -> Result<(), ProcessorError> {
        Ok(())
    }
    async fn before_tool(
        &mut self,
        _event: &mut BeforeToolEvent<'_>,
    ) -> Result<(), ProcessorError> {
        Ok(())
    }
    async fn after_tool(&mut self, _event: &mut AfterToolEvent<'_>) -> Result<(), ProcessorError> {
        Ok(())
    }
    async fn step_end(&mut self, _event: &mut StepEndEvent<'_>) -> Result<(), ProcessorError> {
        Ok(())
    }
    async fn task_end(&mut self, _event: &mut TaskEndEvent<'_>) -> Result<(), ProcessorError> {
        Ok(())
    }
}

/// A config rejected by its kind: which field (dotted path inside `config`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub message: String,
    /// Position inside the field's text (a script's line and column), when the field is code.
    pub location: Option<Location>,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
            location: None,
        }
    }

    pub fn with_location(mut self, location: Option<Location>) -> Self {
        self.location = location;
        self
    }
}

/// A processor kind: the stateless factory behind `kind = "…"` in a harness file.
pub trait ProcessorKind: Send + Sync {
    /// The name used in harness files.
    fn name(&self) -> &'static str;
    /// One line for `kiln harness` listings.
    fn summary(&self) -> &'static str;
    /// Hooks the kind runs at; also the hooks used when a spec lists none.
    fn hooks(&self) -> &'static [Hook];
    /// Singleton group the kind belongs to unless the spec names another.
    fn group(&self) -> Option<&'static str>;
    /// Validates a config and returns it with every default filled in.
    fn normalize_config(&self, config: &Value) -> Result<Value, ConfigError>;
    /// Hooks a processor with this (normalized) config runs at when its spec lists none; by
    /// default every hook of the kind. A script runs at the hooks it defines functions for.
    fn default_hooks(&self, _config: &Value) -> Vec<Hook> {
        self.hooks().to_vec()
    }
    /// Checks the hooks a spec lists (all supported by the kind) against its normalized config;
    /// a script must define a function for each listed hook and list every hook it defines.
    fn check_hooks(&self, _config: &Value, _hooks: &[Hook]) -> Result<(), ConfigError> {
        Ok(())
    }
    /// A fresh processor for one episode. `config` has passed `normalize_config`.
    fn instantiate(&self, config: &Value) -> Result<Box<dyn Processor>, ConfigError>;
}

/// A built-in kind's typed config: serde with defaults for every field, plus semantic checks.
pub trait ProcessorConfig: Serialize + DeserializeOwned + Default {
    fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
    }
}

/// Parses a config value into its typed form, naming the offending field on error.
pub fn parse_config<C: ProcessorConfig>(config: &Value) -> Result<C, ConfigError> {
    let parsed: C = match config {
        Value::Null => C::default(),
        Value::Object(_) => serde_path_to_error::deserialize(config.clone()).map_err(|error| {
            let message = error.inner().to_string();
            let path = error.path().to_string();
            let field = if path == "." {
                field_in_message(&message).unwrap_or_default()
            } else {
                path
            };
            ConfigError::new(field, message)
        })?,
        other => {
            return Err(ConfigError::new(
                "",
                format!("expected a table of settings, found {}", json_type(other)),
            ));
        }
    };
    parsed.validate()?;
    Ok(parsed)
}

/// The field a serde message names: serde writes ``missing field `kind` ``, ``unknown field `x`,
/// expected …`` and ``duplicate field `x` ``.
pub(crate) fn field_in_message(message: &str) -> Option<String> {
    const MARKER: &str = "field `";
    let start = message.find(MARKER)? + MARKER.len();
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_string())
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "a table",
    }
}

/// A built-in kind: a typed config and a constructor.
pub struct BuiltinKind<C> {
    pub name: &'static str,
    pub summary: &'static str,
    pub hooks: &'static [Hook],
    pub group: Option<&'static str>,
    pub build: fn(C) -> Box<dyn Processor>,
}

impl<C> ProcessorKind for BuiltinKind<C>
where
    C: ProcessorConfig + Send + Sync + 'static,
{
    fn name(&self) -> &'static str {
        self.name
    }
    fn summary(&self) -> &'static str {
        self.summary
    }
    fn hooks(&self) -> &'static [Hook] {
        self.hooks
    }
    fn group(&self) -> Option<&'static str> {
        self.group
    }
    fn normalize_config(&self, config: &Value) -> Result<Value, ConfigError> {
        let parsed: C = parse_config(config)?;
        serde_json::to_value(&parsed)
            .map_err(|error| ConfigError::new("", format!("cannot serialize config: {error}")))
    }
    fn instantiate(&self, config: &Value) -> Result<Box<dyn Processor>, ConfigError> {
        let parsed: C = parse_config(config)?;
        Ok((self.build)(parsed))
    }
}

/// The processor kinds a harness may use, by name.
#[derive(Clone, Default)]
pub struct ProcessorRegistry {
    kinds: BTreeMap<&'static str, Arc<dyn ProcessorKind>>,
}

impl ProcessorRegistry {
    /// A registry with no kinds (tests, or a caller assembling its own set).
    pub fn empty() -> Self {
        Self::default()
    }

    /// A registry with every built-in kind.
    pub fn with_builtins() -> Self {
        let mut registry = Self::empty();
        for kind in crate::builtin::kinds() {
            registry.register(kind);
        }
        registry
    }

    /// Adds or replaces a kind.
    pub fn register(&mut self, kind: Arc<dyn ProcessorKind>) {
        self.kinds.insert(kind.name(), kind);
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn ProcessorKind>> {
        self.kinds.get(name)
    }

    /// Kind names, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        self.kinds.keys().copied().collect()
    }

    pub fn kinds(&self) -> impl Iterator<Item = &Arc<dyn ProcessorKind>> {
        self.kinds.values()
    }
}

impl std::fmt::Debug for ProcessorRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessorRegistry")
            .field("kinds", &self.names())
            .finish()
    }
}

/// The shared registry of built-in kinds.
pub fn builtin_registry() -> Arc<ProcessorRegistry> {
    static REGISTRY: OnceLock<Arc<ProcessorRegistry>> = OnceLock::new();
    REGISTRY
        .get_or_init(|| Arc::new(ProcessorRegistry::with_builtins()))
        .clone()
}
