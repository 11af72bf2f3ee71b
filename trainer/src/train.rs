//! Offline training from recorded runs: run directories → replay buffer → GRPO steps →
//! checkpoint, with one `metrics.jsonl` line per step.

use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use serde::Serialize;

use crate::buffer::{BufferError, Composition, ReplayBuffer, load_run};
use crate::checkpoint::{self, CheckpointError, CheckpointInfo, CheckpointKind, Manifest};
use crate::grpo::{GrpoConfig, GrpoError, GrpoTrainer, Sample, StepMetrics};
use crate::llama::{BaseModel, Llama, ModelError};
use crate::lora::LoraConfig;

/// `kiln train` settings.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// `local:NAME`, `local:/path.gguf` or a GGUF path.
    pub model: String,
    pub runs: Vec<PathBuf>,
    pub out: PathBuf,
    pub steps: usize,
    /// LoRA adapters; `None` trains every weight (f32 master weights).
    pub lora: Option<LoraConfig>,
    pub grpo: GrpoConfig,
    pub buffer_capacity: usize,
    /// Runs (rounds) an episode stays in the buffer after a newer one arrives.
    pub staleness: Option<u64>,
    /// Segments longer than this (prompt + completion) are left out: attention memory grows with
    /// the square of the length.
    pub max_segment_tokens: usize,
    /// A checkpoint every this many steps (0: only at the end).
    pub checkpoint_every: usize,
    /// Continue from a LoRA checkpoint (its id goes into the lineage).
    pub init: Option<PathBuf>,
    pub device: Device,
}

/// What a training run did.
#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    pub metrics: Vec<StepMetrics>,
    pub composition: Composition,
    pub skipped_episodes: usize,
    pub skipped_long_segments: usize,
    pub checkpoints: Vec<Manifest>,
    pub parameters: usize,
}

/// What kind of problem a [`TrainError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainErrorKind {
    Input,
    Model,
    Training,
    Checkpoint,
    Io,
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Buffer(#[from] BufferError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Grpo(#[from] GrpoError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("{}: {detail}", path.display())]
    Io { path: PathBuf, detail: String },
}

impl TrainError {
    pub fn kind(&self) -> TrainErrorKind {
        match self {
            TrainError::Input(_) | TrainError::Buffer(_) => TrainErrorKind::Input,
            TrainError::Model(_) => TrainErrorKind::Model,
            TrainError::Grpo(_) => TrainErrorKind::Training,
            TrainError::Checkpoint(_) => TrainErrorKind::Checkpoint,
            TrainError::Io { .. } => TrainErrorKind::Io,
        }
    }
}

/// The GGUF path of a model argument.
pub fn model_path(model: &str) -> Result<PathBuf, TrainError> {
    let name = model.strip_prefix("local:").unwrap_or(model);
    kiln_models::local::resolve_model_path(name, &kiln_models::local::kiln_home())
        .map_err(|e| TrainError::Input(e.to_string()))
}

/// Fills a replay buffer from run directories, one round per directory, in order.
pub fn fill_buffer(
    runs: &[PathBuf],
    capacity: usize,
    staleness: Option<u64>,
    max_segment_tokens: usize,
    temperature: f64,
) -> Result<(ReplayBuffer, usize, usize), TrainError> {
    let mut buffer = ReplayBuffer::new(capacity, staleness);
    let (mut skipped, mut long) = (0, 0);
    for (round, dir) in runs.iter().enumerate() {
        let loaded = load_run(dir, temperature)?;
        for (episode, reason) in &loaded.skipped {
            tracing::debug!(run = %dir.display(), episode, reason, "episode not trainable");
        }
        skipped += loaded.skipped.len();
        for mut sample in loaded.samples {
            let before = sample.segments.len();
            sample
                .segments
                .retain(|s| s.prompt_ids.len() + s.completion_ids.len() <= max_segment_tokens);
            long += before - sample.segments.len();
            buffer.push(sample, round as u64);
        }
        buffer.advance_to(round as u64);
    }
    Ok((buffer, skipped, long))
}

/// Trains on the runs' episodes for `steps` GRPO steps (each on the whole buffer), writing
/// `metrics.jsonl` and checkpoints under `out`; `on_step` sees each step's metrics.
pub fn train_offline(
    options: &TrainOptions,
    mut on_step: impl FnMut(&StepMetrics),
) -> Result<TrainReport, TrainError> {
    if options.runs.is_empty() {
        return Err(TrainError::Input(
            "no run directories given (--runs DIR…)".to_string(),
        ));
    }
    let (buffer, skipped_episodes, skipped_long_segments) = fill_buffer(
        &options.runs,
        options.buffer_capacity,
        options.staleness,
        options.max_segment_tokens,
        options.grpo.temperature,
    )?;
    let composition = buffer.composition();
    if buffer.is_empty() {
        return Err(TrainError::Input(format!(
            "no trainable episodes in {} run director{} ({skipped_episodes} skipped: episodes need \
             token records from a local model)",
            options.runs.len(),
            if options.runs.len() == 1 { "y" } else { "ies" }
        )));
    }
    let samples: Vec<Sample> = buffer.samples();
    let path = model_path(&options.model)?;
    let base = BaseModel::from_gguf(&path, DType::F32, &options.device)?;
    let (model, mut lineage, start_step) = match &options.init {
        Some(init) => {
            let (model, manifest) = checkpoint::load(init, base)?;
            let mut lineage = manifest.lineage.clone();
            lineage.push(manifest.id.clone());
            (model, lineage, manifest.step)
        }
        None => match &options.lora {
            Some(config) => (Llama::with_new_lora(base, config.clone())?, Vec::new(), 0),
            None => (Llama::new(base, None)?, Vec::new(), 0),
        },
    };
    let kind = if model.lora.is_some() {
        CheckpointKind::Lora
    } else {
        CheckpointKind::Full
    };
    let mut trainer = match kind {
        CheckpointKind::Lora => GrpoTrainer::lora(model, options.grpo.clone())?,
        CheckpointKind::Full => {
            let mut model = model;
            let vars = model
                .base
                .make_trainable()?
                .into_iter()
                .map(|(_, var)| var)
                .collect();
            GrpoTrainer::new(model, vars, options.grpo.clone())?
        }
    };
    let parameters: usize = trainer.vars().iter().map(|v| v.elem_count()).sum();
    tracing::info!(
        episodes = composition.episodes,
        tasks = composition.tasks,
        parameters,
        "training"
    );
    std::fs::create_dir_all(&options.out).map_err(|e| io_error(&options.out, e))?;
    let metrics_path = options.out.join("metrics.jsonl");
    let mut metrics_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&metrics_path)
        .map_err(|e| io_error(&metrics_path, e))?;
    let runs: Vec<String> = options
        .runs
        .iter()
        .map(|r| r.display().to_string())
        .collect();
    let mut metrics = Vec::new();
    let mut since_checkpoint = Vec::new();
    let mut checkpoints = Vec::new();
    for step in 1..=options.steps {
        let mut step_metrics = trainer.step(&samples)?;
        step_metrics.step = start_step + step;
        let line = serde_json::to_string(&step_metrics).expect("metrics serialize");
        writeln!(metrics_file, "{line}").map_err(|e| io_error(&metrics_path, e))?;
        on_step(&step_metrics);
        metrics.push(step_metrics.clone());
        since_checkpoint.push(step_metrics);
        let due = options.checkpoint_every > 0 && step % options.checkpoint_every == 0;
        if due || step == options.steps {
            let manifest = checkpoint::save(
                &options.out,
                &trainer.model,
                kind,
                CheckpointInfo {
                    base_model: options.model.clone(),
                    lineage: lineage.clone(),
                    step: start_step + step,
                    grpo: options.grpo.clone(),
                    metrics: std::mem::take(&mut since_checkpoint),
                    runs: runs.clone(),
                },
            )?;
            lineage.push(manifest.id.clone());
            checkpoints.push(manifest);
        }
    }
    Ok(TrainReport {
        metrics,
        composition,
        skipped_episodes,
        skipped_long_segments,
        checkpoints,
        parameters,
    })
}

fn io_error(path: &Path, error: std::io::Error) -> TrainError {
    TrainError::Io {
        path: path.to_path_buf(),
        detail: error.to_string(),
    }
}
