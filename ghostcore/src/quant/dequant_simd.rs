//! Fast dequantization of whole rows for the prefill GEMM, bit-identical to the scalar
//! reference in [`super::dequant`].
//!
//! With AVX2 + F16C the common weight types (F32, F16, Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q6_K)
//! are decoded 32 weights at a time, with the same floating-point operations in the same
//! order as the reference (products and differences, never fused), so every value is
//! identical; other types and CPUs use the reference.

use crate::error::Result;
use crate::quant::dequant::dequantize_row;
use crate::quant::types::GgmlType;

/// [`dequantize_row`] with SIMD kernels where available (identical results).
pub fn dequantize_row_fast(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<()> {
    #[cfg(target_arch = "x86_64")]
    if crate::quant::active_isa() == crate::quant::Isa::Avx2
        && ty.row_bytes(dst.len() as u64) == Some(src.len() as u64)
    {
        // SAFETY: the active ISA includes AVX2, FMA and F16C (checked at run time), and
        // `src` holds exactly the blocks of `dst.len()` weights (checked just above).
        if unsafe { avx2::dequantize(ty, src, dst) } {
            return Ok(());
        }
    }
    dequantize_row(ty, src, dst)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use crate::quant::blocks::*;
    use crate::quant::dot_avx2::{fifth_bits_32, h2f, h2f_pair, nibbles_32, q6_half_quants};
    use crate::quant::types::GgmlType;

    /// Dequantizes `src` into `dst` if `ty` has a kernel here (returns whether it did).
    ///
    /// # Safety
    /// AVX2, FMA and F16C must be available; `src` must hold exactly the blocks of
    /// `dst.len()` weights of type `ty`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> bool {
        // SAFETY (whole body): every block kernel reads one whole block and writes the
        // block's own 32 or 256 outputs, which `dst` holds by the caller's contract.
        unsafe {
            match ty {
                GgmlType::F32 => {
                    for (d, s) in dst.iter_mut().zip(src.chunks_exact(4)) {
                        *d = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
                    }
                }
                GgmlType::F16 => {
                    let n8 = dst.len() / 8 * 8;
                    for i in (0..n8).step_by(8) {
                        let h = _mm_loadu_si128(src.as_ptr().add(2 * i).cast());
                        _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
                    }
                    for i in n8..dst.len() {
                        dst[i] = h2f([src[2 * i], src[2 * i + 1]]);
                    }
                }
                GgmlType::Q8_0 => {
                    for (b, o) in blocks::<BlockQ8_0>(src).zip(dst.chunks_exact_mut(32)) {
                        let q = _mm256_loadu_si256(b.qs.as_ptr().cast());
                        store_i8x32(o, q, _mm256_set1_ps(h2f(b.d)), None);
                    }
                }
                GgmlType::Q4_0 => {
                    for (b, o) in blocks::<BlockQ4_0>(src).zip(dst.chunks_exact_mut(32)) {
                        let q = _mm256_sub_epi8(nibbles_32(&b.qs), _mm256_set1_epi8(8));
                        store_i8x32(o, q, _mm256_set1_ps(h2f(b.d)), None);
                    }
                }
                GgmlType::Q4_1 => {
                    for (b, o) in blocks::<BlockQ4_1>(src).zip(dst.chunks_exact_mut(32)) {
                        let (d, m) = h2f_pair(b.d, b.m);
                        let add = Offset::Add(_mm256_set1_ps(m));
                        store_i8x32(o, nibbles_32(&b.qs), _mm256_set1_ps(d), Some(add));
                    }
                }
                GgmlType::Q5_0 => {
                    for (b, o) in blocks::<BlockQ5_0>(src).zip(dst.chunks_exact_mut(32)) {
                        let q = _mm256_or_si256(nibbles_32(&b.qs), fifth_bits_32(b.qh()));
                        let q = _mm256_sub_epi8(q, _mm256_set1_epi8(16));
                        store_i8x32(o, q, _mm256_set1_ps(h2f(b.d)), None);
                    }
                }
                GgmlType::Q4_K => {
                    let low4 = _mm256_set1_epi8(0x0f);
                    for (b, o) in blocks::<BlockQ4K>(src).zip(dst.chunks_exact_mut(256)) {
                        let (d, dmin) = h2f_pair(b.d, b.dmin);
                        let (sc, mn) = unpack_scales_mins_k4(&b.scales);
                        for c in 0..4 {
                            let bits = _mm256_loadu_si256(b.qs.as_ptr().add(32 * c).cast());
                            let lo = _mm256_and_si256(bits, low4);
                            let hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), low4);
                            for (k, q) in [(2 * c, lo), (2 * c + 1, hi)] {
                                let scale = _mm256_set1_ps(d * sc[k] as f32);
                                let min = Offset::Sub(_mm256_set1_ps(dmin * mn[k] as f32));
                                store_i8x32(&mut o[32 * k..32 * k + 32], q, scale, Some(min));
                            }
                        }
                    }
                }
                GgmlType::Q6_K => {
                    let m32 = _mm256_set1_epi8(32);
                    for (b, o) in blocks::<BlockQ6K>(src).zip(dst.chunks_exact_mut(256)) {
                        let d = h2f(b.d);
                        for half in 0..2 {
                            let q = q6_half_quants(b, half);
                            for (g, qg) in q.iter().enumerate() {
                                let qs = _mm256_sub_epi8(*qg, m32);
                                let s0 = d * b.scales[8 * half + 2 * g] as f32;
                                let s1 = d * b.scales[8 * half + 2 * g + 1] as f32;
                                let start = 128 * half + 32 * g;
                                store_i8x32_halves(
                                    &mut o[start..start + 32],
                                    qs,
                                    _mm256_set1_ps(s0),
                                    _mm256_set1_ps(s1),
                                );
                            }
                        }
                    }
                }
                _ => return false,
            }
        }
        true
    }

    fn blocks<B: Block>(src: &[u8]) -> std::slice::Iter<'_, B> {
        cast_blocks_prefix::<B>(src).iter()
    }

    /// The offset term of a block: `+ m` (Q4_1) or `− m` (k-quant mins), applied after the
    /// scale product as the reference does.
    #[derive(Clone, Copy)]
    enum Offset {
        Add(__m256),
        Sub(__m256),
    }

    /// `o[k] = scale · q[k] (± offset)` for the 32 signed bytes of `q`.
    ///
    /// # Safety
    /// AVX2 must be available; `o` must hold at least 32 floats.
    #[inline(always)]
    unsafe fn store_i8x32(o: &mut [f32], q: __m256i, scale: __m256, offset: Option<Offset>) {
        assert!(o.len() >= 32);
        // SAFETY: AVX2 per the contract; the four 8-float stores stay within `o[..32]`.
        unsafe {
            let lo = _mm256_castsi256_si128(q);
            let hi = _mm256_extracti128_si256(q, 1);
            let parts = [lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)];
            for (k, part) in parts.iter().enumerate() {
                let w = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(*part));
                let mut v = _mm256_mul_ps(scale, w);
                match offset {
                    Some(Offset::Add(m)) => v = _mm256_add_ps(v, m),
                    Some(Offset::Sub(m)) => v = _mm256_sub_ps(v, m),
                    None => {}
                }
                _mm256_storeu_ps(o.as_mut_ptr().add(8 * k), v);
            }
        }
    }

    /// Like [`store_i8x32`] with scale `s0` for the first 16 weights and `s1` for the rest.
    ///
    /// # Safety
    /// AVX2 must be available; `o` must hold at least 32 floats.
    #[inline(always)]
    unsafe fn store_i8x32_halves(o: &mut [f32], q: __m256i, s0: __m256, s1: __m256) {
        assert!(o.len() >= 32);
        // SAFETY: AVX2 per the contract; the four 8-float stores stay within `o[..32]`.
        unsafe {
            let lo = _mm256_castsi256_si128(q);
            let hi = _mm256_extracti128_si256(q, 1);
            let parts = [
                (lo, s0),
                (_mm_srli_si128(lo, 8), s0),
                (hi, s1),
                (_mm_srli_si128(hi, 8), s1),
            ];
            for (k, (part, s)) in parts.iter().enumerate() {
                let w = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(*part));
                _mm256_storeu_ps(o.as_mut_ptr().add(8 * k), _mm256_mul_ps(*s, w));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every type, random blocks with random (finite, mixed-sign) scales: identical bits.
    #[test]
    fn fast_dequantization_is_bit_identical_to_the_reference() {
        let mut state = 0x1234_5678_9abc_def0u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        use GgmlType::*;
        for ty in [
            F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K,
        ] {
            let n = 512;
            let bytes = ty.row_bytes(n as u64).unwrap() as usize;
            for _ in 0..20 {
                let mut src: Vec<u8> = (0..bytes).map(|_| next() as u8).collect();
                // Keep every f16/f32 value finite: clear the top exponent bit of each
                // 16-bit word (random bytes elsewhere decode to any finite value).
                if ty == F32 {
                    for w in src.chunks_exact_mut(4) {
                        w[3] &= 0xbf;
                    }
                } else {
                    for w in src.chunks_exact_mut(2) {
                        w[1] &= 0xbf;
                    }
                }
                let mut want = vec![0f32; n];
                let mut got = vec![1f32; n];
                dequantize_row(ty, &src, &mut want).unwrap();
                dequantize_row_fast(ty, &src, &mut got).unwrap();
                for (i, (a, b)) in want.iter().zip(&got).enumerate() {
                    assert_eq!(a.to_bits(), b.to_bits(), "{ty} weight {i}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn bad_lengths_are_errors() {
        let mut out = vec![0f32; 256];
        assert!(dequantize_row_fast(GgmlType::Q4_K, &[0u8; 143], &mut out).is_err());
        assert!(dequantize_row_fast(GgmlType::Q8_0, &[0u8; 34 * 8 - 1], &mut out).is_err());
    }
}
