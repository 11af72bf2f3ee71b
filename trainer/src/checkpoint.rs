//! Checkpoints: `<dir>/<id>/adapter.safetensors` (LoRA) or `model.safetensors` (full fine-tune)
//! plus `manifest.json` (base model hash, lineage, step, metrics).

use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::grpo::{GrpoConfig, StepMetrics};
use crate::llama::{BaseModel, Llama, ModelError};
use crate::lora::{LoraAdapters, LoraConfig, LoraError};

/// The adapter file of a LoRA checkpoint.
pub const ADAPTER_FILE: &str = "adapter.safetensors";
/// The weights file of a full fine-tune checkpoint.
pub const MODEL_FILE: &str = "model.safetensors";
pub const MANIFEST_FILE: &str = "manifest.json";

/// What a checkpoint holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointKind {
    Lora,
    Full,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub schema: u32,
    pub id: String,
    pub kind: CheckpointKind,
    /// The base model as given (`local:smollm2`, a path).
    pub base_model: String,
    /// sha256 of the base GGUF file.
    pub base_model_sha256: String,
    /// Checkpoint ids from the first to this one's parent.
    pub lineage: Vec<String>,
    /// Optimizer steps since the base model.
    pub step: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<LoraConfig>,
    pub grpo: GrpoConfig,
    /// sha256 of the weights file.
    pub weights_sha256: String,
    /// Metrics of the steps since the parent.
    pub metrics: Vec<StepMetrics>,
    /// Run directories trained on.
    pub runs: Vec<String>,
    pub created_at_ms: u64,
}

/// What kind of problem a [`CheckpointError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointErrorKind {
    Io,
    /// The manifest is unreadable or does not fit the base model.
    Manifest,
    Weights,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint {}: {detail}", path.display())]
    Io { path: PathBuf, detail: String },
    #[error("checkpoint {}: {detail}", path.display())]
    Manifest { path: PathBuf, detail: String },
    #[error(transparent)]
    Lora(#[from] LoraError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("checkpoint weights: {0}")]
    Weights(#[from] candle_core::Error),
}

impl CheckpointError {
    pub fn kind(&self) -> CheckpointErrorKind {
        match self {
            CheckpointError::Io { .. } => CheckpointErrorKind::Io,
            CheckpointError::Manifest { .. } => CheckpointErrorKind::Manifest,
            CheckpointError::Lora(_) | CheckpointError::Model(_) | CheckpointError::Weights(_) => {
                CheckpointErrorKind::Weights
            }
        }
    }
}

/// What to record beside the weights.
#[derive(Debug, Clone)]
pub struct CheckpointInfo {
    pub base_model: String,
    pub lineage: Vec<String>,
    pub step: usize,
    pub grpo: GrpoConfig,
    pub metrics: Vec<StepMetrics>,
    pub runs: Vec<String>,
}

/// Writes `model`'s adapters (or, with `kind` Full, all its weights) to `<dir>/<id>/` and returns
/// the manifest. The id is `step-NNNNNN-<first 12 hex of the weights' sha256>`.
pub fn save(
    dir: &Path,
    model: &Llama,
    kind: CheckpointKind,
    info: CheckpointInfo,
) -> Result<Manifest, CheckpointError> {
    let staging = dir.join(format!(".staging-{}", std::process::id()));
    let io = |path: &Path, e: std::io::Error| CheckpointError::Io {
        path: path.to_path_buf(),
        detail: e.to_string(),
    };
    std::fs::create_dir_all(&staging).map_err(|e| io(&staging, e))?;
    let (file, lora) = match kind {
        CheckpointKind::Lora => {
            let lora = model
                .lora
                .as_ref()
                .ok_or_else(|| CheckpointError::Manifest {
                    path: dir.to_path_buf(),
                    detail: "a LoRA checkpoint of a model without adapters".to_string(),
                })?;
            lora.save(&staging.join(ADAPTER_FILE))?;
            (ADAPTER_FILE, Some(lora.config().clone()))
        }
        CheckpointKind::Full => {
            let tensors: std::collections::HashMap<String, Tensor> = model
                .base
                .named_tensors()
                .into_iter()
                .map(|(name, t)| Ok((name, t.to_dtype(DType::F32)?)))
                .collect::<Result<_, candle_core::Error>>()?;
            candle_core::safetensors::save(&tensors, staging.join(MODEL_FILE))?;
            (MODEL_FILE, None)
        }
    };
    let weights_sha256 = sha256_file(&staging.join(file))?;
    let id = format!("step-{:06}-{}", info.step, &weights_sha256[..12]);
    let manifest = Manifest {
        schema: 1,
        id: id.clone(),
        kind,
        base_model: info.base_model,
        base_model_sha256: model.base.hash.clone(),
        lineage: info.lineage,
        step: info.step,
        lora,
        grpo: info.grpo,
        weights_sha256,
        metrics: info.metrics,
        runs: info.runs,
        created_at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    };
    let text = serde_json::to_string_pretty(&manifest).expect("a manifest serializes");
    let manifest_path = staging.join(MANIFEST_FILE);
    std::fs::write(&manifest_path, text).map_err(|e| io(&manifest_path, e))?;
    // The directory appears complete or not at all.
    let target = dir.join(&id);
    if target.exists() {
        std::fs::remove_dir_all(&target).map_err(|e| io(&target, e))?;
    }
    std::fs::rename(&staging, &target).map_err(|e| io(&target, e))?;
    tracing::info!(id = %id, dir = %target.display(), "checkpoint saved");
    Ok(manifest)
}

/// Reads `<checkpoint>/manifest.json`.
pub fn read_manifest(checkpoint: &Path) -> Result<Manifest, CheckpointError> {
    let path = checkpoint.join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| CheckpointError::Io {
        path: path.clone(),
        detail: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| CheckpointError::Manifest {
        path,
        detail: format!("not a valid manifest: {e}"),
    })
}

/// Loads a checkpoint onto `base` (which must be the base model it was trained from).
pub fn load(checkpoint: &Path, mut base: BaseModel) -> Result<(Llama, Manifest), CheckpointError> {
    let manifest = read_manifest(checkpoint)?;
    if manifest.base_model_sha256 != base.hash {
        return Err(CheckpointError::Manifest {
            path: checkpoint.to_path_buf(),
            detail: format!(
                "trained on base model {} but the given base model is {}",
                manifest.base_model_sha256, base.hash
            ),
        });
    }
    match manifest.kind {
        CheckpointKind::Lora => {
            let config = manifest
                .lora
                .clone()
                .ok_or_else(|| CheckpointError::Manifest {
                    path: checkpoint.to_path_buf(),
                    detail: "a LoRA checkpoint without its `lora` configuration".to_string(),
                })?;
            let lora = LoraAdapters::load(
                &checkpoint.join(ADAPTER_FILE),
                config,
                base.config.block_count,
                &|layer: usize, target: crate::lora::Target| base.shape_of(layer, target),
                base.dtype(),
                base.device(),
            )?;
            Ok((Llama::new(base, Some(lora))?, manifest))
        }
        CheckpointKind::Full => {
            let mut tensors =
                candle_core::safetensors::load(checkpoint.join(MODEL_FILE), base.device())?;
            let dtype = base.dtype();
            let mut replace = |name: &str, slot: &mut Tensor| -> Result<(), CheckpointError> {
                let tensor = tensors
                    .remove(name)
                    .ok_or_else(|| CheckpointError::Manifest {
                        path: checkpoint.to_path_buf(),
                        detail: format!("tensor `{name}` is missing"),
                    })?;
                *slot = tensor.to_dtype(dtype)?;
                Ok(())
            };
            replace("token_embd.weight", &mut base.embeddings)?;
            for index in 0..base.layers.len() {
                let layer = &mut base.layers[index];
                replace(
                    &format!("blk.{index}.attn_norm.weight"),
                    &mut layer.attention_norm,
                )?;
                replace(&format!("blk.{index}.ffn_norm.weight"), &mut layer.ffn_norm)?;
                for target in crate::lora::Target::ALL {
                    replace(
                        &format!("blk.{index}.{}.weight", target.gguf_stem()),
                        &mut layer.linears[target as usize],
                    )?;
                }
            }
            replace("output_norm.weight", &mut base.output_norm)?;
            if let Some(output) = &mut base.output {
                replace("output.weight", output)?;
            }
            Ok((Llama::new(base, None)?, manifest))
        }
    }
}

fn sha256_file(path: &Path) -> Result<String, CheckpointError> {
    let bytes = std::fs::read(path).map_err(|e| CheckpointError::Io {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}
