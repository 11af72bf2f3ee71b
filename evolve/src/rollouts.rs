//! How the loop gets its rollouts: every one is an ordinary run with an ordinary run directory,
//! made by whatever runs runs (the embedded cluster, or a NATS cluster) behind [`Rollouts`].
//!
//! The loop is a deterministic function of its configuration and the rollouts it reads, so a run
//! directory that is already complete is never run again: that is `--resume`, and with
//! [`StoredRollouts`] (which runs nothing) it is `kiln evolve replay`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use kiln_protocol::Outcome;

/// One rollout: `harness_file` on `tasks` of the environment's `split`, `attempts` each, seeds
/// from `seed_scope` (runs of one scope pair attempt `i` of a task on the same seed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutRequest {
    /// What the rollout is for, for progress lines (`R2 C-R2-01 gate`).
    pub purpose: String,
    /// The run directory: created, or continued when it holds an unfinished run.
    pub dir: PathBuf,
    pub harness_file: PathBuf,
    /// The harness's content hash: a stored run made with another harness is an error.
    pub harness_hash: String,
    pub split: String,
    pub tasks: Vec<String>,
    pub attempts: u32,
    pub seed_scope: String,
}

/// Why a rollout did not finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutErrorKind {
    /// Stopped from outside (Ctrl-C): the evolution stops and can be resumed.
    Interrupted,
    /// The run could not be made or finished (its harness, the model, the cluster, the disk).
    Failed,
    /// Replay: the rollout is not on disk, and replay runs nothing.
    NotStored,
}

/// A rollout that did not finish.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rollout `{purpose}` ({dir}): {message}")]
pub struct RolloutError {
    kind: RolloutErrorKind,
    pub purpose: String,
    pub dir: String,
    pub message: String,
}

impl RolloutError {
    /// A [`RolloutErrorKind::Failed`] rollout.
    pub fn new(request: &RolloutRequest, message: impl Into<String>) -> Self {
        Self::with_kind(RolloutErrorKind::Failed, request, message)
    }

    pub fn with_kind(
        kind: RolloutErrorKind,
        request: &RolloutRequest,
        message: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            purpose: request.purpose.clone(),
            dir: request.dir.display().to_string(),
            message: message.into(),
        }
    }

    pub fn kind(&self) -> RolloutErrorKind {
        self.kind
    }
}

/// Runs rollouts. Implementations return once every (task, attempt) of the request is recorded
/// in `request.dir`.
#[async_trait]
pub trait Rollouts: Send + Sync {
    async fn run(&self, request: &RolloutRequest) -> Result<(), RolloutError>;
}

/// What a run directory holds, compared with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredRun {
    /// No `run.toml`.
    Absent,
    /// Some keys are not recorded yet.
    Partial {
        missing: usize,
    },
    Complete,
}

/// Reads `request.dir`: absent, partial or complete. A run made for another request (harness,
/// tasks, attempts or seed scope differ) is an error, so a resumed or replayed evolution never
/// reads rollouts that are not the ones it asked for.
pub fn stored_run(request: &RolloutRequest) -> Result<StoredRun, RolloutError> {
    let path = request.dir.join("run.toml");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(StoredRun::Absent),
        Err(error) => {
            return Err(RolloutError::new(
                request,
                format!("cannot read {}: {error}", path.display()),
            ));
        }
    };
    let header: RunHeader = toml::from_str(&text).map_err(|error| {
        RolloutError::new(
            request,
            format!("{} is not a run.toml: {error}", path.display()),
        )
    })?;
    let mut differences = Vec::new();
    if header.harness.hash != request.harness_hash {
        differences.push(format!(
            "harness {} (wanted {})",
            header.harness.hash, request.harness_hash
        ));
    }
    if header.tasks != request.tasks {
        differences.push("another task list".to_string());
    }
    if header.attempts != request.attempts {
        differences.push(format!(
            "{} attempts (wanted {})",
            header.attempts, request.attempts
        ));
    }
    if header.split != request.split {
        differences.push(format!("split {} (wanted {})", header.split, request.split));
    }
    if header.seed_scope.as_deref() != Some(request.seed_scope.as_str()) {
        differences.push(format!(
            "seed scope {:?} (wanted {})",
            header.seed_scope, request.seed_scope
        ));
    }
    if !differences.is_empty() {
        return Err(RolloutError::new(
            request,
            format!(
                "the stored run is not this rollout: {}",
                differences.join(", ")
            ),
        ));
    }
    let recorded =
        recorded_keys(&request.dir).map_err(|message| RolloutError::new(request, message))?;
    let missing = request
        .tasks
        .iter()
        .flat_map(|task| (0..request.attempts).map(move |attempt| (task.clone(), attempt)))
        .filter(|key| !recorded.contains(key))
        .count();
    Ok(if missing == 0 {
        StoredRun::Complete
    } else {
        StoredRun::Partial { missing }
    })
}

#[derive(serde::Deserialize)]
struct RunHeader {
    split: String,
    attempts: u32,
    tasks: Vec<String>,
    harness: HarnessHeader,
    #[serde(default)]
    seed_scope: Option<String>,
}

#[derive(serde::Deserialize)]
struct HarnessHeader {
    hash: String,
}

fn recorded_keys(dir: &Path) -> Result<BTreeSet<(String, u32)>, String> {
    Ok(read_outcomes(dir)?
        .into_iter()
        .map(|outcome| (outcome.task_id, outcome.attempt))
        .collect())
}

/// The outcomes of a run directory, first record per (task, attempt); a torn last line (a crash
/// mid-append) is left out.
pub fn read_outcomes(dir: &Path) -> Result<Vec<Outcome>, String> {
    crate::traces::read_jsonl(&dir.join("outcomes.jsonl"))
        .map(crate::traces::dedup_outcomes)
        .map_err(|error| error.to_string())
}

/// Per task, success of attempt 0, 1, … (a missing attempt counts as a failure).
pub fn success_table(
    outcomes: &[Outcome],
    tasks: &[String],
    attempts: u32,
) -> BTreeMap<String, Vec<bool>> {
    let by_key: BTreeMap<(&str, u32), bool> = outcomes
        .iter()
        .map(|o| ((o.task_id.as_str(), o.attempt), o.success))
        .collect();
    tasks
        .iter()
        .map(|task| {
            let row = (0..attempts)
                .map(|attempt| {
                    by_key
                        .get(&(task.as_str(), attempt))
                        .copied()
                        .unwrap_or(false)
                })
                .collect();
            (task.clone(), row)
        })
        .collect()
}

/// Runs nothing: every rollout must already be complete on disk. `kiln evolve replay` re-derives
/// the decisions with it.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoredRollouts;

#[async_trait]
impl Rollouts for StoredRollouts {
    async fn run(&self, request: &RolloutRequest) -> Result<(), RolloutError> {
        match stored_run(request)? {
            StoredRun::Complete => Ok(()),
            StoredRun::Absent => Err(RolloutError::with_kind(
                RolloutErrorKind::NotStored,
                request,
                "not stored; replay runs nothing (finish the evolution with `kiln evolve --resume`)",
            )),
            StoredRun::Partial { missing } => Err(RolloutError::with_kind(
                RolloutErrorKind::NotStored,
                request,
                format!("{missing} (task, attempt) keys are not recorded; replay runs nothing"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(dir: &Path) -> RolloutRequest {
        RolloutRequest {
            purpose: "R1 C-R1-01 gate".into(),
            dir: dir.to_path_buf(),
            harness_file: dir.join("h.toml"),
            harness_hash: "abc".into(),
            split: "train".into(),
            tasks: vec!["t1".into(), "t2".into()],
            attempts: 2,
            seed_scope: "gate".into(),
        }
    }

    fn outcome_line(task: &str, attempt: u32, success: bool) -> String {
        let outcome = crate::digest::tests::outcome("webshop", task, success, "env_done");
        let mut value = serde_json::to_value(outcome).unwrap();
        value["attempt"] = attempt.into();
        value.to_string() + "\n"
    }

    #[test]
    fn stored_runs_are_absent_partial_complete_or_another_rollout() {
        let dir = tempfile::tempdir().unwrap();
        let request = request(dir.path());
        assert_eq!(stored_run(&request).unwrap(), StoredRun::Absent);
        let run_toml = "run_id = \"r\"\nsplit = \"train\"\nattempts = 2\ntasks = [\"t1\", \"t2\"]\nseed_scope = \"gate\"\n[harness]\nname = \"h\"\nhash = \"abc\"\n";
        std::fs::write(dir.path().join("run.toml"), run_toml).unwrap();
        let lines = [
            outcome_line("t1", 0, true),
            outcome_line("t1", 1, false),
            outcome_line("t2", 0, true),
        ]
        .concat();
        std::fs::write(dir.path().join("outcomes.jsonl"), &lines).unwrap();
        assert_eq!(
            stored_run(&request).unwrap(),
            StoredRun::Partial { missing: 1 }
        );
        let torn = [
            lines.clone(),
            outcome_line("t2", 1, true),
            "{\"run_id\":".into(),
        ]
        .concat();
        std::fs::write(dir.path().join("outcomes.jsonl"), torn).unwrap();
        assert_eq!(stored_run(&request).unwrap(), StoredRun::Complete);
        let outcomes = read_outcomes(dir.path()).unwrap();
        let table = success_table(&outcomes, &request.tasks, 2);
        assert_eq!(table["t1"], vec![true, false]);
        assert_eq!(table["t2"], vec![true, true]);

        let other = RolloutRequest {
            harness_hash: "def".into(),
            seed_scope: "search".into(),
            ..request.clone()
        };
        let error = stored_run(&other).unwrap_err().to_string();
        assert!(error.contains("harness abc (wanted def)"), "{error}");
        assert!(error.contains("seed scope"), "{error}");
    }

    #[tokio::test]
    async fn stored_rollouts_run_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let error = StoredRollouts.run(&request(dir.path())).await.unwrap_err();
        assert!(error.to_string().contains("replay runs nothing"), "{error}");
    }
}
