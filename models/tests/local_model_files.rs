//! Missing and corrupt model files fail with errors that name the file and the fix.

use std::io::Write;

use kiln_models::local::{LocalChat, LocalChatOptions, kiln_home, smollm2_path};
use kiln_models::{ModelErrorKind, factory_for};

fn load(path: &std::path::Path) -> kiln_models::ModelError {
    LocalChat::load(path, "local:test".to_string(), &LocalChatOptions::default())
        .expect_err("loading must fail")
}

#[test]
fn a_missing_model_says_how_to_install_it() {
    let error = load(std::path::Path::new("/nonexistent/kiln/model.gguf"));
    assert_eq!(error.kind(), ModelErrorKind::Unavailable);
    let message = error.to_string();
    assert!(
        message.contains("/nonexistent/kiln/model.gguf"),
        "{message}"
    );
    assert!(message.contains("ops/setup model"), "{message}");
}

#[test]
fn a_truncated_model_is_reported_as_truncated() {
    let bytes = std::fs::read(smollm2_path(&kiln_home())).expect("ops/setup model");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("truncated.gguf");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(&bytes[..bytes.len() / 2])
        .unwrap();
    let error = load(&path);
    assert_eq!(error.kind(), ModelErrorKind::Unavailable);
    let message = error.to_string();
    assert!(message.contains("truncated"), "{message}");
    assert!(message.contains("truncated.gguf"), "{message}");
}

#[test]
fn a_file_that_is_not_gguf_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.gguf");
    std::fs::write(&path, b"this is not a model, just some text").unwrap();
    let message = load(&path).to_string();
    assert!(message.contains("not a GGUF file"), "{message}");
}

#[tokio::test]
async fn preflight_of_a_corrupt_local_spec_fails_before_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.gguf");
    std::fs::write(&path, b"GGUF\x03\x00\x00\x00garbage").unwrap();
    let spec = format!("local:{}", path.display()).parse().unwrap();
    let factory = factory_for(&spec).unwrap();
    let error = factory.preflight().await.unwrap_err();
    assert_eq!(error.kind(), ModelErrorKind::Unavailable);
    assert!(error.to_string().contains("broken.gguf"), "{error}");
}

#[tokio::test]
async fn preflight_of_the_installed_model_loads_it_once_for_every_episode() {
    let factory = factory_for(&"local:smollm2".parse().unwrap()).unwrap();
    factory.preflight().await.unwrap();
    let first = factory.for_episode(None).unwrap();
    let second = factory.for_episode(None).unwrap();
    assert!(std::sync::Arc::ptr_eq(&first, &second));
    assert_eq!(first.label(), "local:smollm2");
}
