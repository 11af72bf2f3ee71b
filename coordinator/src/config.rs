//! The resolved configuration of a run: what `run.toml` records, and what `--resume` compares.

use std::fmt;
use std::str::FromStr;

use kiln_protocol::{ModelSpec, ModelSpecError};
use serde::{Deserialize, Serialize};

/// Who plays the user in a conversational environment (τ²).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum UserMode {
    /// The offline, deterministic scripted user. Scores are not comparable to official τ² numbers,
    /// which use an LLM user.
    Scripted,
    /// An LLM user simulator, as in official τ² runs.
    Model(ModelSpec),
    /// No user: the agent works from the task instruction alone.
    None,
}

impl UserMode {
    /// The `user` value of the environment options (`scripted`, `model`, `none`).
    pub fn option_value(&self) -> &'static str {
        match self {
            UserMode::Scripted => "scripted",
            UserMode::Model(_) => "model",
            UserMode::None => "none",
        }
    }

    pub fn model(&self) -> Option<&ModelSpec> {
        match self {
            UserMode::Model(spec) => Some(spec),
            UserMode::Scripted | UserMode::None => None,
        }
    }
}

impl fmt::Display for UserMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserMode::Scripted => f.write_str("scripted"),
            UserMode::Model(spec) => write!(f, "model:{spec}"),
            UserMode::None => f.write_str("none"),
        }
    }
}

/// A `--user` value that does not parse.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UserModeError {
    #[error("invalid user mode `{0}`: expected `scripted`, `none` or `model:SPEC`")]
    Unknown(String),
    #[error("invalid user model in `--user {input}`: {source}")]
    Model {
        input: String,
        source: ModelSpecError,
    },
}

impl FromStr for UserMode {
    type Err = UserModeError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        match input.trim() {
            "scripted" => Ok(UserMode::Scripted),
            "none" => Ok(UserMode::None),
            other => {
                let Some(spec) = other.strip_prefix("model:") else {
                    return Err(UserModeError::Unknown(input.to_string()));
                };
                spec.parse()
                    .map(UserMode::Model)
                    .map_err(|source| UserModeError::Model {
                        input: input.to_string(),
                        source,
                    })
            }
        }
    }
}

impl TryFrom<String> for UserMode {
    type Error = UserModeError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<UserMode> for String {
    fn from(mode: UserMode) -> Self {
        mode.to_string()
    }
}

/// The harness a run uses: its name and content hash (the spec is in `harness/<hash>.toml`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HarnessRef {
    pub name: String,
    pub hash: String,
}

/// Everything that defines a run, resolved (task ids listed, defaults filled). `run.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    #[serde(default = "kiln_protocol::default_schema")]
    pub schema: u32,
    pub run_id: String,
    pub kiln_version: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub env: String,
    pub split: String,
    /// Tasks in the split, for "N of M" in reports.
    pub split_size: usize,
    /// How the tasks were chosen, as given on the command line (`all`, `first 5`, `list`).
    pub task_selection: String,
    pub attempts: u32,
    pub user: UserMode,
    /// Judge of NL assertions; absent when none was configured (those components are unjudged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<String>,
    /// Episode wall-clock limit in seconds (0 = none) when the run was created.
    pub timeout_s: u64,
    pub tasks: Vec<String>,
    pub model: ModelSpec,
    pub harness: HarnessRef,
    /// Seeds derive from this scope instead of the run id when set, so runs of the same scope give
    /// attempt `i` of a task the same seed: paired comparisons (AEGIS's gate, A/B runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed_scope: Option<String>,
}

impl RunConfig {
    /// What episode seeds derive from: the seed scope, else the run id.
    pub fn seed_basis(&self) -> &str {
        self.seed_scope.as_deref().unwrap_or(&self.run_id)
    }

    /// Every (task, attempt) the run must record, in dispatch order.
    pub fn expected_keys(&self) -> Vec<(String, u32)> {
        let mut keys = Vec::with_capacity(self.tasks.len() * self.attempts as usize);
        for attempt in 0..self.attempts {
            for task in &self.tasks {
                keys.push((task.clone(), attempt));
            }
        }
        keys
    }

    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string_pretty(self)
    }

    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }
}

/// The fields in which a requested run differs from a stored one, each as
/// "field: run.toml has X, requested Y". Empty when `--resume` may continue the stored run.
/// Run id, creation time, version and timeout are not part of a run's identity.
pub fn config_differences(stored: &RunConfig, requested: &RunConfig) -> Vec<String> {
    let mut differences = Vec::new();
    let mut compare = |field: &str, stored: String, requested: String| {
        if stored != requested {
            differences.push(format!(
                "{field}: run.toml has `{stored}`, requested `{requested}`"
            ));
        }
    };
    compare("env", stored.env.clone(), requested.env.clone());
    compare("split", stored.split.clone(), requested.split.clone());
    compare(
        "attempts",
        stored.attempts.to_string(),
        requested.attempts.to_string(),
    );
    compare("model", stored.model.label(), requested.model.label());
    compare(
        "model sampling",
        sampling_label(&stored.model),
        sampling_label(&requested.model),
    );
    compare(
        "harness",
        stored.harness.hash.clone(),
        requested.harness.hash.clone(),
    );
    compare("user", stored.user.to_string(), requested.user.to_string());
    compare(
        "judge",
        stored.judge.clone().unwrap_or_else(|| "none".into()),
        requested.judge.clone().unwrap_or_else(|| "none".into()),
    );
    compare(
        "seed scope",
        stored.seed_scope.clone().unwrap_or_else(|| "none".into()),
        requested
            .seed_scope
            .clone()
            .unwrap_or_else(|| "none".into()),
    );
    compare(
        "tasks",
        summarize_tasks(&stored.tasks),
        summarize_tasks(&requested.tasks),
    );
    differences
}

/// The sampling settings of a model spec that change what it does (not its reply cap or seed).
fn sampling_label(model: &ModelSpec) -> String {
    match model {
        ModelSpec::Local { sampling, .. } | ModelSpec::OpenAi { sampling, .. } => {
            format!(
                "temperature {}, top_p {}",
                sampling.temperature, sampling.top_p
            )
        }
        ModelSpec::Oracle => "none".into(),
    }
}

fn summarize_tasks(tasks: &[String]) -> String {
    const SHOWN: usize = 6;
    if tasks.len() <= SHOWN {
        return tasks.join(",");
    }
    format!("{},… ({} tasks)", tasks[..SHOWN].join(","), tasks.len())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample_config() -> RunConfig {
        RunConfig {
            schema: 1,
            run_id: "tau2-airline-20250101-000000-abcd".into(),
            kiln_version: "0.1.0".into(),
            created_at: "2025-01-01T00:00:00Z".into(),
            env: "tau2-airline".into(),
            split: "test".into(),
            split_size: 20,
            task_selection: "first 2".into(),
            attempts: 2,
            user: UserMode::Scripted,
            judge: None,
            timeout_s: 600,
            tasks: vec!["0".into(), "1".into()],
            model: ModelSpec::Oracle,
            harness: HarnessRef {
                name: "default".into(),
                hash: "abc123".into(),
            },
            seed_scope: None,
        }
    }

    #[test]
    fn run_toml_round_trips_with_every_user_mode() {
        for user in [
            "scripted",
            "none",
            "model:openai:qwen@http://127.0.0.1:8000/v1",
        ] {
            let mut config = sample_config();
            config.user = user.parse().unwrap();
            config.judge = Some("openai:judge@http://127.0.0.1:8001/v1".into());
            config.model = "openai:agent@http://127.0.0.1:8000/v1".parse().unwrap();
            let text = config.to_toml().unwrap();
            assert!(text.contains(&format!("user = \"{user}\"")), "{text}");
            assert_eq!(RunConfig::from_toml(&text).unwrap(), config);
        }
    }

    #[test]
    fn user_mode_rejects_unknown_values_naming_them() {
        let error = "llm".parse::<UserMode>().unwrap_err();
        assert!(error.to_string().contains("`llm`"), "{error}");
        let error = "model:gpt".parse::<UserMode>().unwrap_err();
        assert!(error.to_string().contains("model:gpt"), "{error}");
    }

    #[test]
    fn expected_keys_cover_every_task_and_attempt() {
        let keys = sample_config().expected_keys();
        assert_eq!(
            keys,
            vec![
                ("0".into(), 0),
                ("1".into(), 0),
                ("0".into(), 1),
                ("1".into(), 1)
            ]
        );
    }

    #[test]
    fn differences_name_each_changed_field_but_ignore_run_identity() {
        let stored = sample_config();
        let mut requested = sample_config();
        requested.run_id = "other".into();
        requested.timeout_s = 5;
        requested.created_at = "later".into();
        assert!(config_differences(&stored, &requested).is_empty());

        requested.split = "train".into();
        requested.attempts = 3;
        requested.tasks.push("2".into());
        let differences = config_differences(&stored, &requested);
        assert_eq!(differences.len(), 3, "{differences:?}");
        assert!(differences[0].starts_with("split: run.toml has `test`, requested `train`"));
        assert!(differences[1].starts_with("attempts"));
        assert!(differences[2].contains("0,1,2"));
    }
}
