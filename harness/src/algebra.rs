//! The substitution algebra: the only ways a harness changes from one version to the next.
//!
//! - **insert** a processor at a hook;
//! - **replace** a processor by another of the same singleton group;
//! - **remove** a processor.
//!
//! Edits are plain data ([`HarnessEdit`], serde) so the evolution engine can emit, store and
//! replay them. Every edit is checked by re-validating the whole harness: a duplicate id, a taken
//! singleton group, a replacement across groups, an unknown id, a cycle or a phase contradiction
//! is an error, never resolved silently.

use kiln_protocol::{HarnessSpec, Hook, ProcessorSpec};
use serde::{Deserialize, Serialize};

use crate::error::{HarnessError, HarnessErrorKind};
use crate::processor::ProcessorRegistry;
use crate::resolve::{resolve, resolve_processor};

/// One edit of a harness.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum HarnessEdit {
    /// Adds `processor`, running at `at`. A spec without hooks runs at `at` only; a spec with
    /// hooks must list `at` among them.
    Insert { at: Hook, processor: ProcessorSpec },
    /// Swaps the processor `id` for `processor`, which must belong to the same singleton group. It
    /// takes the old one's place in declaration order; `after` references to a changed id follow.
    Replace {
        id: String,
        processor: ProcessorSpec,
    },
    /// Drops the processor `id` and every `after` reference to it.
    Remove { id: String },
}

impl HarnessEdit {
    /// One line describing the edit, for logs and evolution manifests.
    pub fn describe(&self) -> String {
        match self {
            HarnessEdit::Insert { at, processor } => {
                format!("insert `{}` ({}) at {at}", processor.id, processor.kind)
            }
            HarnessEdit::Replace { id, processor } => format!(
                "replace `{id}` with `{}` ({})",
                processor.id, processor.kind
            ),
            HarnessEdit::Remove { id } => format!("remove `{id}`"),
        }
    }
}

/// Applies one edit and validates the result.
pub fn apply_edit(
    spec: &HarnessSpec,
    edit: &HarnessEdit,
    registry: &ProcessorRegistry,
) -> Result<HarnessSpec, HarnessError> {
    match edit {
        HarnessEdit::Insert { at, processor } => insert(spec, processor.clone(), *at, registry),
        HarnessEdit::Replace { id, processor } => replace(spec, id, processor.clone(), registry),
        HarnessEdit::Remove { id } => remove(spec, id, registry),
    }
}

/// Applies edits in order; the first failing edit is reported with its position.
pub fn apply_edits(
    spec: &HarnessSpec,
    edits: &[HarnessEdit],
    registry: &ProcessorRegistry,
) -> Result<HarnessSpec, HarnessError> {
    let mut current = spec.clone();
    for (index, edit) in edits.iter().enumerate() {
        current = apply_edit(&current, edit, registry).map_err(|error| {
            let message = format!(
                "edit {} ({}): {}",
                index + 1,
                edit.describe(),
                error.message()
            );
            error.with_message(message)
        })?;
    }
    Ok(current)
}

/// Adds `processor` at hook `at`.
pub fn insert(
    spec: &HarnessSpec,
    mut processor: ProcessorSpec,
    at: Hook,
    registry: &ProcessorRegistry,
) -> Result<HarnessSpec, HarnessError> {
    if processor.hooks.is_empty() {
        processor.hooks = vec![at];
    } else if !processor.hooks.contains(&at) {
        return Err(HarnessError::new(
            HarnessErrorKind::InvalidHook,
            format!("inserted at `{at}` but its hooks do not include it"),
        )
        .with_processor(&processor.id)
        .with_field("hooks"));
    }
    if spec.processors.iter().any(|p| p.id == processor.id) {
        return Err(HarnessError::new(
            HarnessErrorKind::DuplicateId,
            "the harness already has a processor with this id",
        )
        .with_processor(&processor.id)
        .with_field("id"));
    }
    let mut edited = spec.clone();
    edited.processors.push(processor);
    validated(edited, registry)
}

/// Replaces processor `id` by `processor` within one singleton group.
pub fn replace(
    spec: &HarnessSpec,
    id: &str,
    processor: ProcessorSpec,
    registry: &ProcessorRegistry,
) -> Result<HarnessSpec, HarnessError> {
    let Some(position) = spec.processors.iter().position(|p| p.id == id) else {
        return Err(unknown_id(id));
    };
    let old_group = resolve_processor(&spec.processors[position], registry)?
        .spec
        .group;
    let new_group = resolve_processor(&processor, registry)?.spec.group;
    let Some(group) = old_group else {
        return Err(HarnessError::new(
            HarnessErrorKind::CrossGroupReplace,
            "only a processor in a singleton group can be replaced; remove it and insert the new one",
        )
        .with_processor(id)
        .with_field("group"));
    };
    if new_group.as_deref() != Some(group.as_str()) {
        let found = new_group.map_or("no group".to_string(), |g| format!("group `{g}`"));
        return Err(HarnessError::new(
            HarnessErrorKind::CrossGroupReplace,
            format!("`{id}` is in group `{group}` but its replacement is in {found}"),
        )
        .with_processor(&processor.id)
        .with_field("group"));
    }
    let mut edited = spec.clone();
    let new_id = processor.id.clone();
    edited.processors[position] = processor;
    if new_id != id {
        for other in &mut edited.processors {
            for reference in &mut other.after {
                if reference == id {
                    *reference = new_id.clone();
                }
            }
        }
    }
    validated(edited, registry)
}

/// Removes processor `id`.
pub fn remove(
    spec: &HarnessSpec,
    id: &str,
    registry: &ProcessorRegistry,
) -> Result<HarnessSpec, HarnessError> {
    if !spec.processors.iter().any(|p| p.id == id) {
        return Err(unknown_id(id));
    }
    let mut edited = spec.clone();
    edited.processors.retain(|p| p.id != id);
    for other in &mut edited.processors {
        other.after.retain(|reference| reference != id);
    }
    validated(edited, registry)
}

fn unknown_id(id: &str) -> HarnessError {
    HarnessError::new(
        HarnessErrorKind::UnknownId,
        "the harness has no processor with this id",
    )
    .with_processor(id)
}

fn validated(spec: HarnessSpec, registry: &ProcessorRegistry) -> Result<HarnessSpec, HarnessError> {
    resolve(&spec, registry)?;
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processor::builtin_registry;
    use serde_json::{Value, json};

    fn processor(id: &str, kind: &str) -> ProcessorSpec {
        ProcessorSpec {
            id: id.into(),
            kind: kind.into(),
            hooks: Vec::new(),
            phase: 0,
            after: Vec::new(),
            group: None,
            config: Value::Null,
        }
    }

    fn base() -> HarnessSpec {
        let mut retry = processor("retry", "parse_retry");
        retry.after = vec!["parser".into()];
        HarnessSpec {
            schema: 1,
            name: "base".into(),
            description: String::new(),
            envs: Vec::new(),
            processors: vec![
                processor("parser", "tool_parser"),
                retry,
                processor("limit", "step_limit"),
            ],
        }
    }

    fn ids(spec: &HarnessSpec) -> Vec<&str> {
        spec.processors.iter().map(|p| p.id.as_str()).collect()
    }

    #[test]
    fn insert_adds_at_the_hook() {
        let registry = builtin_registry();
        let edited = insert(
            &base(),
            processor("loops", "loop_detection"),
            Hook::StepEnd,
            &registry,
        )
        .unwrap();
        assert_eq!(ids(&edited), ["parser", "retry", "limit", "loops"]);
        assert_eq!(edited.processors[3].hooks, [Hook::StepEnd]);
    }

    #[test]
    fn insert_rejects_duplicates_taken_groups_and_foreign_hooks() {
        let registry = builtin_registry();
        let error = insert(
            &base(),
            processor("limit", "loop_detection"),
            Hook::StepEnd,
            &registry,
        )
        .unwrap_err();
        assert_eq!(error.kind(), HarnessErrorKind::DuplicateId);
        let error = insert(
            &base(),
            processor("limit2", "step_limit"),
            Hook::StepStart,
            &registry,
        )
        .unwrap_err();
        assert_eq!(error.kind(), HarnessErrorKind::GroupConflict);
        let error = insert(
            &base(),
            processor("loops", "loop_detection"),
            Hook::BeforeModel,
            &registry,
        )
        .unwrap_err();
        assert_eq!(error.kind(), HarnessErrorKind::InvalidHook);
    }

    #[test]
    fn insert_with_a_cycle_is_rejected() {
        let registry = builtin_registry();
        let mut first = processor("a", "loop_detection");
        first.after = vec!["b".into()];
        let with_a = insert(&base(), first, Hook::StepEnd, &registry).unwrap();
        let mut second = processor("b", "loop_detection");
        second.after = vec!["a".into()];
        let error = insert(&with_a, second, Hook::StepEnd, &registry).unwrap_err();
        assert_eq!(error.kind(), HarnessErrorKind::Cycle);
    }

    #[test]
    fn replace_keeps_the_position_and_follows_renames() {
        let registry = builtin_registry();
        let mut parser = processor("text_parser", "tool_parser");
        parser.config = json!({"native": false});
        let edited = replace(&base(), "parser", parser, &registry).unwrap();
        assert_eq!(ids(&edited), ["text_parser", "retry", "limit"]);
        assert_eq!(edited.processors[1].after, ["text_parser"]);
    }

    #[test]
    fn replace_across_groups_is_rejected() {
        let registry = builtin_registry();
        let error = replace(
            &base(),
            "limit",
            processor("window", "history_window"),
            &registry,
        )
        .unwrap_err();
        assert_eq!(error.kind(), HarnessErrorKind::CrossGroupReplace);
        assert!(error.message().contains("step_limit"), "{error}");

        let mut loops = base();
        loops.processors.push(processor("loops", "loop_detection"));
        let error = replace(
            &loops,
            "loops",
            processor("loops2", "loop_detection"),
            &registry,
        )
        .unwrap_err();
        assert_eq!(error.kind(), HarnessErrorKind::CrossGroupReplace);
    }

    #[test]
    fn replace_and_remove_reject_unknown_ids() {
        let registry = builtin_registry();
        let error = replace(&base(), "nope", processor("x", "step_limit"), &registry).unwrap_err();
        assert_eq!(
            (error.kind(), error.processor()),
            (HarnessErrorKind::UnknownId, Some("nope"))
        );
        let error = remove(&base(), "nope", &registry).unwrap_err();
        assert_eq!(error.kind(), HarnessErrorKind::UnknownId);
    }

    #[test]
    fn remove_drops_the_processor_and_references_to_it() {
        let registry = builtin_registry();
        let edited = remove(&base(), "parser", &registry).unwrap();
        assert_eq!(ids(&edited), ["retry", "limit"]);
        assert!(edited.processors[0].after.is_empty());
    }

    #[test]
    fn edits_are_plain_data() {
        let edits = vec![
            HarnessEdit::Remove { id: "limit".into() },
            HarnessEdit::Insert {
                at: Hook::StepStart,
                processor: processor("limit", "step_limit"),
            },
        ];
        let text = serde_json::to_string(&edits).unwrap();
        assert!(text.contains("\"op\":\"remove\""), "{text}");
        let back: Vec<HarnessEdit> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, edits);
        let edited = apply_edits(&base(), &back, &builtin_registry()).unwrap();
        assert_eq!(ids(&edited), ["parser", "retry", "limit"]);
    }

    #[test]
    fn a_failing_edit_in_a_sequence_is_named() {
        let edits = vec![
            HarnessEdit::Remove { id: "limit".into() },
            HarnessEdit::Remove { id: "limit".into() },
        ];
        let error = apply_edits(&base(), &edits, &builtin_registry()).unwrap_err();
        assert_eq!(error.kind(), HarnessErrorKind::UnknownId);
        assert!(
            error.message().starts_with("edit 2 (remove `limit`)"),
            "{error}"
        );
    }
}
