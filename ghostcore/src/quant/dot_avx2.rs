//! AVX2 + FMA + F16C row-dot kernels (x86-64).
//!
//! Each kernel runs its whole row loop inside one `#[target_feature]` function. The integer
//! part of every block is exact for *any* input bytes (no reliance on activations avoiding
//! -128): unsigned quants go through `maddubs` (u8 x i8, pair sums far below i16
//! saturation), offsets such as "q - 8" are subtracted as `offset * Σy` instead of being
//! folded into a signed operand. Only the float accumulation order differs from the scalar
//! reference.
//!
//! The functions in [`row_dot`]'s table are safe wrappers: they are only handed out by
//! [`crate::quant::kernels::row_dot_for`] after `is_x86_feature_detected!` confirmed
//! avx2, fma and f16c.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use crate::quant::blocks::*;
use crate::quant::kernels::RowDot;
use crate::quant::types::GgmlType;

/// The AVX2 kernel for weights of type `ty`, if there is one.
///
/// Callers must have checked that the CPU supports avx2, fma and f16c.
pub(crate) fn row_dot(ty: GgmlType) -> Option<RowDot> {
    use GgmlType::*;
    macro_rules! wrap {
        ($f:ident, $w:ty, $a:ty) => {{
            fn safe(w: &[u8], a: &[u8]) -> f32 {
                // SAFETY: this wrapper is only reachable through `row_dot`, whose caller
                // verified avx2/fma/f16c support; the kernel reads only whole blocks of the
                // slices it is given.
                unsafe { $f(cast_blocks_prefix::<$w>(w), cast_blocks_prefix::<$a>(a)) }
            }
            safe as RowDot
        }};
    }
    Some(match ty {
        F32 => {
            fn safe(w: &[u8], a: &[u8]) -> f32 {
                // SAFETY: as in `wrap!`; reads stay inside both slices.
                unsafe { dot_f32(w, a) }
            }
            safe as RowDot
        }
        F16 => {
            fn safe(w: &[u8], a: &[u8]) -> f32 {
                // SAFETY: as in `wrap!`; reads stay inside both slices.
                unsafe { dot_f16(w, a) }
            }
            safe as RowDot
        }
        Q4_0 => wrap!(dot_q4_0, BlockQ4_0, BlockQ8_0),
        Q4_1 => wrap!(dot_q4_1, BlockQ4_1, BlockQ8_1),
        Q5_0 => wrap!(dot_q5_0, BlockQ5_0, BlockQ8_0),
        Q5_1 => wrap!(dot_q5_1, BlockQ5_1, BlockQ8_1),
        Q8_0 => wrap!(dot_q8_0, BlockQ8_0, BlockQ8_0),
        Q4_K => wrap!(dot_q4_k, BlockQ4K, BlockQ8K),
        Q5_K => wrap!(dot_q5_k, BlockQ5K, BlockQ8K),
        Q6_K => wrap!(dot_q6_k, BlockQ6K, BlockQ8K),
        _ => return None,
    })
}

#[inline(always)]
unsafe fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    hsum_ps128(s)
}

#[inline(always)]
unsafe fn hsum_ps128(s: __m128) -> f32 {
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Load 32 bytes from a 32-byte array.
#[inline(always)]
unsafe fn load32(p: &[u8; 32]) -> __m256i {
    _mm256_loadu_si256(p.as_ptr().cast())
}

#[inline(always)]
unsafe fn load32_i8(p: &[i8; 32]) -> __m256i {
    _mm256_loadu_si256(p.as_ptr().cast())
}

/// `Σ_pairs` of u8 x i8 products as 16 x i16 (`q` must be 0..=127 for exactness, it is 0..=63).
#[inline(always)]
unsafe fn maddubs(q: __m256i, y: __m256i) -> __m256i {
    _mm256_maddubs_epi16(q, y)
}

/// The 32 nibbles of 16 bytes as bytes: low nibbles first, then high nibbles.
#[inline(always)]
unsafe fn nibbles_32(qs: &[u8; 16]) -> __m256i {
    let t = _mm_loadu_si128(qs.as_ptr().cast());
    let both = _mm256_set_m128i(_mm_srli_epi16(t, 4), t);
    _mm256_and_si256(both, _mm256_set1_epi8(0x0f))
}

/// Byte j (0..32) is 0x10 where bit j of `qh` is set, else 0.
#[inline(always)]
unsafe fn fifth_bits_32(qh: u32) -> __m256i {
    let v = _mm256_set1_epi32(qh as i32);
    let pick = _mm256_setr_epi8(
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3,
        3, 3,
    );
    let bytes = _mm256_shuffle_epi8(v, pick);
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(bytes, bit), bit);
    _mm256_and_si256(set, _mm256_set1_epi8(0x10))
}

/// Eight f16 values at `p` as f32.
#[inline(always)]
unsafe fn load(p: *const u16) -> __m256 {
    _mm256_cvtph_ps(_mm_loadu_si128(p.cast()))
}

/// Bits `2k, 2k+1` of each byte of `qh`, moved to bits 4 and 5.
#[inline(always)]
unsafe fn q6_high_bits(qh: __m256i, k: i32, three: __m256i) -> __m256i {
    let shifted = _mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * k));
    _mm256_slli_epi16(_mm256_and_si256(shifted, three), 4)
}

/// Sum of 16 x i16 as 8 x i32.
#[inline(always)]
unsafe fn widen_sum(p16: __m256i) -> __m256i {
    _mm256_madd_epi16(p16, _mm256_set1_epi16(1))
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_f32(w: &[u8], a: &[u8]) -> f32 {
    let n = w.len().min(a.len()) / 4;
    let (pw, pa) = (w.as_ptr().cast::<f32>(), a.as_ptr().cast::<f32>());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (k, acc) in acc.iter_mut().enumerate() {
            let x = _mm256_loadu_ps(pw.add(i + 8 * k));
            let y = _mm256_loadu_ps(pa.add(i + 8 * k));
            *acc = _mm256_fmadd_ps(x, y, *acc);
        }
        i += 32;
    }
    while i + 8 <= n {
        acc[0] = _mm256_fmadd_ps(
            _mm256_loadu_ps(pw.add(i)),
            _mm256_loadu_ps(pa.add(i)),
            acc[0],
        );
        i += 8;
    }
    let mut sum = hsum_ps(_mm256_add_ps(
        _mm256_add_ps(acc[0], acc[1]),
        _mm256_add_ps(acc[2], acc[3]),
    ));
    while i < n {
        sum += pw.add(i).read_unaligned() * pa.add(i).read_unaligned();
        i += 1;
    }
    sum
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_f16(w: &[u8], a: &[u8]) -> f32 {
    let n = w.len().min(a.len()) / 2;
    let (pw, pa) = (w.as_ptr().cast::<u16>(), a.as_ptr().cast::<u16>());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (k, acc) in acc.iter_mut().enumerate() {
            *acc = _mm256_fmadd_ps(load(pw.add(i + 8 * k)), load(pa.add(i + 8 * k)), *acc);
        }
        i += 32;
    }
    while i + 8 <= n {
        acc[0] = _mm256_fmadd_ps(load(pw.add(i)), load(pa.add(i)), acc[0]);
        i += 8;
    }
    let mut sum = hsum_ps(_mm256_add_ps(
        _mm256_add_ps(acc[0], acc[1]),
        _mm256_add_ps(acc[2], acc[3]),
    ));
    while i < n {
        let x = half::f16::from_bits(pw.add(i).read_unaligned()).to_f32();
        let y = half::f16::from_bits(pa.add(i).read_unaligned()).to_f32();
        sum += x * y;
        i += 1;
    }
    sum
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q8_0(w: &[BlockQ8_0], a: &[BlockQ8_0]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for (x, y) in w.iter().zip(a) {
        let xv = load32_i8(&x.qs);
        let yv = load32_i8(&y.qs);
        // Widen to i16 so every i8 x i8 product (including -128 * -128) is exact.
        let lo = _mm256_madd_epi16(
            _mm256_cvtepi8_epi16(_mm256_castsi256_si128(xv)),
            _mm256_cvtepi8_epi16(_mm256_castsi256_si128(yv)),
        );
        let hi = _mm256_madd_epi16(
            _mm256_cvtepi8_epi16(_mm256_extracti128_si256(xv, 1)),
            _mm256_cvtepi8_epi16(_mm256_extracti128_si256(yv, 1)),
        );
        let sumi = _mm256_add_epi32(lo, hi);
        let d = _mm256_set1_ps(x.d() * y.d());
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_ps(acc)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q4_0(w: &[BlockQ4_0], a: &[BlockQ8_0]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let eight = _mm256_set1_epi8(8);
    for (x, y) in w.iter().zip(a) {
        let q = nibbles_32(&x.qs);
        let yv = load32_i8(&y.qs);
        // Σ (q - 8) y = Σ q y - Σ 8 y, per pair in i16 (|.| <= 4096).
        let p = _mm256_sub_epi16(maddubs(q, yv), maddubs(eight, yv));
        let d = _mm256_set1_ps(x.d() * y.d());
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(widen_sum(p)), acc);
    }
    hsum_ps(acc)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q4_1(w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut mins = 0f32;
    for (x, y) in w.iter().zip(a) {
        let q = nibbles_32(&x.qs);
        let p = maddubs(q, load32_i8(&y.qs));
        let d = _mm256_set1_ps(x.d() * y.d());
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(widen_sum(p)), acc);
        mins += x.m() * y.s();
    }
    hsum_ps(acc) + mins
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q5_0(w: &[BlockQ5_0], a: &[BlockQ8_0]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let sixteen = _mm256_set1_epi8(16);
    for (x, y) in w.iter().zip(a) {
        let q = _mm256_or_si256(nibbles_32(&x.qs), fifth_bits_32(x.qh()));
        let yv = load32_i8(&y.qs);
        // Σ (q - 16) y = Σ q y - Σ 16 y, per pair in i16 (|.| <= 8192).
        let p = _mm256_sub_epi16(maddubs(q, yv), maddubs(sixteen, yv));
        let d = _mm256_set1_ps(x.d() * y.d());
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(widen_sum(p)), acc);
    }
    hsum_ps(acc)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q5_1(w: &[BlockQ5_1], a: &[BlockQ8_1]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut mins = 0f32;
    for (x, y) in w.iter().zip(a) {
        let q = _mm256_or_si256(nibbles_32(&x.qs), fifth_bits_32(x.qh()));
        let p = maddubs(q, load32_i8(&y.qs));
        let d = _mm256_set1_ps(x.d() * y.d());
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(widen_sum(p)), acc);
        mins += x.m() * y.s();
    }
    hsum_ps(acc) + mins
}

/// Scales (bytes 0..8) and mins (bytes 8..16) of a Q4_K/Q5_K block, widened to i16:
/// the low 128 bits hold the 8 scales, the high 128 bits the 8 mins.
#[inline(always)]
unsafe fn k4_scales_mins(s: &[u8; 12]) -> __m256i {
    let (sc, m) = unpack_scales_mins_k4(s);
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&sc);
    bytes[8..].copy_from_slice(&m);
    _mm256_cvtepu8_epi16(_mm_loadu_si128(bytes.as_ptr().cast()))
}

/// `Σ_j mins[j] * (bsums[2j] + bsums[2j+1])` as 4 x i32 (sum them for the block total).
#[inline(always)]
unsafe fn k_mins_dot(mins16: __m128i, y: &BlockQ8K) -> __m128i {
    let bs = _mm256_loadu_si256(y.bsums.as_ptr().cast());
    let pair = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
    _mm_madd_epi16(mins16, pair)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q4_k(w: &[BlockQ4K], a: &[BlockQ8K]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut acc_m = _mm_setzero_ps();
    let low4 = _mm256_set1_epi8(0x0f);
    for (x, y) in w.iter().zip(a) {
        let yd = y.d();
        let d = yd * x.d();
        let dmin = -yd * x.dmin();
        let sm = k4_scales_mins(&x.scales);
        let prod_m = k_mins_dot(_mm256_extracti128_si256(sm, 1), y);
        acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod_m), acc_m);

        let mut sc = [0i16; 16];
        _mm256_storeu_si256(sc.as_mut_ptr().cast(), sm);
        let mut sumi = _mm256_setzero_si256();
        for c in 0..4 {
            let bits = _mm256_loadu_si256(x.qs.as_ptr().add(32 * c).cast());
            let ql = _mm256_and_si256(bits, low4);
            let qh = _mm256_and_si256(_mm256_srli_epi16(bits, 4), low4);
            let yl = _mm256_loadu_si256(y.qs.as_ptr().add(64 * c).cast());
            let yh = _mm256_loadu_si256(y.qs.as_ptr().add(64 * c + 32).cast());
            let pl = _mm256_madd_epi16(_mm256_set1_epi16(sc[2 * c]), maddubs(ql, yl));
            let ph = _mm256_madd_epi16(_mm256_set1_epi16(sc[2 * c + 1]), maddubs(qh, yh));
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(pl, ph));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_ps(acc) + hsum_ps128(acc_m)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q5_k(w: &[BlockQ5K], a: &[BlockQ8K]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut acc_m = _mm_setzero_ps();
    let low4 = _mm256_set1_epi8(0x0f);
    let one = _mm256_set1_epi8(1);
    for (x, y) in w.iter().zip(a) {
        let yd = y.d();
        let d = yd * x.d();
        let dmin = -yd * x.dmin();
        let sm = k4_scales_mins(&x.scales);
        let prod_m = k_mins_dot(_mm256_extracti128_si256(sm, 1), y);
        acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod_m), acc_m);

        let mut sc = [0i16; 16];
        _mm256_storeu_si256(sc.as_mut_ptr().cast(), sm);
        let hbits = load32(&x.qh);
        let mut sumi = _mm256_setzero_si256();
        for c in 0..4 {
            let bits = _mm256_loadu_si256(x.qs.as_ptr().add(32 * c).cast());
            // Bit 2c of qh[l] is the fifth bit of the low-nibble weight, bit 2c+1 of the high.
            let shift_l = _mm_cvtsi32_si128(2 * c as i32);
            let shift_h = _mm_cvtsi32_si128(2 * c as i32 + 1);
            let hl = _mm256_and_si256(_mm256_srl_epi16(hbits, shift_l), one);
            let hh = _mm256_and_si256(_mm256_srl_epi16(hbits, shift_h), one);
            let ql = _mm256_or_si256(_mm256_and_si256(bits, low4), _mm256_slli_epi16(hl, 4));
            let qh = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16(bits, 4), low4),
                _mm256_slli_epi16(hh, 4),
            );
            let yl = _mm256_loadu_si256(y.qs.as_ptr().add(64 * c).cast());
            let yh = _mm256_loadu_si256(y.qs.as_ptr().add(64 * c + 32).cast());
            let pl = _mm256_madd_epi16(_mm256_set1_epi16(sc[2 * c]), maddubs(ql, yl));
            let ph = _mm256_madd_epi16(_mm256_set1_epi16(sc[2 * c + 1]), maddubs(qh, yh));
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(pl, ph));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_ps(acc) + hsum_ps128(acc_m)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q6_k(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let low4 = _mm256_set1_epi8(0x0f);
    let three = _mm256_set1_epi8(3);
    let m32 = _mm256_set1_epi8(32);
    for (x, y) in w.iter().zip(a) {
        let d = x.d() * y.d();
        let mut sumi = _mm256_setzero_si256();
        for half in 0..2 {
            let ql0 = _mm256_loadu_si256(x.ql.as_ptr().add(64 * half).cast());
            let ql1 = _mm256_loadu_si256(x.ql.as_ptr().add(64 * half + 32).cast());
            let qh = _mm256_loadu_si256(x.qh.as_ptr().add(32 * half).cast());
            // Unsigned 6-bit quants (0..63) of the four 32-weight groups of this half.
            let q = [
                _mm256_or_si256(_mm256_and_si256(ql0, low4), q6_high_bits(qh, 0, three)),
                _mm256_or_si256(_mm256_and_si256(ql1, low4), q6_high_bits(qh, 1, three)),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(ql0, 4), low4),
                    q6_high_bits(qh, 2, three),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(ql1, 4), low4),
                    q6_high_bits(qh, 3, three),
                ),
            ];
            for (g, qg) in q.iter().enumerate() {
                let yv = _mm256_loadu_si256(y.qs.as_ptr().add(128 * half + 32 * g).cast());
                // Σ (q - 32) y = Σ q y - Σ 32 y, per pair in i16 (|.| <= 16384).
                let p = _mm256_sub_epi16(maddubs(*qg, yv), maddubs(m32, yv));
                let s0 = x.scales[8 * half + 2 * g] as i16;
                let s1 = x.scales[8 * half + 2 * g + 1] as i16;
                let scale = _mm256_set_m128i(_mm_set1_epi16(s1), _mm_set1_epi16(s0));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(scale, p));
            }
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_ps(acc)
}
