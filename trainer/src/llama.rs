//! The differentiable Llama (SmolLM2 and any Llama-architecture GGUF) the trainer optimizes.
//!
//! The base weights are dequantized once from the same GGUF tensors the workers serve (read with
//! kiln-models' GGUF reader) and kept frozen in the training dtype (f32; f64 for gradient checks).
//! Every operation is composed from basic candle ops that carry gradients: candle's fused
//! `rms_norm`, `softmax_last_dim`, `rope*`, `sdpa` and the quantized matmul silently return no
//! gradient, so none of them is used here. The token embedding doubles as the output head when
//! the file has no `output.weight` (tied, as in SmolLM2).
//!
//! Sequences are computed one at a time with positions `0..len` (no padding, so no position
//! shift and no pad token ever gets a log-probability).

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use candle_core::quantized::{QStorage, QTensor};
use candle_core::{D, DType, Device, Tensor, Var};
use kiln_models::local::gguf::{GgufFile, TensorInfo};
use kiln_models::local::llama::{LlamaConfig, candle_dtype};
use sha2::{Digest, Sha256};

use crate::lora::{LoraAdapters, LoraConfig, LoraError, Target};

/// What kind of problem a [`ModelError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelErrorKind {
    /// The GGUF file is missing, unreadable or not a Llama model Kiln can train.
    ModelFile,
    /// Bad token ids or an empty sequence.
    Input,
    /// candle failed (out of memory, a device error).
    Compute,
}

/// Why the trainer's model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Gguf(#[from] kiln_models::local::GgufError),
    #[error(transparent)]
    Llama(#[from] kiln_models::local::llama::LlamaError),
    #[error("{path}: {detail}")]
    ModelFile { path: String, detail: String },
    #[error("bad training input: {detail}")]
    Input { detail: String },
    #[error(transparent)]
    Lora(#[from] LoraError),
    #[error("model computation failed: {0}")]
    Compute(#[from] candle_core::Error),
}

impl ModelError {
    pub fn kind(&self) -> ModelErrorKind {
        match self {
            ModelError::Gguf(_) | ModelError::Llama(_) | ModelError::ModelFile { .. } => {
                ModelErrorKind::ModelFile
            }
            ModelError::Input { .. } => ModelErrorKind::Input,
            ModelError::Lora(_) | ModelError::Compute(_) => ModelErrorKind::Compute,
        }
    }
}

/// One block's frozen weights; matrices are `(out, in)`.
#[derive(Debug, Clone)]
pub struct BaseLayer {
    pub attention_norm: Tensor,
    pub ffn_norm: Tensor,
    /// Indexed like [`Target::ALL`].
    pub linears: [Tensor; 7],
}

impl BaseLayer {
    pub fn linear(&self, target: Target) -> &Tensor {
        &self.linears[target as usize]
    }
}

/// The base model's weights in one dtype on one device.
#[derive(Debug, Clone)]
pub struct BaseModel {
    pub config: LlamaConfig,
    /// `(vocab, hidden)`.
    pub embeddings: Tensor,
    pub layers: Vec<BaseLayer>,
    pub output_norm: Tensor,
    /// `(vocab, hidden)`; `None` when tied to the embeddings.
    pub output: Option<Tensor>,
    /// sha256 of the weights' source (the GGUF file's bytes, or a caller-chosen name).
    pub hash: String,
}

impl BaseModel {
    /// Reads and dequantizes every weight of the Llama GGUF file at `path` into `dtype`.
    pub fn from_gguf(path: &Path, dtype: DType, device: &Device) -> Result<BaseModel, ModelError> {
        let file = GgufFile::open_llama(path)?;
        let config = LlamaConfig::from_gguf(&file)?;
        let mut reader = GgufTensors::open(&file)?;
        let mut tensors = HashMap::new();
        for info in file.tensors() {
            tensors.insert(info.name.clone(), reader.dequantize(info, dtype, device)?);
        }
        let hash = file_sha256(path)?;
        Self::from_tensors(config, tensors, hash, path)
    }

    /// Builds a model from GGUF-named tensors (`token_embd.weight`, `blk.N.attn_q.weight`, …),
    /// matrices already in `(out, in)` order.
    pub fn from_tensors(
        config: LlamaConfig,
        mut tensors: HashMap<String, Tensor>,
        hash: String,
        source: &Path,
    ) -> Result<BaseModel, ModelError> {
        let mut take = |name: String| {
            tensors.remove(&name).ok_or_else(|| ModelError::ModelFile {
                path: source.display().to_string(),
                detail: format!("tensor `{name}` is missing"),
            })
        };
        let embeddings = take("token_embd.weight".to_string())?;
        let mut layers = Vec::with_capacity(config.block_count);
        for index in 0..config.block_count {
            let name = |stem: &str| format!("blk.{index}.{stem}.weight");
            let attention_norm = take(name("attn_norm"))?;
            let ffn_norm = take(name("ffn_norm"))?;
            let mut linears = Vec::with_capacity(7);
            for target in Target::ALL {
                linears.push(take(name(target.gguf_stem()))?);
            }
            layers.push(BaseLayer {
                attention_norm,
                ffn_norm,
                linears: linears.try_into().expect("seven targets"),
            });
        }
        let output_norm = take("output_norm.weight".to_string())?;
        let output = tensors.remove("output.weight");
        let model = BaseModel {
            config,
            embeddings,
            layers,
            output_norm,
            output,
            hash,
        };
        model.check_shapes(source)?;
        Ok(model)
    }

    fn check_shapes(&self, source: &Path) -> Result<(), ModelError> {
        let c = &self.config;
        let kv = c.head_count_kv * c.head_dim;
        let expected = |target: Target| match target {
            Target::Q | Target::O => (c.embedding_length, c.embedding_length),
            Target::K | Target::V => (kv, c.embedding_length),
            Target::Gate | Target::Up => (c.feed_forward_length, c.embedding_length),
            Target::Down => (c.embedding_length, c.feed_forward_length),
        };
        for (index, layer) in self.layers.iter().enumerate() {
            for target in Target::ALL {
                let (out, input) = expected(target);
                if layer.linear(target).dims() != [out, input] {
                    return Err(ModelError::ModelFile {
                        path: source.display().to_string(),
                        detail: format!(
                            "blk.{index}.{} has shape {:?}, expected [{out}, {input}]",
                            target.gguf_stem(),
                            layer.linear(target).dims()
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    pub fn dtype(&self) -> DType {
        self.embeddings.dtype()
    }

    pub fn device(&self) -> &Device {
        self.embeddings.device()
    }

    /// `(out, in)` of a target's weight (the same in every layer).
    pub fn shape_of(&self, layer: usize, target: Target) -> (usize, usize) {
        let dims = self.layers[layer].linear(target).dims();
        (dims[0], dims[1])
    }

    /// The output head: `output.weight`, else the tied embeddings.
    pub fn output_head(&self) -> &Tensor {
        self.output.as_ref().unwrap_or(&self.embeddings)
    }

    /// Every weight with its GGUF name (the tied head appears once, as the embeddings).
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![("token_embd.weight".to_string(), self.embeddings.clone())];
        for (index, layer) in self.layers.iter().enumerate() {
            let name = |stem: &str| format!("blk.{index}.{stem}.weight");
            out.push((name("attn_norm"), layer.attention_norm.clone()));
            out.push((name("ffn_norm"), layer.ffn_norm.clone()));
            for target in Target::ALL {
                out.push((name(target.gguf_stem()), layer.linear(target).clone()));
            }
        }
        out.push(("output_norm.weight".to_string(), self.output_norm.clone()));
        if let Some(output) = &self.output {
            out.push(("output.weight".to_string(), output.clone()));
        }
        out
    }

    /// Turns every weight into a trained variable (full fine-tuning with master weights in the
    /// model's dtype, which should be f32). The model's tensors are the variables' own storage, so
    /// optimizer updates are seen by the next forward pass.
    pub fn make_trainable(&mut self) -> Result<Vec<(String, Var)>, ModelError> {
        let mut vars = Vec::new();
        let mut convert = |name: String, tensor: &mut Tensor| -> Result<(), ModelError> {
            let var = Var::from_tensor(tensor)?;
            *tensor = var.as_tensor().clone();
            vars.push((name, var));
            Ok(())
        };
        convert("token_embd.weight".to_string(), &mut self.embeddings)?;
        for (index, layer) in self.layers.iter_mut().enumerate() {
            let name = |stem: &str| format!("blk.{index}.{stem}.weight");
            convert(name("attn_norm"), &mut layer.attention_norm)?;
            convert(name("ffn_norm"), &mut layer.ffn_norm)?;
            for target in Target::ALL {
                convert(
                    name(target.gguf_stem()),
                    &mut layer.linears[target as usize],
                )?;
            }
        }
        convert("output_norm.weight".to_string(), &mut self.output_norm)?;
        if let Some(output) = &mut self.output {
            convert("output.weight".to_string(), output)?;
        }
        Ok(vars)
    }
}

/// The trainer's model: a frozen base, optional LoRA adapters, and the RoPE tables.
#[derive(Debug, Clone)]
pub struct Llama {
    pub base: BaseModel,
    pub lora: Option<LoraAdapters>,
    rope_cos: Tensor,
    rope_sin: Tensor,
}

impl Llama {
    pub fn new(base: BaseModel, lora: Option<LoraAdapters>) -> Result<Llama, ModelError> {
        let (rope_cos, rope_sin) = rope_tables(&base.config, base.dtype(), base.device())?;
        Ok(Llama {
            base,
            lora,
            rope_cos,
            rope_sin,
        })
    }

    /// Adds fresh (zero-`B`) adapters.
    pub fn with_new_lora(base: BaseModel, config: LoraConfig) -> Result<Llama, ModelError> {
        let lora = LoraAdapters::new(
            config,
            base.config.block_count,
            &|layer: usize, target: Target| base.shape_of(layer, target),
            base.dtype(),
            base.device(),
        )?;
        Self::new(base, Some(lora))
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.base.config
    }

    /// Final-norm hidden states `(len, hidden)` of `ids` at positions `0..len`. `use_lora: false`
    /// runs the base model alone (the reference policy of a LoRA trainer).
    pub fn hidden_states(&self, ids: &[u32], use_lora: bool) -> Result<Tensor, ModelError> {
        let config = &self.base.config;
        let len = ids.len();
        if len == 0 {
            return Err(ModelError::Input {
                detail: "an empty token sequence".to_string(),
            });
        }
        if len > config.context_length {
            return Err(ModelError::Input {
                detail: format!(
                    "a sequence of {len} tokens exceeds the model's context of {}",
                    config.context_length
                ),
            });
        }
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= config.vocab_size) {
            return Err(ModelError::Input {
                detail: format!(
                    "token id {bad} is outside the vocabulary of {}",
                    config.vocab_size
                ),
            });
        }
        let device = self.base.device();
        let ids_tensor = Tensor::from_slice(ids, len, device)?;
        let mut hidden = self.base.embeddings.index_select(&ids_tensor, 0)?;
        let cos = self.rope_cos.narrow(0, 0, len)?;
        let sin = self.rope_sin.narrow(0, 0, len)?;
        let mask = causal_mask(len, self.base.dtype(), device)?;
        for index in 0..self.base.layers.len() {
            hidden = self.layer(index, &hidden, &cos, &sin, &mask, use_lora)?;
        }
        Ok(rms_norm(
            &hidden,
            &self.base.output_norm,
            config.rms_epsilon,
        )?)
    }

    /// Logits `(rows, vocab)` of chosen hidden rows.
    pub fn logits_of(&self, hidden: &Tensor) -> Result<Tensor, ModelError> {
        Ok(hidden.matmul(&self.base.output_head().t()?)?)
    }

    /// Logits `(len, vocab)` after every token of `ids`.
    pub fn logits(&self, ids: &[u32]) -> Result<Tensor, ModelError> {
        let hidden = self.hidden_states(ids, true)?;
        self.logits_of(&hidden)
    }

    /// `log_softmax(logits / temperature)` `(completion, vocab)` at the positions that predict
    /// each completion token, for the sequence `prompt ++ completion`.
    pub fn completion_log_probs(
        &self,
        prompt: &[u32],
        completion: &[u32],
        temperature: f64,
        use_lora: bool,
    ) -> Result<Tensor, ModelError> {
        if prompt.is_empty() || completion.is_empty() {
            return Err(ModelError::Input {
                detail: format!(
                    "a training segment needs a prompt and a completion (got {} and {} tokens)",
                    prompt.len(),
                    completion.len()
                ),
            });
        }
        if !(temperature.is_finite() && temperature > 0.0) {
            return Err(ModelError::Input {
                detail: format!("temperature must be positive, got {temperature}"),
            });
        }
        // The last completion token predicts nothing we train on.
        let mut ids = Vec::with_capacity(prompt.len() + completion.len() - 1);
        ids.extend_from_slice(prompt);
        ids.extend_from_slice(&completion[..completion.len() - 1]);
        let hidden = self.hidden_states(&ids, use_lora)?;
        let rows = hidden.narrow(0, prompt.len() - 1, completion.len())?;
        let logits = (self.logits_of(&rows)? / temperature)?;
        Ok(log_softmax(&logits)?)
    }

    /// Per-token log-probabilities `(completion,)` of the completion tokens (see
    /// [`Llama::completion_log_probs`]) and the full log-distributions they come from.
    pub fn token_log_probs(
        &self,
        prompt: &[u32],
        completion: &[u32],
        temperature: f64,
        use_lora: bool,
    ) -> Result<(Tensor, Tensor), ModelError> {
        let log_probs = self.completion_log_probs(prompt, completion, temperature, use_lora)?;
        let targets = Tensor::from_slice(completion, (completion.len(), 1), log_probs.device())?;
        let picked = log_probs.gather(&targets, 1)?.squeeze(1)?;
        Ok((picked, log_probs))
    }

    fn layer(
        &self,
        index: usize,
        hidden: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &Tensor,
        use_lora: bool,
    ) -> Result<Tensor, ModelError> {
        let config = &self.base.config;
        let layer = &self.base.layers[index];
        let linear = |x: &Tensor, target: Target| self.linear(index, target, x, use_lora);
        let normed = rms_norm(hidden, &layer.attention_norm, config.rms_epsilon)?;
        let q = rope(&linear(&normed, Target::Q)?, config.head_count, cos, sin)?;
        let k = rope(&linear(&normed, Target::K)?, config.head_count_kv, cos, sin)?;
        let v = linear(&normed, Target::V)?;
        let attended = attention(&q, &k, &v, mask, config)?;
        let hidden = (hidden + linear(&attended, Target::O)?)?;
        let normed = rms_norm(&hidden, &layer.ffn_norm, config.rms_epsilon)?;
        let gate = linear(&normed, Target::Gate)?;
        let up = linear(&normed, Target::Up)?;
        let activated = (silu(&gate)? * up)?;
        Ok((hidden + linear(&activated, Target::Down)?)?)
    }

    /// `x·Wᵀ`, plus `scale·(x·Aᵀ)·Bᵀ` when the layer has an adapter.
    fn linear(
        &self,
        index: usize,
        target: Target,
        x: &Tensor,
        use_lora: bool,
    ) -> Result<Tensor, ModelError> {
        let weight = self.base.layers[index].linear(target);
        let base = x.matmul(&weight.t()?)?;
        let pair = match (&self.lora, use_lora) {
            (Some(lora), true) => lora.get(index, target).map(|pair| (lora, pair)),
            _ => None,
        };
        let Some((lora, pair)) = pair else {
            return Ok(base);
        };
        let low = x.matmul(&pair.a.as_tensor().t()?)?;
        let delta = low.matmul(&pair.b.as_tensor().t()?)?;
        Ok((base + (delta * lora.config().scale())?)?)
    }
}

/// `x / sqrt(mean(x²) + eps) · weight` over the last dimension, from basic ops.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    let mean_square = x.sqr()?.mean_keepdim(D::Minus1)?;
    let inverse = (mean_square + eps)?.sqrt()?.recip()?;
    x.broadcast_mul(&inverse)?.broadcast_mul(weight)
}

/// `x · sigmoid(x)` from basic ops.
pub fn silu(x: &Tensor) -> candle_core::Result<Tensor> {
    let sigmoid = (x.neg()?.exp()? + 1.0)?.recip()?;
    x * sigmoid
}

/// Softmax over the last dimension. The max is subtracted without a gradient: it cancels out
/// exactly, so the gradient is the same and cheaper.
pub fn softmax(x: &Tensor) -> candle_core::Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let exp = x.broadcast_sub(&max)?.exp()?;
    exp.broadcast_div(&exp.sum_keepdim(D::Minus1)?)
}

/// Log-softmax over the last dimension (max subtracted without a gradient, as in [`softmax`]).
pub fn log_softmax(x: &Tensor) -> candle_core::Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let shifted = x.broadcast_sub(&max)?;
    let log_sum = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    shifted.broadcast_sub(&log_sum)
}

/// Interleaved RoPE (GGUF stores Q and K permuted for it) from basic ops: pairs `(x₀, x₁)` become
/// `(x₀·cos − x₁·sin, x₀·sin + x₁·cos)`. `x` is `(len, heads·head_dim)`, `cos`/`sin`
/// `(len, head_dim/2)`.
pub fn rope(x: &Tensor, heads: usize, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
    let (len, width) = x.dims2()?;
    let half = width / heads / 2;
    let pairs = x.reshape((len, heads, half, 2))?;
    let x0 = pairs.narrow(D::Minus1, 0, 1)?;
    let x1 = pairs.narrow(D::Minus1, 1, 1)?;
    let cos = cos.reshape((len, 1, half, 1))?;
    let sin = sin.reshape((len, 1, half, 1))?;
    let y0 = (x0.broadcast_mul(&cos)? - x1.broadcast_mul(&sin)?)?;
    let y1 = (x0.broadcast_mul(&sin)? + x1.broadcast_mul(&cos)?)?;
    Tensor::cat(&[y0, y1], D::Minus1)?.reshape((len, width))
}

/// Causal self-attention with grouped KV heads: `q` `(len, heads·d)`, `k`/`v` `(len, kv·d)`.
fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Tensor,
    config: &LlamaConfig,
) -> candle_core::Result<Tensor> {
    let (heads, kv_heads, d) = (config.head_count, config.head_count_kv, config.head_dim);
    let group = heads / kv_heads;
    let len = q.dim(0)?;
    // Each KV head's group of query heads shares one matmul, so KV heads are never repeated.
    let q = q
        .reshape((len, kv_heads, group, d))?
        .permute((1, 2, 0, 3))?
        .contiguous()?
        .reshape((kv_heads, group * len, d))?;
    let k = k
        .reshape((len, kv_heads, d))?
        .permute((1, 2, 0))?
        .contiguous()?;
    let v = v
        .reshape((len, kv_heads, d))?
        .transpose(0, 1)?
        .contiguous()?;
    let scores = (q.matmul(&k)? * (1.0 / (d as f64).sqrt()))?
        .reshape((kv_heads, group, len, len))?
        .broadcast_add(mask)?
        .reshape((kv_heads, group * len, len))?;
    softmax(&scores)?
        .matmul(&v)?
        .reshape((kv_heads, group, len, d))?
        .permute((2, 0, 1, 3))?
        .contiguous()?
        .reshape((len, heads * d))
}

/// `(len, len)`: 0 where a token may attend, −∞ above the diagonal.
fn causal_mask(len: usize, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
    let values: Vec<f32> = (0..len)
        .flat_map(|row| (0..len).map(move |col| if col <= row { 0.0 } else { f32::NEG_INFINITY }))
        .collect();
    Tensor::from_vec(values, (len, len), device)?.to_dtype(dtype)
}

/// `cos`/`sin` of `position · base^(−2i/head_dim)`, `(context, head_dim/2)` each, computed in f64.
fn rope_tables(
    config: &LlamaConfig,
    dtype: DType,
    device: &Device,
) -> candle_core::Result<(Tensor, Tensor)> {
    let half = config.head_dim / 2;
    let mut cos = Vec::with_capacity(config.context_length * half);
    let mut sin = Vec::with_capacity(config.context_length * half);
    for position in 0..config.context_length {
        for i in 0..half {
            let frequency = config
                .rope_freq_base
                .powf(-2.0 * i as f64 / config.head_dim as f64);
            let angle = position as f64 * frequency;
            cos.push(angle.cos());
            sin.push(angle.sin());
        }
    }
    // f32 tables are rounded exactly as the inference engine's are.
    let table = |values: Vec<f64>| -> candle_core::Result<Tensor> {
        let tensor = Tensor::from_vec(values, (config.context_length, half), device)?;
        match dtype {
            DType::F64 => Ok(tensor),
            _ => tensor.to_dtype(DType::F32)?.to_dtype(dtype),
        }
    };
    Ok((table(cos)?, table(sin)?))
}

/// sha256 of a file, hex.
pub fn file_sha256(path: &Path) -> Result<String, ModelError> {
    let io = |error: std::io::Error| ModelError::ModelFile {
        path: path.display().to_string(),
        detail: format!("cannot read it: {error}"),
    };
    let mut file = File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file.read(&mut buffer).map_err(io)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Reads GGUF tensor data and dequantizes it with candle.
struct GgufTensors<'f> {
    file: &'f GgufFile,
    reader: File,
}

impl<'f> GgufTensors<'f> {
    fn open(file: &'f GgufFile) -> Result<Self, ModelError> {
        let reader = File::open(file.path()).map_err(|error| ModelError::ModelFile {
            path: file.path().display().to_string(),
            detail: format!("cannot open it: {error}"),
        })?;
        Ok(GgufTensors { file, reader })
    }

    fn dequantize(
        &mut self,
        info: &TensorInfo,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor, ModelError> {
        let path = self.file.path().display().to_string();
        let unsupported = || ModelError::ModelFile {
            path: path.clone(),
            detail: format!(
                "tensor `{}` has type {}, which the trainer cannot dequantize",
                info.name, info.ggml_type
            ),
        };
        let ggml = candle_dtype(info.ggml_type).ok_or_else(unsupported)?;
        let size = info.byte_size().ok_or_else(unsupported)?;
        let mut bytes = vec![0u8; size as usize];
        let start = self.file.data_offset() + info.offset;
        self.reader
            .seek(SeekFrom::Start(start))
            .and_then(|_| self.reader.read_exact(&mut bytes))
            .map_err(|error| ModelError::ModelFile {
                path: path.clone(),
                detail: format!("cannot read tensor `{}`: {error}", info.name),
            })?;
        // ggml dims are innermost first; candle's shapes outermost first.
        let shape: Vec<usize> = info.dims.iter().rev().map(|&d| d as usize).collect();
        let storage = QStorage::from_data(std::borrow::Cow::Owned(bytes), &Device::Cpu, ggml)?;
        let tensor = QTensor::new(storage, shape)?.dequantize(&Device::Cpu)?;
        Ok(tensor.to_dtype(dtype)?.to_device(device)?)
    }
}

/// A random Llama of the given shape (tests, benchmarks): GGUF-named tensors, normal weights of
/// standard deviation `std`, norms near 1.
pub fn random_base(
    config: LlamaConfig,
    seed: u64,
    std: f64,
    dtype: DType,
    device: &Device,
) -> Result<BaseModel, ModelError> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut tensor = |shape: (usize, usize), around: f64, spread: f64| {
        let values: Vec<f64> = (0..shape.0 * shape.1)
            .map(|_| around + spread * (rng.r#gen::<f64>() * 2.0 - 1.0) * 3f64.sqrt())
            .collect();
        Tensor::from_vec(values, shape, device)?
            .to_dtype(dtype)
            .map(|t| {
                if shape.0 == 1 {
                    t.squeeze(0).unwrap_or(t)
                } else {
                    t
                }
            })
    };
    let c = &config;
    let kv = c.head_count_kv * c.head_dim;
    let mut tensors = HashMap::new();
    tensors.insert(
        "token_embd.weight".to_string(),
        tensor((c.vocab_size, c.embedding_length), 0.0, std)?,
    );
    for index in 0..c.block_count {
        let name = |stem: &str| format!("blk.{index}.{stem}.weight");
        for stem in ["attn_norm", "ffn_norm"] {
            tensors.insert(name(stem), tensor((1, c.embedding_length), 1.0, 0.1)?);
        }
        for target in Target::ALL {
            let shape = match target {
                Target::Q | Target::O => (c.embedding_length, c.embedding_length),
                Target::K | Target::V => (kv, c.embedding_length),
                Target::Gate | Target::Up => (c.feed_forward_length, c.embedding_length),
                Target::Down => (c.embedding_length, c.feed_forward_length),
            };
            tensors.insert(name(target.gguf_stem()), tensor(shape, 0.0, std)?);
        }
    }
    tensors.insert(
        "output_norm.weight".to_string(),
        tensor((1, c.embedding_length), 1.0, 0.1)?,
    );
    BaseModel::from_tensors(
        config,
        tensors,
        format!("random-{seed}"),
        Path::new("random"),
    )
}

/// A tiny Llama shape for tests: GQA (4 heads, 2 KV heads), 2 blocks, vocabulary 32.
pub fn tiny_config() -> LlamaConfig {
    LlamaConfig {
        block_count: 2,
        embedding_length: 16,
        feed_forward_length: 24,
        head_count: 4,
        head_count_kv: 2,
        head_dim: 4,
        rms_epsilon: 1e-5,
        rope_freq_base: 10_000.0,
        context_length: 64,
        vocab_size: 32,
    }
}
