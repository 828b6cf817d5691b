//! `out += coef * row` kernels for the sparse down projection: F32, F16, Q8_0 and Q4_0 rows
//! directly (scalar and AVX2), and with AVX2 also Q5_0, Q4_K and Q6_K (the types a
//! neuron-major `ffn_down` copy is usually stored in; Q4_0 serves the coarse copies of Q6_K
//! downs). Other types are dequantized first.

use crate::quant::blocks::*;
use crate::quant::types::GgmlType;

/// `out += coef * dequantize(row)`; `row` holds exactly `out.len()` weights.
pub(crate) type Axpy = fn(coef: f32, row: &[u8], out: &mut [f32]);

/// The direct kernel for `ty` under the active instruction set, or `None` if rows of this
/// type have to be dequantized first.
pub(crate) fn axpy_kernel(ty: GgmlType) -> Option<Axpy> {
    axpy_kernel_for(ty, crate::quant::active_isa())
}

pub(crate) fn axpy_kernel_for(ty: GgmlType, isa: crate::quant::Isa) -> Option<Axpy> {
    #[cfg(target_arch = "x86_64")]
    if isa == crate::quant::Isa::Avx2 && crate::quant::best_supported_isa() == isa {
        match ty {
            GgmlType::F32 => return Some(avx2::axpy_f32 as Axpy),
            GgmlType::F16 => return Some(avx2::axpy_f16 as Axpy),
            GgmlType::Q8_0 => return Some(avx2::axpy_q8_0 as Axpy),
            GgmlType::Q4_0 => return Some(avx2::axpy_q4_0 as Axpy),
            GgmlType::Q5_0 => return Some(avx2::axpy_q5_0 as Axpy),
            GgmlType::Q3_K => return Some(avx2::axpy_q3_k as Axpy),
            GgmlType::Q4_K => return Some(avx2::axpy_q4_k as Axpy),
            GgmlType::Q6_K => return Some(avx2::axpy_q6_k as Axpy),
            _ => {}
        }
    }
    let _ = isa;
    match ty {
        GgmlType::F32 => Some(axpy_f32),
        GgmlType::F16 => Some(axpy_f16),
        GgmlType::Q8_0 => Some(axpy_q8_0),
        GgmlType::Q4_0 => Some(axpy_q4_0),
        _ => None,
    }
}

fn axpy_f32(coef: f32, row: &[u8], out: &mut [f32]) {
    for (o, w) in out.iter_mut().zip(row.chunks_exact(4)) {
        *o += coef * f32::from_le_bytes([w[0], w[1], w[2], w[3]]);
    }
}

fn axpy_f16(coef: f32, row: &[u8], out: &mut [f32]) {
    for (o, w) in out.iter_mut().zip(row.chunks_exact(2)) {
        *o += coef * f16_le([w[0], w[1]]);
    }
}

fn axpy_q8_0(coef: f32, row: &[u8], out: &mut [f32]) {
    for (b, o) in cast_blocks_prefix::<BlockQ8_0>(row)
        .iter()
        .zip(out.chunks_exact_mut(QK32))
    {
        let dc = coef * b.d();
        for (o, &q) in o.iter_mut().zip(&b.qs) {
            *o += dc * q as f32;
        }
    }
}

fn axpy_q4_0(coef: f32, row: &[u8], out: &mut [f32]) {
    for (b, o) in cast_blocks_prefix::<BlockQ4_0>(row)
        .iter()
        .zip(out.chunks_exact_mut(QK32))
    {
        // Byte i holds weight i in its low nibble and weight i + 16 in its high one.
        let dc = coef * b.d();
        let (lo, hi) = o.split_at_mut(QK32 / 2);
        for ((l, h), &q) in lo.iter_mut().zip(hi).zip(&b.qs) {
            *l += dc * ((q & 0x0f) as i32 - 8) as f32;
            *h += dc * ((q >> 4) as i32 - 8) as f32;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use crate::quant::blocks::*;

    // The safe wrappers below are only returned by `axpy_kernel_for` after runtime detection
    // of avx2/fma/f16c.

    pub(super) fn axpy_f32(coef: f32, row: &[u8], out: &mut [f32]) {
        // SAFETY: CPU support checked by the caller (see module comment); reads and writes
        // stay inside `row` and `out`.
        unsafe { f32_impl(coef, row, out) }
    }
    pub(super) fn axpy_f16(coef: f32, row: &[u8], out: &mut [f32]) {
        // SAFETY: as above.
        unsafe { f16_impl(coef, row, out) }
    }
    pub(super) fn axpy_q8_0(coef: f32, row: &[u8], out: &mut [f32]) {
        // SAFETY: as above.
        unsafe { q8_0_impl(coef, row, out) }
    }
    pub(super) fn axpy_q4_0(coef: f32, row: &[u8], out: &mut [f32]) {
        // SAFETY: as above.
        unsafe { q4_0_impl(coef, row, out) }
    }
    pub(super) fn axpy_q5_0(coef: f32, row: &[u8], out: &mut [f32]) {
        // SAFETY: as above.
        unsafe { q5_0_impl(coef, row, out) }
    }
    pub(super) fn axpy_q3_k(coef: f32, row: &[u8], out: &mut [f32]) {
        // SAFETY: as above.
        unsafe { q3_k_impl(coef, row, out) }
    }
    pub(super) fn axpy_q4_k(coef: f32, row: &[u8], out: &mut [f32]) {
        // SAFETY: as above.
        unsafe { q4_k_impl(coef, row, out) }
    }
    pub(super) fn axpy_q6_k(coef: f32, row: &[u8], out: &mut [f32]) {
        // SAFETY: as above.
        unsafe { q6_k_impl(coef, row, out) }
    }

    /// `o[k] += c * q[k]` (then `- m` when given) for the 32 signed bytes of `q`.
    ///
    /// Callers pass `o` with at least 32 elements (a `chunks_exact_mut(32)` chunk).
    #[inline(always)]
    unsafe fn fma_i8x32(o: &mut [f32], q: __m256i, c: __m256, m: Option<__m256>) {
        debug_assert!(o.len() >= 32);
        let lo = _mm256_castsi256_si128(q);
        let hi = _mm256_extracti128_si256(q, 1);
        let parts = [lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)];
        for (k, part) in parts.iter().enumerate() {
            let w = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(*part));
            let p = o.as_mut_ptr().add(8 * k);
            let mut v = _mm256_loadu_ps(p);
            if let Some(m) = m {
                v = _mm256_sub_ps(v, m);
            }
            _mm256_storeu_ps(p, _mm256_fmadd_ps(c, w, v));
        }
    }

    /// Like [`fma_i8x32`] with a different coefficient for each 16-weight half.
    #[inline(always)]
    unsafe fn fma_i8x32_halves(o: &mut [f32], q: __m256i, c0: __m256, c1: __m256) {
        debug_assert!(o.len() >= 32);
        let lo = _mm256_castsi256_si128(q);
        let hi = _mm256_extracti128_si256(q, 1);
        let parts = [
            (lo, c0),
            (_mm_srli_si128(lo, 8), c0),
            (hi, c1),
            (_mm_srli_si128(hi, 8), c1),
        ];
        for (k, (part, c)) in parts.iter().enumerate() {
            let w = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(*part));
            let p = o.as_mut_ptr().add(8 * k);
            _mm256_storeu_ps(p, _mm256_fmadd_ps(*c, w, _mm256_loadu_ps(p)));
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q4_0_impl(coef: f32, row: &[u8], out: &mut [f32]) {
        use crate::quant::dot_avx2::{h2f, nibbles_32};
        for (b, o) in cast_blocks_prefix::<BlockQ4_0>(row)
            .iter()
            .zip(out.chunks_exact_mut(QK32))
        {
            let q = _mm256_sub_epi8(nibbles_32(&b.qs), _mm256_set1_epi8(8));
            fma_i8x32(o, q, _mm256_set1_ps(coef * h2f(b.d)), None);
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q5_0_impl(coef: f32, row: &[u8], out: &mut [f32]) {
        use crate::quant::dot_avx2::{fifth_bits_32, h2f, nibbles_32};
        for (b, o) in cast_blocks_prefix::<BlockQ5_0>(row)
            .iter()
            .zip(out.chunks_exact_mut(QK32))
        {
            let q = _mm256_or_si256(nibbles_32(&b.qs), fifth_bits_32(b.qh()));
            let q = _mm256_sub_epi8(q, _mm256_set1_epi8(16));
            fma_i8x32(o, q, _mm256_set1_ps(coef * h2f(b.d)), None);
        }
    }

    /// Q3_K: 32-weight groups decoded as the dot kernel does ([`q3_group_quants`], minus 4);
    /// each 16 weights share a 6-bit scale (minus 32).
    ///
    /// [`q3_group_quants`]: crate::quant::dot_avx2::q3_group_quants
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q3_k_impl(coef: f32, row: &[u8], out: &mut [f32]) {
        use crate::quant::dot_avx2::q3_group_quants;
        let four = _mm256_set1_epi8(4);
        for (b, o) in cast_blocks_prefix::<BlockQ3K>(row)
            .iter()
            .zip(out.chunks_exact_mut(256))
        {
            let cd = coef * b.d();
            let scales = b.unpacked_scales();
            let hmask = _mm256_loadu_si256(b.hmask.as_ptr().cast());
            for half in 0..2 {
                let q = _mm256_loadu_si256(b.qs.as_ptr().add(32 * half).cast());
                for j in 0..4 {
                    let w = _mm256_sub_epi8(q3_group_quants(q, hmask, half, j), four);
                    let is = 8 * half + 2 * j;
                    let start = 128 * half + 32 * j;
                    fma_i8x32_halves(
                        &mut o[start..start + 32],
                        w,
                        _mm256_set1_ps(cd * (scales[is] as i32 - 32) as f32),
                        _mm256_set1_ps(cd * (scales[is + 1] as i32 - 32) as f32),
                    );
                }
            }
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q4_k_impl(coef: f32, row: &[u8], out: &mut [f32]) {
        use crate::quant::dot_avx2::h2f_pair;
        let low4 = _mm256_set1_epi8(0x0f);
        for (b, o) in cast_blocks_prefix::<BlockQ4K>(row)
            .iter()
            .zip(out.chunks_exact_mut(256))
        {
            let (d, dmin) = h2f_pair(b.d, b.dmin);
            let (cd, cm) = (coef * d, coef * dmin);
            let (sc, mn) = unpack_scales_mins_k4(&b.scales);
            for c in 0..4 {
                let bits = _mm256_loadu_si256(b.qs.as_ptr().add(32 * c).cast());
                let lo = _mm256_and_si256(bits, low4);
                let hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), low4);
                for (k, q) in [(2 * c, lo), (2 * c + 1, hi)] {
                    let scale = _mm256_set1_ps(cd * sc[k] as f32);
                    let min = _mm256_set1_ps(cm * mn[k] as f32);
                    fma_i8x32(&mut o[32 * k..32 * k + 32], q, scale, Some(min));
                }
            }
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q6_k_impl(coef: f32, row: &[u8], out: &mut [f32]) {
        use crate::quant::dot_avx2::{h2f, q6_half_quants};
        let m32 = _mm256_set1_epi8(32);
        for (b, o) in cast_blocks_prefix::<BlockQ6K>(row)
            .iter()
            .zip(out.chunks_exact_mut(256))
        {
            let cd = coef * h2f(b.d);
            for half in 0..2 {
                let q = q6_half_quants(b, half);
                for (g, qg) in q.iter().enumerate() {
                    let qs = _mm256_sub_epi8(*qg, m32);
                    let s0 = b.scales[8 * half + 2 * g] as f32;
                    let s1 = b.scales[8 * half + 2 * g + 1] as f32;
                    let start = 128 * half + 32 * g;
                    fma_i8x32_halves(
                        &mut o[start..start + 32],
                        qs,
                        _mm256_set1_ps(cd * s0),
                        _mm256_set1_ps(cd * s1),
                    );
                }
            }
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn f32_impl(coef: f32, row: &[u8], out: &mut [f32]) {
        let n = out.len().min(row.len() / 4);
        let c = _mm256_set1_ps(coef);
        let (pw, po) = (row.as_ptr().cast::<f32>(), out.as_mut_ptr());
        let mut i = 0;
        while i + 8 <= n {
            let v = _mm256_fmadd_ps(c, _mm256_loadu_ps(pw.add(i)), _mm256_loadu_ps(po.add(i)));
            _mm256_storeu_ps(po.add(i), v);
            i += 8;
        }
        while i < n {
            *po.add(i) += coef * pw.add(i).read_unaligned();
            i += 1;
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn f16_impl(coef: f32, row: &[u8], out: &mut [f32]) {
        let n = out.len().min(row.len() / 2);
        let c = _mm256_set1_ps(coef);
        let (pw, po) = (row.as_ptr().cast::<u16>(), out.as_mut_ptr());
        let mut i = 0;
        while i + 8 <= n {
            let w = _mm256_cvtph_ps(_mm_loadu_si128(pw.add(i).cast()));
            _mm256_storeu_ps(po.add(i), _mm256_fmadd_ps(c, w, _mm256_loadu_ps(po.add(i))));
            i += 8;
        }
        while i < n {
            *po.add(i) += coef * half::f16::from_bits(pw.add(i).read_unaligned()).to_f32();
            i += 1;
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q8_0_impl(coef: f32, row: &[u8], out: &mut [f32]) {
        for (b, o) in cast_blocks_prefix::<BlockQ8_0>(row)
            .iter()
            .zip(out.chunks_exact_mut(QK32))
        {
            let dc = _mm256_set1_ps(coef * b.d());
            for k in 0..4 {
                let q = _mm_loadl_epi64(b.qs.as_ptr().add(8 * k).cast());
                let w = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
                let p = o.as_mut_ptr().add(8 * k);
                _mm256_storeu_ps(p, _mm256_fmadd_ps(dc, w, _mm256_loadu_ps(p)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{dequantize_row, quantize::quantize_row, Isa};

    /// The portable and (where the CPU has it) AVX2 kernels add `coef ×` the dequantized row
    /// to what `out` held (Q4_0; Q3_K, whose coarse down copies have only the AVX2 kernel and
    /// otherwise the dequantizing fallback of `axpy_rows`).
    #[test]
    fn axpy_kernels_add_the_dequantized_row() {
        kernels_add_the_dequantized_row(GgmlType::Q4_0, 96);
        kernels_add_the_dequantized_row(GgmlType::Q3_K, 512);
    }

    fn kernels_add_the_dequantized_row(ty: GgmlType, n: usize) {
        let x: Vec<f32> = (0..n)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.13)
            .collect();
        let mut row = vec![0u8; ty.row_bytes(n as u64).unwrap() as usize];
        quantize_row(ty, &x, &mut row).unwrap();
        let mut deq = vec![0f32; n];
        dequantize_row(ty, &row, &mut deq).unwrap();
        let init: Vec<f32> = (0..n).map(|i| i as f32 * 0.01).collect();
        let mut isas = vec![Isa::Scalar];
        if crate::quant::best_supported_isa() == Isa::Avx2 {
            isas.push(Isa::Avx2);
        }
        let mut tested = 0;
        for isa in isas {
            let Some(f) = axpy_kernel_for(ty, isa) else {
                continue;
            };
            tested += 1;
            let mut out = init.clone();
            f(-0.7, &row, &mut out);
            for i in 0..n {
                let want = init[i] - 0.7 * deq[i];
                assert!(
                    (out[i] - want).abs() <= 1e-5 * (1.0 + want.abs()),
                    "{ty} {isa} {i}"
                );
            }
        }
        if tested == 0 {
            // Only Q3_K lacks a portable kernel.
            assert_eq!(ty, GgmlType::Q3_K);
            eprintln!("skipped {ty}: this CPU has no AVX2, and {ty} has no portable kernel");
        }
    }
}
