//! Causal attention over a batch of sequences of different lengths, each with its own KV cache,
//! as one CPU pass on raw slices.
//!
//! The device-independent path in [`super::llama`] builds attention from candle ops (a dozen ops
//! per sequence per layer: narrow, permute, matmul, mask, softmax, …). On a small model that is
//! mostly per-op overhead, so on CPU the whole layer's attention for every sequence in the batch
//! is done here in one call, split across candle's thread pool by (token, head).
//!
//! Grouped-query attention is handled by index arithmetic (query head `h` reads KV head
//! `h / (heads / kv_heads)`, as llama.cpp does), so KV heads are never copied.

/// One sequence's view of the batch: its new queries and its whole KV cache (past and new rows).
#[derive(Debug, Clone, Copy)]
pub struct SequenceView<'a> {
    /// `new_tokens × heads × head_dim` queries, after RoPE.
    pub queries: &'a [f32],
    /// `(past + new_tokens) × kv_heads × head_dim` keys.
    pub keys: &'a [f32],
    /// `(past + new_tokens) × kv_heads × head_dim` values.
    pub values: &'a [f32],
    /// Tokens already in the cache before this batch.
    pub past: usize,
    /// Tokens of this sequence in the batch.
    pub new_tokens: usize,
    /// Branches (candidate scoring): for each new token, the index among the new tokens where
    /// its branch starts. A token then sees the past and its own branch up to itself, never the
    /// other branches. `None`: one causal sequence (every branch starts at 0).
    pub branch_start: Option<&'a [usize]>,
}

/// Attention geometry.
#[derive(Debug, Clone, Copy)]
pub struct Heads {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

/// Writes `softmax(q·Kᵀ·scale + causal mask)·V` for every new token of every sequence into
/// `out` (`Σ new_tokens × heads × head_dim`, sequences in order).
///
/// A work item is one (token, KV head): the query heads that share the KV head are scored
/// together, so each cached key and value row is read once per group rather than once per head.
pub fn causal_attention(sequences: &[SequenceView<'_>], geometry: Heads, out: &mut [f32]) {
    let Heads {
        heads, kv_heads, ..
    } = geometry;
    // (sequence index, output row, token within the sequence, KV head) of every work item.
    let mut items = Vec::new();
    let mut row = 0;
    for (index, sequence) in sequences.iter().enumerate() {
        for token in 0..sequence.new_tokens {
            for kv_head in 0..kv_heads {
                items.push((
                    index as u32,
                    (row + token) as u32,
                    token as u32,
                    kv_head as u32,
                ));
            }
        }
        row += sequence.new_tokens;
    }
    assert_eq!(
        out.len(),
        row * heads * geometry.head_dim,
        "attention output size"
    );
    let out_ptr = SharedOut(out.as_mut_ptr());
    let pool = candle_core::utils::barrier_pool();
    pool.execute_chunked(items.len(), |range| {
        let out_ptr = &out_ptr;
        let mut scratch = Vec::new();
        for &(index, out_row, token, kv_head) in &items[range] {
            let sequence = &sequences[index as usize];
            let group = geometry.heads / geometry.kv_heads;
            let width = group * geometry.head_dim;
            let start = out_row as usize * heads * geometry.head_dim + kv_head as usize * width;
            // SAFETY: each (row, KV head) slice of `out` belongs to exactly one work item.
            let out = unsafe { std::slice::from_raw_parts_mut(out_ptr.0.add(start), width) };
            attend_group(
                sequence,
                geometry,
                token as usize,
                kv_head as usize,
                &mut scratch,
                out,
            );
        }
    });
}

/// The query heads of `kv_head`'s group for one new token, against the cache rows it may see;
/// writes their outputs (adjacent in `out`).
fn attend_group(
    sequence: &SequenceView<'_>,
    geometry: Heads,
    token: usize,
    kv_head: usize,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    let Heads {
        heads,
        kv_heads,
        head_dim,
    } = geometry;
    let group = heads / kv_heads;
    let scale = 1.0 / (head_dim as f32).sqrt();
    let own_start = sequence.branch_start.map_or(0, |starts| starts[token]);
    let past = sequence.past;
    // The rows this token sees: the whole past, then its branch up to itself.
    let rows = (0..past).chain(past + own_start..=past + token);
    let visible = past + token + 1 - own_start;
    let row_len = kv_heads * head_dim;
    let offset = kv_head * head_dim;
    let query_start = (token * heads + kv_head * group) * head_dim;
    let queries = &sequence.queries[query_start..query_start + group * head_dim];
    // scores[g * visible + position]
    scores.clear();
    scores.resize(group * visible, 0.0);
    for (position, row) in rows.clone().enumerate() {
        let start = row * row_len + offset;
        let key = &sequence.keys[start..start + head_dim];
        for (g, query) in queries.chunks_exact(head_dim).enumerate() {
            scores[g * visible + position] = dot(query, key) * scale;
        }
    }
    for g in 0..group {
        softmax_in_place(&mut scores[g * visible..(g + 1) * visible]);
    }
    out.fill(0.0);
    for (position, row) in rows.enumerate() {
        let start = row * row_len + offset;
        let value = &sequence.values[start..start + head_dim];
        for (g, output) in out.chunks_exact_mut(head_dim).enumerate() {
            let weight = scores[g * visible + position];
            for (o, v) in output.iter_mut().zip(value) {
                *o += weight * v;
            }
        }
    }
}

/// Replaces scores by their softmax.
fn softmax_in_place(scores: &mut [f32]) {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut total = 0f32;
    for score in scores.iter_mut() {
        *score = (*score - max).exp();
        total += *score;
    }
    let inverse = 1.0 / total;
    for score in scores.iter_mut() {
        *score *= inverse;
    }
}

/// A dot product written with eight independent accumulators so the compiler vectorizes it.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let chunks_a = a.chunks_exact(8);
    let chunks_b = b.chunks_exact(8);
    let tail: f32 = chunks_a
        .remainder()
        .iter()
        .zip(chunks_b.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (ca, cb) in chunks_a.zip(chunks_b) {
        for lane in 0..8 {
            lanes[lane] += ca[lane] * cb[lane];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

struct SharedOut(*mut f32);
unsafe impl Sync for SharedOut {}
unsafe impl Send for SharedOut {}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    /// Straightforward attention for one sequence, in f64.
    fn reference(view: &SequenceView<'_>, geometry: Heads) -> Vec<f32> {
        let Heads {
            heads,
            kv_heads,
            head_dim,
        } = geometry;
        let mut out = Vec::new();
        for token in 0..view.new_tokens {
            for head in 0..heads {
                let kv = head / (heads / kv_heads);
                let q = &view.queries[(token * heads + head) * head_dim..][..head_dim];
                let visible = view.past + token + 1;
                let scores: Vec<f64> = (0..visible)
                    .map(|p| {
                        let k = &view.keys[(p * kv_heads + kv) * head_dim..][..head_dim];
                        q.iter().zip(k).map(|(a, b)| f64::from(a * b)).sum::<f64>()
                            / (head_dim as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::MIN, f64::max);
                let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f64 = weights.iter().sum();
                for d in 0..head_dim {
                    let value: f64 = (0..visible)
                        .map(|p| {
                            weights[p] * f64::from(view.values[(p * kv_heads + kv) * head_dim + d])
                        })
                        .sum();
                    out.push((value / total) as f32);
                }
            }
        }
        out
    }

    #[test]
    fn batched_ragged_attention_matches_the_reference() {
        let geometry = Heads {
            heads: 6,
            kv_heads: 2,
            head_dim: 16,
        };
        let mut rng = StdRng::seed_from_u64(1);
        let mut random =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect() };
        // (past, new): a decode step, a prefill and a prefill continuing a cache.
        let shapes = [(5, 1), (0, 4), (3, 2)];
        let data: Vec<_> = shapes
            .iter()
            .map(|&(past, new)| {
                let total = past + new;
                (
                    random(new * 6 * 16),
                    random(total * 2 * 16),
                    random(total * 2 * 16),
                    past,
                    new,
                )
            })
            .collect();
        let views: Vec<_> = data
            .iter()
            .map(|(q, k, v, past, new)| SequenceView {
                queries: q,
                keys: k,
                values: v,
                past: *past,
                new_tokens: *new,
                branch_start: None,
            })
            .collect();
        let mut out = vec![0f32; 7 * 6 * 16];
        causal_attention(&views, geometry, &mut out);
        let want: Vec<f32> = views.iter().flat_map(|v| reference(v, geometry)).collect();
        for (g, w) in out.iter().zip(&want) {
            assert!((g - w).abs() < 1e-5, "{g} vs {w}");
        }
    }
}
