//! Exact neuron-major copies of `ffn_down`: the model's own quants moved so that a neuron's
//! weights (a column of the output-major GGUF tensor) lie in one contiguous row, with no
//! requantization. The sparse down projection then reads only the rows of active neurons.
//!
//! - [`q4_k`]: Q4_K downs (4-bit quants, the original 6-bit sub-block scales and mins a byte
//!   each, and f16 block scales: 37/36 of the original bytes, exactly the same weights).
//! - [`q6_k`]: Q6_K downs (6-bit quants, the original i8 sub-block scales and f16 block
//!   scales: the same bytes and exactly the same weights as the original).
//!
//! llama.cpp's Q4_K_M recipe stores about half of the `ffn_down` tensors as Q6_K, so both
//! are needed for a Q4_K_M file's every layer to have an exact copy. Other types fall back
//! to the requantized copy ([`super::repack`]).

pub mod q4_k;
pub mod q6_k;

pub use q4_k::ExactQ4kDown;
pub use q6_k::ExactQ6kDown;

use crate::quant::blocks::{cast_blocks, Block};
use crate::quant::{GgmlType, QK_K};
use crate::{bail, Result};

/// The exact neuron-major copy of one layer's `ffn_down`, whichever its type.
#[derive(Clone, Debug, PartialEq)]
pub enum ExactDown {
    Q4K(ExactQ4kDown),
    Q6K(ExactQ6kDown),
}

impl ExactDown {
    /// Build the copy of `down` (`n_embd` rows of `n_ff` weights of type `ty`).
    /// `Unsupported` for types without an exact copy or shapes the copies cannot hold.
    pub fn from_down(ty: GgmlType, n_embd: usize, n_ff: usize, down: &[u8]) -> Result<Self> {
        match ty {
            GgmlType::Q4_K => Ok(ExactDown::Q4K(ExactQ4kDown::from_q4_k(
                ty, n_embd, n_ff, down,
            )?)),
            GgmlType::Q6_K => Ok(ExactDown::Q6K(ExactQ6kDown::from_q6_k(
                ty, n_embd, n_ff, down,
            )?)),
            other => bail!(
                Unsupported,
                "exact neuron-major down copy of a {other} ffn_down"
            ),
        }
    }

    /// Whether a `ty` down of `n_embd` rows of `n_ff` has an exact copy.
    pub fn supports(ty: GgmlType, n_embd: usize, n_ff: usize) -> bool {
        matches!(ty, GgmlType::Q4_K | GgmlType::Q6_K) && copy_shape_fits(n_embd, n_ff)
    }

    /// The type of the original `ffn_down`.
    pub fn source_type(&self) -> GgmlType {
        match self {
            ExactDown::Q4K(_) => GgmlType::Q4_K,
            ExactDown::Q6K(_) => GgmlType::Q6_K,
        }
    }

    pub fn n_embd(&self) -> usize {
        match self {
            ExactDown::Q4K(c) => c.n_embd(),
            ExactDown::Q6K(c) => c.n_embd(),
        }
    }

    pub fn n_ff(&self) -> usize {
        match self {
            ExactDown::Q4K(c) => c.n_ff(),
            ExactDown::Q6K(c) => c.n_ff(),
        }
    }

    /// Total bytes of the copy.
    pub fn total_bytes(&self) -> usize {
        match self {
            ExactDown::Q4K(c) => c.total_bytes(),
            ExactDown::Q6K(c) => c.total_bytes(),
        }
    }

    /// Bytes [`Self::accumulate`] reads over `ids`.
    pub fn bytes_for(&self, ids: &[u32]) -> usize {
        match self {
            ExactDown::Q4K(c) => c.bytes_for(ids),
            ExactDown::Q6K(c) => c.bytes_for(ids),
        }
    }

    /// Neurons that share one scale unit of the kernel: a parallel split of an id list keeps
    /// each such aligned run on one worker, so each unit's scales are read once.
    pub fn split_unit(&self) -> usize {
        match self {
            ExactDown::Q4K(_) => q4_k::GROUP,
            ExactDown::Q6K(_) => q6_k::BLOCK,
        }
    }

    /// `out[o] += Σ_k coefs[k] · down[o][ids[k]]`.
    pub fn accumulate(
        &self,
        ids: &[u32],
        coefs: &[f32],
        out: &mut [f32],
        scratch: &mut ExactDownScratch,
    ) -> Result<()> {
        match self {
            ExactDown::Q4K(c) => c.accumulate(ids, coefs, out, scratch),
            ExactDown::Q6K(c) => c.accumulate(ids, coefs, out, &mut scratch.i32s),
        }
    }
}

/// Reusable buffers for [`ExactDown::accumulate`].
#[derive(Clone, Debug, Default)]
pub struct ExactDownScratch {
    f32s: Vec<f32>,
    i32s: Vec<i32>,
}

/// Number of maximal runs of consecutive ids in the same aligned unit of `unit` neurons.
pub(crate) fn unit_runs(ids: &[u32], unit: usize) -> usize {
    let mut runs = 0;
    let mut last = usize::MAX;
    for &j in ids {
        let g = j as usize / unit;
        if g != last {
            runs += 1;
            last = g;
        }
    }
    runs
}

/// The end of the run of `ids` starting at `k` whose ids lie in the same aligned unit.
pub(crate) fn run_end(ids: &[u32], k: usize, unit: usize) -> usize {
    let g = ids[k] as usize / unit;
    let mut end = k;
    while end < ids.len() && ids[end] as usize / unit == g {
        end += 1;
    }
    end
}

/// How many bytes of the first rows of an id list the kernels prefetch before they start.
/// From there on they read the rows one group of rows after another, each row from start to
/// end, and prefetch the rows two groups ahead as they go (walking all rows of a run side by
/// side a few bytes at a time, as they first did, defeats the hardware prefetcher: 1.4–1.8×
/// the dense down's time at 58–63% of its bytes on SmolLM2's width, against 1.0).
pub(crate) const PREFETCH_AHEAD: usize = 256;

/// Hint the CPU to load the line holding `p` into L1. `p` may point anywhere: prefetching
/// never faults, and the pointer is never dereferenced.
#[inline(always)]
pub(crate) fn prefetch_line(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: `_mm_prefetch` needs only SSE (baseline on x86_64), never faults and does
        // not access memory architecturally; any address is allowed.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Hint the CPU to load the memory of `values` into the cache (no effect elsewhere).
#[inline(always)]
pub(crate) fn prefetch<T>(values: &[T]) {
    let start = values.as_ptr().cast::<u8>();
    for offset in (0..std::mem::size_of_val(values)).step_by(64) {
        prefetch_line(start.wrapping_add(offset));
    }
}

/// Whether an `n_embd` × `n_ff` down fits the copies' layout: `n_embd` a nonzero multiple of
/// 32 (output tiles), `n_ff` a multiple of 256 (the quants' blocks).
fn copy_shape_fits(n_embd: usize, n_ff: usize) -> bool {
    n_embd % 32 == 0 && n_embd > 0 && n_ff % QK_K == 0
}

/// The blocks of a K-quant `ffn_down` (`n_embd` rows of `n_ff` weights of type `B::TYPE`):
/// `Unsupported` when `ty` is another type or the shape does not suit the copies (`n_embd`
/// a nonzero multiple of 32, `n_ff` a multiple of 256), `Format` when the data does not hold
/// the weights.
pub(crate) fn down_blocks<B: Block>(
    ty: GgmlType,
    n_embd: usize,
    n_ff: usize,
    down: &[u8],
) -> Result<&[B]> {
    if ty != B::TYPE {
        bail!(
            Unsupported,
            "exact {} neuron-major down copy of a {ty} ffn_down",
            B::TYPE
        );
    }
    if !copy_shape_fits(n_embd, n_ff) {
        bail!(
            Unsupported,
            "exact neuron-major down copy of a {n_embd}×{n_ff} ffn_down (needs n_embd % 32 == 0)"
        );
    }
    let blocks = cast_blocks::<B>(down)?;
    let expected = n_embd * (n_ff / QK_K);
    if blocks.len() != expected {
        bail!(
            Format,
            "{ty} ffn_down holds {} blocks, expected {expected}",
            blocks.len()
        );
    }
    Ok(blocks)
}

/// Checks shared by the copies' `accumulate`: matching lengths and ids inside `n_ff`.
pub(crate) fn check_accumulate(
    ids: &[u32],
    coefs: &[f32],
    out: &[f32],
    n_embd: usize,
    n_ff: usize,
) -> Result<()> {
    if ids.len() != coefs.len() || out.len() != n_embd {
        bail!(
            InvalidArgument,
            "exact down: {} ids, {} coefficients, output {} for n_embd {}",
            ids.len(),
            coefs.len(),
            out.len(),
            n_embd
        );
    }
    if let Some(&bad) = ids.iter().find(|&&j| j as usize >= n_ff) {
        bail!(InvalidArgument, "neuron {bad} outside {n_ff} neurons");
    }
    Ok(())
}

/// Random downs and f64 references shared by the copies' tests.
#[cfg(test)]
pub(crate) mod test_data {
    use crate::quant::quantize::quantize_row;
    use crate::quant::{dequantize_row, GgmlType};

    pub fn lcg(state: &mut u64) -> f32 {
        *state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// A random `ty` down (`n_embd` rows of `n_ff`) with weights uniform in
    /// `±magnitude(o, j)`, and its dequantized weights.
    pub fn random_down(
        ty: GgmlType,
        n_embd: usize,
        n_ff: usize,
        seed: u64,
        magnitude: impl Fn(usize, usize) -> f32,
    ) -> (Vec<u8>, Vec<f32>) {
        let mut st = seed;
        let rb = ty.row_bytes(n_ff as u64).unwrap() as usize;
        let mut data = vec![0u8; n_embd * rb];
        let mut deq = vec![0f32; n_embd * n_ff];
        let mut row = vec![0f32; n_ff];
        for o in 0..n_embd {
            for (j, w) in row.iter_mut().enumerate() {
                *w = lcg(&mut st) * magnitude(o, j);
            }
            let q = &mut data[o * rb..(o + 1) * rb];
            quantize_row(ty, &row, q).unwrap();
            dequantize_row(ty, q, &mut deq[o * n_ff..(o + 1) * n_ff]).unwrap();
        }
        (data, deq)
    }

    /// `Σ_k coefs[k] · w[o][ids[k]]` in f64 over the dequantized weights, and the error bound
    /// of rounding the coefficients to i8: `Σ_k |w[o][ids[k]]| · coef_max[k] / 254`, where
    /// `coef_max[k]` is the largest |coefficient| sharing k's i8 scale.
    pub fn reference_and_bound(
        deq: &[f32],
        n_embd: usize,
        n_ff: usize,
        ids: &[u32],
        coefs: &[f32],
        coef_max: &[f64],
    ) -> (Vec<f64>, Vec<f64>) {
        let w = |o: usize, j: u32| deq[o * n_ff + j as usize] as f64;
        let want = (0..n_embd)
            .map(|o| {
                ids.iter()
                    .zip(coefs)
                    .map(|(&j, &h)| h as f64 * w(o, j))
                    .sum()
            })
            .collect();
        let bound = (0..n_embd)
            .map(|o| {
                ids.iter()
                    .zip(coef_max)
                    .map(|(&j, &m)| w(o, j).abs() * m / 254.0)
                    .sum()
            })
            .collect();
        (want, bound)
    }

    /// The scalar kernel's `reference` within `tol` of `want`, the SIMD kernel's `simd`
    /// within `bound + tol`.
    pub fn assert_close(reference: &[f32], simd: &[f32], want: &[f64], bound: &[f64], tol: f64) {
        for o in 0..want.len() {
            assert!(
                (reference[o] as f64 - want[o]).abs() < tol,
                "scalar o {o}: {} vs {}",
                reference[o],
                want[o]
            );
            assert!(
                (simd[o] as f64 - want[o]).abs() < bound[o] + tol,
                "o {o}: {} vs {} (bound {})",
                simd[o],
                want[o],
                bound[o]
            );
        }
    }
}
