//! Kiln's own CPU matrix product for Q8_0 weights (SmolLM2's token embedding, which is also its
//! output projection: 49152 × 576, the largest matrix of the model).
//!
//! candle has an AVX2 Q8_0 dot product, but it re-checks the CPU features and converts both f16
//! scales in software on every block, and it computes one weight row at a time. This module does
//! what llama.cpp does: the activations are quantized once per call to Q8_0 blocks (32 `i8`
//! values and a scale `d = max|x| / 127` rounded to f16, values rounded to nearest with ties to
//! even), and each weight block contributes `dₓ·d_y·Σ(qₓ·q_y)`. Rows are split across candle's
//! CPU thread pool by [`super::rowwise::matmul_rows`], as for [`super::q4_1`].
//!
//! The dot product uses AVX2, FMA and F16C when the CPU has them (checked once per call) and a
//! portable loop otherwise. Rows can also be dequantized one at a time
//! ([`Q8_0Matrix::dequantize_row`]), which is how the token embedding is read without keeping an
//! f32 copy of the whole table.

use half::f16;

use super::q4_1::round_ties_even;
use super::rowwise::{Dots, SharedOut, matmul_rows};

/// Elements per Q8_0 block.
pub const BLOCK_LEN: usize = 32;
/// Bytes per Q8_0 block: f16 `d`, 32 `i8` values.
pub const BLOCK_BYTES: usize = 34;

/// One Q8_0 weight block as stored in GGUF files: `x[i] = d * q[i]`.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
struct BlockQ8_0 {
    d: f16,
    qs: [i8; BLOCK_LEN],
}

/// One block of quantized activations. `d` is the f16-rounded scale, kept as f32 so the inner loop
/// converts only the weight's scale.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub(super) struct ActivationQ8_0 {
    d: f32,
    qs: [i8; BLOCK_LEN],
}

/// A `rows × cols` Q8_0 weight matrix (one output feature per row, as in GGUF files).
#[derive(Clone)]
pub struct Q8_0Matrix {
    rows: usize,
    cols: usize,
    blocks: Vec<BlockQ8_0>,
}

impl std::fmt::Debug for Q8_0Matrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Q8_0Matrix")
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .finish_non_exhaustive()
    }
}

impl Q8_0Matrix {
    /// The matrix stored in `bytes` (GGUF tensor data), or a message saying why the sizes do not
    /// agree.
    pub fn from_bytes(rows: usize, cols: usize, bytes: &[u8]) -> Result<Q8_0Matrix, String> {
        if !cols.is_multiple_of(BLOCK_LEN) {
            return Err(format!(
                "a Q8_0 row of {cols} values is not a whole number of {BLOCK_LEN}-value blocks"
            ));
        }
        let expected = rows * cols / BLOCK_LEN * BLOCK_BYTES;
        if bytes.len() != expected {
            return Err(format!(
                "a {rows}x{cols} Q8_0 matrix needs {expected} bytes, found {}",
                bytes.len()
            ));
        }
        let blocks = bytes
            .chunks_exact(BLOCK_BYTES)
            .map(|chunk| BlockQ8_0 {
                d: f16::from_le_bytes([chunk[0], chunk[1]]),
                qs: std::array::from_fn(|i| chunk[2 + i] as i8),
            })
            .collect();
        Ok(Q8_0Matrix { rows, cols, blocks })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Row `row` as f32 values, written to `out` (`cols` long).
    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) {
        assert_eq!(out.len(), self.cols, "dequantized row size mismatch");
        for (block, values) in self.row(row).iter().zip(out.chunks_exact_mut(BLOCK_LEN)) {
            let d = block.d.to_f32();
            for (value, &q) in values.iter_mut().zip(&block.qs) {
                *value = f32::from(q) * d;
            }
        }
    }

    fn blocks_per_row(&self) -> usize {
        self.cols / BLOCK_LEN
    }

    fn row(&self, row: usize) -> &[BlockQ8_0] {
        let per_row = self.blocks_per_row();
        &self.blocks[row * per_row..(row + 1) * per_row]
    }

    /// `x · Wᵀ` for `x` of `m × cols` (row-major): returns `m × rows`. Runs on candle's CPU pool.
    pub fn matmul_t(&self, x: &[f32], m: usize) -> Vec<f32> {
        let mut out = vec![0f32; m * self.rows];
        self.matmul_t_into(x, m, &mut out);
        out
    }

    /// [`Q8_0Matrix::matmul_t`] into `out` (`m × rows`, overwritten).
    pub fn matmul_t_into(&self, x: &[f32], m: usize, out: &mut [f32]) {
        assert_eq!(x.len(), m * self.cols, "activation size mismatch");
        assert_eq!(out.len(), m * self.rows, "output size mismatch");
        let per_row = self.blocks_per_row();
        let quantized = quantize_rows(x, self.cols);
        let activation_row = |row: usize| &quantized[row * per_row..(row + 1) * per_row];
        let kernel = Kernel::detect();
        let row = |col: usize| self.row(col);
        matmul_rows(
            self.rows,
            m,
            SharedOut::new(out),
            Dots {
                single: |col, r| kernel.dot(row(col), activation_row(r)),
                four_rows: |col, r| {
                    kernel.dot4(
                        row(col),
                        [
                            activation_row(r),
                            activation_row(r + 1),
                            activation_row(r + 2),
                            activation_row(r + 3),
                        ],
                    )
                },
            },
        );
    }
}

/// The dot-product implementation this CPU supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Kernel {
    fn detect() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
                && std::arch::is_x86_feature_detected!("f16c")
            {
                return Kernel::Avx2;
            }
        }
        Kernel::Portable
    }

    fn dot(self, xs: &[BlockQ8_0], ys: &[ActivationQ8_0]) -> f32 {
        match self {
            Kernel::Portable => dot_portable(xs, ys),
            // SAFETY: `detect` checked the CPU features.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe { avx2::dot(xs, ys) },
        }
    }

    /// One weight row against four activation rows (each weight block is loaded once).
    fn dot4(self, xs: &[BlockQ8_0], ys: [&[ActivationQ8_0]; 4]) -> [f32; 4] {
        match self {
            Kernel::Portable => ys.map(|y| dot_portable(xs, y)),
            // SAFETY: `detect` checked the CPU features.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe { avx2::dot4(xs, ys) },
        }
    }
}

/// Σ over blocks of `dₓ·d_y·Σ(qₓ·q_y)`, without SIMD intrinsics.
fn dot_portable(xs: &[BlockQ8_0], ys: &[ActivationQ8_0]) -> f32 {
    let mut sum = 0f32;
    for (x, y) in xs.iter().zip(ys) {
        let integer: i32 =
            x.qs.iter()
                .zip(&y.qs)
                .map(|(&a, &b)| i32::from(a) * i32::from(b))
                .sum();
        sum += integer as f32 * (x.d.to_f32() * y.d);
    }
    sum
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{ActivationQ8_0, BlockQ8_0};

    /// The AVX2 form of [`super::dot_portable`], as ggml computes it: `|qₓ|` times `q_y` with
    /// `qₓ`'s sign (`maddubs` needs one unsigned operand), summed to 8 lanes of i32 and
    /// accumulated in f32 with the block's scale. Accumulates in the same order as [`dot4`], so a
    /// row gets the same bits batched or alone.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot(xs: &[BlockQ8_0], ys: &[ActivationQ8_0]) -> f32 {
        let mut accumulator = _mm256_setzero_ps();
        for (x, y) in xs.iter().zip(ys) {
            let (magnitudes, x_scale) = unsafe { load_weights(x) };
            let signs = unsafe { _mm256_loadu_si256(x.qs.as_ptr().cast()) };
            let products = unsafe { block_product(magnitudes, signs, y) };
            let scale = _mm256_set1_ps(x_scale * y.d);
            accumulator = _mm256_fmadd_ps(scale, products, accumulator);
        }
        horizontal_sum(accumulator)
    }

    /// [`dot`] of one weight row with four activation rows.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot4(xs: &[BlockQ8_0], ys: [&[ActivationQ8_0]; 4]) -> [f32; 4] {
        let mut accumulators = [_mm256_setzero_ps(); 4];
        for (index, x) in xs.iter().enumerate() {
            let (magnitudes, x_scale) = unsafe { load_weights(x) };
            let signs = unsafe { _mm256_loadu_si256(x.qs.as_ptr().cast()) };
            for row in 0..4 {
                let y = unsafe { ys[row].get_unchecked(index) };
                let products = unsafe { block_product(magnitudes, signs, y) };
                let scale = _mm256_set1_ps(x_scale * y.d);
                accumulators[row] = _mm256_fmadd_ps(scale, products, accumulators[row]);
            }
        }
        let mut out = [0f32; 4];
        for row in 0..4 {
            out[row] = horizontal_sum(accumulators[row]);
        }
        out
    }

    /// `|qₓ|` as unsigned bytes and `dₓ` as f32.
    #[target_feature(enable = "avx2,f16c")]
    #[inline]
    unsafe fn load_weights(x: &BlockQ8_0) -> (__m256i, f32) {
        let values = unsafe { _mm256_loadu_si256(x.qs.as_ptr().cast()) };
        let bits = x.d.to_bits();
        let scale = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))));
        (_mm256_sign_epi8(values, values), scale)
    }

    /// Σ qₓ·q_y of a block pair, as 8 f32 partial sums.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn block_product(magnitudes: __m256i, signs: __m256i, y: &ActivationQ8_0) -> __m256 {
        let activations = unsafe { _mm256_loadu_si256(y.qs.as_ptr().cast()) };
        let signed = _mm256_sign_epi8(activations, signs);
        let pairs = _mm256_maddubs_epi16(magnitudes, signed);
        _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    fn horizontal_sum(v: __m256) -> f32 {
        let quad = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
        let single = _mm_add_ss(pair, _mm_movehdup_ps(pair));
        _mm_cvtss_f32(single)
    }
}

/// Quantizes each row of `x` (rows of `cols` values) to Q8_0 blocks as ggml does: `d = max|x| /
/// 127` rounded to f16, `q = round(x · 127 / max|x|)` with ties to even.
pub(super) fn quantize_rows(x: &[f32], cols: usize) -> Vec<ActivationQ8_0> {
    debug_assert!(cols.is_multiple_of(BLOCK_LEN));
    x.chunks_exact(BLOCK_LEN)
        .map(|chunk| {
            let amax = chunk.iter().fold(0f32, |max, v| max.max(v.abs()));
            let inverse = if amax == 0.0 { 0.0 } else { 127.0 / amax };
            ActivationQ8_0 {
                d: f16::from_f32(amax / 127.0).to_f32(),
                qs: std::array::from_fn(|i| round_ties_even(chunk[i] * inverse) as i8),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    /// A random Q8_0 matrix, as bytes in the GGUF layout.
    fn random_matrix(rows: usize, cols: usize, rng: &mut StdRng) -> Q8_0Matrix {
        let mut bytes = Vec::new();
        for _ in 0..rows * cols / BLOCK_LEN {
            bytes.extend_from_slice(&f16::from_f32(rng.gen_range(0.0005..0.01)).to_le_bytes());
            bytes.extend((0..BLOCK_LEN).map(|_| rng.gen_range(-127i8..=127) as u8));
        }
        Q8_0Matrix::from_bytes(rows, cols, &bytes).unwrap()
    }

    fn dequantized(matrix: &Q8_0Matrix) -> Vec<f32> {
        let mut out = vec![0f32; matrix.rows() * matrix.cols()];
        for (row, values) in out.chunks_exact_mut(matrix.cols()).enumerate() {
            matrix.dequantize_row(row, values);
        }
        out
    }

    #[test]
    fn matmul_agrees_with_the_dequantized_product() {
        let mut rng = StdRng::seed_from_u64(17);
        let (rows, cols, m) = (41, 128, 6);
        let matrix = random_matrix(rows, cols, &mut rng);
        let x: Vec<f32> = (0..m * cols).map(|_| rng.gen_range(-2.0..2.0)).collect();
        let got = matrix.matmul_t(&x, m);
        let weights = dequantized(&matrix);
        for i in 0..m {
            for j in 0..rows {
                let row = &weights[j * cols..(j + 1) * cols];
                let want: f64 = (0..cols)
                    .map(|c| f64::from(x[i * cols + c]) * f64::from(row[c]))
                    .sum();
                // Rounding an activation to 8 bits moves it by at most half a step (amax / 127 / 2
                // of its block); the f16 scale adds a relative 2⁻¹¹.
                let bound: f64 = (0..cols)
                    .map(|c| {
                        let block = &x[i * cols + c / BLOCK_LEN * BLOCK_LEN..][..BLOCK_LEN];
                        let step = block.iter().fold(0f32, |a, v| a.max(v.abs())) / 127.0;
                        f64::from(row[c].abs() * (step / 2.0 + x[i * cols + c].abs() / 1024.0))
                    })
                    .sum();
                let got = f64::from(got[i * rows + j]);
                assert!(
                    (got - want).abs() <= bound + 1e-4,
                    "{got} vs {want} (bound {bound})"
                );
            }
        }
    }

    #[test]
    fn simd_and_portable_dot_products_agree() {
        let mut rng = StdRng::seed_from_u64(19);
        let matrix = random_matrix(4, 576, &mut rng);
        let x: Vec<f32> = (0..576).map(|_| rng.gen_range(-3.0..3.0)).collect();
        let quantized = quantize_rows(&x, 576);
        for row in 0..4 {
            let simd = Kernel::detect().dot(matrix.row(row), &quantized);
            let portable = dot_portable(matrix.row(row), &quantized);
            assert!(
                (simd - portable).abs() <= 1e-4 * (1.0 + portable.abs()),
                "{simd} vs {portable}"
            );
        }
    }

    #[test]
    fn each_row_of_a_batch_gets_the_same_result_as_alone() {
        let mut rng = StdRng::seed_from_u64(23);
        let matrix = random_matrix(33, 64, &mut rng);
        let x: Vec<f32> = (0..7 * 64).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let batched = matrix.matmul_t(&x, 7);
        for i in 0..7 {
            let alone = matrix.matmul_t(&x[i * 64..(i + 1) * 64], 1);
            assert_eq!(&batched[i * 33..(i + 1) * 33], alone.as_slice());
        }
    }

    #[test]
    fn quantization_matches_ggml() {
        // One block with amax 31.75: d = 0.25, q = round(4x), ties to even.
        let mut x = [0f32; BLOCK_LEN];
        x[0] = 31.75;
        x[1] = 0.125; // 0.5 → 0
        x[2] = 0.375; // 1.5 → 2
        x[3] = -0.625; // -2.5 → -2
        x[4] = -31.0;
        let block = &quantize_rows(&x, BLOCK_LEN)[0];
        assert_eq!(&block.qs[..5], &[127, 0, 2, -2, -124]);
        assert_eq!(block.d, 0.25);
        let zero = &quantize_rows(&[0f32; BLOCK_LEN], BLOCK_LEN)[0];
        assert_eq!((zero.d, zero.qs), (0.0, [0; BLOCK_LEN]));
    }

    #[test]
    fn sizes_that_do_not_match_are_refused() {
        assert!(Q8_0Matrix::from_bytes(2, 30, &[0; 64]).is_err());
        let error = Q8_0Matrix::from_bytes(2, 32, &[0; 67]).unwrap_err();
        assert!(error.contains("needs 68 bytes"), "{error}");
    }
}
