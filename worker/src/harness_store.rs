//! Harness versions by content hash. Tasks carry only the hash; workers look the spec up here.
//! In-process map now; a NATS KV bucket (`kiln_harness`) later.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use kiln_protocol::HarnessSpec;

use crate::transport::TransportError;

/// Where harness specs are published (coordinator) and fetched (workers).
#[async_trait]
pub trait HarnessStore: Send + Sync {
    /// Stores `spec` under its content hash. Storing the same hash twice is a no-op.
    async fn put(&self, hash: &str, spec: &HarnessSpec) -> Result<(), TransportError>;
    /// The spec with this hash, if any was stored.
    async fn get(&self, hash: &str) -> Result<Option<HarnessSpec>, TransportError>;
}

/// [`HarnessStore`] in a shared map.
#[derive(Clone, Default)]
pub struct InMemoryHarnessStore {
    specs: Arc<RwLock<HashMap<String, HarnessSpec>>>,
}

impl InMemoryHarnessStore {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl HarnessStore for InMemoryHarnessStore {
    async fn put(&self, hash: &str, spec: &HarnessSpec) -> Result<(), TransportError> {
        let mut specs = self
            .specs
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        specs
            .entry(hash.to_string())
            .or_insert_with(|| spec.clone());
        Ok(())
    }

    async fn get(&self, hash: &str) -> Result<Option<HarnessSpec>, TransportError> {
        let specs = self
            .specs
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(specs.get(hash).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> HarnessSpec {
        HarnessSpec {
            schema: 1,
            name: name.into(),
            description: String::new(),
            envs: Vec::new(),
            processors: Vec::new(),
        }
    }

    #[tokio::test]
    async fn stores_by_hash_and_keeps_the_first_version() {
        let store = InMemoryHarnessStore::new();
        assert_eq!(store.get("h1").await.unwrap(), None);
        store.put("h1", &spec("first")).await.unwrap();
        store.put("h1", &spec("second")).await.unwrap();
        assert_eq!(store.get("h1").await.unwrap().unwrap().name, "first");
    }
}
