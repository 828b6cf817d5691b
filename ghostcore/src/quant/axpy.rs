//! `out += coef * row` kernels for the sparse down projection (F32, F16 and Q8_0 rows).

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
            _ => {}
        }
    }
    let _ = isa;
    match ty {
        GgmlType::F32 => Some(axpy_f32),
        GgmlType::F16 => Some(axpy_f16),
        GgmlType::Q8_0 => Some(axpy_q8_0),
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
