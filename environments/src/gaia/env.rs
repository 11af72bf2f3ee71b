//! [`GaiaEnvironment`]: one GAIA question behind the [`Environment`] trait, and [`GaiaFactory`]
//! over a dataset on disk (`--env gaia:PATH`).
//!
//! The question is the opening user message; an attachment is copied into a fresh episode folder
//! and its path named in the question (a `read_file` tool returns it as text). The answer is the
//! argument of the `submit` tool, or else the text after the last `FINAL ANSWER:` of an agent
//! message; either ends the episode. A message without an answer gets a one-line reminder.
//!
//! Scoring uses the official scorer ([`super::scorer`]). The one reward component is named after
//! the task's level (`level 1`..`level 3`), so the report's component table is the per-level
//! accuracy. Test-split tasks (no answer) are not scored: the component is unjudged and the answer
//! is kept for the submission file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use kiln_protocol::{
    Action, ComponentScore, EnvInfo, Message, Observation, StepResult, TaskSpec, Termination,
    ToolCall, ToolSchema,
};
use serde_json::{Value, json};

use super::dataset::{GaiaDataset, GaiaTask, load};
use super::scorer::question_scorer;
use crate::{EnvError, EnvErrorKind, Environment, EnvironmentFactory, Evaluation, SplitInfo};

/// Prefix of the environment ids of real GAIA datasets: `gaia:PATH`.
pub const ENV_PREFIX: &str = "gaia:";

/// The marker the official prompt asks the model to end with.
pub const FINAL_ANSWER: &str = "FINAL ANSWER:";

/// Characters of an attachment `read_file` returns at most.
const READ_LIMIT: usize = 20_000;

/// The official GAIA system prompt (Mialon et al., 2023), plus how to submit with a tool.
pub const INSTRUCTIONS: &str = "You are a general AI assistant. I will ask you a question. Report \
your thoughts, and finish your answer with the following template: FINAL ANSWER: [YOUR FINAL \
ANSWER]. YOUR FINAL ANSWER should be a number OR as few words as possible OR a comma separated \
list of numbers and/or strings. If you are asked for a number, don't use comma to write your \
number neither use units such as $ or percent sign unless specified otherwise. If you are asked \
for a string, don't use articles, neither abbreviations (e.g. for cities), and write the digits in \
plain text unless specified otherwise. If you are asked for a comma separated list, apply the \
above rules depending of whether the element to be put in the list is a number or a string.\n\
Instead of the template you may call the `submit` tool with your final answer.";

const REMINDER: &str = "No final answer yet. Continue, then call `submit` with your answer or \
end your message with `FINAL ANSWER: [YOUR FINAL ANSWER]`.";

/// Whether `env_id` names a GAIA dataset on disk.
pub fn is_gaia(env_id: &str) -> bool {
    env_id.starts_with(ENV_PREFIX)
}

/// The text after the last `FINAL ANSWER:` in `text`, trimmed (`None` without the marker).
pub fn final_answer_in(text: &str) -> Option<String> {
    let at = text.rfind(FINAL_ANSWER)?;
    Some(text[at + FINAL_ANSWER.len()..].trim().to_string())
}

/// The answer of a `submit` call: its `answer` argument (a string, or a number/bool written as
/// JSON), or the whole argument when it is a string.
pub fn submitted_answer(call: &ToolCall) -> Option<String> {
    if call.name != "submit" {
        return None;
    }
    let value = match &call.arguments {
        Value::Object(map) => map.get("answer")?,
        other => other,
    };
    Some(match value {
        Value::String(text) => text.clone(),
        Value::Null => return None,
        other => other.to_string(),
    })
}

/// The answer a sequence of agent actions gives: the last `submit` argument if any, else the text
/// after the last `FINAL ANSWER:` of the last message holding one.
pub fn answer_of<'a>(actions: impl IntoIterator<Item = &'a Action>) -> Option<String> {
    let mut submitted = None;
    let mut marked = None;
    for action in actions {
        match action {
            Action::ToolCall { call } => {
                if let Some(answer) = submitted_answer(call) {
                    submitted = Some(answer);
                }
            }
            Action::Message { text } => {
                if let Some(answer) = final_answer_in(text) {
                    marked = Some(answer);
                }
            }
        }
    }
    submitted.or(marked)
}

/// The tools a GAIA episode offers: `submit`, and `read_file` when the task has an attachment.
pub fn tools(with_attachment: bool) -> Vec<ToolSchema> {
    let mut tools = vec![ToolSchema {
        name: "submit".to_string(),
        description: "Submit your final answer (a number, as few words as possible, or a comma \
                      separated list). Ends the task."
            .to_string(),
        parameters: json!({
            "type": "object",
            "properties": {"answer": {"type": "string", "description": "the final answer"}},
            "required": ["answer"]
        }),
    }];
    if with_attachment {
        tools.push(ToolSchema {
            name: "read_file".to_string(),
            description: "Read the attached file as text.".to_string(),
            parameters: json!({
                "type": "object",
                "properties": {"path": {"type": "string", "description": "the attachment's path"}},
                "required": ["path"]
            }),
        });
    }
    tools
}

/// Creates [`GaiaEnvironment`]s over one dataset.
pub struct GaiaFactory {
    id: String,
    description: String,
    dataset: Arc<GaiaDataset>,
}

impl GaiaFactory {
    /// Opens `gaia:PATH`, reading its metadata now.
    pub fn open(env_id: &str) -> Result<Self, EnvError> {
        let path = env_id.strip_prefix(ENV_PREFIX).unwrap_or(env_id);
        if path.is_empty() {
            return Err(EnvError::new(
                EnvErrorKind::UnknownEnv,
                format!(
                    "`{env_id}` names no dataset: expected gaia:PATH (a folder with GAIA's metadata.jsonl or metadata.parquet)"
                ),
            ));
        }
        let dataset = load(Path::new(path))?;
        let counts: Vec<String> = dataset
            .splits
            .iter()
            .map(|split| format!("{} {}", split.name, split.tasks.len()))
            .collect();
        Ok(Self {
            id: format!("{ENV_PREFIX}{path}"),
            description: format!("GAIA (official format) from {path}: {}", counts.join(", ")),
            dataset: Arc::new(dataset),
        })
    }

    pub fn dataset(&self) -> &Arc<GaiaDataset> {
        &self.dataset
    }
}

impl EnvironmentFactory for GaiaFactory {
    fn id(&self) -> &str {
        &self.id
    }

    fn description(&self) -> &str {
        &self.description
    }

    fn splits(&self) -> Vec<SplitInfo> {
        self.dataset
            .splits
            .iter()
            .map(|split| SplitInfo {
                name: split.name.clone(),
                tasks: split.tasks.len(),
            })
            .collect()
    }

    fn task_ids(&self, split: &str) -> Result<Vec<String>, EnvError> {
        let found = self.dataset.split(split).ok_or_else(|| {
            let names: Vec<&str> = self
                .dataset
                .splits
                .iter()
                .map(|s| s.name.as_str())
                .collect();
            EnvError::new(
                EnvErrorKind::UnknownSplit,
                format!(
                    "{} has no split `{split}`; splits: {}",
                    self.id,
                    names.join(", ")
                ),
            )
        })?;
        Ok(found
            .tasks
            .iter()
            .map(|task| task.task_id.clone())
            .collect())
    }

    fn default_split(&self) -> &str {
        if self.dataset.split("validation").is_some() {
            "validation"
        } else {
            &self.dataset.splits[0].name
        }
    }

    fn create(&self, options: &Value) -> Result<Box<dyn Environment>, EnvError> {
        if !(options.is_null() || options.as_object().is_some_and(|map| map.is_empty())) {
            return Err(EnvError::new(
                EnvErrorKind::InvalidOptions,
                format!("gaia takes no env_options, got {options}"),
            ));
        }
        Ok(Box::new(GaiaEnvironment::new(
            self.id.clone(),
            self.dataset.clone(),
        )))
    }
}

/// One GAIA episode at a time: see the module docs.
pub struct GaiaEnvironment {
    env_id: String,
    dataset: Arc<GaiaDataset>,
    episode: Option<Episode>,
}

struct Episode {
    task: GaiaTask,
    /// The attachment's copy in the episode folder.
    attachment: Option<PathBuf>,
    folder: Option<PathBuf>,
    answer: Option<String>,
    ended: bool,
}

impl GaiaEnvironment {
    pub fn new(env_id: String, dataset: Arc<GaiaDataset>) -> Self {
        Self {
            env_id,
            dataset,
            episode: None,
        }
    }

    fn remove_folder(&mut self) {
        if let Some(folder) = self
            .episode
            .as_mut()
            .and_then(|episode| episode.folder.take())
        {
            let _ = std::fs::remove_dir_all(folder);
        }
    }
}

impl Drop for GaiaEnvironment {
    fn drop(&mut self) {
        self.remove_folder();
    }
}

/// A fresh folder for one episode's files under the system temp folder.
fn episode_folder(task_id: &str) -> std::io::Result<PathBuf> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let safe: String = task_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    let folder = std::env::temp_dir().join(format!(
        "kiln-gaia-{}-{}-{safe}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&folder)?;
    Ok(folder)
}

fn state_error(message: &str) -> EnvError {
    EnvError::new(EnvErrorKind::State, format!("gaia: {message}"))
}

fn tool_result(call: &ToolCall, content: String, is_error: bool) -> Observation {
    Observation::ToolResult {
        call_id: call.id.clone(),
        name: call.name.clone(),
        content,
        is_error,
    }
}

/// `read_file`: the attachment as UTF-8 text (lossy), cut at [`READ_LIMIT`] characters.
fn read_attachment(call: &ToolCall, attachment: Option<&Path>) -> (String, bool) {
    let Some(attachment) = attachment else {
        return ("this task has no attached file".to_string(), true);
    };
    let asked = call
        .arguments
        .get("path")
        .and_then(Value::as_str)
        .unwrap_or("");
    let name = attachment
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("");
    if asked != attachment.to_string_lossy() && asked != name {
        return (
            format!(
                "no file `{asked}`; the attachment is {}",
                attachment.display()
            ),
            true,
        );
    }
    match std::fs::read(attachment) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let mut content: String = text.chars().take(READ_LIMIT).collect();
            if text.chars().nth(READ_LIMIT).is_some() {
                content.push_str("\n[… truncated]");
            }
            (content, false)
        }
        Err(error) => (
            format!("cannot read {}: {error}", attachment.display()),
            true,
        ),
    }
}

/// The evaluation of `answer` for `task`: the official scorer when the task has a ground truth,
/// an unjudged component otherwise.
pub fn evaluation_of(
    task: &GaiaTask,
    answer: Option<&str>,
    termination: Termination,
) -> Evaluation {
    let component = format!("level {}", task.level);
    let mut components = BTreeMap::new();
    let info = |extra: Value| {
        let mut info = json!({
            "task_id": task.task_id,
            "level": task.level,
            "model_answer": answer,
            "termination": termination,
        });
        if let (Value::Object(info), Value::Object(extra)) = (&mut info, extra) {
            info.extend(extra);
        }
        info
    };
    let Some(truth) = &task.final_answer else {
        components.insert(
            component,
            ComponentScore {
                value: None,
                unjudged: true,
                detail: Some("test split: no ground truth, not scored".to_string()),
            },
        );
        return Evaluation {
            reward: 0.0,
            components,
            success: false,
            success_judged_only: false,
            db_hash: None,
            info: info(json!({"scored": false})),
        };
    };
    let verdict = match answer {
        Some(answer) => question_scorer(answer, truth),
        None => super::scorer::Verdict {
            correct: false,
            rule: question_scorer("", truth).rule,
            explanation: format!("no answer was given ({termination:?})"),
        },
    };
    let value = if verdict.correct { 1.0 } else { 0.0 };
    components.insert(
        component,
        ComponentScore {
            value: Some(value),
            unjudged: false,
            detail: Some(verdict.explanation.clone()),
        },
    );
    Evaluation {
        reward: value,
        components,
        success: verdict.correct,
        success_judged_only: verdict.correct,
        db_hash: None,
        info: info(json!({"scored": true, "rule": verdict.rule.to_string()})),
    }
}

#[async_trait]
impl Environment for GaiaEnvironment {
    async fn reset(&mut self, spec: &TaskSpec) -> Result<EnvInfo, EnvError> {
        self.remove_folder();
        let task = self
            .dataset
            .task(&spec.split, &spec.task_id)
            .cloned()
            .ok_or_else(|| {
                EnvError::new(
                    EnvErrorKind::UnknownTask,
                    format!("{} has no task `{}`", self.env_id, spec.task_id),
                )
            })?;
        let (folder, attachment) = match &task.attachment {
            Some(source) => {
                let folder = episode_folder(&task.task_id).map_err(|error| {
                    EnvError::new(
                        EnvErrorKind::Crashed,
                        format!("gaia: cannot create an episode folder: {error}"),
                    )
                })?;
                let copy = folder.join(source.file_name().unwrap_or(source.as_os_str()));
                std::fs::copy(source, &copy).map_err(|error| {
                    EnvError::new(
                        EnvErrorKind::Data,
                        format!(
                            "cannot copy the attachment {} of task {}: {error}",
                            source.display(),
                            task.task_id
                        ),
                    )
                })?;
                (Some(folder), Some(copy))
            }
            None => (None, None),
        };
        let mut question = task.question.clone();
        if let Some(copy) = &attachment {
            question.push_str(&format!("\n\nAttached file: {}", copy.display()));
        } else if !task.file_name.is_empty() {
            tracing::warn!(task = %task.task_id, file = %task.file_name, "attachment missing; the question is asked without it");
        }
        let tools = tools(attachment.is_some());
        self.episode = Some(Episode {
            task,
            attachment,
            folder,
            answer: None,
            ended: false,
        });
        Ok(EnvInfo {
            env: self.env_id.clone(),
            instructions: INSTRUCTIONS.to_string(),
            tools,
            opening: vec![Message::user(question)],
            admissible_actions: None,
        })
    }

    async fn step(&mut self, action: &Action) -> Result<StepResult, EnvError> {
        let episode = self
            .episode
            .as_mut()
            .ok_or_else(|| state_error("step called before reset"))?;
        if episode.ended {
            return Err(state_error("step called after the answer was given"));
        }
        let (observation, answer) = match action {
            Action::ToolCall { call } if call.name == "submit" => match submitted_answer(call) {
                Some(answer) => (
                    tool_result(call, format!("submitted: {answer}"), false),
                    Some(answer),
                ),
                None => (
                    tool_result(call, "submit needs {\"answer\": \"...\"}".to_string(), true),
                    None,
                ),
            },
            Action::ToolCall { call } if call.name == "read_file" => {
                let (content, is_error) = read_attachment(call, episode.attachment.as_deref());
                (tool_result(call, content, is_error), None)
            }
            Action::ToolCall { call } => (
                tool_result(
                    call,
                    format!("unknown tool `{}`; tools: submit, read_file", call.name),
                    true,
                ),
                None,
            ),
            Action::Message { text } => match final_answer_in(text) {
                Some(answer) => (
                    Observation::User {
                        text: "Answer received.".to_string(),
                    },
                    Some(answer),
                ),
                None => (
                    Observation::User {
                        text: REMINDER.to_string(),
                    },
                    None,
                ),
            },
        };
        let done = answer.is_some();
        let info = match &answer {
            Some(answer) => json!({"model_answer": answer}),
            None => Value::Null,
        };
        if let Some(answer) = answer {
            episode.answer = Some(answer);
            episode.ended = true;
        }
        Ok(StepResult {
            observation,
            done,
            termination: done.then_some(Termination::EnvDone),
            admissible_actions: None,
            info,
        })
    }

    async fn evaluate(&mut self, termination: Termination) -> Result<Evaluation, EnvError> {
        let episode = self
            .episode
            .as_ref()
            .ok_or_else(|| state_error("evaluate called before reset"))?;
        Ok(evaluation_of(
            &episode.task,
            episode.answer.as_deref(),
            termination,
        ))
    }

    fn oracle_plan(&self) -> Option<Vec<Action>> {
        let answer = self.episode.as_ref()?.task.final_answer.clone()?;
        Some(vec![Action::ToolCall {
            call: ToolCall {
                id: "gold_submit".to_string(),
                name: "submit".to_string(),
                arguments: json!({"answer": answer}),
            },
        }])
    }

    async fn close(&mut self) -> Result<(), EnvError> {
        self.remove_folder();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gaia::dataset::tests::write_parquet;

    fn spec(split: &str, task_id: &str) -> TaskSpec {
        TaskSpec {
            schema: 1,
            run_id: "r".into(),
            env: "gaia:x".into(),
            split: split.into(),
            task_id: task_id.into(),
            attempt: 0,
            harness_hash: String::new(),
            model: kiln_protocol::ModelSpec::Oracle,
            env_options: Value::Null,
            seed: 0,
            timeout_s: 0,
        }
    }

    fn dataset() -> (tempfile::TempDir, GaiaFactory) {
        let dir = tempfile::tempdir().unwrap();
        let validation = dir.path().join("validation");
        std::fs::create_dir_all(&validation).unwrap();
        std::fs::write(validation.join("v2.txt"), "The answer is 1,234.").unwrap();
        let lines = [
            json!({"task_id": "v1", "Question": "Capital of France?", "Level": "1", "Final answer": "Paris", "file_name": ""}),
            json!({"task_id": "v2", "Question": "What number is in the file?", "Level": "2", "Final answer": "1234", "file_name": "v2.txt"}),
        ];
        let text: String = lines.iter().map(|line| format!("{line}\n")).collect();
        std::fs::write(validation.join("metadata.jsonl"), text).unwrap();
        let test = dir.path().join("test");
        std::fs::create_dir_all(&test).unwrap();
        write_parquet(
            &test.join("metadata.parquet"),
            &[["t1", "Name a colour.", "3", "?", "", ""]],
        );
        let factory = GaiaFactory::open(&format!("gaia:{}", dir.path().display())).unwrap();
        (dir, factory)
    }

    fn submit(answer: &str) -> Action {
        Action::ToolCall {
            call: ToolCall {
                id: "c".into(),
                name: "submit".into(),
                arguments: json!({"answer": answer}),
            },
        }
    }

    #[test]
    fn answers_come_from_submit_first_then_the_last_final_answer() {
        assert_eq!(
            final_answer_in("x FINAL ANSWER: 3\nFINAL ANSWER:  Paris "),
            Some("Paris".into())
        );
        assert_eq!(final_answer_in("no marker"), None);
        let message = |text: &str| Action::Message { text: text.into() };
        let actions = [
            message("FINAL ANSWER: a"),
            submit("b"),
            message("FINAL ANSWER: c"),
        ];
        assert_eq!(answer_of(&actions), Some("b".into()));
        assert_eq!(answer_of(&actions[2..]), Some("c".into()));
        assert_eq!(answer_of(&[message("thinking")]), None);
    }

    #[test]
    fn factory_lists_splits_and_rejects_bad_ids() {
        let (_dir, factory) = dataset();
        assert_eq!(factory.default_split(), "validation");
        let splits = factory.splits();
        assert_eq!(
            splits
                .iter()
                .map(|s| (s.name.as_str(), s.tasks))
                .collect::<Vec<_>>(),
            [("validation", 2), ("test", 1)]
        );
        assert_eq!(factory.task_ids("test").unwrap(), ["t1"]);
        assert_eq!(
            factory.task_ids("train").unwrap_err().kind(),
            EnvErrorKind::UnknownSplit
        );
        assert_eq!(
            GaiaFactory::open("gaia:").err().unwrap().kind(),
            EnvErrorKind::UnknownEnv
        );
        assert_eq!(
            GaiaFactory::open("gaia:/no/such/dir").err().unwrap().kind(),
            EnvErrorKind::Data
        );
    }

    #[tokio::test]
    async fn an_episode_with_an_attachment_reads_it_and_scores_a_submitted_answer() {
        let (_dir, factory) = dataset();
        let mut env = factory.create(&Value::Null).unwrap();
        let info = env.reset(&spec("validation", "v2")).await.unwrap();
        assert_eq!(
            info.tools
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>(),
            ["submit", "read_file"]
        );
        let question = &info.opening[0].content;
        let path = question
            .rsplit("Attached file: ")
            .next()
            .unwrap()
            .to_string();
        assert!(Path::new(&path).is_file(), "{question}");

        let read = Action::ToolCall {
            call: ToolCall {
                id: "r".into(),
                name: "read_file".into(),
                arguments: json!({"path": path}),
            },
        };
        let result = env.step(&read).await.unwrap();
        assert_eq!(result.observation.text(), "The answer is 1,234.");
        assert!(!result.done);
        let nudge = env
            .step(&Action::Message {
                text: "Let me think.".into(),
            })
            .await
            .unwrap();
        assert!(!nudge.done && nudge.observation.text().contains("FINAL ANSWER"));
        assert_eq!(
            env.oracle_plan(),
            Some(vec![Action::ToolCall {
                call: ToolCall {
                    id: "gold_submit".into(),
                    name: "submit".into(),
                    arguments: json!({"answer": "1234"})
                },
            }])
        );

        let done = env.step(&submit("$1,234")).await.unwrap();
        assert!(done.done);
        assert_eq!(done.termination, Some(Termination::EnvDone));
        let evaluation = env.evaluate(Termination::EnvDone).await.unwrap();
        assert!(evaluation.success);
        assert_eq!(evaluation.components["level 2"].value, Some(1.0));
        assert_eq!(evaluation.info["model_answer"], "$1,234");
        env.close().await.unwrap();
        assert!(!Path::new(&path).exists(), "the episode folder is removed");
    }

    #[tokio::test]
    async fn a_final_answer_message_ends_the_episode_and_a_wrong_one_scores_zero() {
        let (_dir, factory) = dataset();
        let mut env = factory.create(&Value::Null).unwrap();
        let info = env.reset(&spec("validation", "v1")).await.unwrap();
        assert_eq!(info.tools.len(), 1);
        let done = env
            .step(&Action::Message {
                text: "I think FINAL ANSWER: Lyon".into(),
            })
            .await
            .unwrap();
        assert!(done.done);
        let evaluation = env.evaluate(Termination::EnvDone).await.unwrap();
        assert!(!evaluation.success);
        assert_eq!(evaluation.components["level 1"].value, Some(0.0));
        assert_eq!(
            env.step(&submit("Paris")).await.unwrap_err().kind(),
            EnvErrorKind::State
        );
    }

    #[tokio::test]
    async fn test_split_answers_are_kept_but_not_scored() {
        let (_dir, factory) = dataset();
        let mut env = factory.create(&Value::Null).unwrap();
        env.reset(&spec("test", "t1")).await.unwrap();
        assert_eq!(env.oracle_plan(), None);
        env.step(&submit("blue")).await.unwrap();
        let evaluation = env.evaluate(Termination::EnvDone).await.unwrap();
        assert!(!evaluation.success);
        assert!(evaluation.components["level 3"].unjudged);
        assert_eq!(evaluation.info["model_answer"], "blue");
        assert_eq!(evaluation.info["scored"], false);
        let missing = env.reset(&spec("test", "nope")).await.err().unwrap();
        assert_eq!(missing.kind(), EnvErrorKind::UnknownTask);
    }
}
