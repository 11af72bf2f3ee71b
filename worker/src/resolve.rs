//! How a worker turns the names in a [`TaskSpec`] into things it can run: an environment factory
//! for `task.env`, a model factory for `task.model`. Both are cached, because factories load data
//! (τ² databases) or hold connection pools that every episode of a run shares.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kiln_environments::{EnvContext, EnvError, EnvironmentFactory};
use kiln_models::{ModelError, ModelFactory};
use kiln_protocol::ModelSpec;

/// Finds the environment factory for an environment id.
pub trait EnvResolver: Send + Sync {
    fn resolve(&self, env_id: &str) -> Result<Arc<dyn EnvironmentFactory>, EnvError>;
}

/// Finds the model factory for a model spec.
pub trait ModelResolver: Send + Sync {
    fn resolve(&self, spec: &ModelSpec) -> Result<Arc<dyn ModelFactory>, ModelError>;
}

/// [`EnvResolver`] over Kiln's environment catalog, with one fixed [`EnvContext`] (data directory,
/// simulated-user and judge models) for every environment it opens.
pub struct CatalogEnvResolver {
    context: EnvContext,
    opened: Mutex<HashMap<String, Arc<dyn EnvironmentFactory>>>,
}

impl CatalogEnvResolver {
    pub fn new(context: EnvContext) -> Self {
        Self {
            context,
            opened: Mutex::new(HashMap::new()),
        }
    }

    /// Registers an already opened factory (the CLI opens it once to validate the run).
    pub fn with_factory(self, factory: Arc<dyn EnvironmentFactory>) -> Self {
        self.opened
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(factory.id().to_string(), factory);
        self
    }
}

impl EnvResolver for CatalogEnvResolver {
    fn resolve(&self, env_id: &str) -> Result<Arc<dyn EnvironmentFactory>, EnvError> {
        let mut opened = self
            .opened
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(factory) = opened.get(env_id) {
            return Ok(factory.clone());
        }
        let factory = kiln_environments::catalog::open(env_id, &self.context)?;
        opened.insert(env_id.to_string(), factory.clone());
        Ok(factory)
    }
}

/// [`ModelResolver`] over `kiln_models::factory_for`, one factory per distinct spec.
#[derive(Default)]
pub struct BackendModelResolver {
    built: Mutex<HashMap<String, Arc<dyn ModelFactory>>>,
}

impl BackendModelResolver {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers an already built factory for `spec` (the CLI builds it once for its preflight).
    pub fn with_factory(self, spec: &ModelSpec, factory: Arc<dyn ModelFactory>) -> Self {
        self.built
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(cache_key(spec), factory);
        self
    }
}

/// Specs differing only in sampling parameters need different factories, so the key is the whole
/// serialized spec rather than its label.
fn cache_key(spec: &ModelSpec) -> String {
    serde_json::to_string(spec).unwrap_or_else(|_| spec.label())
}

impl ModelResolver for BackendModelResolver {
    fn resolve(&self, spec: &ModelSpec) -> Result<Arc<dyn ModelFactory>, ModelError> {
        let key = cache_key(spec);
        let mut built = self
            .built
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(factory) = built.get(&key) {
            return Ok(factory.clone());
        }
        let factory = kiln_models::factory_for(spec)?;
        built.insert(key, factory.clone());
        Ok(factory)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_protocol::SamplingParams;

    #[test]
    fn model_factories_are_built_once_per_distinct_spec() {
        let resolver = BackendModelResolver::new();
        let spec: ModelSpec = "openai:m@http://127.0.0.1:9/v1".parse().unwrap();
        let first = resolver.resolve(&spec).unwrap();
        let again = resolver.resolve(&spec).unwrap();
        assert!(Arc::ptr_eq(&first, &again));

        let ModelSpec::OpenAi {
            model, base_url, ..
        } = spec
        else {
            unreachable!()
        };
        let hot = ModelSpec::OpenAi {
            model,
            base_url,
            sampling: SamplingParams {
                temperature: 0.7,
                ..Default::default()
            },
        };
        let other = resolver.resolve(&hot).unwrap();
        assert!(!Arc::ptr_eq(&first, &other));
    }

    #[test]
    fn a_missing_local_model_surfaces_its_error_when_used() {
        // Local factories load lazily, so resolving succeeds and the first episode reports it.
        let factory = BackendModelResolver::new()
            .resolve(&"local:/nonexistent/kiln-test.gguf".parse().unwrap())
            .unwrap();
        let error = factory.for_episode(None).err().unwrap();
        assert!(
            error.to_string().contains("/nonexistent/kiln-test.gguf"),
            "{error}"
        );
    }
}
