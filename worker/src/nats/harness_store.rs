//! Harness versions in the JetStream KV bucket `kiln_harness`, keyed by content hash: the
//! coordinator puts each version once, workers on any host get it by the hash their task carries.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_nats::jetstream::kv::{self, CreateErrorKind, Store};
use async_nats::jetstream::stream::StorageType;
use async_trait::async_trait;
use kiln_protocol::HarnessSpec;
use kiln_protocol::names::HARNESS_BUCKET;

use crate::harness_store::HarnessStore;
use crate::transport::{TransportError, TransportErrorKind};

/// [`HarnessStore`] on the `kiln_harness` KV bucket. Cheap to clone. A version never changes
/// (its key is its content hash), so versions read once are served from memory afterwards: a
/// worker fetches each harness once, not once per task.
#[derive(Clone)]
pub struct NatsHarnessStore {
    store: Store,
    cache: Arc<Mutex<HashMap<String, HarnessSpec>>>,
}

impl NatsHarnessStore {
    /// Opens the bucket, creating it when missing. A version is immutable (its key is its content
    /// hash), so the bucket keeps one revision per key.
    pub async fn open(client: &async_nats::Client) -> Result<Self, TransportError> {
        let jetstream = async_nats::jetstream::new(client.clone());
        if let Ok(store) = jetstream.get_key_value(HARNESS_BUCKET).await {
            return Ok(Self::new(store));
        }
        let config = kv::Config {
            bucket: HARNESS_BUCKET.to_string(),
            description: "kiln harness versions by content hash".to_string(),
            history: 1,
            storage: StorageType::File,
            ..Default::default()
        };
        let store = jetstream.create_key_value(config).await.map_err(|error| {
            backend(format!("cannot create kv bucket {HARNESS_BUCKET}: {error}"))
        })?;
        Ok(Self::new(store))
    }

    fn new(store: Store) -> Self {
        Self {
            store,
            cache: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn cached(&self, hash: &str) -> Option<HarnessSpec> {
        let cache = self
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        cache.get(hash).cloned()
    }
}

#[async_trait]
impl HarnessStore for NatsHarnessStore {
    async fn put(&self, hash: &str, spec: &HarnessSpec) -> Result<(), TransportError> {
        let value = serde_json::to_vec(spec).map_err(|error| {
            codec(format!(
                "cannot encode harness {hash} for {HARNESS_BUCKET}: {error}"
            ))
        })?;
        // `create` only writes a missing key: the first version stored under a hash stays.
        let Err(error) = self.store.create(hash, value.into()).await else {
            return Ok(());
        };
        match error.kind() {
            CreateErrorKind::AlreadyExists => Ok(()),
            CreateErrorKind::InvalidKey => Err(codec(format!(
                "harness hash {hash:?} is not a valid key of {HARNESS_BUCKET}"
            ))),
            _ => Err(backend(format!(
                "cannot put harness {hash} in {HARNESS_BUCKET}: {error}"
            ))),
        }
    }

    async fn get(&self, hash: &str) -> Result<Option<HarnessSpec>, TransportError> {
        if let Some(spec) = self.cached(hash) {
            return Ok(Some(spec));
        }
        let value = self.store.get(hash).await.map_err(|error| {
            backend(format!(
                "cannot get harness {hash} from {HARNESS_BUCKET}: {error}"
            ))
        })?;
        let Some(value) = value else {
            return Ok(None);
        };
        let spec: HarnessSpec = serde_json::from_slice(&value).map_err(|error| {
            codec(format!(
                "harness {hash} in {HARNESS_BUCKET} does not decode: {error}"
            ))
        })?;
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(hash.to_string(), spec.clone());
        Ok(Some(spec))
    }
}

fn backend(message: String) -> TransportError {
    TransportError::new(TransportErrorKind::Backend, message)
}

fn codec(message: String) -> TransportError {
    TransportError::new(TransportErrorKind::Codec, message)
}
