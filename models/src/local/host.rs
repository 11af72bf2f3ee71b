//! The forward pass on CPU in fast mode (Kiln's *host path*): every step on plain `f32` slices,
//! with Kiln's quantized kernels ([`super::q4_1`], [`super::q8_0`]) and attention
//! ([`super::attention`]), the KV cache in plain vectors.
//!
//! The candle-ops path costs a dozen tensor ops per layer (norm, narrow, RoPE, cache writes,
//! SiLU, products, residual adds), each allocating its result. Here a forward pass allocates its
//! scratch buffers once and reuses them for every layer; norms, RoPE, SiLU and residual adds are
//! loops over rows; keys and values are rotated straight into the cache. The arithmetic is that of
//! the candle path (same kernels, same formulas), so results agree with it to rounding.
//!
//! Measured with `ops/bench/llm --threads 1` on the 2-core AMD EPYC dev machine (loaded): this path
//! with the Q8_0 kernel decodes one sequence about 7% faster per CPU-second than the candle-ops
//! path it replaced, and about 1.1× llama.cpp. Decoding is bound by reading the weights (about
//! 96 MB per token for SmolLM2), so the 3× fewer instructions of the output projection show up
//! only partly in time.
//!
//! Weight types Kiln has no kernel for go through candle's quantized matmul on a tensor view of
//! the same slices ([`Linear::forward_host`]), so any Llama GGUF still runs here.

use candle_core::{Device, Tensor};

use super::attention::{Heads, SequenceView, causal_attention};
use super::llama::{
    CacheLayers, Embeddings, Layer, LlamaError, LlamaModel, LogitsWanted, Projection,
    SequenceInput, Span,
};

/// Per-forward scratch buffers, sized for `total` rows.
struct Scratch {
    hidden: Vec<f32>,
    normed: Vec<f32>,
    /// Fused projection outputs (Q|K|V, then gate|up).
    projected: Vec<f32>,
    queries: Vec<f32>,
    attended: Vec<f32>,
    /// A layer output before its residual add.
    delta: Vec<f32>,
    activated: Vec<f32>,
}

/// Runs `inputs` (already checked and reserved by `LlamaModel::prepare`, with `spans`) through the
/// model on the host; returns the logits each sequence asked for.
pub(super) fn forward(
    model: &LlamaModel,
    inputs: &mut [SequenceInput<'_>],
    spans: &[Span],
) -> Result<Vec<Vec<Vec<f32>>>, LlamaError> {
    forward_with(model, inputs, spans, None)
}

/// Branches of one sequence computed in one pass (see [`LlamaModel::forward_branches`]): per new
/// token, where its branch starts among the new tokens, and its position.
pub(super) struct Branches<'a> {
    pub(super) start: &'a [usize],
    pub(super) positions: &'a [usize],
}

/// [`forward`], or with `branches` (one input only) the new tokens as independent branches after
/// the same past.
pub(super) fn forward_with(
    model: &LlamaModel,
    inputs: &mut [SequenceInput<'_>],
    spans: &[Span],
    branches: Option<Branches<'_>>,
) -> Result<Vec<Vec<Vec<f32>>>, LlamaError> {
    let config = &model.config;
    let hidden_width = config.embedding_length;
    let total: usize = spans.iter().map(|span| span.len).sum();
    let qkv_width = (config.head_count + 2 * config.head_count_kv) * config.head_dim;
    let widest = qkv_width.max(2 * config.feed_forward_length);
    let mut scratch = Scratch {
        hidden: embed(model, inputs, total)?,
        normed: vec![0f32; total * hidden_width],
        projected: vec![0f32; total * widest],
        queries: vec![0f32; total * config.head_count * config.head_dim],
        attended: vec![0f32; total * config.head_count * config.head_dim],
        delta: vec![0f32; total * hidden_width],
        activated: vec![0f32; total * config.feed_forward_length],
    };
    let positions: Vec<usize> = match &branches {
        Some(branches) => branches.positions.to_vec(),
        None => spans
            .iter()
            .flat_map(|span| span.past..span.past + span.len)
            .collect(),
    };
    let branch_start = branches.as_ref().map(|branches| branches.start);
    for (index, layer) in model.layers.iter().enumerate() {
        layer_forward(
            model,
            layer,
            index,
            inputs,
            spans,
            &positions,
            branch_start,
            &mut scratch,
        )?;
    }
    for (input, span) in inputs.iter_mut().zip(spans) {
        input.cache.len = span.past + span.len;
    }
    logits(model, &scratch.hidden, inputs, spans)
}

/// The embedding rows of every new token, stacked.
fn embed(
    model: &LlamaModel,
    inputs: &[SequenceInput<'_>],
    total: usize,
) -> Result<Vec<f32>, LlamaError> {
    let ids = inputs.iter().flat_map(|input| input.tokens.iter().copied());
    let width = model.config.embedding_length;
    match &model.embeddings {
        Embeddings::Q8_0(matrix) => {
            let mut hidden = vec![0f32; total * width];
            for (id, row) in ids.zip(hidden.chunks_exact_mut(width)) {
                matrix.dequantize_row(id as usize, row);
            }
            Ok(hidden)
        }
        Embeddings::Dense(table) => {
            let ids = Tensor::from_vec(ids.collect::<Vec<u32>>(), total, &Device::Cpu)?;
            Ok(table.index_select(&ids, 0)?.flatten_all()?.to_vec1()?)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn layer_forward(
    model: &LlamaModel,
    layer: &Layer,
    index: usize,
    inputs: &mut [SequenceInput<'_>],
    spans: &[Span],
    positions: &[usize],
    branch_start: Option<&[usize]>,
    scratch: &mut Scratch,
) -> Result<(), LlamaError> {
    let config = &model.config;
    let eps = config.rms_epsilon as f32;
    let total = positions.len();
    let (heads, kv_heads, head_dim) = (config.head_count, config.head_count_kv, config.head_dim);
    let (q_width, kv_width) = (heads * head_dim, kv_heads * head_dim);
    let rope = Rope {
        cos: &model.rope_host.0,
        sin: &model.rope_host.1,
        head_dim,
    };

    // Attention block.
    rms_norm_rows(
        &scratch.hidden,
        &layer.host_norms.attention,
        eps,
        &mut scratch.normed,
    );
    let qkv = project(&layer.qkv, &scratch.normed, total, &mut scratch.projected)?;
    let qkv_width = q_width + 2 * kv_width;
    for (row, &position) in positions.iter().enumerate() {
        let fused = &qkv[row * qkv_width..(row + 1) * qkv_width];
        let queries = &mut scratch.queries[row * q_width..(row + 1) * q_width];
        queries.copy_from_slice(&fused[..q_width]);
        rope.apply(queries, position);
    }
    let mut row = 0;
    for (input, span) in inputs.iter_mut().zip(spans) {
        let CacheLayers::Host(layers) = &mut input.cache.layers else {
            panic!("a candle-path cache given to the host path");
        };
        let (keys, values) = &mut layers[index];
        for offset in 0..span.len {
            let fused = &qkv[row * qkv_width..(row + 1) * qkv_width];
            let slot = (span.past + offset) * kv_width..(span.past + offset + 1) * kv_width;
            let key = &mut keys[slot.clone()];
            key.copy_from_slice(&fused[q_width..q_width + kv_width]);
            rope.apply(key, positions[row]);
            values[slot].copy_from_slice(&fused[q_width + kv_width..]);
            row += 1;
        }
    }
    let views: Vec<SequenceView<'_>> = inputs
        .iter()
        .zip(spans)
        .map(|(input, span)| {
            let CacheLayers::Host(layers) = &input.cache.layers else {
                unreachable!("checked above");
            };
            let (keys, values) = &layers[index];
            let visible = (span.past + span.len) * kv_width;
            SequenceView {
                queries: &scratch.queries[span.start * q_width..(span.start + span.len) * q_width],
                keys: &keys[..visible],
                values: &values[..visible],
                past: span.past,
                new_tokens: span.len,
                branch_start,
            }
        })
        .collect();
    causal_attention(
        &views,
        Heads {
            heads,
            kv_heads,
            head_dim,
        },
        &mut scratch.attended,
    );
    layer
        .attention_output
        .forward_host(&scratch.attended, total, &mut scratch.delta)?;
    add_in_place(&mut scratch.hidden, &scratch.delta);

    // Feed-forward block.
    rms_norm_rows(
        &scratch.hidden,
        &layer.host_norms.ffn,
        eps,
        &mut scratch.normed,
    );
    let gate_up = project(
        &layer.gate_up,
        &scratch.normed,
        total,
        &mut scratch.projected,
    )?;
    let ffn = config.feed_forward_length;
    for (fused, out) in gate_up
        .chunks_exact(2 * ffn)
        .zip(scratch.activated.chunks_exact_mut(ffn))
    {
        let (gate, up) = fused.split_at(ffn);
        for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
            *o = silu(g) * u;
        }
    }
    layer
        .down
        .forward_host(&scratch.activated, total, &mut scratch.delta)?;
    add_in_place(&mut scratch.hidden, &scratch.delta);
    Ok(())
}

/// The outputs of a projection for `m` rows of `x`, each row its parts side by side (as the
/// fused weights produce them), in the front of `buffer`.
fn project<'b>(
    projection: &Projection,
    x: &[f32],
    m: usize,
    buffer: &'b mut [f32],
) -> Result<&'b [f32], LlamaError> {
    let width: usize = projection.widths.iter().sum();
    let out = &mut buffer[..m * width];
    if let [fused] = projection.parts.as_slice() {
        fused.forward_host(x, m, out)?;
        return Ok(out);
    }
    // Parts of different weight types: computed one by one, then interleaved by row.
    let mut start = 0;
    for (part, &part_width) in projection.parts.iter().zip(&projection.widths) {
        let mut piece = vec![0f32; m * part_width];
        part.forward_host(x, m, &mut piece)?;
        for (row, values) in piece.chunks_exact(part_width).enumerate() {
            out[row * width + start..row * width + start + part_width].copy_from_slice(values);
        }
        start += part_width;
    }
    Ok(out)
}

/// The logits each sequence asked for: the final norm and output projection of the wanted rows.
fn logits(
    model: &LlamaModel,
    hidden: &[f32],
    inputs: &[SequenceInput<'_>],
    spans: &[Span],
) -> Result<Vec<Vec<Vec<f32>>>, LlamaError> {
    let width = model.config.embedding_length;
    let mut rows = Vec::new();
    let mut counts = Vec::with_capacity(inputs.len());
    for (input, span) in inputs.iter().zip(spans) {
        let wanted = match input.logits {
            LogitsWanted::None => 0..0,
            LogitsWanted::Last if span.len == 0 => 0..0,
            LogitsWanted::Last => span.start + span.len - 1..span.start + span.len,
            LogitsWanted::All => span.start..span.start + span.len,
        };
        counts.push(wanted.len());
        rows.extend(wanted);
    }
    if rows.is_empty() {
        return Ok(counts.iter().map(|_| Vec::new()).collect());
    }
    let mut selected = Vec::with_capacity(rows.len() * width);
    for &row in &rows {
        selected.extend_from_slice(&hidden[row * width..(row + 1) * width]);
    }
    let mut normed = vec![0f32; selected.len()];
    rms_norm_rows(
        &selected,
        &model.output_norm_host,
        model.config.rms_epsilon as f32,
        &mut normed,
    );
    let vocab = model.config.vocab_size;
    let mut logits = vec![0f32; rows.len() * vocab];
    model
        .output
        .forward_host(&normed, rows.len(), &mut logits)?;
    let mut all = logits.chunks_exact(vocab).map(<[f32]>::to_vec);
    Ok(counts
        .iter()
        .map(|&count| all.by_ref().take(count).collect())
        .collect())
}

/// Interleaved RoPE from `(context, head_dim / 2)` cos/sin tables (as candle's `rope_i`).
struct Rope<'a> {
    cos: &'a [f32],
    sin: &'a [f32],
    head_dim: usize,
}

impl Rope<'_> {
    /// Rotates every head of `x` (one row of `heads × head_dim`) in place for `position`: pairs
    /// `(x₀, x₁)` become `(x₀·cos − x₁·sin, x₀·sin + x₁·cos)`.
    fn apply(&self, x: &mut [f32], position: usize) {
        let half = self.head_dim / 2;
        let cos = &self.cos[position * half..(position + 1) * half];
        let sin = &self.sin[position * half..(position + 1) * half];
        for head in x.chunks_exact_mut(self.head_dim) {
            for ((pair, &c), &s) in head.chunks_exact_mut(2).zip(cos).zip(sin) {
                let (x0, x1) = (pair[0], pair[1]);
                pair[0] = x0 * c - x1 * s;
                pair[1] = x0 * s + x1 * c;
            }
        }
    }
}

/// RMS norm of each row of `x` (rows as long as `weight`), scaled by `weight`, into `out`; the
/// formula of candle's `rms_norm`: `x / sqrt(mean(x²) + eps) · weight`.
fn rms_norm_rows(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let width = weight.len();
    for (row, out_row) in x.chunks_exact(width).zip(out.chunks_exact_mut(width)) {
        let mean_square = sum_of_squares(row) / width as f32;
        let scale = 1.0 / (mean_square + eps).sqrt();
        for ((o, &v), &w) in out_row.iter_mut().zip(row).zip(weight) {
            *o = v * scale * w;
        }
    }
}

/// Σx², with eight independent accumulators so the compiler vectorizes it.
fn sum_of_squares(x: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
    for chunk in chunks {
        for lane in 0..8 {
            lanes[lane] += chunk[lane] * chunk[lane];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

fn add_in_place(x: &mut [f32], delta: &[f32]) {
    for (a, &b) in x.iter_mut().zip(delta) {
        *a += b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_matches_candle() {
        let x: Vec<f32> = (0..2 * 24).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let weight: Vec<f32> = (0..24).map(|i| 0.5 + i as f32 * 0.1).collect();
        let mut out = vec![0f32; x.len()];
        rms_norm_rows(&x, &weight, 1e-5, &mut out);
        let want = candle_nn::ops::rms_norm(
            &Tensor::from_slice(&x, (2, 24), &Device::Cpu).unwrap(),
            &Tensor::from_slice(&weight, 24, &Device::Cpu).unwrap(),
            1e-5,
        )
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
        for (g, w) in out.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "{g} vs {w}");
        }
    }

    #[test]
    fn rope_matches_candle() {
        let (heads, head_dim, context) = (3, 8, 5);
        let half = head_dim / 2;
        let cos: Vec<f32> = (0..context * half)
            .map(|i| (i as f32 * 0.3).cos())
            .collect();
        let sin: Vec<f32> = (0..context * half)
            .map(|i| (i as f32 * 0.3).sin())
            .collect();
        let x: Vec<f32> = (0..heads * head_dim)
            .map(|i| i as f32 * 0.1 - 1.0)
            .collect();
        let position = 3;
        let mut got = x.clone();
        Rope {
            cos: &cos,
            sin: &sin,
            head_dim,
        }
        .apply(&mut got, position);
        let device = Device::Cpu;
        let want = candle_nn::rotary_emb::rope_i(
            &Tensor::from_slice(&x, (1, heads, 1, head_dim), &device).unwrap(),
            &Tensor::from_slice(&cos[position * half..][..half], (1, half), &device).unwrap(),
            &Tensor::from_slice(&sin[position * half..][..half], (1, half), &device).unwrap(),
        )
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-6, "{g} vs {w}");
        }
    }

    #[test]
    fn silu_matches_candle() {
        let x: Vec<f32> = (-20..20).map(|i| i as f32 * 0.45).collect();
        let want = candle_nn::ops::silu(&Tensor::from_slice(&x, x.len(), &Device::Cpu).unwrap())
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for (v, w) in x.iter().zip(&want) {
            assert!((silu(*v) - w).abs() <= 1e-6 * (1.0 + w.abs()));
        }
    }
}
