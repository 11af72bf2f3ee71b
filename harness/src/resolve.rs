//! Validation and ordering: from a [`HarnessSpec`] as written to its processors with defaults
//! filled, in the order they run.
//!
//! Ordering rule: by `phase` (lower first), then `after` constraints (topological), then
//! declaration order (stable). An `after` that names an absent id is ignored (it is soft, so a
//! removal does not break its dependents). An `after` that contradicts the phases of two
//! processors sharing a hook, a cycle of `after` constraints, and two processors in one singleton
//! group are errors; none is resolved silently.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use kiln_protocol::{HarnessSpec, Hook, ProcessorSpec, SCHEMA_VERSION};
use serde_json::Value;

use crate::error::{HarnessError, HarnessErrorKind};
use crate::processor::{ProcessorKind, ProcessorRegistry};
use crate::spec::sorted_json;

/// A processor ready to run: its spec with hooks, group and config defaults filled in.
#[derive(Clone)]
pub struct ResolvedProcessor {
    pub spec: ProcessorSpec,
    pub kind: Arc<dyn ProcessorKind>,
}

impl ResolvedProcessor {
    pub fn runs_at(&self, hook: Hook) -> bool {
        self.spec.hooks.contains(&hook)
    }
}

impl std::fmt::Debug for ResolvedProcessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResolvedProcessor")
            .field("spec", &self.spec)
            .finish()
    }
}

/// Validates every processor and returns them in run order.
pub fn resolve(
    spec: &HarnessSpec,
    registry: &ProcessorRegistry,
) -> Result<Vec<ResolvedProcessor>, HarnessError> {
    if spec.schema != SCHEMA_VERSION {
        return Err(HarnessError::new(
            HarnessErrorKind::Syntax,
            format!(
                "unsupported schema {}; this Kiln reads schema {SCHEMA_VERSION}",
                spec.schema
            ),
        )
        .with_field("schema"));
    }
    let mut resolved = Vec::with_capacity(spec.processors.len());
    let mut seen_ids = BTreeSet::new();
    for processor in &spec.processors {
        if !seen_ids.insert(processor.id.as_str()) {
            return Err(HarnessError::new(
                HarnessErrorKind::DuplicateId,
                "another processor already has this id",
            )
            .with_processor(&processor.id)
            .with_field("id"));
        }
        resolved.push(resolve_processor(processor, registry)?);
    }
    check_groups(&resolved)?;
    let order = run_order(&resolved)?;
    let mut slots: Vec<Option<ResolvedProcessor>> = resolved.into_iter().map(Some).collect();
    Ok(order
        .into_iter()
        .filter_map(|index| slots[index].take())
        .collect())
}

/// Fills one processor's defaults and validates it against its kind.
pub fn resolve_processor(
    processor: &ProcessorSpec,
    registry: &ProcessorRegistry,
) -> Result<ResolvedProcessor, HarnessError> {
    let id = processor.id.as_str();
    if id.trim().is_empty() {
        return Err(HarnessError::new(
            HarnessErrorKind::Syntax,
            "a processor id must not be empty",
        )
        .with_field("id"));
    }
    let Some(kind) = registry.get(&processor.kind) else {
        return Err(HarnessError::new(
            HarnessErrorKind::UnknownKind,
            format!(
                "unknown processor kind `{}` (known: {})",
                processor.kind,
                registry.names().join(", ")
            ),
        )
        .with_processor(id)
        .with_field("kind"));
    };
    let config = kind.normalize_config(&processor.config).map_err(|error| {
        let field = if error.field.is_empty() {
            "config".to_string()
        } else {
            format!("config.{}", error.field)
        };
        // A position inside the config (a script's line and column) makes it a script error.
        let kind = if error.location.is_some() {
            HarnessErrorKind::Script
        } else {
            HarnessErrorKind::InvalidConfig
        };
        HarnessError::new(kind, error.message)
            .with_processor(id)
            .with_field(field)
            .with_location(error.location)
    })?;
    let hooks = resolve_hooks(processor, kind.as_ref(), &config)?;
    if processor.after.iter().any(|other| other == id) {
        return Err(HarnessError::new(
            HarnessErrorKind::Cycle,
            "a processor cannot run after itself",
        )
        .with_processor(id)
        .with_field("after"));
    }
    let after: BTreeSet<String> = processor.after.iter().cloned().collect();
    let group = processor
        .group
        .clone()
        .or_else(|| kind.group().map(str::to_string));
    Ok(ResolvedProcessor {
        spec: ProcessorSpec {
            id: processor.id.clone(),
            kind: processor.kind.clone(),
            hooks,
            phase: processor.phase,
            after: after.into_iter().collect(),
            group,
            config: sorted_json(&config),
        },
        kind: kind.clone(),
    })
}

fn resolve_hooks(
    processor: &ProcessorSpec,
    kind: &dyn ProcessorKind,
    config: &Value,
) -> Result<Vec<Hook>, HarnessError> {
    if processor.hooks.is_empty() {
        return Ok(sorted_hooks(&kind.default_hooks(config)));
    }
    if let Some(hook) = processor
        .hooks
        .iter()
        .find(|hook| !kind.hooks().contains(hook))
    {
        let supported: Vec<&str> = kind.hooks().iter().map(|hook| hook.as_str()).collect();
        return Err(HarnessError::new(
            HarnessErrorKind::InvalidHook,
            format!(
                "kind `{}` does not run at `{hook}` (it runs at: {})",
                kind.name(),
                supported.join(", ")
            ),
        )
        .with_processor(&processor.id)
        .with_field("hooks"));
    }
    let hooks = sorted_hooks(&processor.hooks);
    kind.check_hooks(config, &hooks).map_err(|error| {
        HarnessError::new(HarnessErrorKind::InvalidHook, error.message)
            .with_processor(&processor.id)
            .with_field("hooks")
    })?;
    Ok(hooks)
}

fn sorted_hooks(hooks: &[Hook]) -> Vec<Hook> {
    let set: BTreeSet<Hook> = hooks.iter().copied().collect();
    set.into_iter().collect()
}

/// At most one processor per singleton group.
fn check_groups(processors: &[ResolvedProcessor]) -> Result<(), HarnessError> {
    let mut holders: BTreeMap<&str, &str> = BTreeMap::new();
    for processor in processors {
        let Some(group) = processor.spec.group.as_deref() else {
            continue;
        };
        if let Some(holder) = holders.insert(group, &processor.spec.id) {
            return Err(HarnessError::new(
                HarnessErrorKind::GroupConflict,
                format!(
                    "singleton group `{group}` is already held by `{holder}`; use a replace edit \
                     or remove one of them"
                ),
            )
            .with_processor(&processor.spec.id)
            .with_field("group"));
        }
    }
    Ok(())
}

fn shares_hook(a: &ProcessorSpec, b: &ProcessorSpec) -> bool {
    a.hooks.iter().any(|hook| b.hooks.contains(hook))
}

/// Indices of `processors` in run order.
fn run_order(processors: &[ResolvedProcessor]) -> Result<Vec<usize>, HarnessError> {
    let index_of: BTreeMap<&str, usize> = processors
        .iter()
        .enumerate()
        .map(|(index, processor)| (processor.spec.id.as_str(), index))
        .collect();
    // predecessors[i]: processors of the same phase that i must run after.
    let mut predecessors: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); processors.len()];
    for (index, processor) in processors.iter().enumerate() {
        for other_id in &processor.spec.after {
            let Some(&other) = index_of.get(other_id.as_str()) else {
                continue;
            };
            let other_spec = &processors[other].spec;
            if other_spec.phase == processor.spec.phase {
                predecessors[index].insert(other);
            } else if other_spec.phase > processor.spec.phase
                && shares_hook(&processor.spec, other_spec)
            {
                return Err(HarnessError::new(
                    HarnessErrorKind::OrderConflict,
                    format!(
                        "`after = [\"{other_id}\"]` contradicts the phases: `{other_id}` has phase \
                         {} and this processor phase {}, and they share a hook",
                        other_spec.phase, processor.spec.phase
                    ),
                )
                .with_processor(&processor.spec.id)
                .with_field("after"));
            }
        }
    }
    let phases: BTreeSet<i32> = processors.iter().map(|p| p.spec.phase).collect();
    let mut order = Vec::with_capacity(processors.len());
    for phase in phases {
        let members: Vec<usize> = (0..processors.len())
            .filter(|&index| processors[index].spec.phase == phase)
            .collect();
        order.extend(topological(&members, &predecessors, processors)?);
    }
    Ok(order)
}

/// Kahn's algorithm over `members`, always taking the earliest-declared ready processor.
fn topological(
    members: &[usize],
    predecessors: &[BTreeSet<usize>],
    processors: &[ResolvedProcessor],
) -> Result<Vec<usize>, HarnessError> {
    let mut remaining: BTreeMap<usize, BTreeSet<usize>> = members
        .iter()
        .map(|&index| (index, predecessors[index].clone()))
        .collect();
    let mut order = Vec::with_capacity(members.len());
    while !remaining.is_empty() {
        let Some(next) = remaining
            .iter()
            .find(|(_, before)| before.is_empty())
            .map(|(&index, _)| index)
        else {
            return Err(cycle_error(&remaining, processors));
        };
        remaining.remove(&next);
        for before in remaining.values_mut() {
            before.remove(&next);
        }
        order.push(next);
    }
    Ok(order)
}

/// Names one cycle among the processors left when no one is ready: every one of them waits for
/// another one of them, so walking predecessors must revisit a processor.
fn cycle_error(
    remaining: &BTreeMap<usize, BTreeSet<usize>>,
    processors: &[ResolvedProcessor],
) -> HarnessError {
    let (&start, _) = remaining
        .iter()
        .next()
        .expect("cycle_error is called with processors left");
    let mut path = vec![start];
    let mut current = start;
    loop {
        let next = *remaining[&current]
            .iter()
            .next()
            .expect("a processor left in a cycle waits for another");
        if let Some(position) = path.iter().position(|&index| index == next) {
            let mut cycle: Vec<&str> = path[position..]
                .iter()
                .rev()
                .map(|&index| processors[index].spec.id.as_str())
                .collect();
            cycle.push(processors[next].spec.id.as_str());
            return HarnessError::new(
                HarnessErrorKind::Cycle,
                format!("`after` constraints form a cycle: {}", cycle.join(" → ")),
            )
            .with_processor(&processors[next].spec.id)
            .with_field("after");
        }
        path.push(next);
        current = next;
    }
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

    fn harness(processors: Vec<ProcessorSpec>) -> HarnessSpec {
        HarnessSpec {
            schema: 1,
            name: "t".into(),
            description: String::new(),
            envs: Vec::new(),
            processors,
        }
    }

    fn ids(resolved: &[ResolvedProcessor]) -> Vec<&str> {
        resolved.iter().map(|p| p.spec.id.as_str()).collect()
    }

    #[test]
    fn fills_hooks_group_and_config_defaults() {
        let resolved = resolve(
            &harness(vec![processor("limit", "step_limit")]),
            &builtin_registry(),
        )
        .unwrap();
        let spec = &resolved[0].spec;
        assert_eq!(spec.hooks, [Hook::StepStart]);
        assert_eq!(spec.group.as_deref(), Some("step_limit"));
        assert_eq!(spec.config, json!({"max_steps": 200}));
    }

    #[test]
    fn orders_by_phase_then_after_then_declaration() {
        let mut late = processor("late", "loop_detection");
        late.phase = 10;
        let mut second = processor("second", "history_window");
        second.after = vec!["first".into()];
        let first = processor("first", "tool_catalogue");
        let other = processor("other", "step_limit");
        let resolved = resolve(
            &harness(vec![late, second, other, first]),
            &builtin_registry(),
        )
        .unwrap();
        assert_eq!(ids(&resolved), ["other", "first", "second", "late"]);
    }

    #[test]
    fn after_naming_an_absent_id_is_ignored() {
        let mut limit = processor("limit", "step_limit");
        limit.after = vec!["gone".into()];
        let resolved = resolve(&harness(vec![limit]), &builtin_registry()).unwrap();
        assert_eq!(ids(&resolved), ["limit"]);
    }

    #[test]
    fn a_cycle_is_reported_with_its_path() {
        let mut a = processor("a", "loop_detection");
        a.after = vec!["c".into()];
        let mut b = processor("b", "loop_detection");
        b.after = vec!["a".into()];
        let mut c = processor("c", "loop_detection");
        c.after = vec!["b".into()];
        let error = resolve(&harness(vec![a, b, c]), &builtin_registry()).unwrap_err();
        assert_eq!(error.kind(), HarnessErrorKind::Cycle);
        for id in ["a", "b", "c"] {
            assert!(error.message().contains(id), "{error}");
        }
    }

    #[test]
    fn after_against_the_phases_of_a_shared_hook_is_a_conflict() {
        let mut early = processor("early", "loop_detection");
        early.after = vec!["late".into()];
        let mut late = processor("late", "loop_detection");
        late.phase = 1;
        let error = resolve(&harness(vec![early.clone(), late]), &builtin_registry()).unwrap_err();
        assert_eq!(error.kind(), HarnessErrorKind::OrderConflict);
        assert_eq!(error.processor(), Some("early"));

        // Without a shared hook the order between them does not matter.
        let mut limit = processor("late", "step_limit");
        limit.phase = 1;
        assert!(resolve(&harness(vec![early, limit]), &builtin_registry()).is_ok());
    }

    #[test]
    fn two_processors_in_one_singleton_group_conflict() {
        let error = resolve(
            &harness(vec![
                processor("limit", "step_limit"),
                processor("limit2", "step_limit"),
            ]),
            &builtin_registry(),
        )
        .unwrap_err();
        assert_eq!(error.kind(), HarnessErrorKind::GroupConflict);
        assert_eq!(error.processor(), Some("limit2"));
        assert!(error.message().contains("limit"));
    }

    #[test]
    fn unknown_kinds_duplicate_ids_bad_hooks_and_configs_name_the_processor() {
        let registry = builtin_registry();
        let error = resolve(&harness(vec![processor("x", "teleport")]), &registry).unwrap_err();
        assert_eq!(
            (error.kind(), error.processor(), error.field()),
            (HarnessErrorKind::UnknownKind, Some("x"), Some("kind"))
        );
        let error = resolve(
            &harness(vec![
                processor("x", "loop_detection"),
                processor("x", "loop_detection"),
            ]),
            &registry,
        )
        .unwrap_err();
        assert_eq!(error.kind(), HarnessErrorKind::DuplicateId);
        let mut hooked = processor("limit", "step_limit");
        hooked.hooks = vec![Hook::AfterTool];
        let error = resolve(&harness(vec![hooked]), &registry).unwrap_err();
        assert_eq!(
            (error.kind(), error.field()),
            (HarnessErrorKind::InvalidHook, Some("hooks"))
        );
        let mut configured = processor("limit", "step_limit");
        configured.config = json!({"max_steps": "many"});
        let error = resolve(&harness(vec![configured.clone()]), &registry).unwrap_err();
        assert_eq!(
            (error.kind(), error.processor(), error.field()),
            (
                HarnessErrorKind::InvalidConfig,
                Some("limit"),
                Some("config.max_steps")
            )
        );
        configured.config = json!({"max_stepz": 3});
        let error = resolve(&harness(vec![configured]), &registry).unwrap_err();
        assert_eq!(error.field(), Some("config.max_stepz"));
    }
}
