//! [`Harness`]: a validated, canonical harness with its content hash, ready to run episodes.

use std::path::Path;
use std::sync::Arc;

use kiln_protocol::{HarnessSpec, Hook};

use crate::algebra::{HarnessEdit, apply_edit};
use crate::error::{HarnessError, HarnessErrorKind};
use crate::processor::{Processor, ProcessorRegistry, builtin_registry};
use crate::resolve::{ResolvedProcessor, resolve};
use crate::spec::{
    canonical_from_resolved, canonical_json, canonical_toml, hash_canonical, load_spec, short_hash,
};

/// A harness ready to run: canonical spec, processors in run order, content hash. Cheap to clone
/// and shared by concurrent episodes; each episode instantiates its own processors.
#[derive(Clone)]
pub struct Harness {
    canonical: HarnessSpec,
    processors: Vec<ResolvedProcessor>,
    hash: String,
    registry: Arc<ProcessorRegistry>,
}

impl Harness {
    /// Validates `spec` against the built-in kinds.
    pub fn new(spec: &HarnessSpec) -> Result<Self, HarnessError> {
        Self::with_registry(spec, builtin_registry())
    }

    /// Validates `spec` against `registry`.
    pub fn with_registry(
        spec: &HarnessSpec,
        registry: Arc<ProcessorRegistry>,
    ) -> Result<Self, HarnessError> {
        let processors = resolve(spec, &registry)?;
        let canonical = canonical_from_resolved(spec, &processors);
        let hash = hash_canonical(&canonical);
        Ok(Self {
            canonical,
            processors,
            hash,
            registry,
        })
    }

    /// Loads a `.toml` or `.json` harness file (built-in kinds).
    pub fn load(path: &Path) -> Result<Self, HarnessError> {
        let registry = builtin_registry();
        let spec = load_spec(path, &registry)?;
        Self::with_registry(&spec, registry).map_err(|error| error.with_file(path))
    }

    /// The canonical spec (defaults filled, run order).
    pub fn spec(&self) -> &HarnessSpec {
        &self.canonical
    }

    pub fn name(&self) -> &str {
        &self.canonical.name
    }

    /// Hex sha256 of the canonical JSON; names this version.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    pub fn short_hash(&self) -> &str {
        short_hash(&self.hash)
    }

    pub fn canonical_json(&self) -> String {
        canonical_json(&self.canonical)
    }

    pub fn canonical_toml(&self) -> Result<String, HarnessError> {
        canonical_toml(&self.canonical)
    }

    /// Processors in run order, defaults filled.
    pub fn processors(&self) -> &[ResolvedProcessor] {
        &self.processors
    }

    /// Ids of the processors that run at `hook`, in order.
    pub fn processors_at(&self, hook: Hook) -> Vec<&str> {
        self.processors
            .iter()
            .filter(|processor| processor.runs_at(hook))
            .map(|processor| processor.spec.id.as_str())
            .collect()
    }

    pub fn registry(&self) -> &Arc<ProcessorRegistry> {
        &self.registry
    }

    /// A new version with `edit` applied (see [`crate::algebra`]).
    pub fn apply(&self, edit: &HarnessEdit) -> Result<Harness, HarnessError> {
        let edited = apply_edit(&self.canonical, edit, &self.registry)?;
        Self::with_registry(&edited, self.registry.clone())
    }

    /// Fresh processors for one episode, in run order.
    pub(crate) fn instantiate(&self) -> Result<Vec<Slot>, HarnessError> {
        self.processors
            .iter()
            .map(|resolved| {
                let processor =
                    resolved
                        .kind
                        .instantiate(&resolved.spec.config)
                        .map_err(|error| {
                            HarnessError::new(HarnessErrorKind::Instantiate, error.message)
                                .with_processor(&resolved.spec.id)
                                .with_field(format!("config.{}", error.field))
                        })?;
                Ok(Slot {
                    id: resolved.spec.id.clone(),
                    hooks: resolved.spec.hooks.clone(),
                    processor,
                })
            })
            .collect()
    }
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("name", &self.canonical.name)
            .field("hash", &self.hash)
            .field("processors", &self.processors)
            .finish()
    }
}

/// One live processor of an episode.
pub(crate) struct Slot {
    pub id: String,
    pub hooks: Vec<Hook>,
    pub processor: Box<dyn Processor>,
}
