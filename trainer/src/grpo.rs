//! Cross-harness GRPO: group advantages by task id (whatever harness version or checkpoint made
//! the attempt), a token-level clipped-ratio loss against the cached behaviour log-probabilities,
//! and one optimizer step with gradient accumulation, global grad-norm clipping and AdamW.
//!
//! Choices (see `shared/specs/grpo.md`):
//! - `Â = (r − mean(G)) / (std(G) + ε)` with the unbiased std (TRL, verl); groups of one attempt
//!   or with `std < 1e-6` carry no signal: their attempts are masked (no forward pass) and
//!   counted in `frac_zero_std`. Non-finite rewards are rejected before grouping.
//! - The ratio is taken against the behaviour log-probabilities recorded by the worker ("bypass
//!   mode"); with `tis_cap` set, against trainer-side old log-probabilities instead, each token
//!   weighted by the truncated importance weight `min(π_old_trainer / π_rollout, cap)`.
//! - Aggregation: `TokenMean` divides the summed token losses by the batch's trained tokens;
//!   `SequenceMean` averages each episode's token mean; `Constant(L)` divides by `episodes · L`
//!   (Dr. GRPO). Every segment's loss is its share of the batch loss, so micro-batching only
//!   changes summation order.
//! - A k3 KL term to the reference (the base model without adapters) only when `kl_beta > 0`.

use std::collections::BTreeMap;
use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};
use serde::{Deserialize, Serialize};

use crate::llama::{Llama, ModelError};

/// One model turn of an episode: the exact ids the worker used, never re-tokenized.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub prompt_ids: Vec<u32>,
    pub completion_ids: Vec<u32>,
    /// The behaviour policy's log-probability of each completion token.
    pub behaviour_logprobs: Vec<f32>,
    /// 1 on model-generated tokens that are trained, 0 elsewhere (same length as the completion).
    pub loss_mask: Vec<f32>,
}

impl Segment {
    pub fn trained_tokens(&self) -> usize {
        self.loss_mask.iter().filter(|&&m| m > 0.0).count()
    }
}

/// One episode: its task, where it came from, its reward and its model turns.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub task_id: String,
    pub harness_hash: String,
    pub checkpoint: String,
    pub reward: f64,
    pub segments: Vec<Segment>,
}

/// How per-token losses become the batch loss.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "tokens")]
pub enum Aggregation {
    TokenMean,
    SequenceMean,
    /// Dr. GRPO: sum over tokens divided by `episodes × this constant`.
    Constant(f64),
}

/// GRPO and optimizer settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrpoConfig {
    pub lr: f64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub adam_eps: f64,
    pub clip_low: f64,
    pub clip_high: f64,
    /// Dual-clip bound for negative advantages (e.g. 3), none by default.
    pub dual_clip: Option<f64>,
    pub advantage_eps: f64,
    pub aggregation: Aggregation,
    /// k3 KL coefficient to the reference; 0 skips the reference pass.
    pub kl_beta: f64,
    /// Truncated importance sampling cap for rollout/trainer mismatch; `None` uses the behaviour
    /// log-probabilities directly as the ratio's denominator.
    pub tis_cap: Option<f64>,
    pub max_grad_norm: f64,
    /// Segments per micro-batch (one backward pass each).
    pub micro_batch: usize,
    /// The sampling temperature of the rollouts: logits are divided by it.
    pub temperature: f64,
}

impl Default for GrpoConfig {
    fn default() -> Self {
        GrpoConfig {
            lr: 1e-5,
            weight_decay: 0.0,
            beta1: 0.9,
            beta2: 0.999,
            adam_eps: 1e-8,
            clip_low: 0.2,
            clip_high: 0.2,
            dual_clip: None,
            advantage_eps: 1e-4,
            aggregation: Aggregation::TokenMean,
            kl_beta: 0.0,
            tis_cap: None,
            max_grad_norm: 1.0,
            micro_batch: 4,
            temperature: 1.0,
        }
    }
}

/// What kind of problem a [`GrpoError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrpoErrorKind {
    BadConfig,
    BadSample,
    Model,
}

#[derive(Debug, thiserror::Error)]
pub enum GrpoError {
    #[error("invalid GRPO configuration: {0}")]
    BadConfig(String),
    #[error("bad training sample (task {task_id}): {detail}")]
    BadSample { task_id: String, detail: String },
    #[error(transparent)]
    Model(#[from] ModelError),
}

impl From<candle_core::Error> for GrpoError {
    fn from(error: candle_core::Error) -> Self {
        GrpoError::Model(ModelError::Compute(error))
    }
}

impl GrpoError {
    pub fn kind(&self) -> GrpoErrorKind {
        match self {
            GrpoError::BadConfig(_) => GrpoErrorKind::BadConfig,
            GrpoError::BadSample { .. } => GrpoErrorKind::BadSample,
            GrpoError::Model(_) => GrpoErrorKind::Model,
        }
    }
}

/// Group-normalized advantages of a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Advantages {
    /// One per sample (0 where masked).
    pub values: Vec<f64>,
    /// Samples whose group carries no signal (one attempt, or zero reward variance).
    pub masked: Vec<bool>,
    pub groups: usize,
    pub zero_std_groups: usize,
    pub reward_mean: f64,
    pub reward_std: f64,
}

impl Advantages {
    pub fn frac_zero_std(&self) -> f64 {
        if self.groups == 0 {
            return 0.0;
        }
        self.zero_std_groups as f64 / self.groups as f64
    }
}

/// Below this reward std a group is treated as having none.
pub const ZERO_STD: f64 = 1e-6;

/// Advantages of `(task_id, reward)` pairs, computed batched: a one-hot group matrix gives every
/// group's sum and sum of squares in two matrix products. Rewards must be finite.
pub fn group_advantages(samples: &[(&str, f64)], eps: f64) -> Result<Advantages, GrpoError> {
    if let Some((task, reward)) = samples.iter().find(|(_, r)| !r.is_finite()) {
        return Err(GrpoError::BadSample {
            task_id: task.to_string(),
            detail: format!("reward {reward} is not a finite number"),
        });
    }
    let mut group_of: BTreeMap<&str, usize> = BTreeMap::new();
    let index: Vec<usize> = samples
        .iter()
        .map(|(task, _)| {
            let next = group_of.len();
            *group_of.entry(*task).or_insert(next)
        })
        .collect();
    let (n, g) = (samples.len(), group_of.len());
    if n == 0 {
        return Ok(Advantages {
            values: Vec::new(),
            masked: Vec::new(),
            groups: 0,
            zero_std_groups: 0,
            reward_mean: 0.0,
            reward_std: 0.0,
        });
    }
    let device = candle_core::Device::Cpu;
    let mut one_hot = vec![0f64; n * g];
    for (row, &group) in index.iter().enumerate() {
        one_hot[row * g + group] = 1.0;
    }
    let membership = Tensor::from_vec(one_hot, (n, g), &device)?;
    let rewards: Vec<f64> = samples.iter().map(|(_, r)| *r).collect();
    let r = Tensor::from_vec(rewards.clone(), (n, 1), &device)?;
    let counts = membership.sum_keepdim(0)?.t()?; // (g, 1)
    let sums = membership.t()?.matmul(&r)?; // (g, 1)
    let means = (&sums / &counts)?;
    let row_means = membership.matmul(&means)?; // (n, 1)
    let deviations = (&r - &row_means)?;
    let squares = membership.t()?.matmul(&deviations.sqr()?)?; // (g, 1)
    let denominators = (&counts - 1.0)?.maximum(1.0)?;
    let stds = (squares / denominators)?.sqrt()?;
    let counts_v = counts.flatten_all()?.to_vec1::<f64>()?;
    let stds_v = stds.flatten_all()?.to_vec1::<f64>()?;
    let dead: Vec<bool> = counts_v
        .iter()
        .zip(&stds_v)
        .map(|(&count, &std)| count < 2.0 || std < ZERO_STD)
        .collect();
    let row_stds = membership.matmul(&stds)?;
    let values = (deviations / (row_stds + eps)?)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    let masked: Vec<bool> = index.iter().map(|&group| dead[group]).collect();
    let values = values
        .into_iter()
        .zip(&masked)
        .map(|(value, &masked)| if masked { 0.0 } else { value })
        .collect();
    let mean = rewards.iter().sum::<f64>() / n as f64;
    let variance = rewards.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / n as f64;
    Ok(Advantages {
        values,
        masked,
        groups: g,
        zero_std_groups: dead.iter().filter(|&&d| d).count(),
        reward_mean: mean,
        reward_std: variance.sqrt(),
    })
}

/// Everything logged about one optimizer step.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    pub step: usize,
    pub loss: f64,
    pub reward_mean: f64,
    pub reward_std: f64,
    pub frac_zero_std: f64,
    pub samples: usize,
    pub trained_samples: usize,
    pub segments: usize,
    pub tokens: usize,
    pub clip_fraction: f64,
    pub approx_kl: f64,
    pub kl_ref: f64,
    pub grad_norm: f64,
    pub ratio_mean: f64,
    pub ratio_max: f64,
    /// Mean and max |logp_trainer − logp_behaviour| over trained tokens.
    pub mismatch_mean: f64,
    pub mismatch_max: f64,
    pub entropy: f64,
    pub tokens_per_s: f64,
    pub skipped: bool,
}

/// Per-token statistics summed over a batch.
#[derive(Debug, Default, Clone)]
struct TokenStats {
    tokens: usize,
    clipped: usize,
    approx_kl: f64,
    kl_ref: f64,
    ratio_sum: f64,
    ratio_max: f64,
    mismatch_sum: f64,
    mismatch_max: f64,
    entropy: f64,
    loss: f64,
}

/// A segment scheduled for training, with its advantage and loss weight.
#[derive(Debug, Clone, Copy)]
pub struct Scheduled<'a> {
    pub segment: &'a Segment,
    pub advantage: f64,
    /// Factor on the segment's summed token losses (the aggregation's normalizer).
    pub weight: f64,
    /// Trainer-side old log-probabilities (TIS only).
    pub old_logprobs: Option<&'a [f32]>,
}

/// The GRPO trainer: a model, its trained variables and the optimizer.
pub struct GrpoTrainer {
    pub model: Llama,
    pub config: GrpoConfig,
    vars: Vec<Var>,
    optimizer: AdamW,
    step: usize,
}

/// Gradients of the trained variables (aligned with [`GrpoTrainer::vars`]) and the batch loss.
pub struct Gradients {
    pub grads: Vec<Option<Tensor>>,
    pub loss: f64,
    stats: TokenStats,
}

impl GrpoTrainer {
    /// A trainer of `vars` (the LoRA adapters, or every weight for a full fine-tune).
    pub fn new(model: Llama, vars: Vec<Var>, config: GrpoConfig) -> Result<Self, GrpoError> {
        validate(&config)?;
        if vars.iter().any(|var| var.dtype() != model.base.dtype()) {
            return Err(GrpoError::BadConfig(
                "trained variables must have the model's dtype".to_string(),
            ));
        }
        // The k3 reference is the base without adapters: only frozen while the base is.
        let adapter_ids: Vec<_> = model
            .lora
            .as_ref()
            .map(|lora| lora.vars().iter().map(|v| v.id()).collect())
            .unwrap_or_default();
        if config.kl_beta > 0.0 && vars.iter().any(|var| !adapter_ids.contains(&var.id())) {
            return Err(GrpoError::BadConfig(
                "kl_beta > 0 needs a frozen reference: only LoRA training supports it".to_string(),
            ));
        }
        let optimizer = AdamW::new(
            vars.clone(),
            ParamsAdamW {
                lr: config.lr,
                beta1: config.beta1,
                beta2: config.beta2,
                eps: config.adam_eps,
                weight_decay: config.weight_decay,
            },
        )?;
        Ok(GrpoTrainer {
            model,
            config,
            vars,
            optimizer,
            step: 0,
        })
    }

    /// A LoRA trainer: the model's adapters are the trained variables.
    pub fn lora(model: Llama, config: GrpoConfig) -> Result<Self, GrpoError> {
        let vars =
            model.lora.as_ref().map(|lora| lora.vars()).ok_or_else(|| {
                GrpoError::BadConfig("the model has no LoRA adapters".to_string())
            })?;
        Self::new(model, vars, config)
    }

    pub fn vars(&self) -> &[Var] {
        &self.vars
    }

    pub fn steps_done(&self) -> usize {
        self.step
    }

    /// Schedules the batch's trained segments with their advantages and loss weights.
    pub fn schedule<'a>(
        &self,
        samples: &'a [Sample],
        advantages: &Advantages,
    ) -> Result<Vec<Scheduled<'a>>, GrpoError> {
        for sample in samples {
            check_sample(sample)?;
        }
        let live: Vec<(&Sample, f64)> = samples
            .iter()
            .zip(&advantages.values)
            .zip(&advantages.masked)
            .filter(|(_, masked)| !**masked)
            .map(|((sample, &advantage), _)| (sample, advantage))
            .collect();
        let total_tokens: usize = live
            .iter()
            .flat_map(|(sample, _)| &sample.segments)
            .map(Segment::trained_tokens)
            .sum();
        let episodes = live.len() as f64;
        let mut scheduled = Vec::new();
        for (sample, advantage) in live {
            let sample_tokens: usize = sample.segments.iter().map(Segment::trained_tokens).sum();
            let weight = match self.config.aggregation {
                Aggregation::TokenMean => 1.0 / total_tokens.max(1) as f64,
                Aggregation::SequenceMean => 1.0 / (episodes * sample_tokens.max(1) as f64),
                Aggregation::Constant(tokens) => 1.0 / (episodes * tokens),
            };
            for segment in &sample.segments {
                if segment.trained_tokens() == 0 {
                    continue;
                }
                scheduled.push(Scheduled {
                    segment,
                    advantage,
                    weight,
                    old_logprobs: None,
                });
            }
        }
        Ok(scheduled)
    }

    /// Trainer-side log-probabilities of a segment without gradient (TIS's `π_old`).
    pub fn old_logprobs(&self, segment: &Segment) -> Result<Vec<f32>, GrpoError> {
        let (picked, _) = self.model.token_log_probs(
            &segment.prompt_ids,
            &segment.completion_ids,
            self.config.temperature,
            true,
        )?;
        Ok(picked.detach().to_dtype(DType::F32)?.to_vec1::<f32>()?)
    }

    /// Accumulated gradients of the batch loss over micro-batches of `micro_batch` segments.
    pub fn gradients(
        &self,
        scheduled: &[Scheduled<'_>],
        micro_batch: usize,
    ) -> Result<Gradients, GrpoError> {
        let mut grads: Vec<Option<Tensor>> = vec![None; self.vars.len()];
        let mut stats = TokenStats::default();
        for chunk in scheduled.chunks(micro_batch.max(1)) {
            let mut losses = Vec::with_capacity(chunk.len());
            for item in chunk {
                losses.push(self.segment_loss(item, &mut stats)?);
            }
            let loss = Tensor::stack(&losses, 0)?.sum_all()?;
            let store = loss.backward()?;
            for (slot, var) in grads.iter_mut().zip(&self.vars) {
                if let Some(grad) = store.get(var.as_tensor()) {
                    *slot = Some(match slot.take() {
                        Some(sum) => (sum + grad)?,
                        None => grad.clone(),
                    });
                }
            }
        }
        Ok(Gradients {
            grads,
            loss: stats.loss,
            stats,
        })
    }

    /// One GRPO optimizer step on `samples`.
    pub fn step(&mut self, samples: &[Sample]) -> Result<StepMetrics, GrpoError> {
        let started = Instant::now();
        let pairs: Vec<(&str, f64)> = samples
            .iter()
            .map(|s| (s.task_id.as_str(), s.reward))
            .collect();
        let advantages = group_advantages(&pairs, self.config.advantage_eps)?;
        let mut scheduled = self.schedule(samples, &advantages)?;
        let olds: Vec<Vec<f32>> = match self.config.tis_cap {
            Some(_) => scheduled
                .iter()
                .map(|item| self.old_logprobs(item.segment))
                .collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        for (item, old) in scheduled.iter_mut().zip(&olds) {
            item.old_logprobs = Some(old);
        }
        let gradients = self.gradients(&scheduled, self.config.micro_batch)?;
        let grad_norm = global_norm(&gradients.grads)?;
        self.step += 1;
        let stats = &gradients.stats;
        let tokens = stats.tokens.max(1) as f64;
        let mut metrics = StepMetrics {
            step: self.step,
            loss: gradients.loss,
            reward_mean: advantages.reward_mean,
            reward_std: advantages.reward_std,
            frac_zero_std: advantages.frac_zero_std(),
            samples: samples.len(),
            trained_samples: advantages.masked.iter().filter(|m| !**m).count(),
            segments: scheduled.len(),
            tokens: stats.tokens,
            clip_fraction: stats.clipped as f64 / tokens,
            approx_kl: stats.approx_kl / tokens,
            kl_ref: stats.kl_ref / tokens,
            grad_norm,
            ratio_mean: stats.ratio_sum / tokens,
            ratio_max: stats.ratio_max,
            mismatch_mean: stats.mismatch_sum / tokens,
            mismatch_max: stats.mismatch_max,
            entropy: stats.entropy / tokens,
            tokens_per_s: 0.0,
            skipped: false,
        };
        if !grad_norm.is_finite() || !gradients.loss.is_finite() {
            tracing::warn!(
                step = self.step,
                grad_norm,
                loss = gradients.loss,
                "non-finite step skipped"
            );
            metrics.skipped = true;
        } else if stats.tokens > 0 {
            let scale = (self.config.max_grad_norm / (grad_norm + 1e-6)).min(1.0);
            let mut store = GradStore::default();
            for (var, grad) in self.vars.iter().zip(gradients.grads) {
                if let Some(grad) = grad {
                    let grad = if scale < 1.0 { (grad * scale)? } else { grad };
                    store.insert(var.as_tensor(), grad);
                }
            }
            self.optimizer.step(&store)?;
        }
        metrics.tokens_per_s = stats.tokens as f64 / started.elapsed().as_secs_f64().max(1e-9);
        Ok(metrics)
    }

    /// The loss of one segment (its share of the batch loss) as a scalar tensor; adds its token
    /// statistics to `stats`.
    fn segment_loss(
        &self,
        item: &Scheduled<'_>,
        stats: &mut TokenStats,
    ) -> Result<Tensor, GrpoError> {
        let config = &self.config;
        let segment = item.segment;
        let (logp, log_dist) = self.model.token_log_probs(
            &segment.prompt_ids,
            &segment.completion_ids,
            config.temperature,
            true,
        )?;
        let dtype = logp.dtype();
        let device = logp.device().clone();
        let n = segment.completion_ids.len();
        let behaviour = &segment.behaviour_logprobs;
        let base: &[f32] = item.old_logprobs.unwrap_or(behaviour.as_slice());
        let host_logp = logp.detach().to_dtype(DType::F64)?.to_vec1::<f64>()?;
        // TIS weights are constants: min(π_old_trainer / π_rollout, cap).
        let tis: Vec<f64> = match (config.tis_cap, item.old_logprobs) {
            (Some(cap), Some(old)) => old
                .iter()
                .zip(behaviour)
                .map(|(&o, &b)| (f64::from(o) - f64::from(b)).exp().min(cap))
                .collect(),
            _ => vec![1.0; n],
        };
        let to_tensor =
            |values: Vec<f64>| Tensor::from_vec(values, n, &device).and_then(|t| t.to_dtype(dtype));
        let base_t = to_tensor(base.iter().map(|&v| f64::from(v)).collect())?;
        let mask: Vec<f64> = segment.loss_mask.iter().map(|&m| f64::from(m)).collect();
        let weights: Vec<f64> = mask.iter().zip(&tis).map(|(m, w)| m * w).collect();
        let advantage = item.advantage;
        let ratio = (&logp - &base_t)?.exp()?;
        let clipped = ratio.clamp(1.0 - config.clip_low, 1.0 + config.clip_high)?;
        // min(ρÂ, clip(ρ)Â) = Â·min(ρ, clip ρ) for Â ≥ 0, Â·max(ρ, clip ρ) for Â < 0.
        let mut objective = if advantage >= 0.0 {
            (ratio.minimum(&clipped)? * advantage)?
        } else {
            (ratio.maximum(&clipped)? * advantage)?
        };
        if let (Some(bound), true) = (config.dual_clip, advantage < 0.0) {
            objective = objective.maximum(bound * advantage)?;
        }
        let mut per_token = objective.neg()?;
        let mut kl_values = vec![0.0; n];
        if config.kl_beta > 0.0 {
            let (reference, _) = self.model.token_log_probs(
                &segment.prompt_ids,
                &segment.completion_ids,
                config.temperature,
                false,
            )?;
            let delta = (reference.detach() - &logp)?;
            let k3 = ((delta.exp()? - &delta)? - 1.0)?;
            kl_values = k3.detach().to_dtype(DType::F64)?.to_vec1::<f64>()?;
            per_token = (per_token + (k3 * config.kl_beta)?)?;
        }
        let weight_t = to_tensor(weights.clone())?;
        let loss = ((per_token * weight_t)?.sum_all()? * item.weight)?;
        stats.loss += loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        // Statistics over trained tokens.
        let entropies = entropy_rows(&log_dist)?;
        for t in 0..n {
            if mask[t] <= 0.0 {
                continue;
            }
            let log_ratio = host_logp[t] - f64::from(base[t]);
            let r = log_ratio.exp();
            stats.tokens += 1;
            stats.ratio_sum += r;
            stats.ratio_max = stats.ratio_max.max(r);
            stats.approx_kl += (r - 1.0) - log_ratio;
            stats.kl_ref += kl_values[t];
            let gap = (host_logp[t] - f64::from(behaviour[t])).abs();
            stats.mismatch_sum += gap;
            stats.mismatch_max = stats.mismatch_max.max(gap);
            stats.entropy += entropies[t];
            let high = advantage > 0.0 && r > 1.0 + config.clip_high;
            let low = advantage < 0.0 && r < 1.0 - config.clip_low;
            if high || low {
                stats.clipped += 1;
            }
        }
        Ok(loss)
    }
}

/// `−Σ p log p` of each row of a log-distribution, without gradient.
fn entropy_rows(log_dist: &Tensor) -> Result<Vec<f64>, GrpoError> {
    let log_dist = log_dist.detach();
    let entropy = (log_dist.exp()? * &log_dist)?.sum(1)?.neg()?;
    Ok(entropy.to_dtype(DType::F64)?.to_vec1::<f64>()?)
}

/// `sqrt(Σ‖g‖²)` over every gradient.
pub fn global_norm(grads: &[Option<Tensor>]) -> Result<f64, GrpoError> {
    let mut total = 0.0;
    for grad in grads.iter().flatten() {
        total += grad
            .sqr()?
            .sum_all()?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?;
    }
    Ok(total.sqrt())
}

fn validate(config: &GrpoConfig) -> Result<(), GrpoError> {
    let bad = |detail: String| Err(GrpoError::BadConfig(detail));
    if !(config.lr.is_finite() && config.lr > 0.0) {
        return bad(format!("learning rate must be positive, got {}", config.lr));
    }
    if !(config.clip_low >= 0.0 && config.clip_low < 1.0 && config.clip_high >= 0.0) {
        return bad(format!(
            "clip range must satisfy 0 ≤ ε_low < 1 and ε_high ≥ 0, got {} / {}",
            config.clip_low, config.clip_high
        ));
    }
    if !(config.temperature.is_finite() && config.temperature > 0.0) {
        return bad(format!(
            "temperature must be positive, got {}",
            config.temperature
        ));
    }
    if let Aggregation::Constant(tokens) = config.aggregation
        && !(tokens.is_finite() && tokens > 0.0)
    {
        return bad(format!(
            "constant normalizer must be positive, got {tokens}"
        ));
    }
    if config.kl_beta < 0.0 || config.max_grad_norm <= 0.0 || config.micro_batch == 0 {
        return bad("kl_beta ≥ 0, max_grad_norm > 0 and micro_batch ≥ 1 are required".to_string());
    }
    if let Some(cap) = config.tis_cap
        && !(cap.is_finite() && cap > 0.0)
    {
        return bad(format!("TIS cap must be positive, got {cap}"));
    }
    Ok(())
}

fn check_sample(sample: &Sample) -> Result<(), GrpoError> {
    for (index, segment) in sample.segments.iter().enumerate() {
        let n = segment.completion_ids.len();
        let bad = |detail: String| GrpoError::BadSample {
            task_id: sample.task_id.clone(),
            detail: format!("segment {index}: {detail}"),
        };
        if segment.behaviour_logprobs.len() != n || segment.loss_mask.len() != n {
            return Err(bad(format!(
                "{n} completion ids but {} logprobs and {} mask entries",
                segment.behaviour_logprobs.len(),
                segment.loss_mask.len()
            )));
        }
        if segment.prompt_ids.is_empty() && n > 0 {
            return Err(bad("a completion without a prompt".to_string()));
        }
        if let Some(bad_lp) = segment
            .behaviour_logprobs
            .iter()
            .zip(&segment.loss_mask)
            .find(|(lp, m)| **m > 0.0 && !(lp.is_finite() && **lp <= 0.0))
        {
            return Err(bad(format!(
                "behaviour logprob {} of a trained token is not a finite value ≤ 0",
                bad_lp.0
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// The reference: a plain loop per group, as written in the papers.
    fn loop_advantages(samples: &[(&str, f64)], eps: f64) -> (Vec<f64>, Vec<bool>) {
        let mut values = vec![0.0; samples.len()];
        let mut masked = vec![false; samples.len()];
        for (i, (task, _)) in samples.iter().enumerate() {
            let group: Vec<f64> = samples
                .iter()
                .filter(|(t, _)| t == task)
                .map(|(_, r)| *r)
                .collect();
            let n = group.len() as f64;
            let mean = group.iter().sum::<f64>() / n;
            let var = group.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
            let std = var.sqrt();
            if group.len() < 2 || std < ZERO_STD {
                masked[i] = true;
                continue;
            }
            values[i] = (samples[i].1 - mean) / (std + eps);
        }
        (values, masked)
    }

    #[test]
    fn batched_advantages_equal_the_plain_loop() {
        let mut rng = StdRng::seed_from_u64(1);
        let tasks = ["t0", "t1", "t2", "t3", "t4", "solo"];
        let mut samples: Vec<(&str, f64)> = (0..60)
            .map(|_| {
                let task = tasks[rng.gen_range(0..5)];
                let reward = if task == "t3" {
                    0.5
                } else {
                    rng.gen_range(0.0..1.0)
                };
                (task, reward)
            })
            .collect();
        samples.push(("solo", 1.0));
        let batched = group_advantages(&samples, 1e-4).unwrap();
        let (values, masked) = loop_advantages(&samples, 1e-4);
        assert_eq!(batched.masked, masked);
        for (a, b) in batched.values.iter().zip(&values) {
            assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        }
        // t3 (all 0.5) and solo (one attempt) carry no signal.
        assert_eq!(batched.groups, 6);
        assert_eq!(batched.zero_std_groups, 2);
        assert!((batched.frac_zero_std() - 2.0 / 6.0).abs() < 1e-12);
        // Within a live group the advantages sum to zero.
        let t0: f64 = samples
            .iter()
            .zip(&batched.values)
            .filter(|((t, _), _)| *t == "t0")
            .map(|(_, a)| a)
            .sum();
        assert!(t0.abs() < 1e-9);
    }

    #[test]
    fn zero_variance_and_empty_batches_have_no_nan() {
        let all_same =
            group_advantages(&[("a", 1.0), ("a", 1.0), ("b", 0.0), ("b", 0.0)], 1e-6).unwrap();
        assert!(all_same.values.iter().all(|v| *v == 0.0));
        assert_eq!(all_same.frac_zero_std(), 1.0);
        let empty = group_advantages(&[], 1e-6).unwrap();
        assert_eq!(empty.frac_zero_std(), 0.0);
        assert!(empty.reward_mean.is_finite());
    }

    #[test]
    fn non_finite_rewards_are_rejected_with_the_task_named() {
        let error = group_advantages(&[("a", 1.0), ("task-7", f64::NAN)], 1e-6).unwrap_err();
        assert_eq!(error.kind(), GrpoErrorKind::BadSample);
        assert!(error.to_string().contains("task-7"), "{error}");
    }

    #[test]
    fn bad_configurations_are_refused() {
        for config in [
            GrpoConfig {
                lr: 0.0,
                ..GrpoConfig::default()
            },
            GrpoConfig {
                temperature: 0.0,
                ..GrpoConfig::default()
            },
            GrpoConfig {
                clip_low: 1.0,
                ..GrpoConfig::default()
            },
            GrpoConfig {
                aggregation: Aggregation::Constant(0.0),
                ..GrpoConfig::default()
            },
            GrpoConfig {
                tis_cap: Some(-1.0),
                ..GrpoConfig::default()
            },
        ] {
            assert_eq!(
                validate(&config).unwrap_err().kind(),
                GrpoErrorKind::BadConfig
            );
        }
        assert!(validate(&GrpoConfig::default()).is_ok());
    }
}
