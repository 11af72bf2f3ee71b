//! The replay buffer: a FIFO of episodes tagged with the harness version and checkpoint that
//! produced them and the round they arrived in, fed from run directories (`outcomes.jsonl` +
//! `trajectories.jsonl`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use kiln_protocol::{Outcome, Trajectory};
use serde::Serialize;

use crate::grpo::{Sample, Segment};

/// What kind of problem a [`BufferError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufferErrorKind {
    /// A run directory or one of its files is missing or unreadable.
    RunDir,
}

#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    #[error("run directory {}: {detail}", path.display())]
    RunDir { path: PathBuf, detail: String },
}

impl BufferError {
    pub fn kind(&self) -> BufferErrorKind {
        match self {
            BufferError::RunDir { .. } => BufferErrorKind::RunDir,
        }
    }
}

/// One buffered episode.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub sample: Sample,
    /// The round (or offline: the position of its run directory) it arrived in.
    pub round: u64,
}

/// Counts by harness version, checkpoint and round.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Composition {
    pub episodes: usize,
    pub tasks: usize,
    pub segments: usize,
    pub trained_tokens: usize,
    pub by_harness: BTreeMap<String, usize>,
    pub by_checkpoint: BTreeMap<String, usize>,
    pub by_round: BTreeMap<u64, usize>,
    pub evicted_overflow: usize,
    pub evicted_stale: usize,
}

/// FIFO of at most `capacity` episodes; with `staleness` set, episodes older than that many rounds
/// before the newest round are dropped.
#[derive(Debug, Clone)]
pub struct ReplayBuffer {
    capacity: usize,
    staleness: Option<u64>,
    entries: VecDeque<Entry>,
    newest_round: u64,
    evicted_overflow: usize,
    evicted_stale: usize,
}

impl ReplayBuffer {
    pub fn new(capacity: usize, staleness: Option<u64>) -> ReplayBuffer {
        ReplayBuffer {
            capacity: capacity.max(1),
            staleness,
            entries: VecDeque::new(),
            newest_round: 0,
            evicted_overflow: 0,
            evicted_stale: 0,
        }
    }

    /// Adds an episode of `round`, evicting the oldest past capacity and stale ones.
    pub fn push(&mut self, sample: Sample, round: u64) {
        self.newest_round = self.newest_round.max(round);
        self.entries.push_back(Entry { sample, round });
        while self.entries.len() > self.capacity {
            self.entries.pop_front();
            self.evicted_overflow += 1;
        }
        self.evict_stale();
    }

    /// Declares `round` the newest (a round without episodes still ages the buffer).
    pub fn advance_to(&mut self, round: u64) {
        self.newest_round = self.newest_round.max(round);
        self.evict_stale();
    }

    fn evict_stale(&mut self) {
        let Some(limit) = self.staleness else { return };
        let oldest_kept = self.newest_round.saturating_sub(limit);
        let before = self.entries.len();
        self.entries.retain(|entry| entry.round >= oldest_kept);
        self.evicted_stale += before - self.entries.len();
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    /// The buffered episodes, oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        self.entries
            .iter()
            .map(|entry| entry.sample.clone())
            .collect()
    }

    pub fn composition(&self) -> Composition {
        let mut composition = Composition {
            episodes: self.entries.len(),
            evicted_overflow: self.evicted_overflow,
            evicted_stale: self.evicted_stale,
            ..Composition::default()
        };
        let mut tasks = std::collections::BTreeSet::new();
        for entry in &self.entries {
            let sample = &entry.sample;
            tasks.insert(sample.task_id.as_str());
            composition.segments += sample.segments.len();
            composition.trained_tokens += sample
                .segments
                .iter()
                .map(Segment::trained_tokens)
                .sum::<usize>();
            *composition
                .by_harness
                .entry(sample.harness_hash.clone())
                .or_default() += 1;
            *composition
                .by_checkpoint
                .entry(sample.checkpoint.clone())
                .or_default() += 1;
            *composition.by_round.entry(entry.round).or_default() += 1;
        }
        composition.tasks = tasks.len();
        composition
    }
}

/// Episodes read from one run directory and those left out, with why.
#[derive(Debug, Clone, Default)]
pub struct LoadedRun {
    pub samples: Vec<Sample>,
    pub skipped: Vec<(String, String)>,
}

/// The checkpoint a model label names: the adapter after `+lora:`, else the label itself.
pub fn checkpoint_of(model_label: &str) -> String {
    match model_label.split_once("+lora:") {
        Some((_, adapter)) => adapter.to_string(),
        None => model_label.to_string(),
    }
}

/// Reads a run directory's outcomes and trajectories and joins them by (run, task, attempt).
/// Episodes with an infrastructure error, without token records (remote models, oracle) or
/// without a trajectory are skipped and listed.
/// Token log-probabilities must have been recorded at `temperature`, the one the trainer divides
/// its logits by; episodes recorded at another are skipped with the reason.
pub fn load_run(dir: &Path, temperature: f64) -> Result<LoadedRun, BufferError> {
    let outcomes: Vec<Outcome> = read_jsonl(dir, "outcomes.jsonl")?;
    let trajectories: Vec<Trajectory> = read_jsonl(dir, "trajectories.jsonl")?;
    let mut by_key: HashMap<(String, String, u32), Trajectory> = trajectories
        .into_iter()
        .map(|t| ((t.run_id.clone(), t.task_id.clone(), t.attempt), t))
        .collect();
    let mut loaded = LoadedRun::default();
    for outcome in outcomes {
        let key = outcome.key();
        let label = format!("{}/{}#{}", outcome.env, outcome.task_id, outcome.attempt);
        let Some(trajectory) = by_key.remove(&key) else {
            loaded.skipped.push((label, "no trajectory".to_string()));
            continue;
        };
        match sample_of(&outcome, &trajectory, temperature) {
            Ok(sample) => loaded.samples.push(sample),
            Err(reason) => loaded.skipped.push((label, reason)),
        }
    }
    Ok(loaded)
}

/// The training sample of one episode, or why it has none (among the reasons: its log-probabilities
/// were recorded at another temperature than `temperature`, so its ratios would be wrong).
pub fn sample_of(
    outcome: &Outcome,
    trajectory: &Trajectory,
    temperature: f64,
) -> Result<Sample, String> {
    if let Some(error) = &outcome.error {
        return Err(format!("infrastructure error: {error}"));
    }
    if !outcome.reward.is_finite() {
        return Err(format!("reward {} is not finite", outcome.reward));
    }
    let records = trajectory
        .steps
        .iter()
        .filter_map(|step| step.model.tokens.as_ref())
        .filter(|tokens| !tokens.completion_ids.is_empty() && !tokens.prompt_ids.is_empty());
    if let Some(other) = records
        .clone()
        .find(|tokens| (f64::from(tokens.logprob_temperature) - temperature).abs() > 1e-6)
    {
        return Err(format!(
            "log-probabilities recorded at temperature {}, but training divides logits by {temperature}",
            other.logprob_temperature
        ));
    }
    let segments: Vec<Segment> = records
        .map(|tokens| Segment {
            prompt_ids: tokens.prompt_ids.clone(),
            completion_ids: tokens.completion_ids.clone(),
            behaviour_logprobs: tokens.completion_logprobs.clone(),
            // Every completion token was generated by the model.
            loss_mask: vec![1.0; tokens.completion_ids.len()],
        })
        .collect();
    if segments.is_empty() {
        return Err("no token records (not a local model, or recording off)".to_string());
    }
    if let Some(bad) = segments
        .iter()
        .find(|s| s.behaviour_logprobs.len() != s.completion_ids.len())
    {
        return Err(format!(
            "{} completion ids but {} logprobs",
            bad.completion_ids.len(),
            bad.behaviour_logprobs.len()
        ));
    }
    Ok(Sample {
        task_id: format!("{}/{}", outcome.env, outcome.task_id),
        harness_hash: outcome.harness_hash.clone(),
        checkpoint: checkpoint_of(&outcome.model),
        reward: outcome.reward,
        segments,
    })
}

fn read_jsonl<T: serde::de::DeserializeOwned>(
    dir: &Path,
    name: &str,
) -> Result<Vec<T>, BufferError> {
    let path = dir.join(name);
    let error = |detail: String| BufferError::RunDir {
        path: dir.to_path_buf(),
        detail,
    };
    if !path.exists() && dir.join(format!("{name}.zst")).exists() {
        return Err(error(format!(
            "{name} is compressed ({name}.zst); decompress it first (`zstd -d`)"
        )));
    }
    let file = std::fs::File::open(&path).map_err(|e| error(format!("cannot open {name}: {e}")))?;
    let mut out = Vec::new();
    for (number, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| error(format!("cannot read {name}: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(&line) {
            Ok(value) => out.push(value),
            // One bad line never loses the run.
            Err(e) => {
                tracing::warn!(file = name, line = number + 1, error = %e, "skipping an unreadable line")
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(task: &str, harness: &str, checkpoint: &str) -> Sample {
        Sample {
            task_id: task.to_string(),
            harness_hash: harness.to_string(),
            checkpoint: checkpoint.to_string(),
            reward: 1.0,
            segments: vec![Segment {
                prompt_ids: vec![1, 2],
                completion_ids: vec![3, 4],
                behaviour_logprobs: vec![-0.5, -0.5],
                loss_mask: vec![1.0, 1.0],
            }],
        }
    }

    #[test]
    fn fifo_capacity_and_staleness_evict_the_oldest() {
        let mut buffer = ReplayBuffer::new(3, Some(1));
        buffer.push(sample("a", "h1", "base"), 0);
        buffer.push(sample("b", "h1", "base"), 0);
        buffer.push(sample("a", "h2", "base"), 1);
        buffer.push(sample("c", "h2", "ck1"), 1);
        assert_eq!(buffer.len(), 3);
        let composition = buffer.composition();
        assert_eq!(composition.evicted_overflow, 1);
        assert_eq!(composition.by_harness["h2"], 2);
        assert_eq!(composition.by_checkpoint["ck1"], 1);
        assert_eq!(composition.tasks, 3);
        assert_eq!(composition.trained_tokens, 6);
        // Round 2 makes round 0 stale (limit 1 round back).
        buffer.advance_to(2);
        assert_eq!(buffer.len(), 2);
        assert_eq!(buffer.composition().evicted_stale, 1);
        assert!(buffer.entries().all(|entry| entry.round == 1));
        assert_eq!(buffer.samples()[0].harness_hash, "h2");
    }

    #[test]
    fn checkpoint_ids_come_from_the_model_label() {
        assert_eq!(checkpoint_of("local:smollm2"), "local:smollm2");
        assert_eq!(checkpoint_of("local:smollm2+lora:ck/3"), "ck/3");
    }

    fn outcome_line(task: &str, attempt: u32, reward: f64, error: Option<&str>) -> String {
        serde_json::json!({
            "run_id": "r1", "env": "alfworld", "split": "train", "task_id": task,
            "attempt": attempt, "success": reward == 1.0, "success_judged_only": reward == 1.0,
            "reward": reward, "components": {}, "termination": "env_done", "error": error,
            "harness_hash": "hh", "model": "local:smollm2",
            "usage": {"prompt_tokens": 0, "completion_tokens": 0}, "wall_ms": 1, "steps": 1,
            "started_at": 0, "finished_at": 1
        })
        .to_string()
    }

    fn trajectory_line(task: &str, attempt: u32, tokens: bool) -> String {
        let record = serde_json::json!({
            "prompt_ids": [1, 2, 3], "completion_ids": [4, 5],
            "completion_logprobs": [-0.1, -0.2]
        });
        let mut model = serde_json::json!({
            "raw_content": "Action: look",
            "usage": {"prompt_tokens": 3, "completion_tokens": 2}, "latency_ms": 1
        });
        if tokens {
            model["tokens"] = record;
        }
        serde_json::json!({
            "run_id": "r1", "env": "alfworld", "task_id": task, "attempt": attempt,
            "harness_hash": "hh", "model": {"backend": "local", "model": "smollm2"},
            "opening": [],
            "steps": [{"index": 0, "started_at": 0, "ended_at": 1, "prompt": [],
                       "model": model, "actions": []}]
        })
        .to_string()
    }

    #[test]
    fn run_directories_join_outcomes_and_trajectories() {
        let dir = tempfile::tempdir().unwrap();
        let outcomes = [
            outcome_line("t1", 0, 1.0, None),
            outcome_line("t1", 1, 0.0, None),
            outcome_line("t2", 0, 0.0, Some("env crashed")),
            outcome_line("t3", 0, 0.0, None),
            outcome_line("t4", 0, 0.0, None),
            "not json".to_string(),
        ];
        let trajectories = [
            trajectory_line("t1", 0, true),
            trajectory_line("t1", 1, true),
            trajectory_line("t2", 0, true),
            trajectory_line("t3", 0, false),
        ];
        std::fs::write(dir.path().join("outcomes.jsonl"), outcomes.join("\n")).unwrap();
        std::fs::write(
            dir.path().join("trajectories.jsonl"),
            trajectories.join("\n"),
        )
        .unwrap();
        let loaded = load_run(dir.path(), 1.0).unwrap();
        assert_eq!(loaded.samples.len(), 2);
        let first = &loaded.samples[0];
        assert_eq!(first.task_id, "alfworld/t1");
        assert_eq!(first.checkpoint, "local:smollm2");
        assert_eq!(first.reward, 1.0);
        assert_eq!(first.segments[0].prompt_ids, [1, 2, 3]);
        assert_eq!(first.segments[0].completion_ids, [4, 5]);
        assert_eq!(first.segments[0].behaviour_logprobs, [-0.1, -0.2]);
        assert_eq!(first.segments[0].loss_mask, [1.0, 1.0]);
        let reasons: Vec<&str> = loaded.skipped.iter().map(|(_, r)| r.as_str()).collect();
        assert_eq!(loaded.skipped.len(), 3, "{reasons:?}");
        assert!(reasons[0].contains("env crashed"));
        assert!(reasons[1].contains("no token records"));
        assert!(reasons[2].contains("no trajectory"));

        // Recorded at temperature 1 (the default of records without the field), these episodes
        // cannot train a policy sampled at 0.7: their ratios would be wrong from step 0.
        let hot = load_run(dir.path(), 0.7).unwrap();
        assert!(hot.samples.is_empty());
        assert!(
            hot.skipped
                .iter()
                .any(|(_, reason)| reason.contains("recorded at temperature 1")),
            "{:?}",
            hot.skipped
        );
    }

    #[test]
    fn a_missing_run_directory_is_named() {
        let error = load_run(Path::new("/nonexistent/run"), 1.0).unwrap_err();
        assert_eq!(error.kind(), BufferErrorKind::RunDir);
        assert!(error.to_string().contains("/nonexistent/run"), "{error}");
        assert!(error.to_string().contains("outcomes.jsonl"), "{error}");
    }
}
