//! Harness files on disk: loading, canonical hash stability, and the `kiln harness` commands.

use std::path::{Path, PathBuf};

use kiln_harness::commands::{diff_files, show_file, validate_file};
use kiln_harness::defaults::TAU2_TOML;
use kiln_harness::spec::sorted_json;
use kiln_harness::{Harness, HarnessEdit, HarnessErrorKind, Hook, ProcessorSpec, default_for_env};
use serde_json::Value;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Reverses the key order of every JSON object, to prove order does not matter.
fn reversed_keys(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.reverse();
            Value::Object(
                entries
                    .into_iter()
                    .map(|(key, inner)| (key.clone(), reversed_keys(inner)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(reversed_keys).collect()),
        other => other.clone(),
    }
}

#[test]
fn the_tau2_harness_hashes_the_same_as_toml_json_and_canonical_toml() {
    let dir = tempfile::tempdir().unwrap();
    let toml_path = write(dir.path(), "tau2.toml", TAU2_TOML);
    let from_toml = Harness::load(&toml_path).unwrap();

    // The same harness as JSON with every object's keys reversed and pretty-printed.
    let spec: Value = serde_json::to_value(default_for_env("tau2-retail")).unwrap();
    let json_text = serde_json::to_string_pretty(&reversed_keys(&spec)).unwrap();
    let json_path = write(dir.path(), "tau2.json", &json_text);
    let from_json = Harness::load(&json_path).unwrap();
    assert_eq!(from_toml.hash(), from_json.hash());

    // The canonical TOML names the same version.
    let canonical_path = write(
        dir.path(),
        "canonical.toml",
        &from_toml.canonical_toml().unwrap(),
    );
    assert_eq!(
        Harness::load(&canonical_path).unwrap().hash(),
        from_toml.hash()
    );

    // And the canonical JSON is sorted.
    let canonical: Value = serde_json::from_str(&from_toml.canonical_json()).unwrap();
    assert_eq!(canonical, sorted_json(&canonical));
    assert_eq!(from_toml.short_hash(), &from_toml.hash()[..12]);
}

#[test]
fn validate_reports_the_hash_or_a_located_error() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "good.toml", TAU2_TOML);
    let report = validate_file(&good).unwrap();
    assert_eq!(report.name, "tau2");
    assert_eq!(report.processors, 7);
    assert_eq!(report.hash, Harness::load(&good).unwrap().hash());
    assert!(report.to_string().starts_with("OK "));

    let bad_text = TAU2_TOML.replace(
        "config = { max_retries = 2 }",
        "config = { max_retries = -1 }",
    );
    let bad = write(dir.path(), "bad.toml", &bad_text);
    let error = validate_file(&bad).unwrap_err();
    assert_eq!(error.kind(), HarnessErrorKind::InvalidConfig);
    assert_eq!(error.processor(), Some("retry"));
    assert_eq!(error.field(), Some("config.max_retries"));
    let expected_line = bad_text
        .lines()
        .position(|line| line.contains("max_retries = -1"))
        .unwrap()
        + 1;
    assert_eq!(error.location().map(|l| l.line), Some(expected_line));
    let shown = error.to_string();
    assert!(
        shown.starts_with(&format!("{}:{expected_line}:", bad.display())),
        "{shown}"
    );

    let unknown = write(dir.path(), "harness.yaml", "name: x");
    assert_eq!(
        validate_file(&unknown).unwrap_err().kind(),
        HarnessErrorKind::UnsupportedFormat
    );
    let missing = dir.path().join("missing.toml");
    assert_eq!(
        validate_file(&missing).unwrap_err().kind(),
        HarnessErrorKind::Io
    );
}

#[test]
fn show_prints_the_canonical_form_with_its_hash() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "tau2.toml", TAU2_TOML);
    let shown = show_file(&path).unwrap();
    let harness = Harness::load(&path).unwrap();
    assert!(shown.contains(&format!("# hash {}", harness.hash())));
    // Defaults are spelled out: loop detection's message and role appear though the file omits them.
    assert!(shown.contains("role = \"user\""), "{shown}");
    assert!(shown.contains("hooks = [\"step_end\"]"), "{shown}");
}

#[test]
fn diff_lists_processor_and_config_changes_of_an_edited_file() {
    let dir = tempfile::tempdir().unwrap();
    let before = write(dir.path(), "before.toml", TAU2_TOML);
    let harness = Harness::load(&before).unwrap();
    let window = ProcessorSpec {
        id: "window".into(),
        kind: "history_window".into(),
        hooks: Vec::new(),
        phase: 0,
        after: Vec::new(),
        group: None,
        config: serde_json::json!({"max_messages": 30}),
    };
    let edited = harness
        .apply(&HarnessEdit::Insert {
            at: Hook::BeforeModel,
            processor: window,
        })
        .unwrap()
        .apply(&HarnessEdit::Remove { id: "loops".into() })
        .unwrap();
    let after = write(dir.path(), "after.toml", &edited.canonical_toml().unwrap());

    let result = diff_files(&before, &after).unwrap();
    assert_ne!(result.before_hash, result.after_hash);
    assert_eq!(result.added.len(), 1);
    assert_eq!(result.added[0].id, "window");
    assert_eq!(result.removed.len(), 1);
    assert_eq!(result.removed[0].id, "loops");
    assert!(result.changed.is_empty(), "{:?}", result.changed);
    let text = result.to_string();
    assert!(
        text.contains("+ processor `window` (history_window) at before_model"),
        "{text}"
    );
}
