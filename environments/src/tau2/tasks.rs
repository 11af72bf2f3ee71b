//! Typed τ² task files: `tasks.json` (the tasks) and `split_tasks.json` (which ids belong to
//! `train`, `test` and `base`).
//!
//! Parsing is strict about what Kiln relies on (ids, the user scenario, the evaluation criteria)
//! and lenient about the rest (extra fields such as `annotations` or `issues` are ignored), so a
//! newer task file still loads. A file that is missing or does not parse is an
//! [`EnvErrorKind::Data`] error naming the file and what was expected.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::Path;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::{EnvError, EnvErrorKind};

/// The split names τ²'s `split_tasks.json` defines (`base` holds every task).
pub const SPLITS: [&str; 3] = ["train", "test", "base"];

/// One τ² task.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Tau2Task {
    pub id: String,
    #[serde(default)]
    pub description: Option<TaskDescription>,
    pub user_scenario: UserScenario,
    /// τ² tasks may start from a modified DB or a message history; the shipped retail and airline
    /// tasks never do, and Kiln refuses such a task at reset rather than ignore it.
    #[serde(default)]
    pub initial_state: Option<Value>,
    /// `None` means the task is not scored (reward 1), as in τ².
    #[serde(default)]
    pub evaluation_criteria: Option<EvaluationCriteria>,
}

/// Why the task exists; shown in reports, never to the agent.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TaskDescription {
    #[serde(default)]
    pub purpose: Option<String>,
    #[serde(default)]
    pub relevant_policies: Option<String>,
    #[serde(default)]
    pub notes: Option<String>,
}

/// What the simulated user knows and wants.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct UserScenario {
    #[serde(default)]
    pub persona: Option<String>,
    pub instructions: UserInstructions,
}

/// The structured user instructions of retail and airline tasks.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct UserInstructions {
    pub domain: String,
    pub reason_for_call: String,
    #[serde(default)]
    pub known_info: Option<String>,
    #[serde(default)]
    pub unknown_info: Option<String>,
    #[serde(default)]
    pub task_instructions: Option<String>,
}

impl fmt::Display for UserInstructions {
    /// The scenario text a model-driven user receives, laid out as τ² lays out its structured
    /// instructions (one labelled, indented section per field; absent fields are left out).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Domain: {}", self.domain)?;
        write_section(f, "Reason for call", Some(&self.reason_for_call))?;
        write_section(f, "Known info", self.known_info.as_deref())?;
        write_section(f, "Unknown info", self.unknown_info.as_deref())?;
        write_section(f, "Task instructions", self.task_instructions.as_deref())
    }
}

fn write_section(f: &mut fmt::Formatter<'_>, label: &str, text: Option<&str>) -> fmt::Result {
    let Some(text) = text.map(str::trim).filter(|text| !text.is_empty()) else {
        return Ok(());
    };
    writeln!(f, "{label}:")?;
    for line in text.lines() {
        writeln!(f, "\t{line}")?;
    }
    Ok(())
}

/// How a task is scored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct EvaluationCriteria {
    /// Gold actions. `Some([])` means the DB must not change; `None` means the DB is not checked.
    #[serde(default)]
    pub actions: Option<Vec<GoldAction>>,
    #[serde(default)]
    pub env_assertions: Option<Value>,
    #[serde(default)]
    pub communicate_info: Option<Vec<String>>,
    #[serde(default)]
    pub nl_assertions: Option<Vec<String>>,
    pub reward_basis: Vec<RewardType>,
}

/// One gold action: a tool call a correct agent makes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct GoldAction {
    pub action_id: String,
    pub name: String,
    pub arguments: Map<String, Value>,
    /// `assistant` (default) or `user`; retail and airline gold actions are all the agent's.
    #[serde(default)]
    pub requestor: Option<String>,
    #[serde(default)]
    pub info: Option<String>,
    #[serde(default)]
    pub compare_args: Option<Vec<String>>,
}

/// A reward component named in `reward_basis`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RewardType {
    Db,
    Communicate,
    NlAssertion,
    Action,
    EnvAssertion,
}

impl RewardType {
    /// The name τ² uses, which is also the key in outcome `components`.
    pub fn as_str(self) -> &'static str {
        match self {
            RewardType::Db => "DB",
            RewardType::Communicate => "COMMUNICATE",
            RewardType::NlAssertion => "NL_ASSERTION",
            RewardType::Action => "ACTION",
            RewardType::EnvAssertion => "ENV_ASSERTION",
        }
    }
}

impl Tau2Task {
    /// The gold actions, empty when the task has none.
    pub fn gold_actions(&self) -> &[GoldAction] {
        self.evaluation_criteria
            .as_ref()
            .and_then(|criteria| criteria.actions.as_deref())
            .unwrap_or(&[])
    }

    /// The strings the agent must say (COMMUNICATE), empty when none.
    pub fn communicate_info(&self) -> &[String] {
        self.evaluation_criteria
            .as_ref()
            .and_then(|criteria| criteria.communicate_info.as_deref())
            .unwrap_or(&[])
    }

    /// The assertions a judge checks (NL_ASSERTION), empty when none.
    pub fn nl_assertions(&self) -> &[String] {
        self.evaluation_criteria
            .as_ref()
            .and_then(|criteria| criteria.nl_assertions.as_deref())
            .unwrap_or(&[])
    }

    /// The reward components multiplied into the reward.
    pub fn reward_basis(&self) -> &[RewardType] {
        self.evaluation_criteria
            .as_ref()
            .map(|criteria| criteria.reward_basis.as_slice())
            .unwrap_or(&[])
    }
}

/// Task ids per split, in file order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Splits(BTreeMap<String, Vec<String>>);

impl Splits {
    /// Ids of `split`, or an [`EnvErrorKind::UnknownSplit`] error listing the valid splits.
    pub fn task_ids(&self, split: &str) -> Result<&[String], EnvError> {
        self.0.get(split).map(Vec::as_slice).ok_or_else(|| {
            let known: Vec<&str> = self.0.keys().map(String::as_str).collect();
            EnvError::new(
                EnvErrorKind::UnknownSplit,
                format!(
                    "unknown split `{split}`; valid splits: {}",
                    known.join(", ")
                ),
            )
        })
    }

    /// `(name, task count)` for every split, in name order.
    pub fn sizes(&self) -> impl Iterator<Item = (&str, usize)> {
        self.0.iter().map(|(name, ids)| (name.as_str(), ids.len()))
    }
}

/// Reads `tasks.json`: a JSON array of tasks with unique ids.
pub fn load_tasks(path: &Path) -> Result<Vec<Tau2Task>, EnvError> {
    let tasks: Vec<Tau2Task> = read_json(
        path,
        "a JSON array of τ² tasks, each {id, user_scenario{instructions{domain, reason_for_call, …}}, evaluation_criteria{actions, reward_basis, …}}",
    )?;
    let mut seen = HashSet::new();
    for task in &tasks {
        if !seen.insert(task.id.as_str()) {
            return Err(data_error(
                path,
                &format!("task id `{}` appears twice; ids must be unique", task.id),
            ));
        }
    }
    Ok(tasks)
}

/// Reads `split_tasks.json` (`{"train": [ids], "test": [ids], "base": [ids]}`) and checks that every
/// listed id is one of `tasks`.
pub fn load_splits(path: &Path, tasks: &[Tau2Task]) -> Result<Splits, EnvError> {
    let splits: BTreeMap<String, Vec<String>> = read_json(
        path,
        "a JSON object mapping split names (train, test, base) to arrays of task ids",
    )?;
    for required in SPLITS {
        if !splits.contains_key(required) {
            return Err(data_error(
                path,
                &format!("missing the `{required}` split (expected keys train, test, base)"),
            ));
        }
    }
    let known: HashSet<&str> = tasks.iter().map(|task| task.id.as_str()).collect();
    for (split, ids) in &splits {
        if let Some(unknown) = ids.iter().find(|id| !known.contains(id.as_str())) {
            return Err(data_error(
                path,
                &format!(
                    "split `{split}` lists task `{unknown}`, which tasks.json does not define"
                ),
            ));
        }
    }
    Ok(Splits(splits))
}

fn read_json<T: DeserializeOwned>(path: &Path, expected: &str) -> Result<T, EnvError> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        data_error(
            path,
            &format!("cannot read it ({error}); expected {expected}"),
        )
    })?;
    serde_json::from_str(&text).map_err(|error| {
        data_error(
            path,
            &format!("does not parse ({error}); expected {expected}"),
        )
    })
}

fn data_error(path: &Path, what: &str) -> EnvError {
    EnvError::new(EnvErrorKind::Data, format!("{}: {what}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TASK: &str = r#"{
        "id": "7",
        "description": {"purpose": "p", "relevant_policies": null, "notes": null},
        "user_scenario": {"persona": null, "instructions": {
            "domain": "retail", "reason_for_call": "You want a refund.",
            "known_info": "You are Ann Lee.", "unknown_info": null, "task_instructions": "Be brief."}},
        "initial_state": null,
        "evaluation_criteria": {"actions": [{"action_id": "7_0", "name": "get_user_details",
            "arguments": {"user_id": "ann_lee_1"}, "info": null}],
            "communicate_info": ["42"], "nl_assertions": null, "reward_basis": ["DB", "COMMUNICATE"]},
        "annotations": null
    }"#;

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn parses_a_task_with_its_criteria() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "tasks.json", &format!("[{TASK}]"));
        let tasks = load_tasks(&path).unwrap();
        assert_eq!(tasks.len(), 1);
        let task = &tasks[0];
        assert_eq!(task.id, "7");
        assert_eq!(task.gold_actions()[0].arguments["user_id"], "ann_lee_1");
        assert_eq!(task.communicate_info(), ["42"]);
        assert!(task.nl_assertions().is_empty());
        assert_eq!(
            task.reward_basis(),
            [RewardType::Db, RewardType::Communicate]
        );
        let scenario = task.user_scenario.instructions.to_string();
        assert!(
            scenario.contains("Reason for call:\n\tYou want a refund.\n"),
            "{scenario}"
        );
        assert!(
            !scenario.contains("Unknown info"),
            "absent sections are left out: {scenario}"
        );
    }

    #[test]
    fn missing_and_corrupt_task_files_name_the_file_and_the_expectation() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("tasks.json");
        let error = load_tasks(&missing).unwrap_err();
        assert_eq!(error.kind(), EnvErrorKind::Data);
        assert!(
            error.to_string().contains(&missing.display().to_string()),
            "{error}"
        );
        assert!(
            error.to_string().contains("JSON array of τ² tasks"),
            "{error}"
        );

        let corrupt = write(dir.path(), "tasks.json", r#"[{"id": "1"}]"#);
        let error = load_tasks(&corrupt).unwrap_err();
        assert_eq!(error.kind(), EnvErrorKind::Data);
        assert!(
            error.to_string().contains("user_scenario"),
            "serde names the missing field: {error}"
        );

        let duplicated = write(dir.path(), "tasks.json", &format!("[{TASK}, {TASK}]"));
        let error = load_tasks(&duplicated).unwrap_err();
        assert!(error.to_string().contains("appears twice"), "{error}");
    }

    #[test]
    fn splits_must_be_complete_and_refer_to_known_tasks() {
        let dir = tempfile::tempdir().unwrap();
        let tasks = load_tasks(&write(dir.path(), "tasks.json", &format!("[{TASK}]"))).unwrap();

        let good = write(
            dir.path(),
            "split_tasks.json",
            r#"{"train": [], "test": ["7"], "base": ["7"]}"#,
        );
        let splits = load_splits(&good, &tasks).unwrap();
        assert_eq!(splits.task_ids("test").unwrap(), ["7"]);
        let sizes: Vec<_> = splits.sizes().collect();
        assert_eq!(sizes, [("base", 1), ("test", 1), ("train", 0)]);
        let error = splits.task_ids("dev").unwrap_err();
        assert_eq!(error.kind(), EnvErrorKind::UnknownSplit);
        assert!(error.to_string().contains("base, test, train"), "{error}");

        let incomplete = write(
            dir.path(),
            "split_tasks.json",
            r#"{"train": [], "test": ["7"]}"#,
        );
        let error = load_splits(&incomplete, &tasks).unwrap_err();
        assert_eq!(error.kind(), EnvErrorKind::Data);
        assert!(
            error.to_string().contains("missing the `base` split"),
            "{error}"
        );

        let dangling = write(
            dir.path(),
            "split_tasks.json",
            r#"{"train": ["9"], "test": [], "base": ["7"]}"#,
        );
        let error = load_splits(&dangling, &tasks).unwrap_err();
        assert!(error.to_string().contains("task `9`"), "{error}");

        let corrupt = write(dir.path(), "split_tasks.json", "[1, 2]");
        let error = load_splits(&corrupt, &tasks).unwrap_err();
        assert_eq!(error.kind(), EnvErrorKind::Data);
        assert!(error.to_string().contains("split_tasks.json"), "{error}");
    }
}
