//! GAIA submission files: one JSON line per task, `{"task_id", "model_answer", "reasoning_trace"}`
//! (the leaderboard's format), made from a run's trajectories, and scored against a dataset.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use kiln_protocol::Trajectory;
use serde::{Deserialize, Serialize};

use super::dataset::GaiaDataset;
use super::env::answer_of;
use super::scorer::question_scorer;

/// One line of a submission file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubmissionLine {
    pub task_id: String,
    pub model_answer: String,
    #[serde(default)]
    pub reasoning_trace: String,
}

/// Why a submission could not be read or scored.
#[derive(Debug, thiserror::Error)]
pub enum SubmissionError {
    #[error("cannot read the submission {path}: {reason}")]
    Read { path: String, reason: String },
    #[error(
        "submission {path} line {line}: {reason} (expected {{\"task_id\", \"model_answer\", \"reasoning_trace\"}})"
    )]
    Format {
        path: String,
        line: usize,
        reason: String,
    },
    #[error("nothing to score: {0}")]
    NothingToScore(String),
}

/// The submission line of one episode: the answer it gave (`""` if none) and the agent's text.
pub fn submission_line(trajectory: &Trajectory) -> SubmissionLine {
    let actions = trajectory
        .steps
        .iter()
        .flat_map(|step| step.actions.iter().map(|record| &record.action));
    let reasoning: Vec<&str> = trajectory
        .steps
        .iter()
        .map(|step| step.model.raw_content.trim())
        .filter(|text| !text.is_empty())
        .collect();
    SubmissionLine {
        task_id: trajectory.task_id.clone(),
        model_answer: answer_of(actions).unwrap_or_default(),
        reasoning_trace: reasoning.join("\n\n"),
    }
}

/// The submission of a run: the last trajectory of attempt 0 of each task, in `order`.
pub fn submission_of(trajectories: &[Trajectory], order: &[String]) -> Vec<SubmissionLine> {
    let mut last: HashMap<&str, &Trajectory> = HashMap::new();
    for trajectory in trajectories.iter().filter(|t| t.attempt == 0) {
        last.insert(trajectory.task_id.as_str(), trajectory);
    }
    order
        .iter()
        .filter_map(|task_id| last.get(task_id.as_str()))
        .map(|trajectory| submission_line(trajectory))
        .collect()
}

/// Reads a submission file (blank lines skipped; a later line for the same task replaces it).
pub fn read_submission(path: &Path) -> Result<Vec<SubmissionLine>, SubmissionError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|error| SubmissionError::Read {
        path: shown.clone(),
        reason: error.to_string(),
    })?;
    let mut lines: Vec<SubmissionLine> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let parsed: SubmissionLine =
            serde_json::from_str(line).map_err(|error| SubmissionError::Format {
                path: shown.clone(),
                line: index + 1,
                reason: error.to_string(),
            })?;
        match lines.iter_mut().find(|seen| seen.task_id == parsed.task_id) {
            Some(seen) => *seen = parsed,
            None => lines.push(parsed),
        }
    }
    Ok(lines)
}

/// One scored task.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskScore {
    pub task_id: String,
    pub level: u8,
    pub correct: bool,
    /// False when the submission has no line for the task (scored as wrong).
    #[serde(skip)]
    pub answered: bool,
}

/// Accuracy of a submission, overall and per level.
#[derive(Debug, Clone, PartialEq)]
pub struct SubmissionScore {
    pub tasks: Vec<TaskScore>,
    /// Submitted task ids the dataset does not have (not scored).
    pub unknown: Vec<String>,
    /// Submitted task ids whose task has no ground truth (test split; not scored).
    pub unscored: Vec<String>,
}

impl SubmissionScore {
    pub fn correct(&self) -> usize {
        self.tasks.iter().filter(|task| task.correct).count()
    }

    pub fn accuracy(&self) -> f64 {
        self.correct() as f64 / self.tasks.len().max(1) as f64
    }

    /// Level → (correct, tasks).
    pub fn per_level(&self) -> BTreeMap<u8, (usize, usize)> {
        let mut levels: BTreeMap<u8, (usize, usize)> = BTreeMap::new();
        for task in &self.tasks {
            let entry = levels.entry(task.level).or_default();
            entry.0 += usize::from(task.correct);
            entry.1 += 1;
        }
        levels
    }

    /// Tasks the submission left out (scored as wrong).
    pub fn missing(&self) -> usize {
        self.tasks.iter().filter(|task| !task.answered).count()
    }
}

/// Scores `lines` against every task with a ground truth in the splits the submission answers
/// (a task of such a split with no line counts as wrong, as on the leaderboard).
pub fn score_submission(
    dataset: &GaiaDataset,
    lines: &[SubmissionLine],
) -> Result<SubmissionScore, SubmissionError> {
    let answers: HashMap<&str, &str> = lines
        .iter()
        .map(|line| (line.task_id.as_str(), line.model_answer.as_str()))
        .collect();
    let mut score = SubmissionScore {
        tasks: Vec::new(),
        unknown: Vec::new(),
        unscored: Vec::new(),
    };
    for line in lines {
        match dataset.task("", &line.task_id) {
            None => score.unknown.push(line.task_id.clone()),
            Some(task) if task.final_answer.is_none() => score.unscored.push(line.task_id.clone()),
            Some(_) => {}
        }
    }
    for split in &dataset.splits {
        let answered_here = split
            .tasks
            .iter()
            .any(|task| task.final_answer.is_some() && answers.contains_key(task.task_id.as_str()));
        if !answered_here {
            continue;
        }
        for task in &split.tasks {
            let Some(truth) = &task.final_answer else {
                continue;
            };
            let answer = answers.get(task.task_id.as_str());
            score.tasks.push(TaskScore {
                task_id: task.task_id.clone(),
                level: task.level,
                correct: answer.is_some_and(|answer| question_scorer(answer, truth).correct),
                answered: answer.is_some(),
            });
        }
    }
    if score.tasks.is_empty() {
        return Err(SubmissionError::NothingToScore(format!(
            "none of the {} submitted task ids has a ground truth in {} ({} unknown, {} without an answer)",
            lines.len(),
            dataset.root.display(),
            score.unknown.len(),
            score.unscored.len()
        )));
    }
    Ok(score)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::gaia::dataset::load;

    fn dataset(dir: &Path) -> GaiaDataset {
        let validation = dir.join("validation");
        std::fs::create_dir_all(&validation).unwrap();
        let lines = [
            json!({"task_id": "a", "Question": "q", "Level": "1", "Final answer": "Paris"}),
            json!({"task_id": "b", "Question": "q", "Level": "1", "Final answer": "17"}),
            json!({"task_id": "c", "Question": "q", "Level": "2", "Final answer": "x, y"}),
            json!({"task_id": "d", "Question": "q", "Level": "3", "Final answer": "z"}),
        ];
        let text: String = lines.iter().map(|line| format!("{line}\n")).collect();
        std::fs::write(validation.join("metadata.jsonl"), text).unwrap();
        let test = dir.join("test");
        std::fs::create_dir_all(&test).unwrap();
        std::fs::write(
            test.join("metadata.jsonl"),
            json!({"task_id": "t", "Question": "q", "Level": "1", "Final answer": "?"}).to_string(),
        )
        .unwrap();
        load(dir).unwrap()
    }

    #[test]
    fn scores_overall_and_per_level_counting_missing_tasks_as_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let dataset = dataset(dir.path());
        let path = dir.path().join("submission.jsonl");
        let lines = [
            json!({"task_id": "a", "model_answer": "paris", "reasoning_trace": "..."}),
            json!({"task_id": "b", "model_answer": "$17"}),
            json!({"task_id": "c", "model_answer": "y, x"}),
            json!({"task_id": "t", "model_answer": "blue"}),
            json!({"task_id": "zz", "model_answer": "?"}),
        ];
        let text: String = lines.iter().map(|line| format!("{line}\n\n")).collect();
        std::fs::write(&path, text).unwrap();
        let submission = read_submission(&path).unwrap();
        assert_eq!(submission.len(), 5);
        let score = score_submission(&dataset, &submission).unwrap();
        assert_eq!(score.tasks.len(), 4);
        assert_eq!(score.correct(), 2);
        assert_eq!(score.accuracy(), 0.5);
        assert_eq!(score.missing(), 1);
        assert_eq!(
            score.per_level(),
            BTreeMap::from([(1, (2, 2)), (2, (0, 1)), (3, (0, 1))])
        );
        assert_eq!(score.unknown, ["zz"]);
        assert_eq!(score.unscored, ["t"]);
    }

    #[test]
    fn bad_lines_and_unscorable_submissions_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let dataset = dataset(dir.path());
        let path = dir.path().join("bad.jsonl");
        std::fs::write(
            &path,
            "{\"task_id\": \"a\", \"model_answer\": \"x\"}\n{\"task\": 1}\n",
        )
        .unwrap();
        let error = read_submission(&path).unwrap_err();
        assert!(error.to_string().contains("line 2"), "{error}");
        let only_test = [SubmissionLine {
            task_id: "t".into(),
            model_answer: "blue".into(),
            reasoning_trace: String::new(),
        }];
        let error = score_submission(&dataset, &only_test).unwrap_err();
        assert!(error.to_string().contains("ground truth"), "{error}");
        let error = read_submission(&dir.path().join("none.jsonl")).unwrap_err();
        assert!(matches!(error, SubmissionError::Read { .. }));
    }
}
