//! The [`HarnessStore`] contract against the in-memory map and the NATS KV bucket `kiln_harness`
//! on a real `nats-server`, with the repository's own harness files as the stored versions.

use std::path::Path;

use kiln_harness::{HarnessSpec, builtin_registry, content_hash, load_spec};
use kiln_worker::testing::NatsServer;
use kiln_worker::{
    HarnessStore, InMemoryHarnessStore, NatsHarnessStore, NatsOptions, NatsTransport,
    TransportErrorKind,
};

/// A harness file from `harnesses/` with its content hash.
fn versioned(file: &str) -> (String, HarnessSpec) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../harnesses")
        .join(file);
    let registry = builtin_registry();
    let spec = load_spec(&path, &registry).expect("a valid harness file");
    let hash = content_hash(&spec, &registry).expect("a hashable harness");
    (hash, spec)
}

/// Put, get, first-version-wins: what every store must do.
async fn check_contract(store: &dyn HarnessStore) {
    let (hash, spec) = versioned("tau2.toml");
    let (other_hash, other) = versioned("react-text.toml");
    assert_ne!(hash, other_hash);
    assert_eq!(store.get(&hash).await.unwrap(), None);

    store.put(&hash, &spec).await.unwrap();
    store.put(&other_hash, &other).await.unwrap();
    assert_eq!(store.get(&hash).await.unwrap().as_ref(), Some(&spec));
    assert_eq!(store.get(&other_hash).await.unwrap().as_ref(), Some(&other));

    // A second put under the same hash is a no-op: the first version stays.
    store.put(&hash, &other).await.unwrap();
    assert_eq!(store.get(&hash).await.unwrap().as_ref(), Some(&spec));
}

#[tokio::test]
async fn in_memory_store_keeps_the_contract() {
    check_contract(&InMemoryHarnessStore::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_store_keeps_the_contract() {
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.unwrap();
    let store = NatsHarnessStore::open(&client).await.unwrap();
    check_contract(&store).await;
}

/// What the coordinator puts, a worker on another connection gets, also after a server restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_are_shared_across_connections_and_survive_a_restart() {
    let mut server = NatsServer::start();
    let coordinator = NatsTransport::connect(&server.url(), NatsOptions::default())
        .await
        .unwrap();
    let (hash, spec) = versioned("small-model.toml");
    coordinator
        .harness_store()
        .await
        .unwrap()
        .put(&hash, &spec)
        .await
        .unwrap();

    server.restart();
    let client = async_nats::connect(server.url()).await.unwrap();
    let worker_store = NatsHarnessStore::open(&client).await.unwrap();
    assert_eq!(worker_store.get(&hash).await.unwrap(), Some(spec));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hash_that_is_not_a_key_is_refused_by_name() {
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.unwrap();
    let store = NatsHarnessStore::open(&client).await.unwrap();
    let (_, spec) = versioned("tau2.toml");
    let error = store.put("not a key", &spec).await.unwrap_err();
    assert_eq!(error.kind(), TransportErrorKind::Codec);
    assert!(error.to_string().contains("not a key"), "{error}");
}
