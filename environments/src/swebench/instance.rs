//! SWE-bench instances: JSONL / JSON datasets and the v5 on-disk task-repo layout.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::parsers::{Parser, parser_for_repo};
use super::task_yaml;

/// How F2P / P2P tests are judged (`swebench.harness.constants.EvalType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvalType {
    PassAndFail,
    FailOnly,
}

impl EvalType {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pass_and_fail" => Some(Self::PassAndFail),
            "fail_only" => Some(Self::FailOnly),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PassAndFail => "pass_and_fail",
            Self::FailOnly => "fail_only",
        }
    }
}

/// One SWE-bench task instance with every field of the official datasets.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Instance {
    pub instance_id: String,
    pub repo: String,
    pub base_commit: String,
    /// The gold patch.
    pub patch: String,
    pub test_patch: String,
    pub problem_statement: String,
    pub hints_text: String,
    pub created_at: String,
    pub version: String,
    pub environment_setup_commit: String,
    pub fail_to_pass: Vec<String>,
    pub pass_to_pass: Vec<String>,
    /// SWE-bench Verified's difficulty bucket.
    pub difficulty: Option<String>,
    /// v5: the image the instance runs in.
    pub image: Option<String>,
    /// v5: the eval script (`#!/bin/bash`, `set -uxo pipefail`, both markers).
    pub eval_script: Option<String>,
    /// v5: the name of the log parser in the official registry.
    pub log_parser: Option<String>,
    /// v5: `pass_and_fail` or `fail_only`.
    pub eval_type: Option<String>,
    /// Task repos: the split the task is in.
    pub split: Option<String>,
    /// Fields not listed above, kept as they were.
    pub extra: Map<String, Value>,
}

impl Instance {
    /// The log parser: the instance's own `log_parser`, else the official repo → parser map,
    /// else the pytest parser. An unknown parser name is an error naming it.
    pub fn parser(&self) -> Result<Parser, String> {
        if let Some(name) = self.log_parser.as_deref().filter(|name| !name.is_empty()) {
            return Parser::from_name(name).ok_or_else(|| {
                format!(
                    "instance {}: log parser `{name}` is not one of Kiln's parsers ({})",
                    self.instance_id,
                    Parser::ALL
                        .iter()
                        .map(|parser| parser.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            });
        }
        Ok(parser_for_repo(&self.repo).unwrap_or(Parser::Pytest))
    }

    /// The eval type: the instance's own, else `pass_and_fail`.
    pub fn eval_type(&self) -> Result<EvalType, String> {
        match self.eval_type.as_deref().filter(|text| !text.is_empty()) {
            None => Ok(EvalType::PassAndFail),
            Some(text) => EvalType::parse(text).ok_or_else(|| {
                format!(
                    "instance {}: eval_type `{text}` is neither pass_and_fail nor fail_only",
                    self.instance_id
                )
            }),
        }
    }

    /// The instance as a dataset row (F2P / P2P as JSON-encoded strings, as the official
    /// datasets store them).
    pub fn to_json(&self) -> Value {
        let mut row = Map::new();
        let text = |value: &str| Value::String(value.to_string());
        row.insert("repo".into(), text(&self.repo));
        row.insert("instance_id".into(), text(&self.instance_id));
        row.insert("base_commit".into(), text(&self.base_commit));
        row.insert("patch".into(), text(&self.patch));
        row.insert("test_patch".into(), text(&self.test_patch));
        row.insert("problem_statement".into(), text(&self.problem_statement));
        row.insert("hints_text".into(), text(&self.hints_text));
        row.insert("created_at".into(), text(&self.created_at));
        row.insert("version".into(), text(&self.version));
        row.insert(
            "FAIL_TO_PASS".into(),
            text(&serde_json::to_string(&self.fail_to_pass).unwrap_or_default()),
        );
        row.insert(
            "PASS_TO_PASS".into(),
            text(&serde_json::to_string(&self.pass_to_pass).unwrap_or_default()),
        );
        row.insert(
            "environment_setup_commit".into(),
            text(&self.environment_setup_commit),
        );
        for (key, value) in [
            ("difficulty", &self.difficulty),
            ("image", &self.image),
            ("eval_script", &self.eval_script),
            ("log_parser", &self.log_parser),
            ("eval_type", &self.eval_type),
            ("split", &self.split),
        ] {
            if let Some(value) = value {
                row.insert(key.into(), text(value));
            }
        }
        for (key, value) in &self.extra {
            row.entry(key.clone()).or_insert_with(|| value.clone());
        }
        Value::Object(row)
    }
}

/// Why a dataset, task repo or predictions file could not be read. The message names the file,
/// the line (JSONL) and the field.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", location(path, *line, field.as_deref()))]
    Invalid {
        path: PathBuf,
        line: Option<usize>,
        field: Option<String>,
        message: String,
    },
}

fn location(path: &Path, line: Option<usize>, field: Option<&str>) -> String {
    let mut text = path.display().to_string();
    if let Some(line) = line {
        text.push_str(&format!(":{line}"));
    }
    if let Some(field) = field {
        text.push_str(&format!(": field `{field}`"));
    }
    text
}

impl LoadError {
    pub(crate) fn invalid(
        path: &Path,
        line: Option<usize>,
        field: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        Self::Invalid {
            path: path.to_path_buf(),
            line,
            field: field.map(str::to_string),
            message: message.into(),
        }
    }
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Loads a dataset: a `.jsonl` file (one instance per line), a `.json` file (a list), or a v5
/// task repo (a folder with `tasks/`). Instance ids must be unique.
pub fn load_dataset(path: &Path) -> Result<Vec<Instance>, LoadError> {
    if path.is_dir() {
        return load_task_repo(path);
    }
    let text = std::fs::read_to_string(path).map_err(|error| LoadError::io(path, error))?;
    let rows = rows_of(path, &text)?;
    let mut instances = Vec::with_capacity(rows.len());
    for (line, row) in rows {
        let instance = instance_from_json(&row).map_err(|(field, message)| {
            LoadError::invalid(path, line, field.as_deref(), message)
        })?;
        if instances
            .iter()
            .any(|known: &Instance| known.instance_id == instance.instance_id)
        {
            return Err(LoadError::invalid(
                path,
                line,
                Some("instance_id"),
                format!("duplicate instance id `{}`", instance.instance_id),
            ));
        }
        instances.push(instance);
    }
    Ok(instances)
}

/// The JSON objects of a `.json` list or of JSONL lines, each with its line number (JSONL).
pub(crate) fn rows_of(path: &Path, text: &str) -> Result<Vec<(Option<usize>, Value)>, LoadError> {
    let is_json_list = path.extension().is_some_and(|ext| ext == "json");
    if is_json_list {
        let value: Value = serde_json::from_str(text).map_err(|error| {
            LoadError::invalid(
                path,
                Some(error.line()),
                None,
                format!("invalid JSON: {error}"),
            )
        })?;
        let rows = match value {
            Value::Array(rows) => rows,
            // SWE-agent writes predictions as {instance_id: prediction}.
            Value::Object(map) => map.into_iter().map(|(_, row)| row).collect(),
            _ => {
                return Err(LoadError::invalid(
                    path,
                    None,
                    None,
                    "expected a JSON list of objects",
                ));
            }
        };
        return Ok(rows.into_iter().map(|row| (None, row)).collect());
    }
    let mut rows = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let row: Value = serde_json::from_str(line).map_err(|error| {
            LoadError::invalid(
                path,
                Some(index + 1),
                None,
                format!("invalid JSON: {error}"),
            )
        })?;
        rows.push((Some(index + 1), row));
    }
    Ok(rows)
}

type FieldError = (Option<String>, String);

fn field_error(field: &str, message: impl Into<String>) -> FieldError {
    (Some(field.to_string()), message.into())
}

/// An instance from one dataset row. Required: `instance_id`, `FAIL_TO_PASS`, `PASS_TO_PASS`
/// (JSON-encoded strings or lists of strings). Other text fields default to empty; a field of
/// the wrong type is an error naming it.
pub fn instance_from_json(row: &Value) -> Result<Instance, FieldError> {
    let Value::Object(map) = row else {
        return Err((None, "expected a JSON object".to_string()));
    };
    let mut instance = Instance {
        instance_id: required_text(map, "instance_id")?,
        fail_to_pass: test_list(map, "FAIL_TO_PASS")?,
        pass_to_pass: test_list(map, "PASS_TO_PASS")?,
        ..Instance::default()
    };
    let fields: [(&str, &mut String); 9] = [
        ("repo", &mut instance.repo),
        ("base_commit", &mut instance.base_commit),
        ("patch", &mut instance.patch),
        ("test_patch", &mut instance.test_patch),
        ("problem_statement", &mut instance.problem_statement),
        ("hints_text", &mut instance.hints_text),
        ("created_at", &mut instance.created_at),
        ("version", &mut instance.version),
        (
            "environment_setup_commit",
            &mut instance.environment_setup_commit,
        ),
    ];
    for (name, slot) in fields {
        if let Some(value) = optional_text(map, name)? {
            *slot = value;
        }
    }
    instance.difficulty = optional_text(map, "difficulty")?;
    instance.image = optional_text(map, "image")?;
    instance.eval_script = optional_text(map, "eval_script")?;
    instance.log_parser = optional_text(map, "log_parser")?;
    instance.eval_type = optional_text(map, "eval_type")?;
    instance.split = optional_text(map, "split")?;
    instance
        .eval_type()
        .map_err(|error| field_error("eval_type", error))?;
    instance
        .parser()
        .map_err(|error| field_error("log_parser", error))?;
    const KNOWN: [&str; 18] = [
        "instance_id",
        "FAIL_TO_PASS",
        "PASS_TO_PASS",
        "repo",
        "base_commit",
        "patch",
        "test_patch",
        "problem_statement",
        "hints_text",
        "created_at",
        "version",
        "environment_setup_commit",
        "difficulty",
        "image",
        "eval_script",
        "log_parser",
        "eval_type",
        "split",
    ];
    instance.extra = map
        .iter()
        .filter(|(key, _)| !KNOWN.contains(&key.as_str()))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    Ok(instance)
}

fn required_text(map: &Map<String, Value>, field: &str) -> Result<String, FieldError> {
    match optional_text(map, field)? {
        Some(text) if !text.is_empty() => Ok(text),
        _ => Err(field_error(field, "missing or empty; expected a string")),
    }
}

/// A string field; numbers (a `version` of 3.0) are taken as their text; null is absent.
fn optional_text(map: &Map<String, Value>, field: &str) -> Result<Option<String>, FieldError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(Value::Number(number)) => Ok(Some(number.to_string())),
        Some(other) => Err(field_error(
            field,
            format!("expected a string, found {}", json_type(other)),
        )),
    }
}

/// FAIL_TO_PASS / PASS_TO_PASS: a JSON-encoded list of strings, or the list itself.
fn test_list(map: &Map<String, Value>, field: &str) -> Result<Vec<String>, FieldError> {
    let value = match map.get(field) {
        None | Some(Value::Null) => {
            return Err(field_error(field, "missing; expected a list of test ids"));
        }
        Some(Value::String(encoded)) => {
            serde_json::from_str::<Value>(encoded).map_err(|error| {
                field_error(
                    field,
                    format!("not a JSON-encoded list of test ids ({error})"),
                )
            })?
        }
        Some(other) => other.clone(),
    };
    let Value::Array(items) = value else {
        return Err(field_error(
            field,
            format!("expected a list of test ids, found {}", json_type(&value)),
        ));
    };
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| match item {
            Value::String(test) => Ok(test),
            other => Err(field_error(
                field,
                format!("item {index} is {}, expected a string", json_type(&other)),
            )),
        })
        .collect()
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// v5 task-repo layout (`swebench/task/repo.py`): `tasks/<instance_id>/` holding `task.yaml`,
/// `tests.json`, `problem_statement.md`, `gold.patch`, `test.patch`, `eval.sh`, optionally
/// `hints.md`. Tasks are read in sorted folder order; folders without `task.yaml` are skipped,
/// as the official loader does.
pub fn load_task_repo(root: &Path) -> Result<Vec<Instance>, LoadError> {
    let tasks = root.join("tasks");
    let entries = std::fs::read_dir(&tasks).map_err(|error| LoadError::io(&tasks, error))?;
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|dir| dir.join("task.yaml").is_file())
        .collect();
    dirs.sort();
    dirs.iter().map(|dir| load_task(dir)).collect()
}

/// One task folder of a v5 task repo.
pub fn load_task(dir: &Path) -> Result<Instance, LoadError> {
    let yaml_path = dir.join("task.yaml");
    let yaml = read(&yaml_path)?;
    let mut row = task_yaml::parse(&yaml)
        .map_err(|(line, message)| LoadError::invalid(&yaml_path, Some(line), None, message))?;
    for (column, file) in [
        ("patch", "gold.patch"),
        ("test_patch", "test.patch"),
        ("eval_script", "eval.sh"),
        ("problem_statement", "problem_statement.md"),
    ] {
        row.insert(column.into(), Value::String(read(&dir.join(file))?));
    }
    let hints = dir.join("hints.md");
    let hints_text = if hints.is_file() {
        read(&hints)?
    } else {
        String::new()
    };
    row.insert("hints_text".into(), Value::String(hints_text));
    let tests_path = dir.join("tests.json");
    let tests: Value = serde_json::from_str(&read(&tests_path)?).map_err(|error| {
        LoadError::invalid(
            &tests_path,
            Some(error.line()),
            None,
            format!("invalid JSON: {error}"),
        )
    })?;
    let Value::Object(tests) = tests else {
        return Err(LoadError::invalid(
            &tests_path,
            None,
            None,
            "expected an object with FAIL_TO_PASS and PASS_TO_PASS",
        ));
    };
    row.extend(tests);
    instance_from_json(&Value::Object(row))
        .map_err(|(field, message)| LoadError::invalid(&yaml_path, None, field.as_deref(), message))
}

/// Writes instances in the v5 task-repo layout under `root` (`sweb.yaml` naming `dataset`,
/// `tasks/<id>/…`). A `Dockerfile` is written when `dockerfile` returns one for the instance.
pub fn write_task_repo(
    root: &Path,
    dataset: &str,
    instances: &[Instance],
    dockerfile: impl Fn(&Instance) -> Option<String>,
) -> Result<(), LoadError> {
    let write = |path: &Path, text: &str| -> Result<(), LoadError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|error| LoadError::io(parent, error))?;
        }
        std::fs::write(path, text).map_err(|error| LoadError::io(path, error))
    };
    write(
        &root.join("sweb.yaml"),
        &format!(
            "datasets:\n- {}\nsplits:\n- test\n",
            task_yaml::quote(dataset)
        ),
    )?;
    for instance in instances {
        let dir = root.join("tasks").join(&instance.instance_id);
        let mut fields: Vec<(&str, String)> = vec![
            ("base_commit", instance.base_commit.clone()),
            ("created_at", instance.created_at.clone()),
            (
                "environment_setup_commit",
                instance.environment_setup_commit.clone(),
            ),
            (
                "eval_type",
                instance
                    .eval_type
                    .clone()
                    .unwrap_or_else(|| "pass_and_fail".into()),
            ),
            ("image", instance.image.clone().unwrap_or_default()),
            ("instance_id", instance.instance_id.clone()),
            (
                "log_parser",
                instance
                    .parser()
                    .map(|parser| parser.name().to_string())
                    .unwrap_or_default(),
            ),
            ("repo", instance.repo.clone()),
            (
                "split",
                instance.split.clone().unwrap_or_else(|| "test".into()),
            ),
            ("version", instance.version.clone()),
        ];
        if let Some(difficulty) = &instance.difficulty {
            fields.push(("difficulty", difficulty.clone()));
        }
        fields.sort();
        let mut yaml = format!("datasets:\n- {}\n", task_yaml::quote(dataset));
        for (key, value) in fields {
            yaml.push_str(&format!("{key}: {}\n", task_yaml::quote(&value)));
        }
        write(&dir.join("task.yaml"), &yaml)?;
        let tests = serde_json::json!({
            "FAIL_TO_PASS": instance.fail_to_pass,
            "PASS_TO_PASS": instance.pass_to_pass,
        });
        write(
            &dir.join("tests.json"),
            &(serde_json::to_string_pretty(&tests).unwrap_or_default() + "\n"),
        )?;
        write(
            &dir.join("problem_statement.md"),
            &instance.problem_statement,
        )?;
        write(&dir.join("gold.patch"), &instance.patch)?;
        write(&dir.join("test.patch"), &instance.test_patch)?;
        write(
            &dir.join("eval.sh"),
            instance.eval_script.as_deref().unwrap_or_default(),
        )?;
        if !instance.hints_text.is_empty() {
            write(&dir.join("hints.md"), &instance.hints_text)?;
        }
        if let Some(dockerfile) = dockerfile(instance) {
            write(&dir.join("Dockerfile"), &dockerfile)?;
        }
    }
    Ok(())
}

fn read(path: &Path) -> Result<String, LoadError> {
    std::fs::read_to_string(path).map_err(|error| LoadError::io(path, error))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(f2p: Value) -> Value {
        serde_json::json!({
            "repo": "psf/requests", "instance_id": "psf__requests-1", "base_commit": "abc",
            "patch": "diff", "test_patch": "tdiff", "problem_statement": "it breaks",
            "hints_text": "", "created_at": "2020-01-01", "version": 2.0,
            "FAIL_TO_PASS": f2p, "PASS_TO_PASS": "[]", "environment_setup_commit": "def",
            "image": "img", "eval_script": "#!/bin/bash", "log_parser": "parse_log_requests",
            "eval_type": "pass_and_fail", "custom": 7,
        })
    }

    #[test]
    fn swebench_dataset_rows_load_with_tests_as_strings_or_lists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.jsonl");
        let lines = [
            row(Value::String("[\"t::a\", \"t::b\"]".into())).to_string(),
            {
                let mut second = row(serde_json::json!(["t::c"]));
                second["instance_id"] = "psf__requests-2".into();
                second.to_string()
            },
        ];
        std::fs::write(&path, lines.join("\n") + "\n\n").unwrap();
        let instances = load_dataset(&path).unwrap();
        assert_eq!(instances.len(), 2);
        assert_eq!(instances[0].fail_to_pass, ["t::a", "t::b"]);
        assert_eq!(instances[1].fail_to_pass, ["t::c"]);
        assert_eq!(instances[0].version, "2.0");
        assert_eq!(instances[0].image.as_deref(), Some("img"));
        assert_eq!(instances[0].parser().unwrap(), Parser::Requests);
        assert_eq!(instances[0].extra["custom"], 7);
        let back = instance_from_json(&instances[0].to_json()).unwrap();
        assert_eq!(back, instances[0]);
    }

    #[test]
    fn swebench_dataset_errors_name_file_line_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.jsonl");
        let good = row(Value::String("[]".into())).to_string();
        let mut bad = row(Value::String("[1]".into()));
        bad["instance_id"] = "x__y-2".into();
        std::fs::write(&path, format!("{good}\n{bad}\n")).unwrap();
        let error = load_dataset(&path).unwrap_err().to_string();
        assert!(
            error.contains("bad.jsonl:2: field `FAIL_TO_PASS`"),
            "{error}"
        );
        assert!(error.contains("item 0 is a number"), "{error}");

        std::fs::write(&path, format!("{good}\n{{oops\n")).unwrap();
        let error = load_dataset(&path).unwrap_err().to_string();
        assert!(error.contains("bad.jsonl:2: invalid JSON"), "{error}");

        std::fs::write(&path, format!("{good}\n{good}\n")).unwrap();
        let error = load_dataset(&path).unwrap_err().to_string();
        assert!(
            error.contains(":2: field `instance_id`: duplicate"),
            "{error}"
        );

        let mut unknown = row(Value::String("[]".into()));
        unknown["log_parser"] = "parse_log_nope".into();
        std::fs::write(&path, unknown.to_string()).unwrap();
        let error = load_dataset(&path).unwrap_err().to_string();
        assert!(error.contains(":1: field `log_parser`"), "{error}");
        assert!(error.contains("parse_log_nope"), "{error}");

        let error = load_dataset(&dir.path().join("absent.jsonl"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("absent.jsonl"), "{error}");
    }

    #[test]
    fn swebench_task_repo_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let mut instance = instance_from_json(&row(Value::String("[\"a\"]".into()))).unwrap();
        instance.extra.clear();
        instance.problem_statement = "line one\nline: two\n".into();
        instance.hints_text = "hint".into();
        instance.split = Some("test".into());
        instance.version = "1.0".into();
        write_task_repo(dir.path(), "kiln-test", &[instance.clone()], |_| {
            Some("FROM scratch\n".into())
        })
        .unwrap();
        let task = dir.path().join("tasks/psf__requests-1");
        assert!(task.join("Dockerfile").is_file());
        let loaded = load_task_repo(dir.path()).unwrap();
        assert_eq!(loaded.len(), 1);
        let mut expected = instance;
        expected
            .extra
            .insert("datasets".into(), serde_json::json!(["kiln-test"]));
        assert_eq!(loaded[0], expected);
        // Through the dataset entry point as well.
        assert_eq!(load_dataset(dir.path()).unwrap(), loaded);
        std::fs::remove_file(task.join("tests.json")).unwrap();
        let error = load_task_repo(dir.path()).unwrap_err().to_string();
        assert!(error.contains("tests.json"), "{error}");
    }
}
