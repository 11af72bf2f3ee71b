//! The Llama architecture (SmolLM2, Llama 2/3-style GGUF files) in candle: weights read from a
//! GGUF file, a forward pass over a batch of sequences of different lengths, and their KV caches.
//!
//! Every hyper-parameter comes from the file's metadata (`{arch}.block_count`,
//! `.embedding_length`, `.attention.head_count{,_kv}`, `.rope.freq_base`, …) and tensor shapes;
//! nothing is specific to SmolLM2. The output projection is `output.weight` when the file has one
//! and the (tied) token embedding otherwise.
//!
//! # Batches
//!
//! A forward pass takes any number of sequences, each with its own [`KvCache`] and any number of
//! new tokens (a prompt chunk, or the one token a decode step adds). All their tokens are stacked
//! into one `(tokens, hidden)` matrix, so every matrix product reads each weight once per step
//! whatever the batch; only attention is done per sequence. The result of a row does not depend
//! on the other rows of the batch, so batched and unbatched generation agree.
//!
//! # Kernels
//!
//! [`ForwardMode::Fast`] (inference) picks per device: on CPU, Q4_1 weights use Kiln's AVX2
//! kernel ([`super::q4_1`]), other quantized weights candle's `QMatMul`, and attention Kiln's
//! batched CPU kernel ([`super::attention`]); on CUDA, candle's quantized matmul and attention
//! from candle ops. candle's fused `rms_norm`, `softmax_last_dim` and `rope_i` are used on both.
//! None of these carry gradients.
//!
//! [`ForwardMode::Differentiable`] runs the same model with dequantized f32 weights, plain
//! matmuls and the composed (`*_slow`) norm, softmax and RoPE, so gradients can flow through
//! everything but the KV-cache writes. It is the path a trainer would build on (with an empty
//! cache, where attention reads the freshly computed keys and values), and the reference the fast
//! kernels are tested against.

use std::borrow::Cow;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor};
use candle_core::{D, DType, Device, Module, Tensor};

use super::attention::{Heads, SequenceView, causal_attention};
use super::gguf::{GgmlType, GgufError, GgufFile, TensorInfo};
use super::q4_1::{Q4_1Matrix, q4_1_matmul};
use super::tokenizer::TokenId;

/// What kind of problem a [`LlamaError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LlamaErrorKind {
    /// The file's metadata or tensors are missing, mistyped or inconsistent.
    ModelFile,
    /// A tensor type or architecture feature Kiln does not implement.
    Unsupported,
    /// A sequence would grow past the model's context length.
    ContextOverflow,
    /// candle failed while computing (out of memory, a device error).
    Compute,
}

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum LlamaError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("{path}: {detail}")]
    ModelFile { path: String, detail: String },
    #[error("{path}: {detail}")]
    Unsupported { path: String, detail: String },
    #[error(
        "a sequence of {tokens} tokens does not fit in the model's context of {context_length} tokens"
    )]
    ContextOverflow {
        tokens: usize,
        context_length: usize,
    },
    #[error("inference failed: {0}")]
    Compute(#[from] candle_core::Error),
}

impl LlamaError {
    pub fn kind(&self) -> LlamaErrorKind {
        match self {
            LlamaError::Gguf(_) | LlamaError::ModelFile { .. } => LlamaErrorKind::ModelFile,
            LlamaError::Unsupported { .. } => LlamaErrorKind::Unsupported,
            LlamaError::ContextOverflow { .. } => LlamaErrorKind::ContextOverflow,
            LlamaError::Compute(_) => LlamaErrorKind::Compute,
        }
    }
}

/// Hyper-parameters, all read from the GGUF file.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    pub block_count: usize,
    pub embedding_length: usize,
    pub feed_forward_length: usize,
    pub head_count: usize,
    pub head_count_kv: usize,
    pub head_dim: usize,
    pub rms_epsilon: f64,
    pub rope_freq_base: f64,
    pub context_length: usize,
    pub vocab_size: usize,
}

impl LlamaConfig {
    /// Reads `{arch}.*` metadata; the vocabulary size comes from the embedding's shape.
    pub fn from_gguf(file: &GgufFile) -> Result<LlamaConfig, LlamaError> {
        let arch = file.architecture()?.to_string();
        let key = |name: &str| format!("{arch}.{name}");
        let usize_of =
            |name: &str| -> Result<usize, LlamaError> { Ok(file.get_u32(&key(name))? as usize) };
        let head_count = usize_of("attention.head_count")?;
        let head_count_kv = match file.get(&key("attention.head_count_kv")) {
            Some(_) => usize_of("attention.head_count_kv")?,
            None => head_count,
        };
        let embedding_length = usize_of("embedding_length")?;
        let rope_freq_base = match file.get(&key("rope.freq_base")) {
            Some(_) => file.get_f64(&key("rope.freq_base"))?,
            None => 10_000.0,
        };
        let embedding = require_tensor(file, "token_embd.weight")?;
        let config = LlamaConfig {
            block_count: usize_of("block_count")?,
            embedding_length,
            feed_forward_length: usize_of("feed_forward_length")?,
            head_count,
            head_count_kv,
            head_dim: embedding_length / head_count.max(1),
            rms_epsilon: file.get_f64(&key("attention.layer_norm_rms_epsilon"))?,
            rope_freq_base,
            context_length: usize_of("context_length")?,
            vocab_size: embedding.dims.get(1).copied().unwrap_or(0) as usize,
        };
        config.validate(file)?;
        Ok(config)
    }

    fn validate(&self, file: &GgufFile) -> Result<(), LlamaError> {
        let path = file.path().display().to_string();
        let unsupported = |detail: String| LlamaError::Unsupported {
            path: path.clone(),
            detail,
        };
        if self.head_count == 0
            || self.head_count_kv == 0
            || !self.head_count.is_multiple_of(self.head_count_kv)
            || self.head_dim * self.head_count != self.embedding_length
        {
            return Err(LlamaError::ModelFile {
                path: path.clone(),
                detail: format!(
                    "inconsistent attention shape: {} heads, {} KV heads, embedding length {}",
                    self.head_count, self.head_count_kv, self.embedding_length
                ),
            });
        }
        let arch = file.architecture()?;
        if let Some(value) = file.get(&format!("{arch}.rope.dimension_count"))
            && value.as_u64() != Some(self.head_dim as u64)
        {
            return Err(unsupported(format!(
                "partial rotary embeddings (rope.dimension_count {:?} != head dim {})",
                value.as_u64(),
                self.head_dim
            )));
        }
        if file.tensor("rope_freqs.weight").is_some() {
            return Err(unsupported(
                "per-dimension RoPE frequency factors (`rope_freqs.weight`, Llama 3.1 scaling)"
                    .to_string(),
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(unsupported(format!("odd head dim {}", self.head_dim)));
        }
        Ok(())
    }

    /// KV-cache floats per token per layer (keys or values).
    pub fn kv_width(&self) -> usize {
        self.head_count_kv * self.head_dim
    }
}

/// Which kernels a model uses (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardMode {
    #[default]
    Fast,
    Differentiable,
}

/// A linear layer `x · Wᵀ` in whichever form the device and mode call for.
#[derive(Debug)]
enum Linear {
    /// Kiln's CPU Q4_1 kernel.
    Q4_1(Q4_1Matrix),
    /// candle's quantized matmul (CUDA, and non-Q4_1 types on CPU).
    Quantized(QMatMul),
    /// Dense f32 weights `(out, in)`.
    Dense(Tensor),
}

impl Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Linear::Q4_1(matrix) => q4_1_matmul(x, matrix),
            Linear::Quantized(matmul) => matmul.forward(x),
            Linear::Dense(weights) => x.matmul(&weights.t()?),
        }
    }
}

/// Several projections of the same input (Q, K, V; gate, up), fused into one matrix product when
/// their weights have the same type, split again by output width.
#[derive(Debug)]
struct Projection {
    parts: Vec<Linear>,
    widths: Vec<usize>,
}

impl Projection {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Vec<Tensor>> {
        if let [fused] = self.parts.as_slice() {
            let out = fused.forward(x)?;
            let mut start = 0;
            let mut pieces = Vec::with_capacity(self.widths.len());
            for &width in &self.widths {
                pieces.push(out.narrow(D::Minus1, start, width)?);
                start += width;
            }
            return Ok(pieces);
        }
        self.parts.iter().map(|part| part.forward(x)).collect()
    }
}

#[derive(Debug)]
struct Layer {
    attention_norm: Tensor,
    qkv: Projection,
    attention_output: Linear,
    ffn_norm: Tensor,
    gate_up: Projection,
    down: Linear,
}

/// A loaded Llama-architecture model.
#[derive(Debug)]
pub struct LlamaModel {
    config: LlamaConfig,
    device: Device,
    mode: ForwardMode,
    embeddings: Tensor,
    layers: Vec<Layer>,
    output_norm: Tensor,
    output: Linear,
    rope_cos: Tensor,
    rope_sin: Tensor,
}

/// Per-sequence keys and values of every layer, `(capacity, kv_heads × head_dim)` each; the first
/// [`KvCache::len`] rows are valid.
#[derive(Debug)]
pub struct KvCache {
    layers: Vec<(Tensor, Tensor)>,
    len: usize,
    capacity: usize,
}

/// Cache rows are allocated in steps of this many tokens.
const CACHE_STEP: usize = 256;

impl KvCache {
    /// Tokens whose keys and values are stored.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets every token from `len` on (to reuse a shared prefix).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Bytes held by the cache.
    pub fn allocated_bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|(k, v)| (k.elem_count() + v.elem_count()) * 4)
            .sum()
    }
}

/// What logits a sequence of a batch wants back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitsWanted {
    /// None (a prompt chunk that is not the last).
    None,
    /// After the last new token (generation).
    Last,
    /// After every new token (scoring).
    All,
}

/// One sequence in a forward pass.
#[derive(Debug)]
pub struct SequenceInput<'a> {
    pub tokens: &'a [TokenId],
    pub cache: &'a mut KvCache,
    pub logits: LogitsWanted,
}

impl LlamaModel {
    /// Loads the model in `file` onto `device`.
    pub fn load(
        file: &GgufFile,
        device: &Device,
        mode: ForwardMode,
    ) -> Result<LlamaModel, LlamaError> {
        let config = LlamaConfig::from_gguf(file)?;
        let mut loader = TensorLoader::open(file, device, mode)?;
        let embedding_info = require_tensor(file, "token_embd.weight")?;
        let embedding = loader.qtensor(embedding_info)?;
        let embeddings = embedding.dequantize(device)?;
        let mut layers = Vec::with_capacity(config.block_count);
        for index in 0..config.block_count {
            layers.push(loader.layer(index)?);
        }
        let output_norm = loader.dense("output_norm.weight")?;
        let output = match file.tensor("output.weight") {
            Some(info) => loader.linear(&[info])?,
            None if mode == ForwardMode::Differentiable => Linear::Dense(embeddings.clone()),
            None => Linear::Quantized(QMatMul::from_qtensor(embedding)?),
        };
        let (rope_cos, rope_sin) = rope_tables(&config, device)?;
        tracing::info!(
            path = %file.path().display(),
            layers = config.block_count,
            hidden = config.embedding_length,
            heads = config.head_count,
            kv_heads = config.head_count_kv,
            context = config.context_length,
            device = super::device::device_name(device),
            ?mode,
            "loaded llama model"
        );
        Ok(LlamaModel {
            config,
            device: device.clone(),
            mode,
            embeddings,
            layers,
            output_norm,
            output,
            rope_cos,
            rope_sin,
        })
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// An empty cache for one sequence.
    pub fn new_cache(&self) -> KvCache {
        KvCache {
            layers: Vec::new(),
            len: 0,
            capacity: 0,
        }
    }

    /// A new cache holding a copy of the first `len` tokens of `source` (for a prompt that shares
    /// only part of another sequence's tokens, which keeps its own cache).
    pub fn copy_prefix(&self, source: &KvCache, len: usize) -> Result<KvCache, LlamaError> {
        let len = len.min(source.len);
        let mut cache = self.new_cache();
        if len == 0 {
            return Ok(cache);
        }
        self.reserve(&mut cache, len)?;
        for ((keys, values), (source_keys, source_values)) in
            cache.layers.iter().zip(&source.layers)
        {
            keys.slice_set(&source_keys.narrow(0, 0, len)?, 0, 0)?;
            values.slice_set(&source_values.narrow(0, 0, len)?, 0, 0)?;
        }
        cache.len = len;
        Ok(cache)
    }

    /// Runs the new tokens of every sequence through the model, appends them to their caches, and
    /// returns the logits each asked for: per sequence, one `vocab`-long row per position
    /// ([`LogitsWanted::Last`]: one row; `All`: one per new token; `None`: none).
    pub fn forward(
        &self,
        inputs: &mut [SequenceInput<'_>],
    ) -> Result<Vec<Vec<Vec<f32>>>, LlamaError> {
        let spans = self.prepare(inputs)?;
        let total: usize = inputs.iter().map(|input| input.tokens.len()).sum();
        if total == 0 {
            return Ok(inputs.iter().map(|_| Vec::new()).collect());
        }
        let ids: Vec<u32> = inputs
            .iter()
            .flat_map(|input| input.tokens.iter().copied())
            .collect();
        let ids = Tensor::from_vec(ids, total, &self.device)?;
        let mut hidden = self.embeddings.index_select(&ids, 0)?;
        let positions: Vec<u32> = spans
            .iter()
            .flat_map(|span| (span.past..span.past + span.len).map(|p| p as u32))
            .collect();
        let positions = Tensor::from_vec(positions, total, &self.device)?;
        let half = self.config.head_dim / 2;
        let cos = self
            .rope_cos
            .index_select(&positions, 0)?
            .reshape((total, 1, half))?;
        let sin = self
            .rope_sin
            .index_select(&positions, 0)?
            .reshape((total, 1, half))?;
        let masks = self.causal_masks(&spans)?;
        for (index, layer) in self.layers.iter().enumerate() {
            hidden =
                self.layer_forward(layer, index, &hidden, &cos, &sin, inputs, &spans, &masks)?;
        }
        for (input, span) in inputs.iter_mut().zip(&spans) {
            input.cache.len = span.past + span.len;
        }
        self.logits(&hidden, inputs, &spans)
    }

    /// Checks every sequence fits in the context and reserves cache room for its new tokens.
    fn prepare(&self, inputs: &mut [SequenceInput<'_>]) -> Result<Vec<Span>, LlamaError> {
        let mut spans = Vec::with_capacity(inputs.len());
        let mut start = 0;
        for input in inputs.iter_mut() {
            let past = input.cache.len;
            let len = input.tokens.len();
            if past + len > self.config.context_length {
                return Err(LlamaError::ContextOverflow {
                    tokens: past + len,
                    context_length: self.config.context_length,
                });
            }
            if let Some(&bad) = input
                .tokens
                .iter()
                .find(|&&id| id as usize >= self.config.vocab_size)
            {
                return Err(LlamaError::ModelFile {
                    path: "input".to_string(),
                    detail: format!(
                        "token id {bad} is outside the vocabulary of {}",
                        self.config.vocab_size
                    ),
                });
            }
            self.reserve(input.cache, past + len)?;
            spans.push(Span { start, past, len });
            start += len;
        }
        Ok(spans)
    }

    /// Grows `cache` to hold at least `tokens` rows, keeping its valid rows.
    fn reserve(&self, cache: &mut KvCache, tokens: usize) -> Result<(), LlamaError> {
        if tokens <= cache.capacity {
            return Ok(());
        }
        let capacity = tokens
            .next_multiple_of(CACHE_STEP)
            .max(cache.capacity * 2)
            .min(self.config.context_length.max(tokens));
        let width = self.config.kv_width();
        let mut layers = Vec::with_capacity(self.config.block_count);
        for layer in 0..self.config.block_count {
            let keys = Tensor::zeros((capacity, width), DType::F32, &self.device)?;
            let values = Tensor::zeros((capacity, width), DType::F32, &self.device)?;
            if cache.len > 0 {
                let (old_keys, old_values) = &cache.layers[layer];
                keys.slice_set(&old_keys.narrow(0, 0, cache.len)?, 0, 0)?;
                values.slice_set(&old_values.narrow(0, 0, cache.len)?, 0, 0)?;
            }
            layers.push((keys, values));
        }
        cache.layers = layers;
        cache.capacity = capacity;
        Ok(())
    }

    /// Additive causal masks `(new, past + new)` for sequences with more than one new token, for
    /// the candle-ops attention.
    fn causal_masks(&self, spans: &[Span]) -> Result<Vec<Option<Tensor>>, LlamaError> {
        if self.uses_cpu_attention() {
            return Ok(spans.iter().map(|_| None).collect());
        }
        spans
            .iter()
            .map(|span| {
                if span.len <= 1 {
                    return Ok(None);
                }
                let visible = span.past + span.len;
                let mask: Vec<f32> = (0..span.len)
                    .flat_map(|row| {
                        (0..visible).map(move |column| {
                            if column <= span.past + row {
                                0.0
                            } else {
                                f32::NEG_INFINITY
                            }
                        })
                    })
                    .collect();
                Ok(Some(Tensor::from_vec(
                    mask,
                    (span.len, visible),
                    &self.device,
                )?))
            })
            .collect()
    }

    fn uses_cpu_attention(&self) -> bool {
        self.device.is_cpu() && self.mode == ForwardMode::Fast
    }

    #[allow(clippy::too_many_arguments)]
    fn layer_forward(
        &self,
        layer: &Layer,
        index: usize,
        hidden: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        inputs: &[SequenceInput<'_>],
        spans: &[Span],
        masks: &[Option<Tensor>],
    ) -> Result<Tensor, LlamaError> {
        let config = &self.config;
        let total = hidden.dim(0)?;
        let normed = self.rms_norm(hidden, &layer.attention_norm)?;
        let [queries, keys, values] =
            <[Tensor; 3]>::try_from(layer.qkv.forward(&normed)?).expect("three projections");
        let queries = self.rope(&queries, config.head_count, cos, sin)?;
        let keys = self.rope(&keys, config.head_count_kv, cos, sin)?;
        let values = values.contiguous()?;
        for (input, span) in inputs.iter().zip(spans) {
            let (cache_keys, cache_values) = &input.cache.layers[index];
            cache_keys.slice_set(&keys.narrow(0, span.start, span.len)?, 0, span.past)?;
            cache_values.slice_set(&values.narrow(0, span.start, span.len)?, 0, span.past)?;
        }
        let attended = if self.uses_cpu_attention() {
            self.cpu_attention(&queries, index, inputs, spans, total)?
        } else {
            self.candle_attention(&queries, &keys, &values, index, inputs, spans, masks)?
        };
        let hidden = (hidden + layer.attention_output.forward(&attended)?)?;
        let normed = self.rms_norm(&hidden, &layer.ffn_norm)?;
        let [gate, up] =
            <[Tensor; 2]>::try_from(layer.gate_up.forward(&normed)?).expect("two projections");
        let activated = (candle_nn::ops::silu(&gate)? * up)?;
        Ok((hidden + layer.down.forward(&activated)?)?)
    }

    fn rms_norm(&self, x: &Tensor, weight: &Tensor) -> candle_core::Result<Tensor> {
        let eps = self.config.rms_epsilon as f32;
        match self.mode {
            ForwardMode::Fast => candle_nn::ops::rms_norm(x, weight, eps),
            ForwardMode::Differentiable => candle_nn::ops::rms_norm_slow(x, weight, eps),
        }
    }

    /// Interleaved RoPE (GGUF stores Q and K permuted for it) of `(tokens, heads × head_dim)`
    /// rows, each at its own position; returns the same shape, contiguous.
    fn rope(
        &self,
        x: &Tensor,
        heads: usize,
        cos: &Tensor,
        sin: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let total = x.dim(0)?;
        let head_dim = self.config.head_dim;
        // (tokens, heads, 1, head_dim): every token is its own batch entry with its own angles.
        let x = x.contiguous()?.reshape((total, heads, 1, head_dim))?;
        let rotated = match self.mode {
            ForwardMode::Fast => candle_nn::rotary_emb::rope_i(&x, cos, sin)?,
            ForwardMode::Differentiable => rope_interleaved_slow(&x, cos, sin)?,
        };
        rotated.reshape((total, heads * head_dim))
    }

    fn cpu_attention(
        &self,
        queries: &Tensor,
        index: usize,
        inputs: &[SequenceInput<'_>],
        spans: &[Span],
        total: usize,
    ) -> Result<Tensor, LlamaError> {
        let config = &self.config;
        let width = config.head_count * config.head_dim;
        let kv_width = config.kv_width();
        let (query_storage, query_layout) = queries.storage_and_layout();
        let query_data = cpu_f32(&query_storage, query_layout)?;
        let guards: Vec<_> = inputs
            .iter()
            .map(|input| {
                let (keys, values) = &input.cache.layers[index];
                (keys.storage_and_layout(), values.storage_and_layout())
            })
            .collect();
        let mut views = Vec::with_capacity(inputs.len());
        for (((key_storage, key_layout), (value_storage, value_layout)), span) in
            guards.iter().zip(spans)
        {
            let visible = (span.past + span.len) * kv_width;
            views.push(SequenceView {
                queries: &query_data[span.start * width..(span.start + span.len) * width],
                keys: &cpu_f32(key_storage, key_layout)?[..visible],
                values: &cpu_f32(value_storage, value_layout)?[..visible],
                past: span.past,
                new_tokens: span.len,
            });
        }
        let mut out = vec![0f32; total * width];
        causal_attention(
            &views,
            Heads {
                heads: config.head_count,
                kv_heads: config.head_count_kv,
                head_dim: config.head_dim,
            },
            &mut out,
        );
        drop(views);
        drop(guards);
        Ok(Tensor::from_vec(out, (total, width), &self.device)?)
    }

    /// Attention from candle ops, per sequence; works on every device and carries gradients.
    #[allow(clippy::too_many_arguments)]
    fn candle_attention(
        &self,
        queries: &Tensor,
        keys: &Tensor,
        values: &Tensor,
        index: usize,
        inputs: &[SequenceInput<'_>],
        spans: &[Span],
        masks: &[Option<Tensor>],
    ) -> Result<Tensor, LlamaError> {
        let config = &self.config;
        let (heads, kv_heads, head_dim) =
            (config.head_count, config.head_count_kv, config.head_dim);
        let group = heads / kv_heads;
        let scale = 1.0 / (head_dim as f64).sqrt();
        let mut outputs = Vec::with_capacity(spans.len());
        for ((input, span), mask) in inputs.iter().zip(spans).zip(masks) {
            let (n, visible) = (span.len, span.past + span.len);
            // Queries (n, kv_heads, group, d) -> (kv_heads, group·n, d): each KV head's group of
            // query heads shares one matmul, so KV heads are never repeated.
            let q = queries
                .narrow(0, span.start, n)?
                .reshape((n, kv_heads, group, head_dim))?
                .permute((1, 2, 0, 3))?
                .contiguous()?
                .reshape((kv_heads, group * n, head_dim))?;
            let (k, v) = if span.past == 0 {
                // Read the fresh rows rather than the cache, so gradients reach them.
                (
                    keys.narrow(0, span.start, n)?,
                    values.narrow(0, span.start, n)?,
                )
            } else {
                let (cache_keys, cache_values) = &input.cache.layers[index];
                (
                    cache_keys.narrow(0, 0, visible)?,
                    cache_values.narrow(0, 0, visible)?,
                )
            };
            let k = k
                .reshape((visible, kv_heads, head_dim))?
                .permute((1, 2, 0))?
                .contiguous()?;
            let v = v
                .reshape((visible, kv_heads, head_dim))?
                .transpose(0, 1)?
                .contiguous()?;
            let mut scores = (q * scale)?.matmul(&k)?;
            if let Some(mask) = mask {
                scores = scores
                    .reshape((kv_heads, group, n, visible))?
                    .broadcast_add(mask)?
                    .reshape((kv_heads, group * n, visible))?;
            }
            let weights = match self.mode {
                ForwardMode::Fast => candle_nn::ops::softmax_last_dim(&scores)?,
                ForwardMode::Differentiable => candle_nn::ops::softmax(&scores, D::Minus1)?,
            };
            let out = weights
                .matmul(&v)?
                .reshape((kv_heads, group, n, head_dim))?
                .permute((2, 0, 1, 3))?
                .contiguous()?
                .reshape((n, heads * head_dim))?;
            outputs.push(out);
        }
        Ok(Tensor::cat(&outputs, 0)?)
    }

    fn logits(
        &self,
        hidden: &Tensor,
        inputs: &[SequenceInput<'_>],
        spans: &[Span],
    ) -> Result<Vec<Vec<Vec<f32>>>, LlamaError> {
        let mut rows = Vec::new();
        let mut counts = Vec::with_capacity(inputs.len());
        for (input, span) in inputs.iter().zip(spans) {
            let wanted: Vec<u32> = match input.logits {
                LogitsWanted::None => Vec::new(),
                LogitsWanted::Last if span.len == 0 => Vec::new(),
                LogitsWanted::Last => vec![(span.start + span.len - 1) as u32],
                LogitsWanted::All => (span.start..span.start + span.len)
                    .map(|row| row as u32)
                    .collect(),
            };
            counts.push(wanted.len());
            rows.extend(wanted);
        }
        if rows.is_empty() {
            return Ok(counts.iter().map(|_| Vec::new()).collect());
        }
        let row_count = rows.len();
        let rows = Tensor::from_vec(rows, row_count, &self.device)?;
        let selected = hidden.index_select(&rows, 0)?;
        let normed = self.rms_norm(&selected, &self.output_norm)?;
        let logits = self.output.forward(&normed)?.to_dtype(DType::F32)?;
        let mut all = logits.to_vec2::<f32>()?.into_iter();
        Ok(counts
            .iter()
            .map(|&count| all.by_ref().take(count).collect())
            .collect())
    }
}

/// Where a sequence's new tokens sit in the batch and in its cache.
#[derive(Debug, Clone, Copy)]
struct Span {
    /// First row of the batch.
    start: usize,
    /// Tokens already cached.
    past: usize,
    /// New tokens.
    len: usize,
}

/// A CPU tensor's f32 data, from its storage guard.
fn cpu_f32<'a>(
    storage: &'a candle_core::Storage,
    layout: &candle_core::Layout,
) -> Result<&'a [f32], LlamaError> {
    let candle_core::Storage::Cpu(cpu) = storage else {
        return Err(candle_core::Error::Msg("cpu attention on a non-cpu tensor".into()).into());
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        return Err(candle_core::Error::Msg("cpu attention on a strided tensor".into()).into());
    };
    Ok(&cpu.as_slice::<f32>()?[start..end])
}

/// `cos`/`sin` of `position · base^(-2i/head_dim)`, `(context, head_dim / 2)` each.
fn rope_tables(config: &LlamaConfig, device: &Device) -> candle_core::Result<(Tensor, Tensor)> {
    let half = config.head_dim / 2;
    let frequencies: Vec<f64> = (0..half)
        .map(|i| {
            config
                .rope_freq_base
                .powf(-2.0 * i as f64 / config.head_dim as f64)
        })
        .collect();
    let mut cos = Vec::with_capacity(config.context_length * half);
    let mut sin = Vec::with_capacity(config.context_length * half);
    for position in 0..config.context_length {
        for frequency in &frequencies {
            let angle = position as f64 * frequency;
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    Ok((
        Tensor::from_vec(cos, (config.context_length, half), device)?,
        Tensor::from_vec(sin, (config.context_length, half), device)?,
    ))
}

/// Interleaved RoPE from differentiable ops: pairs `(x₀, x₁)` become
/// `(x₀·cos − x₁·sin, x₀·sin + x₁·cos)`. `x` is `(tokens, heads, 1, d)`, `cos`/`sin`
/// `(tokens, 1, d/2)`.
fn rope_interleaved_slow(x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
    let (tokens, heads, one, dim) = x.dims4()?;
    let pairs = x.reshape((tokens, heads, one, dim / 2, 2))?;
    let x0 = pairs.narrow(D::Minus1, 0, 1)?;
    let x1 = pairs.narrow(D::Minus1, 1, 1)?;
    let cos = cos.reshape((tokens, 1, 1, dim / 2, 1))?;
    let sin = sin.reshape((tokens, 1, 1, dim / 2, 1))?;
    let y0 = (x0.broadcast_mul(&cos)? - x1.broadcast_mul(&sin)?)?;
    let y1 = (x0.broadcast_mul(&sin)? + x1.broadcast_mul(&cos)?)?;
    Tensor::cat(&[y0, y1], D::Minus1)?.reshape((tokens, heads, one, dim))
}

fn require_tensor<'f>(file: &'f GgufFile, name: &str) -> Result<&'f TensorInfo, LlamaError> {
    file.tensor(name).ok_or_else(|| LlamaError::ModelFile {
        path: file.path().display().to_string(),
        detail: format!("tensor `{name}` is missing"),
    })
}

/// The candle type of a GGUF tensor type, when candle has one.
fn candle_dtype(ggml_type: GgmlType) -> Option<GgmlDType> {
    Some(match ggml_type {
        GgmlType::F32 => GgmlDType::F32,
        GgmlType::F16 => GgmlDType::F16,
        GgmlType::BF16 => GgmlDType::BF16,
        GgmlType::Q4_0 => GgmlDType::Q4_0,
        GgmlType::Q4_1 => GgmlDType::Q4_1,
        GgmlType::Q5_0 => GgmlDType::Q5_0,
        GgmlType::Q5_1 => GgmlDType::Q5_1,
        GgmlType::Q8_0 => GgmlDType::Q8_0,
        GgmlType::Q8_1 => GgmlDType::Q8_1,
        GgmlType::Q2_K => GgmlDType::Q2K,
        GgmlType::Q3_K => GgmlDType::Q3K,
        GgmlType::Q4_K => GgmlDType::Q4K,
        GgmlType::Q5_K => GgmlDType::Q5K,
        GgmlType::Q6_K => GgmlDType::Q6K,
        GgmlType::Q8_K => GgmlDType::Q8K,
        _ => return None,
    })
}

/// Reads tensor data from the GGUF file and builds layers in the form the device and mode want.
struct TensorLoader<'f> {
    file: &'f GgufFile,
    reader: File,
    device: Device,
    mode: ForwardMode,
}

impl<'f> TensorLoader<'f> {
    fn open(file: &'f GgufFile, device: &Device, mode: ForwardMode) -> Result<Self, LlamaError> {
        let reader = File::open(file.path()).map_err(|source| GgufError::Io {
            path: file.path().to_path_buf(),
            source,
        })?;
        Ok(TensorLoader {
            file,
            reader,
            device: device.clone(),
            mode,
        })
    }

    fn path(&self) -> String {
        self.file.path().display().to_string()
    }

    fn info(&self, name: &str) -> Result<&'f TensorInfo, LlamaError> {
        require_tensor(self.file, name)
    }

    fn bytes(&mut self, info: &TensorInfo) -> Result<Vec<u8>, LlamaError> {
        let size = info.byte_size().ok_or_else(|| LlamaError::Unsupported {
            path: self.path(),
            detail: format!("tensor `{}` has type {}", info.name, info.ggml_type),
        })?;
        let mut bytes = vec![0u8; size as usize];
        let start = self.file.data_offset() + info.offset;
        let io_error = |source| GgufError::Io {
            path: self.file.path().to_path_buf(),
            source,
        };
        self.reader.seek(SeekFrom::Start(start)).map_err(io_error)?;
        self.reader.read_exact(&mut bytes).map_err(io_error)?;
        Ok(bytes)
    }

    fn dtype(&self, info: &TensorInfo) -> Result<GgmlDType, LlamaError> {
        candle_dtype(info.ggml_type).ok_or_else(|| LlamaError::Unsupported {
            path: self.path(),
            detail: format!(
                "tensor `{}` has type {}, which candle cannot load",
                info.name, info.ggml_type
            ),
        })
    }

    /// Shape in candle order (outermost first) of a 2-D weight: `(rows, cols)`.
    fn matrix_shape(&self, info: &TensorInfo) -> Result<(usize, usize), LlamaError> {
        match info.dims.as_slice() {
            [cols, rows] => Ok((*rows as usize, *cols as usize)),
            other => Err(LlamaError::ModelFile {
                path: self.path(),
                detail: format!("tensor `{}` should be 2-D, has dims {other:?}", info.name),
            }),
        }
    }

    fn qtensor(&mut self, info: &TensorInfo) -> Result<QTensor, LlamaError> {
        let dtype = self.dtype(info)?;
        let bytes = self.bytes(info)?;
        let shape: Vec<usize> = info.dims.iter().rev().map(|&d| d as usize).collect();
        let storage = QStorage::from_data(Cow::Owned(bytes), &self.device, dtype)?;
        Ok(QTensor::new(storage, shape)?)
    }

    /// A 1-D f32 tensor (norm weights).
    fn dense(&mut self, name: &str) -> Result<Tensor, LlamaError> {
        let info = self.info(name)?;
        Ok(self.qtensor(info)?.dequantize(&self.device)?)
    }

    /// One linear layer from the row-wise concatenation of `infos` (all of one type and width).
    fn linear(&mut self, infos: &[&TensorInfo]) -> Result<Linear, LlamaError> {
        let ggml_type = infos[0].ggml_type;
        let mut rows = 0;
        let mut cols = None;
        let mut bytes = Vec::new();
        for info in infos {
            let (r, c) = self.matrix_shape(info)?;
            if *cols.get_or_insert(c) != c || info.ggml_type != ggml_type {
                return Err(LlamaError::ModelFile {
                    path: self.path(),
                    detail: format!(
                        "tensor `{}` cannot be fused with `{}`",
                        info.name, infos[0].name
                    ),
                });
            }
            rows += r;
            bytes.extend(self.bytes(info)?);
        }
        let cols = cols.expect("at least one tensor");
        let dtype = self.dtype(infos[0])?;
        let fits_cpu_kernel = self.device.is_cpu() && dtype == GgmlDType::Q4_1;
        if self.mode == ForwardMode::Fast && fits_cpu_kernel {
            let matrix = Q4_1Matrix::from_bytes(rows, cols, &bytes).map_err(|detail| {
                LlamaError::ModelFile {
                    path: self.path(),
                    detail: format!("tensor `{}`: {detail}", infos[0].name),
                }
            })?;
            return Ok(Linear::Q4_1(matrix));
        }
        let storage = QStorage::from_data(Cow::Owned(bytes), &self.device, dtype)?;
        let qtensor = QTensor::new(storage, (rows, cols))?;
        match self.mode {
            ForwardMode::Fast => Ok(Linear::Quantized(QMatMul::from_qtensor(qtensor)?)),
            ForwardMode::Differentiable => Ok(Linear::Dense(qtensor.dequantize(&self.device)?)),
        }
    }

    /// Projections of one input, fused when their types agree.
    fn projection(&mut self, names: &[String]) -> Result<Projection, LlamaError> {
        let infos: Vec<&TensorInfo> = names
            .iter()
            .map(|name| self.info(name))
            .collect::<Result<_, _>>()?;
        let widths = infos
            .iter()
            .map(|info| self.matrix_shape(info).map(|(rows, _)| rows))
            .collect::<Result<Vec<_>, _>>()?;
        let same_type = infos
            .iter()
            .all(|info| info.ggml_type == infos[0].ggml_type);
        let parts = if same_type {
            vec![self.linear(&infos)?]
        } else {
            infos
                .iter()
                .map(|info| self.linear(&[info]))
                .collect::<Result<_, _>>()?
        };
        Ok(Projection { parts, widths })
    }

    fn layer(&mut self, index: usize) -> Result<Layer, LlamaError> {
        let name = |suffix: &str| format!("blk.{index}.{suffix}.weight");
        Ok(Layer {
            attention_norm: self.dense(&name("attn_norm"))?,
            qkv: self.projection(&[name("attn_q"), name("attn_k"), name("attn_v")])?,
            attention_output: {
                let info = self.info(&name("attn_output"))?;
                self.linear(&[info])?
            },
            ffn_norm: self.dense(&name("ffn_norm"))?,
            gate_up: self.projection(&[name("ffn_gate"), name("ffn_up")])?,
            down: {
                let info = self.info(&name("ffn_down"))?;
                self.linear(&[info])?
            },
        })
    }
}

/// Loads the model at `path` (header and weights) onto `device`.
pub fn load_model(
    path: &Path,
    device: &Device,
    mode: ForwardMode,
) -> Result<(GgufFile, LlamaModel), LlamaError> {
    let file = GgufFile::open_llama(path)?;
    let model = LlamaModel::load(&file, device, mode)?;
    Ok((file, model))
}
