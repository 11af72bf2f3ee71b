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
//! [`ForwardMode::Fast`] (inference) on CPU runs Kiln's *host path* ([`super::host`]): the whole
//! forward pass on plain slices, with Kiln's AVX2 kernels for Q4_1 ([`super::q4_1`]) and Q8_0
//! ([`super::q8_0`]) weights (candle's `QMatMul` for other types), Kiln's batched attention
//! ([`super::attention`]), and the KV cache in plain vectors. A Q8_0 token embedding is kept
//! quantized and shared with the tied output projection (no 113 MB f32 copy for SmolLM2). On CUDA,
//! fast mode runs the candle-ops path below with candle's quantized matmul and its fused
//! `rms_norm`, `softmax_last_dim` and `rope_i`. None of these carry gradients.
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

use std::sync::Arc;

use super::gguf::{GgmlType, GgufError, GgufFile, TensorInfo};
use super::q4_1::{Q4_1Matrix, q4_1_matmul};
use super::q8_0::Q8_0Matrix;
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
pub(super) enum Linear {
    /// Kiln's CPU Q4_1 kernel (host path only).
    Q4_1(Q4_1Matrix),
    /// Kiln's CPU Q8_0 kernel (host path only); shared with the token embedding when tied.
    Q8_0(Arc<Q8_0Matrix>),
    /// candle's quantized matmul (CUDA, and types Kiln has no kernel for on CPU).
    Quantized(QMatMul),
    /// Dense f32 weights `(out, in)`.
    Dense(Tensor),
}

impl Linear {
    /// The product on candle tensors (the candle-ops path).
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Linear::Q4_1(matrix) => q4_1_matmul(x, matrix),
            Linear::Q8_0(matrix) => {
                let (m, cols) = x.dims2()?;
                let values = x.to_vec2::<f32>()?.concat();
                debug_assert_eq!(cols, matrix.cols());
                Tensor::from_vec(matrix.matmul_t(&values, m), (m, matrix.rows()), x.device())
            }
            Linear::Quantized(matmul) => matmul.forward(x),
            Linear::Dense(weights) => x.matmul(&weights.t()?),
        }
    }

    /// The product on host slices: `x` is `m` rows, `out` (`m × outputs`) is overwritten.
    pub(super) fn forward_host(
        &self,
        x: &[f32],
        m: usize,
        out: &mut [f32],
    ) -> candle_core::Result<()> {
        match self {
            Linear::Q4_1(matrix) => matrix.matmul_t_into(x, m, out),
            Linear::Q8_0(matrix) => matrix.matmul_t_into(x, m, out),
            Linear::Quantized(_) | Linear::Dense(_) => {
                let input = Tensor::from_slice(x, (m, x.len() / m.max(1)), &Device::Cpu)?;
                let result = self.forward(&input)?.flatten_all()?.to_vec1::<f32>()?;
                if result.len() != out.len() {
                    candle_core::bail!(
                        "linear layer: {} outputs for a buffer of {}",
                        result.len(),
                        out.len()
                    );
                }
                out.copy_from_slice(&result);
            }
        }
        Ok(())
    }
}

/// Several projections of the same input (Q, K, V; gate, up), fused into one matrix product when
/// their weights have the same type, split again by output width.
#[derive(Debug)]
pub(super) struct Projection {
    pub(super) parts: Vec<Linear>,
    pub(super) widths: Vec<usize>,
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
pub(super) struct Layer {
    pub(super) attention_norm: Tensor,
    pub(super) qkv: Projection,
    pub(super) attention_output: Linear,
    pub(super) ffn_norm: Tensor,
    pub(super) gate_up: Projection,
    pub(super) down: Linear,
    /// The norm weights as host slices (empty off the host path).
    pub(super) host_norms: HostNorms,
}

/// A layer's norm weights as plain vectors, for the host path.
#[derive(Debug, Default)]
pub(super) struct HostNorms {
    pub(super) attention: Vec<f32>,
    pub(super) ffn: Vec<f32>,
}

/// The token embedding table.
#[derive(Debug)]
pub(super) enum Embeddings {
    /// Dequantized f32 rows `(vocab, hidden)`.
    Dense(Tensor),
    /// Q8_0 rows, dequantized on lookup (host path; shared with a tied output projection).
    Q8_0(Arc<Q8_0Matrix>),
}

/// A loaded Llama-architecture model.
#[derive(Debug)]
pub struct LlamaModel {
    pub(super) config: LlamaConfig,
    device: Device,
    mode: ForwardMode,
    pub(super) embeddings: Embeddings,
    pub(super) layers: Vec<Layer>,
    output_norm: Tensor,
    pub(super) output_norm_host: Vec<f32>,
    pub(super) output: Linear,
    rope_cos: Tensor,
    rope_sin: Tensor,
    /// `cos`/`sin` tables as `(context, head_dim / 2)` host slices (empty off the host path).
    pub(super) rope_host: (Vec<f32>, Vec<f32>),
}

/// Per-sequence keys and values of every layer, `(capacity, kv_heads × head_dim)` each; the first
/// [`KvCache::len`] rows are valid.
#[derive(Debug)]
pub struct KvCache {
    pub(super) layers: CacheLayers,
    pub(super) len: usize,
    capacity: usize,
}

/// Where a cache keeps its rows: plain vectors on the host path, tensors on the candle path.
#[derive(Debug)]
pub(super) enum CacheLayers {
    /// `(keys, values)` per layer, `capacity × kv_width` floats each.
    Host(Vec<(Vec<f32>, Vec<f32>)>),
    /// `(keys, values)` per layer, `(capacity, kv_width)` tensors.
    Device(Vec<(Tensor, Tensor)>),
}

impl CacheLayers {
    fn device(&self) -> &[(Tensor, Tensor)] {
        match self {
            CacheLayers::Device(layers) => layers,
            CacheLayers::Host(_) => panic!("a host-path cache used by the candle path"),
        }
    }
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
        match &self.layers {
            CacheLayers::Host(layers) => layers.iter().map(|(k, v)| (k.len() + v.len()) * 4).sum(),
            CacheLayers::Device(layers) => layers
                .iter()
                .map(|(k, v)| (k.elem_count() + v.elem_count()) * 4)
                .sum(),
        }
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
        let host = uses_host_path(device, mode);
        let mut loader = TensorLoader::open(file, device, mode)?;
        let embedding_info = require_tensor(file, "token_embd.weight")?;
        let (embeddings, tied_output) = if host && embedding_info.ggml_type == GgmlType::Q8_0 {
            // One Q8_0 table serves as embedding and (tied) output: no f32 copy of it.
            let matrix = Arc::new(loader.q8_0(embedding_info)?);
            (Embeddings::Q8_0(matrix.clone()), Linear::Q8_0(matrix))
        } else {
            let embedding = loader.qtensor(embedding_info)?;
            let dense = embedding.dequantize(device)?;
            let tied = match mode {
                ForwardMode::Differentiable => Linear::Dense(dense.clone()),
                ForwardMode::Fast => Linear::Quantized(QMatMul::from_qtensor(embedding)?),
            };
            (Embeddings::Dense(dense), tied)
        };
        let mut layers = Vec::with_capacity(config.block_count);
        for index in 0..config.block_count {
            layers.push(loader.layer(index)?);
        }
        let output_norm = loader.dense("output_norm.weight")?;
        let output = match file.tensor("output.weight") {
            Some(info) => loader.linear(&[info])?,
            None => tied_output,
        };
        let (rope_cos, rope_sin) = rope_tables(&config, device)?;
        let (output_norm_host, rope_host) = if host {
            (
                output_norm.to_vec1::<f32>()?,
                (
                    rope_cos.flatten_all()?.to_vec1::<f32>()?,
                    rope_sin.flatten_all()?.to_vec1::<f32>()?,
                ),
            )
        } else {
            (Vec::new(), (Vec::new(), Vec::new()))
        };
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
            output_norm_host,
            output,
            rope_cos,
            rope_sin,
            rope_host,
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
        let layers = if self.uses_host_path() {
            CacheLayers::Host(Vec::new())
        } else {
            CacheLayers::Device(Vec::new())
        };
        KvCache {
            layers,
            len: 0,
            capacity: 0,
        }
    }

    /// Whether this model runs on Kiln's host path ([`super::host`]): CPU, fast mode.
    pub fn uses_host_path(&self) -> bool {
        uses_host_path(&self.device, self.mode)
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
        match (&mut cache.layers, &source.layers) {
            (CacheLayers::Host(layers), CacheLayers::Host(sources)) => {
                let floats = len * self.config.kv_width();
                for ((keys, values), (source_keys, source_values)) in layers.iter_mut().zip(sources)
                {
                    keys[..floats].copy_from_slice(&source_keys[..floats]);
                    values[..floats].copy_from_slice(&source_values[..floats]);
                }
            }
            (CacheLayers::Device(layers), CacheLayers::Device(sources)) => {
                for ((keys, values), (source_keys, source_values)) in layers.iter().zip(sources) {
                    keys.slice_set(&source_keys.narrow(0, 0, len)?, 0, 0)?;
                    values.slice_set(&source_values.narrow(0, 0, len)?, 0, 0)?;
                }
            }
            _ => panic!("copy_prefix: a cache from a model on another path"),
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
        if self.uses_host_path() {
            return super::host::forward(self, inputs, &spans);
        }
        let Embeddings::Dense(embeddings) = &self.embeddings else {
            unreachable!("Q8_0 embeddings are only kept on the host path");
        };
        let ids: Vec<u32> = inputs
            .iter()
            .flat_map(|input| input.tokens.iter().copied())
            .collect();
        let ids = Tensor::from_vec(ids, total, &self.device)?;
        let mut hidden = embeddings.index_select(&ids, 0)?;
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

    /// Runs several branches after the same cached past in one pass (scoring candidate replies
    /// to one prompt): each branch sees the past and its own earlier tokens, never the others',
    /// and its positions start right after the past, so its logits are those of a forward of that
    /// branch alone. Returns one `vocab`-long row per branch token, per branch; the cache is
    /// left as it was. `None` off the host path (the caller runs the branches one at a time).
    /// The branches together must fit in the context after the past.
    pub fn forward_branches(
        &self,
        cache: &mut KvCache,
        branches: &[&[TokenId]],
    ) -> Result<Option<Vec<Vec<Vec<f32>>>>, LlamaError> {
        if !self.uses_host_path() {
            return Ok(None);
        }
        let tokens: Vec<TokenId> = branches.concat();
        if tokens.is_empty() {
            return Ok(Some(branches.iter().map(|_| Vec::new()).collect()));
        }
        let past = cache.len;
        let mut start = Vec::with_capacity(tokens.len());
        let mut positions = Vec::with_capacity(tokens.len());
        let mut offset = 0;
        for branch in branches {
            for index in 0..branch.len() {
                start.push(offset);
                positions.push(past + index);
            }
            offset += branch.len();
        }
        let mut inputs = [SequenceInput {
            tokens: &tokens,
            cache,
            logits: LogitsWanted::All,
        }];
        let spans = self.prepare(&mut inputs)?;
        let rows = super::host::forward_with(
            self,
            &mut inputs,
            &spans,
            Some(super::host::Branches {
                start: &start,
                positions: &positions,
            }),
        );
        // The branch rows were written past the cache's end; dropping them restores it.
        inputs[0].cache.len = past;
        let mut rows = rows?.remove(0).into_iter();
        Ok(Some(
            branches
                .iter()
                .map(|branch| rows.by_ref().take(branch.len()).collect())
                .collect(),
        ))
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
        let blocks = self.config.block_count;
        match &mut cache.layers {
            CacheLayers::Host(layers) => {
                let valid = cache.len * width;
                let grown = (0..blocks)
                    .map(|layer| {
                        // `vec!` of zeros comes from calloc: untouched rows cost no page faults.
                        let mut keys = vec![0f32; capacity * width];
                        let mut values = vec![0f32; capacity * width];
                        if let Some((old_keys, old_values)) = layers.get(layer) {
                            keys[..valid].copy_from_slice(&old_keys[..valid]);
                            values[..valid].copy_from_slice(&old_values[..valid]);
                        }
                        (keys, values)
                    })
                    .collect();
                *layers = grown;
            }
            CacheLayers::Device(layers) => {
                let mut grown = Vec::with_capacity(blocks);
                for layer in 0..blocks {
                    let keys = Tensor::zeros((capacity, width), DType::F32, &self.device)?;
                    let values = Tensor::zeros((capacity, width), DType::F32, &self.device)?;
                    if let Some((old_keys, old_values)) = layers.get(layer)
                        && cache.len > 0
                    {
                        keys.slice_set(&old_keys.narrow(0, 0, cache.len)?, 0, 0)?;
                        values.slice_set(&old_values.narrow(0, 0, cache.len)?, 0, 0)?;
                    }
                    grown.push((keys, values));
                }
                *layers = grown;
            }
        }
        cache.capacity = capacity;
        Ok(())
    }

    /// Additive causal masks `(new, past + new)` for sequences with more than one new token, for
    /// the candle-ops attention.
    fn causal_masks(&self, spans: &[Span]) -> Result<Vec<Option<Tensor>>, LlamaError> {
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
        let normed = self.rms_norm(hidden, &layer.attention_norm)?;
        let [queries, keys, values] =
            <[Tensor; 3]>::try_from(layer.qkv.forward(&normed)?).expect("three projections");
        let queries = self.rope(&queries, config.head_count, cos, sin)?;
        let keys = self.rope(&keys, config.head_count_kv, cos, sin)?;
        let values = values.contiguous()?;
        for (input, span) in inputs.iter().zip(spans) {
            let (cache_keys, cache_values) = &input.cache.layers.device()[index];
            cache_keys.slice_set(&keys.narrow(0, span.start, span.len)?, 0, span.past)?;
            cache_values.slice_set(&values.narrow(0, span.start, span.len)?, 0, span.past)?;
        }
        let attended =
            self.candle_attention(&queries, &keys, &values, index, inputs, spans, masks)?;
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
                let (cache_keys, cache_values) = &input.cache.layers.device()[index];
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
pub(super) struct Span {
    /// First row of the batch.
    pub(super) start: usize,
    /// Tokens already cached.
    pub(super) past: usize,
    /// New tokens.
    pub(super) len: usize,
}

/// Whether a model on `device` in `mode` runs on Kiln's host path ([`super::host`]).
fn uses_host_path(device: &Device, mode: ForwardMode) -> bool {
    device.is_cpu() && mode == ForwardMode::Fast
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

/// The candle type of a GGUF tensor type, when candle has one (the trainer dequantizes through it
/// too).
pub fn candle_dtype(ggml_type: GgmlType) -> Option<GgmlDType> {
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
        let bad_size = |detail: String| LlamaError::ModelFile {
            path: self.path(),
            detail: format!("tensor `{}`: {detail}", infos[0].name),
        };
        if uses_host_path(&self.device, self.mode) {
            match dtype {
                GgmlDType::Q4_1 => {
                    let matrix = Q4_1Matrix::from_bytes(rows, cols, &bytes).map_err(bad_size)?;
                    return Ok(Linear::Q4_1(matrix));
                }
                GgmlDType::Q8_0 => {
                    let matrix = Q8_0Matrix::from_bytes(rows, cols, &bytes).map_err(bad_size)?;
                    return Ok(Linear::Q8_0(Arc::new(matrix)));
                }
                _ => {}
            }
        }
        let storage = QStorage::from_data(Cow::Owned(bytes), &self.device, dtype)?;
        let qtensor = QTensor::new(storage, (rows, cols))?;
        match self.mode {
            ForwardMode::Fast => Ok(Linear::Quantized(QMatMul::from_qtensor(qtensor)?)),
            ForwardMode::Differentiable => Ok(Linear::Dense(qtensor.dequantize(&self.device)?)),
        }
    }

    /// A Q8_0 matrix for Kiln's kernel.
    fn q8_0(&mut self, info: &TensorInfo) -> Result<Q8_0Matrix, LlamaError> {
        let (rows, cols) = self.matrix_shape(info)?;
        let bytes = self.bytes(info)?;
        Q8_0Matrix::from_bytes(rows, cols, &bytes).map_err(|detail| LlamaError::ModelFile {
            path: self.path(),
            detail: format!("tensor `{}`: {detail}", info.name),
        })
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
        let attention_norm = self.dense(&name("attn_norm"))?;
        let ffn_norm = self.dense(&name("ffn_norm"))?;
        let host_norms = if uses_host_path(&self.device, self.mode) {
            HostNorms {
                attention: attention_norm.to_vec1::<f32>()?,
                ffn: ffn_norm.to_vec1::<f32>()?,
            }
        } else {
            HostNorms::default()
        };
        Ok(Layer {
            attention_norm,
            qkv: self.projection(&[name("attn_q"), name("attn_k"), name("attn_v")])?,
            attention_output: {
                let info = self.info(&name("attn_output"))?;
                self.linear(&[info])?
            },
            ffn_norm,
            gate_up: self.projection(&[name("ffn_gate"), name("ffn_up")])?,
            down: {
                let info = self.info(&name("ffn_down"))?;
                self.linear(&[info])?
            },
            host_norms,
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
