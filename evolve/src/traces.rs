//! The trace store: the run directories AEGIS learns from, loaded for the digester and planner.
//!
//! It is the one door through which AEGIS reads rollouts, and it keeps the held-out split shut:
//! [`TraceStore::load_run`] refuses a run whose split is the held-out source or that lists or
//! records any held-out task, and it decides from `run.toml` and `outcomes.jsonl` before a single
//! trajectory is read. Held-out runs are read only through [`FinalEvaluation`], which can only be
//! had by giving up the store ([`FinalEvaluation::conclude`] consumes it), so no stage that works
//! from the store can run after held-out traces are opened.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use kiln_protocol::{HarnessSpec, Outcome, Trajectory};
use serde::de::DeserializeOwned;

use crate::splits::{EvolutionSplits, SplitRole};

/// What went wrong loading a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceErrorKind {
    /// The run touches the held-out split and no [`FinalEvaluation`] was given.
    HeldOut,
    /// The directory is not a run directory, or a file in it does not parse.
    RunDirectory,
    /// The run is of another environment than the evolution's.
    WrongEnv,
    Io,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct TraceError {
    kind: TraceErrorKind,
    message: String,
}

impl TraceError {
    fn new(kind: TraceErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub fn kind(&self) -> TraceErrorKind {
        self.kind
    }
}

/// One loaded run directory.
#[derive(Debug, Clone)]
pub struct RunTraces {
    pub dir: PathBuf,
    pub run_id: String,
    pub env: String,
    /// The environment split the run drew its tasks from.
    pub split: String,
    /// Outcomes, first record per (task, attempt).
    pub outcomes: Vec<Outcome>,
    /// Trajectories by (task, attempt); the last line of a key counts (a re-run after a lost
    /// outcome line).
    pub trajectories: BTreeMap<(String, u32), Trajectory>,
    /// Harness versions of the run by hash (`harness/<hash>.toml`), when readable.
    pub harnesses: BTreeMap<String, HarnessSpec>,
}

impl RunTraces {
    pub fn trajectory(&self, task_id: &str, attempt: u32) -> Option<&Trajectory> {
        self.trajectories.get(&(task_id.to_string(), attempt))
    }
}

/// The search- and gate-split runs of one evolution.
#[derive(Debug)]
pub struct TraceStore {
    splits: EvolutionSplits,
    runs: Vec<RunTraces>,
}

impl TraceStore {
    pub fn new(splits: EvolutionSplits) -> Self {
        Self {
            splits,
            runs: Vec::new(),
        }
    }

    pub fn splits(&self) -> &EvolutionSplits {
        &self.splits
    }

    pub fn runs(&self) -> &[RunTraces] {
        &self.runs
    }

    /// Loads a search- or gate-split run. A run that touches the held-out split is refused
    /// ([`TraceErrorKind::HeldOut`]) before its trajectories are read.
    pub fn load_run(&mut self, dir: &Path) -> Result<&RunTraces, TraceError> {
        let run = load(dir, &self.splits, Access::Evolution)?;
        self.runs.push(run);
        Ok(self.runs.last().expect("just pushed"))
    }

    /// The (run, outcome) pairs of every loaded run whose task has `role`.
    pub fn episodes(&self, role: SplitRole) -> Vec<(&RunTraces, &Outcome)> {
        self.runs
            .iter()
            .flat_map(|run| run.outcomes.iter().map(move |outcome| (run, outcome)))
            .filter(|(_, outcome)| self.splits.role_of(&outcome.task_id) == Some(role))
            .collect()
    }
}

/// The capability to read held-out runs: the final report's. It exists only once the evolution's
/// trace store has been given up, so nothing that learns from traces can see held-out ones.
///
/// ```compile_fail
/// // Not constructible outside this module: its fields are private.
/// fn forge(splits: kiln_evolve::EvolutionSplits) -> kiln_evolve::traces::FinalEvaluation {
///     kiln_evolve::traces::FinalEvaluation { splits, runs: Vec::new() }
/// }
/// ```
#[derive(Debug)]
pub struct FinalEvaluation {
    splits: EvolutionSplits,
    runs: Vec<RunTraces>,
}

impl FinalEvaluation {
    /// Ends evolution: consumes the trace store (its search and gate runs stay readable through
    /// [`FinalEvaluation::evolution_runs`]).
    pub fn conclude(store: TraceStore) -> Self {
        Self {
            splits: store.splits,
            runs: store.runs,
        }
    }

    pub fn splits(&self) -> &EvolutionSplits {
        &self.splits
    }

    /// The runs evolution loaded.
    pub fn evolution_runs(&self) -> &[RunTraces] {
        &self.runs
    }

    /// Loads any run of the evolution's environment, held-out runs included.
    pub fn load_held_out(&self, dir: &Path) -> Result<RunTraces, TraceError> {
        load(dir, &self.splits, Access::Final)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Evolution,
    Final,
}

fn load(dir: &Path, splits: &EvolutionSplits, access: Access) -> Result<RunTraces, TraceError> {
    let header = read_header(dir)?;
    if header.env != splits.env {
        return Err(TraceError::new(
            TraceErrorKind::WrongEnv,
            format!(
                "{}: a run of `{}`, but this evolution is on `{}`",
                dir.display(),
                header.env,
                splits.env
            ),
        ));
    }
    if access == Access::Evolution {
        refuse_held_out(dir, splits, &header.split, header.tasks.iter())?;
    }
    let outcomes: Vec<Outcome> = dedup_outcomes(read_jsonl(&dir.join("outcomes.jsonl"))?);
    if access == Access::Evolution {
        refuse_held_out(
            dir,
            splits,
            &header.split,
            outcomes.iter().map(|outcome| &outcome.task_id),
        )?;
    }
    let mut trajectories = BTreeMap::new();
    for trajectory in read_jsonl::<Trajectory>(&dir.join("trajectories.jsonl"))? {
        trajectories.insert((trajectory.task_id.clone(), trajectory.attempt), trajectory);
    }
    let harnesses = read_harnesses(&dir.join("harness"));
    Ok(RunTraces {
        dir: dir.to_path_buf(),
        run_id: header.run_id,
        env: header.env,
        split: header.split,
        outcomes,
        trajectories,
        harnesses,
    })
}

fn refuse_held_out<'a>(
    dir: &Path,
    splits: &EvolutionSplits,
    split: &str,
    mut tasks: impl Iterator<Item = &'a String>,
) -> Result<(), TraceError> {
    let refusal = |what: String| {
        TraceError::new(
            TraceErrorKind::HeldOut,
            format!(
                "{}: {what}; held-out runs are read only by the final evaluation",
                dir.display()
            ),
        )
    };
    if split == splits.held_out_source {
        return Err(refusal(format!(
            "a run of split `{split}`, the held-out source"
        )));
    }
    if let Some(task) = tasks.find(|task| splits.role_of(task) == Some(SplitRole::HeldOut)) {
        return Err(refusal(format!("task `{task}` is held-out")));
    }
    Ok(())
}

struct Header {
    run_id: String,
    env: String,
    split: String,
    tasks: Vec<String>,
}

fn read_header(dir: &Path) -> Result<Header, TraceError> {
    let path = dir.join("run.toml");
    let text = fs::read_to_string(&path).map_err(|error| {
        TraceError::new(
            TraceErrorKind::RunDirectory,
            format!("{} is not a run directory: {error}", path.display()),
        )
    })?;
    let value: toml::Value = toml::from_str(&text).map_err(|error| {
        TraceError::new(
            TraceErrorKind::RunDirectory,
            format!("{}: {error}", path.display()),
        )
    })?;
    let field = |name: &str| {
        value
            .get(name)
            .and_then(toml::Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| {
                TraceError::new(
                    TraceErrorKind::RunDirectory,
                    format!("{}: expected a string `{name}`", path.display()),
                )
            })
    };
    let tasks = value
        .get("tasks")
        .and_then(toml::Value::as_array)
        .map(|tasks| {
            tasks
                .iter()
                .filter_map(|task| task.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Ok(Header {
        run_id: field("run_id")?,
        env: field("env")?,
        split: field("split")?,
        tasks,
    })
}

/// Parses a JSON-lines file; a missing file is empty, an unparseable *last* line is a crash
/// mid-append and is left out, a bad line elsewhere is an error naming the line.
pub(crate) fn read_jsonl<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>, TraceError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => {
            return Err(TraceError::new(
                TraceErrorKind::Io,
                format!("cannot read {}: {error}", path.display()),
            ));
        }
    };
    let lines: Vec<&str> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    let mut records = Vec::with_capacity(lines.len());
    for (index, line) in lines.iter().enumerate() {
        match serde_json::from_str(line) {
            Ok(record) => records.push(record),
            Err(_) if index + 1 == lines.len() => {
                tracing::warn!(path = %path.display(), "ignoring a truncated last line");
            }
            Err(error) => {
                return Err(TraceError::new(
                    TraceErrorKind::RunDirectory,
                    format!("{} line {}: {error}", path.display(), index + 1),
                ));
            }
        }
    }
    Ok(records)
}

pub(crate) fn dedup_outcomes(outcomes: Vec<Outcome>) -> Vec<Outcome> {
    let mut seen = std::collections::BTreeSet::new();
    outcomes
        .into_iter()
        .filter(|outcome| seen.insert((outcome.task_id.clone(), outcome.attempt)))
        .collect()
}

fn read_harnesses(dir: &Path) -> BTreeMap<String, HarnessSpec> {
    let Ok(entries) = fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let path = entry.path();
            let hash = path.file_stem()?.to_str()?.to_string();
            let text = fs::read_to_string(&path).ok()?;
            let spec: HarnessSpec = toml::from_str(&text).ok()?;
            Some((hash, spec))
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::splits::{SourcePools, SplitSizes};
    use kiln_environments::EvolutionSources;

    pub fn splits() -> EvolutionSplits {
        let train: Vec<String> = (0..10).map(|index| format!("t{index}")).collect();
        let test: Vec<String> = (0..4).map(|index| format!("h{index}")).collect();
        let pools = SourcePools {
            sources: EvolutionSources::new("train", "train", "test"),
            search: train.clone(),
            gate: train,
            held_out: test,
            clusters: BTreeMap::new(),
        };
        let sizes = SplitSizes {
            search: 5,
            gate: 5,
            held_out: None,
        };
        EvolutionSplits::from_pools("toy", &pools, sizes, 3).unwrap()
    }

    /// Writes a minimal run directory: run.toml, outcomes and (deliberately unreadable, when
    /// `poison_trajectories`) trajectories.
    pub fn write_run(dir: &Path, split: &str, tasks: &[&str], poison_trajectories: bool) {
        fs::create_dir_all(dir).unwrap();
        let listed: Vec<String> = tasks.iter().map(|task| format!("\"{task}\"")).collect();
        fs::write(
            dir.join("run.toml"),
            format!(
                "run_id = \"r-{split}\"\nenv = \"toy\"\nsplit = \"{split}\"\ntasks = [{}]\n",
                listed.join(", ")
            ),
        )
        .unwrap();
        let mut outcomes = String::new();
        let mut trajectories = String::new();
        for task in tasks {
            outcomes.push_str(&crate::digest::tests::outcome_json(
                &format!("r-{split}"),
                task,
                0,
                true,
                "env_done",
            ));
            outcomes.push('\n');
            trajectories.push_str(&crate::digest::tests::trajectory_json(
                &format!("r-{split}"),
                task,
                0,
                &["look"],
                &["You see a room."],
            ));
            trajectories.push('\n');
        }
        fs::write(dir.join("outcomes.jsonl"), outcomes).unwrap();
        if poison_trajectories {
            // A held-out run must be refused before this file is even opened.
            fs::write(
                dir.join("trajectories.jsonl"),
                "not json\nnot json either\n",
            )
            .unwrap();
        } else {
            fs::write(dir.join("trajectories.jsonl"), trajectories).unwrap();
        }
    }

    #[test]
    fn held_out_runs_are_refused_without_the_final_evaluation() {
        let root = tempfile::tempdir().unwrap();
        let splits = splits();
        let search: Vec<&str> = splits.search.iter().map(String::as_str).collect();
        let held: Vec<&str> = splits.held_out.iter().map(String::as_str).collect();
        write_run(&root.path().join("search"), "train", &search, false);
        write_run(&root.path().join("held"), "test", &held, true);
        // A run that claims a search split but slipped a held-out task in.
        let mixed = [search[0], held[1]];
        write_run(&root.path().join("mixed"), "train", &mixed, true);

        let mut store = TraceStore::new(splits.clone());
        let run = store.load_run(&root.path().join("search")).unwrap();
        assert_eq!(run.outcomes.len(), 5);
        assert_eq!(run.trajectories.len(), 5);
        assert_eq!(store.episodes(SplitRole::Search).len(), 5);

        let refused = store.load_run(&root.path().join("held")).unwrap_err();
        assert_eq!(refused.kind(), TraceErrorKind::HeldOut);
        assert!(refused.to_string().contains("held-out source"), "{refused}");
        let refused = store.load_run(&root.path().join("mixed")).unwrap_err();
        assert_eq!(refused.kind(), TraceErrorKind::HeldOut);
        assert!(refused.to_string().contains(held[1]), "{refused}");
        assert_eq!(store.runs().len(), 1);

        // Also refused when run.toml lists no tasks: the outcomes give the held-out ids away.
        let sneaky = root.path().join("sneaky");
        write_run(&sneaky, "train", &[held[0]], true);
        fs::write(
            sneaky.join("run.toml"),
            "run_id = \"x\"\nenv = \"toy\"\nsplit = \"train\"\n",
        )
        .unwrap();
        assert_eq!(
            store.load_run(&sneaky).unwrap_err().kind(),
            TraceErrorKind::HeldOut
        );

        let final_evaluation = FinalEvaluation::conclude(store);
        assert_eq!(final_evaluation.evolution_runs().len(), 1);
        // The poisoned trajectories show the held-out run really is read now.
        let error = final_evaluation
            .load_held_out(&root.path().join("held"))
            .unwrap_err();
        assert_eq!(error.kind(), TraceErrorKind::RunDirectory);
        write_run(&root.path().join("held2"), "test", &held, false);
        let held_run = final_evaluation
            .load_held_out(&root.path().join("held2"))
            .unwrap();
        assert_eq!(held_run.outcomes.len(), 4);
    }

    #[test]
    fn runs_of_another_environment_or_not_runs_are_clear_errors() {
        let root = tempfile::tempdir().unwrap();
        let mut store = TraceStore::new(splits());
        let error = store.load_run(root.path()).unwrap_err();
        assert_eq!(error.kind(), TraceErrorKind::RunDirectory);
        let mut other = splits();
        other.env = "other".into();
        write_run(&root.path().join("r"), "train", &["t1"], false);
        let mut store = TraceStore::new(other);
        let error = store.load_run(&root.path().join("r")).unwrap_err();
        assert_eq!(error.kind(), TraceErrorKind::WrongEnv);
    }
}
