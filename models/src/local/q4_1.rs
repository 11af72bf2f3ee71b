//! Kiln's own CPU matrix product for Q4_1 weights (SmolLM2's quantization).
//!
//! candle's quantized matmul has SIMD dot products for Q4_0, Q8_0 and the K-quants, but Q4_1
//! falls back to a scalar loop, which made single-sequence decoding several times slower than
//! llama.cpp on this model. This module does what llama.cpp does for Q4_1: the activations are
//! quantized to Q8_1 blocks (32 `i8` values, a scale `d` and `s = d * Σq`, both rounded to f16 as
//! in ggml), and each weight block contributes `dₓ·d_y·Σ(q₄·q₈) + mₓ·s_y`. The dot product uses AVX2
//! and FMA when the CPU has them (checked at run time) and a portable loop otherwise.
//!
//! Rows are split across candle's CPU thread pool by [`super::rowwise::matmul_rows`]: each weight
//! row is read once per call and dotted with every activation row while it is in L1.
//!
//! The product runs as a candle [`CustomOp1`] without a backward pass: it is for inference. The
//! differentiable path dequantizes the same weights ([`Q4_1Matrix::dequantize`]) and uses a
//! plain matmul.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use half::f16;

use super::rowwise::{Dots, SharedOut, matmul_rows};

/// Elements per Q4_1 (and Q8_1) block.
pub const BLOCK_LEN: usize = 32;
/// Bytes per Q4_1 block: f16 `d`, f16 `m`, 16 bytes of nibbles.
pub const BLOCK_BYTES: usize = 20;

/// One Q4_1 block as stored in GGUF files: `x[i] = d * q[i] + m`, `q[i]` in `0..16`, element `j`
/// in the low nibble of byte `j` and element `j + 16` in its high nibble.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
struct BlockQ4_1 {
    d: f16,
    m: f16,
    qs: [u8; 16],
}

/// One block of quantized activations: `x[i] ≈ d * q[i]`, `s = d * Σq[i]` (`d` and `s` hold
/// f16-rounded values, as ggml stores them).
#[derive(Debug, Clone, Copy)]
#[repr(C)]
struct BlockQ8_1 {
    d: f32,
    s: f32,
    qs: [i8; 32],
}

/// A `rows × cols` Q4_1 weight matrix (one output feature per row, as in GGUF files).
#[derive(Clone)]
pub struct Q4_1Matrix {
    rows: usize,
    cols: usize,
    blocks: Vec<BlockQ4_1>,
}

impl std::fmt::Debug for Q4_1Matrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Q4_1Matrix")
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .finish_non_exhaustive()
    }
}

impl Q4_1Matrix {
    /// The matrix stored in `bytes` (GGUF tensor data), or a message saying why the sizes do not
    /// agree.
    pub fn from_bytes(rows: usize, cols: usize, bytes: &[u8]) -> Result<Q4_1Matrix, String> {
        if !cols.is_multiple_of(BLOCK_LEN) {
            return Err(format!(
                "a Q4_1 row of {cols} values is not a whole number of {BLOCK_LEN}-value blocks"
            ));
        }
        let expected = rows * cols / BLOCK_LEN * BLOCK_BYTES;
        if bytes.len() != expected {
            return Err(format!(
                "a {rows}x{cols} Q4_1 matrix needs {expected} bytes, found {}",
                bytes.len()
            ));
        }
        let blocks = bytes
            .chunks_exact(BLOCK_BYTES)
            .map(|chunk| BlockQ4_1 {
                d: f16::from_le_bytes([chunk[0], chunk[1]]),
                m: f16::from_le_bytes([chunk[2], chunk[3]]),
                qs: chunk[4..20].try_into().expect("20-byte block"),
            })
            .collect();
        Ok(Q4_1Matrix { rows, cols, blocks })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The matrix as f32 values, row-major (for the differentiable path and for tests).
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.rows * self.cols);
        for block in &self.blocks {
            let (d, m) = (block.d.to_f32(), block.m.to_f32());
            let mut values = [0f32; BLOCK_LEN];
            for (j, byte) in block.qs.iter().enumerate() {
                values[j] = f32::from(byte & 0x0F) * d + m;
                values[j + 16] = f32::from(byte >> 4) * d + m;
            }
            out.extend_from_slice(&values);
        }
        out
    }

    fn blocks_per_row(&self) -> usize {
        self.cols / BLOCK_LEN
    }

    fn row(&self, row: usize) -> &[BlockQ4_1] {
        let per_row = self.blocks_per_row();
        &self.blocks[row * per_row..(row + 1) * per_row]
    }

    /// `x · Wᵀ` for `x` of `m × cols` (row-major): returns `m × rows`. Runs on candle's CPU pool.
    pub fn matmul_t(&self, x: &[f32], m: usize) -> Vec<f32> {
        let mut out = vec![0f32; m * self.rows];
        self.matmul_t_into(x, m, &mut out);
        out
    }

    /// [`Q4_1Matrix::matmul_t`] into `out` (`m × rows`, overwritten).
    pub fn matmul_t_into(&self, x: &[f32], m: usize, out: &mut [f32]) {
        assert_eq!(x.len(), m * self.cols, "activation size mismatch");
        assert_eq!(out.len(), m * self.rows, "output size mismatch");
        let per_row = self.blocks_per_row();
        let quantized = quantize_rows_q8_1(x, m, self.cols);
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

    fn dot(self, xs: &[BlockQ4_1], ys: &[BlockQ8_1]) -> f32 {
        match self {
            Kernel::Portable => dot_portable(xs, ys),
            // SAFETY: `detect` checked the CPU features.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe { avx2::dot(xs, ys) },
        }
    }

    /// One weight row against four activation rows (the weights are unpacked once).
    fn dot4(self, xs: &[BlockQ4_1], ys: [&[BlockQ8_1]; 4]) -> [f32; 4] {
        match self {
            Kernel::Portable => ys.map(|y| dot_portable(xs, y)),
            // SAFETY: `detect` checked the CPU features.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe { avx2::dot4(xs, ys) },
        }
    }
}

/// Σ over blocks of `dₓ·d_y·Σ(q₄·q₈) + mₓ·s_y`, without SIMD intrinsics.
fn dot_portable(xs: &[BlockQ4_1], ys: &[BlockQ8_1]) -> f32 {
    let mut sum = 0f32;
    for (x, y) in xs.iter().zip(ys) {
        let mut integer = 0i32;
        for (j, byte) in x.qs.iter().enumerate() {
            integer += i32::from(byte & 0x0F) * i32::from(y.qs[j]);
            integer += i32::from(byte >> 4) * i32::from(y.qs[j + 16]);
        }
        sum += integer as f32 * (x.d.to_f32() * y.d) + x.m.to_f32() * y.s;
    }
    sum
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{BlockQ4_1, BlockQ8_1};

    /// The AVX2 form of [`super::dot_portable`]: nibbles are widened to 32 unsigned bytes,
    /// multiplied with the signed activations by `maddubs` (no saturation: 2·15·127 < 2¹⁵), summed
    /// to 8 lanes of i32 and accumulated in f32 with the block's scale. `[dₓ, mₓ]` (adjacent f16)
    /// and `[d_y, s_y]` (adjacent f32) are each loaded and converted once. The accumulation order
    /// is exactly that of [`dot4`], so a row gets the same bits batched or alone.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot(xs: &[BlockQ4_1], ys: &[BlockQ8_1]) -> f32 {
        let mut accumulator = _mm256_setzero_ps();
        let mut offsets = _mm_setzero_ps();
        for (x, y) in xs.iter().zip(ys) {
            let weights = unsafe { unpack(x) };
            let x_scales = unsafe { scales_of(x) };
            let (products, scales) = unsafe { block_product(weights, x_scales, y) };
            accumulator = _mm256_fmadd_ps(_mm256_broadcastss_ps(scales), products, accumulator);
            offsets = _mm_add_ps(offsets, scales);
        }
        finish(accumulator, offsets)
    }

    /// [`dot`] of one weight row with four activation rows, unpacking each weight block once.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot4(xs: &[BlockQ4_1], ys: [&[BlockQ8_1]; 4]) -> [f32; 4] {
        let mut accumulators = [_mm256_setzero_ps(); 4];
        let mut offsets = [_mm_setzero_ps(); 4];
        for (index, x) in xs.iter().enumerate() {
            let weights = unsafe { unpack(x) };
            let x_scales = unsafe { scales_of(x) };
            for row in 0..4 {
                let y = unsafe { ys[row].get_unchecked(index) };
                let (products, scales) = unsafe { block_product(weights, x_scales, y) };
                accumulators[row] =
                    _mm256_fmadd_ps(_mm256_broadcastss_ps(scales), products, accumulators[row]);
                offsets[row] = _mm_add_ps(offsets[row], scales);
            }
        }
        let mut out = [0f32; 4];
        for row in 0..4 {
            out[row] = finish(accumulators[row], offsets[row]);
        }
        out
    }

    /// The block's 32 weights as unsigned bytes: low nibbles first, then high nibbles.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn unpack(x: &BlockQ4_1) -> __m256i {
        let low_mask = _mm_set1_epi8(0x0F);
        let packed = unsafe { _mm_loadu_si128(x.qs.as_ptr().cast()) };
        let low = _mm_and_si128(packed, low_mask);
        let high = _mm_and_si128(_mm_srli_epi16(packed, 4), low_mask);
        _mm256_set_m128i(high, low)
    }

    /// `[dₓ, mₓ, 0, 0]` from the block's two adjacent f16 values.
    #[target_feature(enable = "avx2,f16c")]
    #[inline]
    unsafe fn scales_of(x: &BlockQ4_1) -> __m128 {
        let bits = unsafe { std::ptr::read_unaligned((&raw const x.d).cast::<i32>()) };
        _mm_cvtph_ps(_mm_cvtsi32_si128(bits))
    }

    /// The 8 partial integer sums of a block pair as f32, and `[dₓ·d_y, mₓ·s_y, 0, 0]`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn block_product(weights: __m256i, x_scales: __m128, y: &BlockQ8_1) -> (__m256, __m128) {
        let activations = unsafe { _mm256_loadu_si256(y.qs.as_ptr().cast()) };
        let pairs = _mm256_maddubs_epi16(weights, activations);
        let sums = _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
        // `d` and `s` are adjacent f32 values: [d_y, s_y, 0, 0].
        let y_scales = _mm_castsi128_ps(unsafe { _mm_loadl_epi64((&raw const y.d).cast()) });
        (sums, _mm_mul_ps(x_scales, y_scales))
    }

    /// Σ lanes of `acc` plus lane 1 of `offsets` (the Σ mₓ·s_y).
    #[target_feature(enable = "avx2")]
    #[inline]
    fn finish(acc: __m256, offsets: __m128) -> f32 {
        horizontal_sum(acc) + _mm_cvtss_f32(_mm_shuffle_ps(offsets, offsets, 0b01))
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

/// Quantizes each row of `x` (`m × cols`) to Q8_1 blocks the way ggml does: `d = max|x| / 127`
/// rounded to f16, `q = round(x / d)` (from the unrounded `d`), `s = d·Σq` rounded to f16.
fn quantize_rows_q8_1(x: &[f32], m: usize, cols: usize) -> Vec<BlockQ8_1> {
    let per_row = cols / BLOCK_LEN;
    let mut blocks = Vec::with_capacity(m * per_row);
    for chunk in x.chunks_exact(BLOCK_LEN) {
        let amax = chunk.iter().fold(0f32, |max, v| max.max(v.abs()));
        let d = amax / 127.0;
        let inverse = if d == 0.0 { 0.0 } else { 1.0 / d };
        let mut qs = [0i8; BLOCK_LEN];
        let mut sum = 0i32;
        for (q, value) in qs.iter_mut().zip(chunk) {
            *q = round_ties_even(value * inverse) as i8;
            sum += i32::from(*q);
        }
        blocks.push(BlockQ8_1 {
            d: f16::from_f32(d).to_f32(),
            s: f16::from_f32(sum as f32 * d).to_f32(),
            qs,
        });
    }
    blocks
}

/// Rounds to the nearest integer, ties to even (what ggml's SIMD quantization does), for
/// `|x| <= 2²²`: adding and subtracting 1.5·2²³ leaves no fraction bits. Unlike
/// `f32::round_ties_even` it compiles to two additions rather than a libm call.
#[inline]
pub(super) fn round_ties_even(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2²³
    (x + MAGIC) - MAGIC
}

/// `x · Wᵀ` as a candle op on CPU tensors: `x` is `(…, cols)` f32, the result `(…, rows)`.
#[derive(Debug, Clone)]
pub struct Q4_1MatMul<'a>(pub &'a Q4_1Matrix);

impl CustomOp1 for Q4_1MatMul<'_> {
    fn name(&self) -> &'static str {
        "kiln-q4_1-matmul"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("q4_1 matmul: the input must be contiguous");
        };
        let dims = layout.dims();
        let Some((&cols, batch_dims)) = dims.split_last() else {
            candle_core::bail!("q4_1 matmul: the input must have at least one dimension");
        };
        if cols != self.0.cols {
            candle_core::bail!(
                "q4_1 matmul: input rows have {cols} values, the weights expect {}",
                self.0.cols
            );
        }
        let x = &storage.as_slice::<f32>()?[start..end];
        let m = batch_dims.iter().product();
        let out = self.0.matmul_t(x, m);
        let mut out_dims = batch_dims.to_vec();
        out_dims.push(self.0.rows);
        Ok((CpuStorage::F32(out), Shape::from(out_dims)))
    }
}

/// Applies a Q4_1 matrix to a CPU tensor (see [`Q4_1MatMul`]).
pub fn q4_1_matmul(x: &Tensor, weights: &Q4_1Matrix) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(&Q4_1MatMul(weights))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    /// A random Q4_1 matrix, as bytes in the GGUF layout.
    fn random_matrix(rows: usize, cols: usize, rng: &mut StdRng) -> Q4_1Matrix {
        let mut bytes = Vec::new();
        for _ in 0..rows * cols / BLOCK_LEN {
            bytes.extend_from_slice(&f16::from_f32(rng.gen_range(0.001..0.05)).to_le_bytes());
            bytes.extend_from_slice(&f16::from_f32(rng.gen_range(-0.4..0.0)).to_le_bytes());
            bytes.extend((0..16).map(|_| rng.r#gen::<u8>()));
        }
        Q4_1Matrix::from_bytes(rows, cols, &bytes).unwrap()
    }

    fn reference_matmul(
        weights: &[f32],
        x: &[f32],
        m: usize,
        rows: usize,
        cols: usize,
    ) -> Vec<f32> {
        let mut out = vec![0f32; m * rows];
        for i in 0..m {
            for j in 0..rows {
                out[i * rows + j] = (0..cols)
                    .map(|c| f64::from(x[i * cols + c]) * f64::from(weights[j * cols + c]))
                    .sum::<f64>() as f32;
            }
        }
        out
    }

    #[test]
    fn matmul_agrees_with_the_dequantized_product() {
        let mut rng = StdRng::seed_from_u64(7);
        let (rows, cols, m) = (37, 96, 5);
        let matrix = random_matrix(rows, cols, &mut rng);
        let x: Vec<f32> = (0..m * cols).map(|_| rng.gen_range(-2.0..2.0)).collect();
        let got = matrix.matmul_t(&x, m);
        let weights = matrix.dequantize();
        let want = reference_matmul(&weights, &x, m, rows, cols);
        for i in 0..m {
            for j in 0..rows {
                // Rounding an activation to Q8_1 moves it by at most half a step (amax / 127 / 2
                // of its block), so the product moves by at most Σ|w|·step/2, plus f16 rounding of
                // the scales.
                let bound: f32 = (0..cols)
                    .map(|c| {
                        let block = &x[i * cols + c / BLOCK_LEN * BLOCK_LEN..][..BLOCK_LEN];
                        let step = block.iter().fold(0f32, |a, v| a.max(v.abs())) / 127.0;
                        weights[j * cols + c].abs() * step / 2.0
                    })
                    .sum();
                let (g, w) = (got[i * rows + j], want[i * rows + j]);
                assert!(
                    (g - w).abs() <= bound * 1.01 + 1e-3 * w.abs(),
                    "{g} vs {w} (bound {bound})"
                );
            }
        }
    }

    #[test]
    fn simd_and_portable_dot_products_agree() {
        let mut rng = StdRng::seed_from_u64(11);
        let matrix = random_matrix(4, 576, &mut rng);
        let x: Vec<f32> = (0..576).map(|_| rng.gen_range(-3.0..3.0)).collect();
        let quantized = quantize_rows_q8_1(&x, 1, 576);
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
    fn rounding_is_to_nearest_with_ties_to_even() {
        for (x, want) in [
            (2.5f32, 2.0),
            (3.5, 4.0),
            (-2.5, -2.0),
            (1.4, 1.0),
            (-126.6, -127.0),
        ] {
            assert_eq!(round_ties_even(x), want, "{x}");
            assert_eq!(round_ties_even(x), x.round_ties_even());
        }
    }

    #[test]
    fn each_row_of_a_batch_gets_the_same_result_as_alone() {
        // 7 rows: one group of four (dot4) and three single rows.
        let mut rng = StdRng::seed_from_u64(3);
        let matrix = random_matrix(64, 64, &mut rng);
        let x: Vec<f32> = (0..7 * 64).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let batched = matrix.matmul_t(&x, 7);
        for i in 0..7 {
            let alone = matrix.matmul_t(&x[i * 64..(i + 1) * 64], 1);
            assert_eq!(&batched[i * 64..(i + 1) * 64], alone.as_slice());
        }
    }

    #[test]
    fn sizes_that_do_not_match_are_refused() {
        assert!(Q4_1Matrix::from_bytes(2, 30, &[0; 40]).is_err());
        let error = Q4_1Matrix::from_bytes(2, 32, &[0; 39]).unwrap_err();
        assert!(error.contains("needs 40 bytes"), "{error}");
    }

    #[test]
    fn the_candle_op_keeps_leading_dimensions() {
        let mut rng = StdRng::seed_from_u64(5);
        let matrix = random_matrix(8, 32, &mut rng);
        let x = Tensor::randn(0f32, 1.0, (2, 3, 32), &candle_core::Device::Cpu).unwrap();
        let y = q4_1_matmul(&x, &matrix).unwrap();
        assert_eq!(y.dims(), &[2, 3, 8]);
        let flat: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            matrix.matmul_t(&flat, 6)
        );
    }
}
