//! Processor-level differences between two harnesses (for `kiln harness diff` and for reading what
//! an evolution step changed). Both sides are compared in canonical form, so formatting and
//! spelled-out defaults never show up as changes.

use std::collections::BTreeMap;
use std::fmt;

use kiln_protocol::ProcessorSpec;
use serde::Serialize;
use serde_json::{Value, json};

use crate::harness::Harness;

/// One changed field: a metadata field, a processor field, or a dotted config key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldChange {
    pub field: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

/// A processor present on both sides with different settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessorChange {
    pub id: String,
    pub changes: Vec<FieldChange>,
}

/// Everything that differs between two harnesses.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HarnessDiff {
    pub before_hash: String,
    pub after_hash: String,
    /// `name`, `description`, `envs`.
    pub metadata: Vec<FieldChange>,
    pub added: Vec<ProcessorSpec>,
    pub removed: Vec<ProcessorSpec>,
    pub changed: Vec<ProcessorChange>,
    /// Run order of the processors present on both sides, when it changed.
    pub order: Option<(Vec<String>, Vec<String>)>,
}

impl HarnessDiff {
    /// The harnesses are the same version.
    pub fn is_empty(&self) -> bool {
        self.before_hash == self.after_hash
    }
}

/// Compares `before` with `after`.
pub fn diff(before: &Harness, after: &Harness) -> HarnessDiff {
    let old = before.spec();
    let new = after.spec();
    let mut metadata = Vec::new();
    push_if_changed(&mut metadata, "name", json!(old.name), json!(new.name));
    push_if_changed(
        &mut metadata,
        "description",
        json!(old.description),
        json!(new.description),
    );
    push_if_changed(&mut metadata, "envs", json!(old.envs), json!(new.envs));

    let old_by_id: BTreeMap<&str, &ProcessorSpec> =
        old.processors.iter().map(|p| (p.id.as_str(), p)).collect();
    let new_by_id: BTreeMap<&str, &ProcessorSpec> =
        new.processors.iter().map(|p| (p.id.as_str(), p)).collect();
    let added = new
        .processors
        .iter()
        .filter(|p| !old_by_id.contains_key(p.id.as_str()))
        .cloned()
        .collect();
    let removed = old
        .processors
        .iter()
        .filter(|p| !new_by_id.contains_key(p.id.as_str()))
        .cloned()
        .collect();
    let changed = old
        .processors
        .iter()
        .filter_map(|p| {
            let other = new_by_id.get(p.id.as_str())?;
            let changes = processor_changes(p, other);
            (!changes.is_empty()).then(|| ProcessorChange {
                id: p.id.clone(),
                changes,
            })
        })
        .collect();
    let common_old: Vec<String> = old
        .processors
        .iter()
        .filter(|p| new_by_id.contains_key(p.id.as_str()))
        .map(|p| p.id.clone())
        .collect();
    let common_new: Vec<String> = new
        .processors
        .iter()
        .filter(|p| old_by_id.contains_key(p.id.as_str()))
        .map(|p| p.id.clone())
        .collect();
    let order = (common_old != common_new).then_some((common_old, common_new));
    HarnessDiff {
        before_hash: before.hash().to_string(),
        after_hash: after.hash().to_string(),
        metadata,
        added,
        removed,
        changed,
        order,
    }
}

fn push_if_changed(changes: &mut Vec<FieldChange>, field: &str, before: Value, after: Value) {
    if before != after {
        changes.push(FieldChange {
            field: field.to_string(),
            before: Some(before),
            after: Some(after),
        });
    }
}

fn processor_changes(old: &ProcessorSpec, new: &ProcessorSpec) -> Vec<FieldChange> {
    let mut changes = Vec::new();
    push_if_changed(&mut changes, "kind", json!(old.kind), json!(new.kind));
    push_if_changed(&mut changes, "hooks", json!(old.hooks), json!(new.hooks));
    push_if_changed(&mut changes, "phase", json!(old.phase), json!(new.phase));
    push_if_changed(&mut changes, "after", json!(old.after), json!(new.after));
    push_if_changed(&mut changes, "group", json!(old.group), json!(new.group));
    let old_config = flatten("config", &old.config);
    let new_config = flatten("config", &new.config);
    for (key, before) in &old_config {
        match new_config.get(key) {
            Some(after) if after == before => {}
            after => changes.push(FieldChange {
                field: key.clone(),
                before: Some(before.clone()),
                after: after.cloned(),
            }),
        }
    }
    for (key, after) in &new_config {
        if !old_config.contains_key(key) {
            changes.push(FieldChange {
                field: key.clone(),
                before: None,
                after: Some(after.clone()),
            });
        }
    }
    changes
}

/// Dotted paths to the non-object values of `value` (arrays are compared whole).
fn flatten(prefix: &str, value: &Value) -> BTreeMap<String, Value> {
    let mut flat = BTreeMap::new();
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                flat.extend(flatten(&format!("{prefix}.{key}"), inner));
            }
        }
        Value::Null => {}
        other => {
            flat.insert(prefix.to_string(), other.clone());
        }
    }
    flat
}

fn show(value: &Option<Value>) -> String {
    match value {
        None => "(unset)".to_string(),
        Some(value) => value.to_string(),
    }
}

impl fmt::Display for HarnessDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "harness {} -> {}",
            crate::spec::short_hash(&self.before_hash),
            crate::spec::short_hash(&self.after_hash)
        )?;
        if self.is_empty() {
            return writeln!(f, "  (identical)");
        }
        for change in &self.metadata {
            writeln!(
                f,
                "~ {}: {} -> {}",
                change.field,
                show(&change.before),
                show(&change.after)
            )?;
        }
        for processor in &self.removed {
            writeln!(f, "- processor `{}` ({})", processor.id, processor.kind)?;
        }
        for processor in &self.added {
            let hooks: Vec<&str> = processor.hooks.iter().map(|hook| hook.as_str()).collect();
            writeln!(
                f,
                "+ processor `{}` ({}) at {}",
                processor.id,
                processor.kind,
                hooks.join(", ")
            )?;
        }
        for processor in &self.changed {
            writeln!(f, "~ processor `{}`", processor.id)?;
            for change in &processor.changes {
                writeln!(
                    f,
                    "    {}: {} -> {}",
                    change.field,
                    show(&change.before),
                    show(&change.after)
                )?;
            }
        }
        if let Some((before, after)) = &self.order {
            writeln!(f, "~ order: {} -> {}", before.join(", "), after.join(", "))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{SpecFormat, parse_spec};

    fn harness(text: &str) -> Harness {
        Harness::new(&parse_spec(text, SpecFormat::Toml).unwrap()).unwrap()
    }

    const BASE: &str = r#"
name = "base"
[[processor]]
id = "limit"
kind = "step_limit"
config = { max_steps = 50 }
[[processor]]
id = "window"
kind = "history_window"
"#;

    #[test]
    fn identical_harnesses_have_no_differences() {
        let reformatted = BASE.replace(
            "config = { max_steps = 50 }",
            "[processor.config]\nmax_steps = 50",
        );
        let result = diff(&harness(BASE), &harness(&reformatted));
        assert!(result.is_empty());
        assert!(result.added.is_empty() && result.removed.is_empty() && result.changed.is_empty());
        assert!(result.to_string().contains("(identical)"));
    }

    #[test]
    fn reports_added_removed_and_changed_config_keys() {
        let other = r#"
name = "evolved"
[[processor]]
id = "limit"
kind = "step_limit"
config = { max_steps = 30 }
[[processor]]
id = "loops"
kind = "loop_detection"
"#;
        let result = diff(&harness(BASE), &harness(other));
        assert_eq!(result.metadata[0].field, "name");
        assert_eq!(
            result
                .added
                .iter()
                .map(|p| p.id.as_str())
                .collect::<Vec<_>>(),
            ["loops"]
        );
        assert_eq!(
            result
                .removed
                .iter()
                .map(|p| p.id.as_str())
                .collect::<Vec<_>>(),
            ["window"]
        );
        assert_eq!(
            result.changed,
            [ProcessorChange {
                id: "limit".into(),
                changes: vec![FieldChange {
                    field: "config.max_steps".into(),
                    before: Some(json!(50)),
                    after: Some(json!(30)),
                }],
            }]
        );
        let text = result.to_string();
        assert!(
            text.contains("- processor `window` (history_window)"),
            "{text}"
        );
        assert!(
            text.contains("+ processor `loops` (loop_detection) at step_end"),
            "{text}"
        );
        assert!(text.contains("config.max_steps: 50 -> 30"), "{text}");
    }
}
