//! The thread split shared by Kiln's quantized CPU matrix products ([`super::q4_1`],
//! [`super::q8_0`]): `out = x · Wᵀ` with the weight rows (output columns) spread over candle's CPU
//! thread pool ([`candle_core::utils::barrier_pool`], the same threads candle's own quantized
//! matmul uses, so the two never compete for the cores).
//!
//! Each weight row is read once per call and dotted with every activation row while it is in L1,
//! four activation rows at a time, which is what makes batched decoding cheaper per token than
//! single-sequence decoding.

/// An output buffer written by the pool's workers, each to elements no other worker writes.
pub(super) struct SharedOut {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: workers write disjoint elements (see `matmul_rows`), and the buffer outlives the pool
// call that uses it.
unsafe impl Sync for SharedOut {}
unsafe impl Send for SharedOut {}

impl SharedOut {
    pub(super) fn new(out: &mut [f32]) -> SharedOut {
        SharedOut {
            ptr: out.as_mut_ptr(),
            len: out.len(),
        }
    }

    /// Writes `value` at `index`.
    ///
    /// # Safety
    /// No other thread reads or writes `index` during the pool call.
    unsafe fn write(&self, index: usize, value: f32) {
        assert!(index < self.len, "output index {index} out of {}", self.len);
        unsafe { *self.ptr.add(index) = value };
    }
}

/// The dot products a kernel provides, by (weight row, activation row) index. Both must compute a
/// pair with the same operations in the same order, so that a row's result does not depend on
/// which of them computed it (batched and unbatched generation then agree bit for bit).
pub(super) struct Dots<D, R> {
    /// One weight row with one activation row.
    pub(super) single: D,
    /// One weight row with the four activation rows `row..row + 4` (each weight block is unpacked
    /// once for all four).
    pub(super) four_rows: R,
}

/// Fills `out` (`m × n`, row-major) with the dot product of every weight row `col < n` and
/// activation row `row < m`: activation rows go four at a time through `four_rows`, the rest
/// (the only one when decoding a single sequence) through `single`.
///
/// Tried and dropped: four weight rows against one activation row for single-sequence decoding
/// (shares the activation loads, four independent chains). Fewer instructions, but measured
/// slower (about 10% in tokens per CPU-second) on the AMD EPYC this was tuned on.
pub(super) fn matmul_rows<D, R>(n: usize, m: usize, out: SharedOut, dots: Dots<D, R>)
where
    D: Fn(usize, usize) -> f32 + Sync,
    R: Fn(usize, usize) -> [f32; 4] + Sync,
{
    assert_eq!(out.len, m * n, "output size mismatch");
    let pool = candle_core::utils::barrier_pool();
    pool.execute_chunked(n, |range| {
        let out = &out;
        // SAFETY (writes below): the pool hands each `col` to exactly one worker, and only that
        // worker writes column `col`.
        for col in range {
            let mut row = 0;
            while row + 4 <= m {
                for (offset, value) in (dots.four_rows)(col, row).into_iter().enumerate() {
                    unsafe { out.write((row + offset) * n + col, value) };
                }
                row += 4;
            }
            for row in row..m {
                unsafe { out.write(row * n + col, (dots.single)(col, row)) };
            }
        }
    });
}
