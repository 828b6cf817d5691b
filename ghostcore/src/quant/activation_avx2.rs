//! AVX2 quantization of activation rows to Q8_0 / Q8_1 / Q8_K, byte-identical to the scalar
//! reference of [`super::activation`].
//!
//! Why it is exact: for a block whose values are all finite and whose scale is finite, every
//! product `x * scale` lies within `[-127 - ε, 127 + ε]`, so rounding half to even
//! (`vroundps` nearest = Rust's `round_ties_even`) and the conversion to integers need no
//! clamping and cannot saturate; the scalar code's clamps are no-ops there. The block maximum is
//! a maximum of exact absolute values (order-independent). Any block with a NaN, an infinity
//! or a scale that overflows (a subnormal maximum) is handed to the scalar code, which then
//! decides its bytes exactly as before.
//!
//! Every function here may only run on a CPU with avx2 (checked by the caller through
//! [`crate::quant::active_isa`]).

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use super::activation::{quantize_q8_0_block, quantize_q8_1_block, quantize_q8_k_block};
use crate::quant::blocks::{BlockQ8K, BlockQ8_0, BlockQ8_1, QK32};
use crate::quant::QK_K;

const ROUND_NEAREST: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;

/// Q8_0 rows: `x.len() == 32 * out.len()`.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn quantize_row_q8_0(x: &[f32], out: &mut [BlockQ8_0]) {
    for (b, xs) in out.iter_mut().zip(x.chunks_exact(QK32)) {
        match q8_symmetric(xs, &mut b.qs) {
            Some(d) => b.d = half::f16::from_f32(d).to_bits().to_le_bytes(),
            None => quantize_q8_0_block(xs, b),
        }
    }
}

/// Q8_1 rows: `x.len() == 32 * out.len()`.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn quantize_row_q8_1(x: &[f32], out: &mut [BlockQ8_1]) {
    for (b, xs) in out.iter_mut().zip(x.chunks_exact(QK32)) {
        match q8_symmetric(xs, &mut b.qs) {
            Some(d) => {
                let sum: i32 = b.qs.iter().map(|&q| q as i32).sum();
                b.d = half::f16::from_f32(d).to_bits().to_le_bytes();
                b.s = half::f16::from_f32(d * sum as f32).to_bits().to_le_bytes();
            }
            None => quantize_q8_1_block(xs, b),
        }
    }
}

/// Q8_K rows: `x.len() == 256 * out.len()`.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn quantize_row_q8_k(x: &[f32], out: &mut [BlockQ8K]) {
    for (b, xs) in out.iter_mut().zip(x.chunks_exact(QK_K)) {
        if !q8_k(xs, b) {
            quantize_q8_k_block(xs, b);
        }
    }
}

/// Largest lane of `v`.
#[inline(always)]
unsafe fn hmax(v: __m256) -> f32 {
    let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    let m = _mm_max_ss(m, _mm_movehdup_ps(m));
    _mm_cvtss_f32(m)
}

/// `|v|` lane by lane.
#[inline(always)]
unsafe fn abs_ps(v: __m256) -> __m256 {
    _mm256_andnot_ps(_mm256_set1_ps(-0.0), v)
}

/// Whether any lane of `v` is NaN.
#[inline(always)]
unsafe fn any_nan(v: __m256) -> __m256 {
    _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v)
}

/// `round_half_even(v * scale)` of 32 floats (8 at `p`, `p + 8`, `p + 16`, `p + 24`) packed to
/// 32 bytes in element order; every product must round into `-128..=127`.
#[inline(always)]
unsafe fn round_pack_32(p: *const f32, scale: __m256) -> __m256i {
    let q = |k: usize| {
        _mm256_cvtps_epi32(_mm256_round_ps::<ROUND_NEAREST>(_mm256_mul_ps(
            _mm256_loadu_ps(p.add(8 * k)),
            scale,
        )))
    };
    let lo = _mm256_packs_epi32(q(0), q(1));
    let hi = _mm256_packs_epi32(q(2), q(3));
    // packs works per 128-bit lane: the dwords now hold elements
    // 0-3, 8-11, 16-19, 24-27 | 4-7, 12-15, 20-23, 28-31.
    let bytes = _mm256_packs_epi16(lo, hi);
    _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

/// The scalar `q8_symmetric` of one 32-float block: quants into `qs`, returns `d`; `None`
/// (nothing written) when the block needs the scalar code (non-finite input or scale).
#[inline(always)]
unsafe fn q8_symmetric(xs: &[f32], qs: &mut [i8; QK32]) -> Option<f32> {
    debug_assert_eq!(xs.len(), QK32);
    let p = xs.as_ptr();
    let mut m = _mm256_setzero_ps();
    let mut nan = _mm256_setzero_ps();
    for k in 0..4 {
        let v = _mm256_loadu_ps(p.add(8 * k));
        m = _mm256_max_ps(abs_ps(v), m);
        nan = _mm256_or_ps(nan, any_nan(v));
    }
    if _mm256_movemask_ps(nan) != 0 {
        return None;
    }
    let amax = hmax(m);
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    if !amax.is_finite() || !id.is_finite() {
        return None;
    }
    let q = round_pack_32(p, _mm256_set1_ps(id));
    _mm256_storeu_si256(qs.as_mut_ptr().cast(), q);
    Some(d)
}

/// The scalar `quantize_q8_k_block` of one 256-float block; `false` (nothing written) when the
/// block needs the scalar code.
#[inline(always)]
unsafe fn q8_k(xs: &[f32], b: &mut BlockQ8K) -> bool {
    debug_assert_eq!(xs.len(), QK_K);
    let p = xs.as_ptr();
    let mut m = _mm256_setzero_ps();
    let mut nan = _mm256_setzero_ps();
    for k in 0..QK_K / 8 {
        let v = _mm256_loadu_ps(p.add(8 * k));
        m = _mm256_max_ps(abs_ps(v), m);
        nan = _mm256_or_ps(nan, any_nan(v));
    }
    if _mm256_movemask_ps(nan) != 0 {
        return false;
    }
    let amax = hmax(m);
    if amax == 0.0 {
        b.d = 0f32.to_le_bytes();
        b.qs = [0; QK_K];
        b.bsums = [0; 32];
        return true;
    }
    if !amax.is_finite() {
        return false;
    }
    // The scalar code keeps the first element of largest magnitude, with its sign.
    let target = _mm256_set1_ps(amax);
    let mut max = amax;
    for k in 0..QK_K / 8 {
        let v = _mm256_loadu_ps(p.add(8 * k));
        let hit = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(abs_ps(v), target));
        if hit != 0 {
            max = xs[8 * k + hit.trailing_zeros() as usize];
            break;
        }
    }
    let iscale = -127.0 / max;
    if !iscale.is_finite() {
        return false;
    }
    let scale = _mm256_set1_ps(iscale);
    for k in 0..QK_K / QK32 {
        let q = round_pack_32(p.add(QK32 * k), scale);
        _mm256_storeu_si256(b.qs.as_mut_ptr().add(QK32 * k).cast(), q);
    }
    for g in 0..16 {
        let s: i32 = b.qs[16 * g..16 * g + 16].iter().map(|&q| q as i32).sum();
        b.bsums[2 * g..2 * g + 2].copy_from_slice(&(s as i16).to_le_bytes());
    }
    b.d = (1.0 / iscale).to_le_bytes();
    true
}
