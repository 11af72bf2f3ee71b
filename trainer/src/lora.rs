//! LoRA adapters: for each targeted linear layer `W` (`out × in`), two trained matrices `A`
//! (`rank × in`) and `B` (`out × rank`) with `y = x·Wᵀ + (alpha / rank)·(x·Aᵀ)·Bᵀ`.
//!
//! `B` starts at zero, so a fresh adapter leaves the base model's outputs exactly unchanged; `A`
//! starts random (seeded), as in the LoRA paper. The adapters are the only `Var`s of a LoRA
//! trainer: the base stays frozen f32.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use candle_core::{DType, Device, Tensor, Var};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// One of the seven linear layers of a Llama block, named as in GGUF files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl Target {
    pub const ALL: [Target; 7] = [
        Target::Q,
        Target::K,
        Target::V,
        Target::O,
        Target::Gate,
        Target::Up,
        Target::Down,
    ];

    /// The GGUF tensor name stem (`blk.N.<stem>.weight`).
    pub fn gguf_stem(self) -> &'static str {
        match self {
            Target::Q => "attn_q",
            Target::K => "attn_k",
            Target::V => "attn_v",
            Target::O => "attn_output",
            Target::Gate => "ffn_gate",
            Target::Up => "ffn_up",
            Target::Down => "ffn_down",
        }
    }

    /// The short name used on the command line and in manifests.
    pub fn name(self) -> &'static str {
        match self {
            Target::Q => "q",
            Target::K => "k",
            Target::V => "v",
            Target::O => "o",
            Target::Gate => "gate",
            Target::Up => "up",
            Target::Down => "down",
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Target {
    type Err = LoraError;

    fn from_str(text: &str) -> Result<Target, LoraError> {
        Target::ALL
            .into_iter()
            .find(|target| target.name() == text || target.gguf_stem() == text)
            .ok_or_else(|| LoraError::BadConfig {
                detail: format!(
                    "unknown LoRA target `{text}`: expected one of q, k, v, o, gate, up, down"
                ),
            })
    }
}

/// Parses a comma-separated target list (`q,k,v,o` or `all`).
pub fn parse_targets(text: &str) -> Result<Vec<Target>, LoraError> {
    if text.trim() == "all" {
        return Ok(Target::ALL.to_vec());
    }
    let mut targets: Vec<Target> = text
        .split(',')
        .map(|part| part.trim().parse())
        .collect::<Result<_, _>>()?;
    targets.sort();
    targets.dedup();
    if targets.is_empty() {
        return Err(LoraError::BadConfig {
            detail: "empty LoRA target list".to_string(),
        });
    }
    Ok(targets)
}

/// Adapter shape and scale.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f64,
    pub targets: Vec<Target>,
    /// Seed of `A`'s initialization.
    pub seed: u64,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig {
            rank: 16,
            alpha: 32.0,
            targets: Target::ALL.to_vec(),
            seed: 0,
        }
    }
}

impl LoraConfig {
    /// `alpha / rank`, the factor on the adapter's product.
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    pub fn validate(&self) -> Result<(), LoraError> {
        if self.rank == 0 {
            return Err(LoraError::BadConfig {
                detail: "LoRA rank must be at least 1".to_string(),
            });
        }
        if !self.alpha.is_finite() || self.alpha <= 0.0 {
            return Err(LoraError::BadConfig {
                detail: format!("LoRA alpha must be a positive number, got {}", self.alpha),
            });
        }
        if self.targets.is_empty() {
            return Err(LoraError::BadConfig {
                detail: "LoRA needs at least one target projection".to_string(),
            });
        }
        Ok(())
    }
}

/// What kind of problem a [`LoraError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoraErrorKind {
    BadConfig,
    /// An adapter file does not fit the model (missing tensors, wrong shapes).
    Mismatch,
    Compute,
}

#[derive(Debug, thiserror::Error)]
pub enum LoraError {
    #[error("invalid LoRA configuration: {detail}")]
    BadConfig { detail: String },
    #[error("adapter {path} does not fit the model: {detail}")]
    Mismatch { path: String, detail: String },
    #[error("LoRA tensor operation failed: {0}")]
    Compute(#[from] candle_core::Error),
}

impl LoraError {
    pub fn kind(&self) -> LoraErrorKind {
        match self {
            LoraError::BadConfig { .. } => LoraErrorKind::BadConfig,
            LoraError::Mismatch { .. } => LoraErrorKind::Mismatch,
            LoraError::Compute(_) => LoraErrorKind::Compute,
        }
    }
}

/// The pair of trained matrices of one linear layer.
#[derive(Debug, Clone)]
pub struct LoraPair {
    /// `(rank, in)`.
    pub a: Var,
    /// `(out, rank)`, zero at initialization.
    pub b: Var,
}

/// Every adapter of a model, by `(layer, target)`.
#[derive(Debug, Clone)]
pub struct LoraAdapters {
    config: LoraConfig,
    pairs: BTreeMap<(usize, Target), LoraPair>,
}

/// `(out, in)` of a target in one layer, as the model reports it.
pub type ShapeOf<'a> = &'a dyn Fn(usize, Target) -> (usize, usize);

impl LoraAdapters {
    /// Fresh adapters for `layers` blocks: `A` uniform in ±1/√in (seeded), `B` zero.
    pub fn new(
        config: LoraConfig,
        layers: usize,
        shape_of: ShapeOf<'_>,
        dtype: DType,
        device: &Device,
    ) -> Result<LoraAdapters, LoraError> {
        config.validate()?;
        let mut rng = StdRng::seed_from_u64(config.seed);
        let mut pairs = BTreeMap::new();
        for layer in 0..layers {
            for &target in &config.targets {
                let (out, input) = shape_of(layer, target);
                let bound = 1.0 / (input as f64).sqrt();
                let values: Vec<f64> = (0..config.rank * input)
                    .map(|_| uniform(&mut rng, bound))
                    .collect();
                let a = Tensor::from_vec(values, (config.rank, input), device)?.to_dtype(dtype)?;
                let b = Tensor::zeros((out, config.rank), dtype, device)?;
                pairs.insert(
                    (layer, target),
                    LoraPair {
                        a: Var::from_tensor(&a)?,
                        b: Var::from_tensor(&b)?,
                    },
                );
            }
        }
        Ok(LoraAdapters { config, pairs })
    }

    pub fn config(&self) -> &LoraConfig {
        &self.config
    }

    pub fn get(&self, layer: usize, target: Target) -> Option<&LoraPair> {
        self.pairs.get(&(layer, target))
    }

    /// Every trained variable, in a stable order.
    pub fn vars(&self) -> Vec<Var> {
        self.pairs
            .values()
            .flat_map(|pair| [pair.a.clone(), pair.b.clone()])
            .collect()
    }

    /// `(name, var)` pairs: `blk.N.<stem>.lora_a` / `.lora_b`.
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        self.pairs
            .iter()
            .flat_map(|(&(layer, target), pair)| {
                let stem = format!("blk.{layer}.{}", target.gguf_stem());
                [
                    (format!("{stem}.lora_a"), pair.a.clone()),
                    (format!("{stem}.lora_b"), pair.b.clone()),
                ]
            })
            .collect()
    }

    /// Trained parameter count.
    pub fn parameter_count(&self) -> usize {
        self.pairs
            .values()
            .map(|pair| pair.a.elem_count() + pair.b.elem_count())
            .sum()
    }

    /// Writes the adapters as safetensors (f32 whatever the training dtype).
    pub fn save(&self, path: &Path) -> Result<(), LoraError> {
        let tensors: std::collections::HashMap<String, Tensor> = self
            .named_vars()
            .into_iter()
            .map(|(name, var)| Ok((name, var.as_tensor().to_dtype(DType::F32)?)))
            .collect::<Result<_, candle_core::Error>>()?;
        candle_core::safetensors::save(&tensors, path)?;
        Ok(())
    }

    /// Reads adapters saved by [`LoraAdapters::save`] for a model of `layers` blocks, checking every
    /// tensor is present with the expected shape.
    pub fn load(
        path: &Path,
        config: LoraConfig,
        layers: usize,
        shape_of: ShapeOf<'_>,
        dtype: DType,
        device: &Device,
    ) -> Result<LoraAdapters, LoraError> {
        config.validate()?;
        let mismatch = |detail: String| LoraError::Mismatch {
            path: path.display().to_string(),
            detail,
        };
        let mut tensors = candle_core::safetensors::load(path, device)
            .map_err(|error| mismatch(format!("cannot read it as safetensors: {error}")))?;
        let mut pairs = BTreeMap::new();
        for layer in 0..layers {
            for &target in &config.targets {
                let (out, input) = shape_of(layer, target);
                let stem = format!("blk.{layer}.{}", target.gguf_stem());
                let mut take = |suffix: &str, shape: (usize, usize)| {
                    let name = format!("{stem}.{suffix}");
                    let tensor = tensors
                        .remove(&name)
                        .ok_or_else(|| mismatch(format!("tensor `{name}` is missing")))?;
                    if tensor.dims() != [shape.0, shape.1] {
                        return Err(mismatch(format!(
                            "tensor `{name}` has shape {:?}, expected {shape:?}",
                            tensor.dims()
                        )));
                    }
                    Ok(Var::from_tensor(&tensor.to_dtype(dtype)?)?)
                };
                let a = take("lora_a", (config.rank, input))?;
                let b = take("lora_b", (out, config.rank))?;
                pairs.insert((layer, target), LoraPair { a, b });
            }
        }
        if let Some(extra) = tensors.keys().next() {
            return Err(mismatch(format!(
                "tensor `{extra}` is not part of the configured adapters (rank {}, targets {:?})",
                config.rank, config.targets
            )));
        }
        Ok(LoraAdapters { config, pairs })
    }
}

/// Uniform in `(-bound, bound)`.
fn uniform(rng: &mut impl Rng, bound: f64) -> f64 {
    rng.gen_range(-bound..bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_by_short_and_gguf_names() {
        assert_eq!(
            parse_targets("q, v,attn_q").unwrap(),
            vec![Target::Q, Target::V]
        );
        assert_eq!(parse_targets("all").unwrap().len(), 7);
        let error = parse_targets("q,lm_head").unwrap_err();
        assert_eq!(error.kind(), LoraErrorKind::BadConfig);
        assert!(error.to_string().contains("lm_head"), "{error}");
    }

    #[test]
    fn fresh_adapters_have_zero_b_and_seeded_a() {
        let config = LoraConfig {
            rank: 2,
            alpha: 4.0,
            targets: vec![Target::Q, Target::Down],
            seed: 7,
        };
        let shape = |_: usize, target: Target| match target {
            Target::Down => (8, 16),
            _ => (8, 8),
        };
        let make = || LoraAdapters::new(config.clone(), 2, &shape, DType::F32, &Device::Cpu);
        let (first, second) = (make().unwrap(), make().unwrap());
        assert_eq!(first.vars().len(), 8);
        assert_eq!(
            first.parameter_count(),
            2 * (2 * 8 + 8 * 2 + 2 * 16 + 8 * 2)
        );
        let down = first.get(1, Target::Down).unwrap();
        assert_eq!(down.a.dims(), [2, 16]);
        assert_eq!(down.b.dims(), [8, 2]);
        let b_abs: f32 = down
            .b
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert_eq!(b_abs, 0.0);
        let a1 = down.a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let a2 = second
            .get(1, Target::Down)
            .unwrap()
            .a
            .flatten_all()
            .unwrap();
        assert_eq!(a1, a2.to_vec1::<f32>().unwrap());
        assert!(a1.iter().all(|v| v.abs() <= 0.25 && *v != 0.0));
        assert_eq!(config.scale(), 2.0);
    }

    #[test]
    fn loading_checks_names_and_shapes() {
        let config = LoraConfig {
            rank: 2,
            alpha: 2.0,
            targets: vec![Target::Q],
            seed: 1,
        };
        let shape = |_: usize, _: Target| (4, 4);
        let adapters =
            LoraAdapters::new(config.clone(), 1, &shape, DType::F32, &Device::Cpu).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("adapter.safetensors");
        adapters.save(&path).unwrap();
        let loaded =
            LoraAdapters::load(&path, config.clone(), 1, &shape, DType::F32, &Device::Cpu).unwrap();
        assert_eq!(loaded.parameter_count(), adapters.parameter_count());
        let wrong = |_: usize, _: Target| (4, 8);
        let error = LoraAdapters::load(&path, config.clone(), 1, &wrong, DType::F32, &Device::Cpu)
            .unwrap_err();
        assert_eq!(error.kind(), LoraErrorKind::Mismatch);
        assert!(error.to_string().contains("lora_a"), "{error}");
        let error =
            LoraAdapters::load(&path, config, 2, &shape, DType::F32, &Device::Cpu).unwrap_err();
        assert!(error.to_string().contains("blk.1.attn_q.lora_a"), "{error}");
    }
}
