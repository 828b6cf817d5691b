//! Quantization of activations (the right-hand side of a matvec) into the "vec_dot type"
//! ggml pairs with each weight type, bit-faithful to llama.cpp's x86 CPU backend:
//!
//! - Q8_0 / Q8_1 follow `quantize_row_q8_0` / `quantize_row_q8_1` of
//!   `ggml-cpu/arch/x86/quants.c` (AVX path): `d = amax / 127`, `id = 127 / amax`,
//!   `q = round_half_even(x * id)`, and for Q8_1 `s = f16(d * Σq)`.
//! - Q8_K follows `quantize_row_q8_K_ref` (`ggml-quants.c`), which the x86 backend uses:
//!   the signed element of largest magnitude `max`, `iscale = -127 / max`,
//!   `q = min(127, nearest_int(iscale * x))`, `d = 1 / iscale`, 16-element sums.
//! - F16 / BF16 round to nearest even; F32 is copied.
//!
//! The Q8 formats have an AVX2 path (`activation_avx2`) that writes the same bytes; the
//! scalar block functions here are the reference it is tested against and its fallback for
//! non-finite input.

use crate::error::Result;
use crate::quant::blocks::*;
use crate::quant::kernels::{active_isa, best_supported_isa, Isa};
use crate::quant::types::GgmlType;
use crate::quant::QK_K;

/// The activation format ggml's CPU backend pairs with weights of type `ty`
/// (`type_traits_cpu[ty].vec_dot_type`). Types without a dot product map to themselves.
pub fn vec_dot_type(ty: GgmlType) -> GgmlType {
    use GgmlType::*;
    match ty {
        F32 => F32,
        F16 => F16,
        BF16 => BF16,
        Q4_0 | Q5_0 | Q8_0 => Q8_0,
        Q4_1 | Q5_1 => Q8_1,
        Q2_K | Q3_K | Q4_K | Q5_K | Q6_K | Q8_K => Q8_K,
        other => other,
    }
}

/// Quantize `x` into `dst` as `vdt` (one of F32, F16, BF16, Q8_0, Q8_1, Q8_K).
///
/// Errors if `vdt` is not an activation type, if `x.len()` is not a whole number of blocks,
/// or if `dst.len() != vdt.row_bytes(x.len())`.
pub fn quantize_activations(vdt: GgmlType, x: &[f32], dst: &mut [u8]) -> Result<()> {
    quantize_activations_with_isa(active_isa(), vdt, x, dst)
}

/// [`quantize_activations`] with the code of `isa` (scalar where `isa` is unavailable); the
/// bytes are the same for every instruction set.
pub fn quantize_activations_with_isa(
    isa: Isa,
    vdt: GgmlType,
    x: &[f32],
    dst: &mut [u8],
) -> Result<()> {
    let simd = isa == Isa::Avx2 && best_supported_isa() == Isa::Avx2;
    let expected = vdt.row_bytes(x.len() as u64);
    if expected != Some(dst.len() as u64) {
        crate::bail!(
            InvalidArgument,
            "quantize {} activations as {vdt}: destination has {} bytes, expected {:?}",
            x.len(),
            dst.len(),
            expected
        );
    }
    match vdt {
        GgmlType::F32 => {
            for (d, v) in dst.chunks_exact_mut(4).zip(x) {
                d.copy_from_slice(&v.to_le_bytes());
            }
        }
        GgmlType::F16 => {
            for (d, v) in dst.chunks_exact_mut(2).zip(x) {
                d.copy_from_slice(&half::f16::from_f32(*v).to_bits().to_le_bytes());
            }
        }
        GgmlType::BF16 => {
            for (d, v) in dst.chunks_exact_mut(2).zip(x) {
                d.copy_from_slice(&f32_to_bf16(*v).to_le_bytes());
            }
        }
        GgmlType::Q8_0 => {
            let blocks = cast_blocks_mut::<BlockQ8_0>(dst)?;
            #[cfg(target_arch = "x86_64")]
            if simd {
                // SAFETY: `simd` means the CPU supports avx2; `x` holds 32 floats per block
                // (the length check above).
                unsafe { super::activation_avx2::quantize_row_q8_0(x, blocks) };
                return Ok(());
            }
            for (b, xs) in blocks.iter_mut().zip(x.chunks_exact(QK32)) {
                quantize_q8_0_block(xs, b);
            }
        }
        GgmlType::Q8_1 => {
            let blocks = cast_blocks_mut::<BlockQ8_1>(dst)?;
            #[cfg(target_arch = "x86_64")]
            if simd {
                // SAFETY: as for Q8_0.
                unsafe { super::activation_avx2::quantize_row_q8_1(x, blocks) };
                return Ok(());
            }
            for (b, xs) in blocks.iter_mut().zip(x.chunks_exact(QK32)) {
                quantize_q8_1_block(xs, b);
            }
        }
        GgmlType::Q8_K => {
            let blocks = cast_blocks_mut::<BlockQ8K>(dst)?;
            #[cfg(target_arch = "x86_64")]
            if simd {
                // SAFETY: as for Q8_0, with 256 floats per block.
                unsafe { super::activation_avx2::quantize_row_q8_k(x, blocks) };
                return Ok(());
            }
            for (b, xs) in blocks.iter_mut().zip(x.chunks_exact(QK_K)) {
                quantize_q8_k_block(xs, b);
            }
        }
        other => crate::bail!(Unsupported, "{other} is not an activation (vec_dot) type"),
    }
    let _ = simd;
    Ok(())
}

/// f32 to bf16 bits, rounding to nearest even; NaN stays a (quiet) NaN, as ggml does.
#[inline]
pub fn f32_to_bf16(v: f32) -> u16 {
    let u = v.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    ((u + (0x7fff + ((u >> 16) & 1))) >> 16) as u16
}

/// Absolute maximum and the 8-bit quants `round_half_even(x * 127 / amax)` of one block.
#[inline(always)]
fn q8_symmetric(xs: &[f32], qs: &mut [i8; QK32]) -> f32 {
    let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    for (q, &v) in qs.iter_mut().zip(xs) {
        // `as i8` saturates like the packs instructions ggml uses (only NaN/inf inputs reach it).
        *q = (v * id).round_ties_even().clamp(-128.0, 127.0) as i8;
    }
    d
}

pub(super) fn quantize_q8_0_block(xs: &[f32], b: &mut BlockQ8_0) {
    let d = q8_symmetric(xs, &mut b.qs);
    b.d = half::f16::from_f32(d).to_bits().to_le_bytes();
}

pub(super) fn quantize_q8_1_block(xs: &[f32], b: &mut BlockQ8_1) {
    let d = q8_symmetric(xs, &mut b.qs);
    let sum: i32 = b.qs.iter().map(|&q| q as i32).sum();
    b.d = half::f16::from_f32(d).to_bits().to_le_bytes();
    b.s = half::f16::from_f32(d * sum as f32).to_bits().to_le_bytes();
}

pub(super) fn quantize_q8_k_block(xs: &[f32], b: &mut BlockQ8K) {
    let mut amax = 0f32;
    let mut max = 0f32;
    for &v in xs {
        let a = v.abs();
        if a > amax {
            amax = a;
            max = v;
        }
    }
    if amax == 0.0 {
        b.d = 0f32.to_le_bytes();
        b.qs = [0; QK_K];
        b.bsums = [0; 32];
        return;
    }
    let iscale = -127.0 / max;
    for (q, &v) in b.qs.iter_mut().zip(xs) {
        *q = nearest_int(iscale * v).min(127) as i8;
    }
    for g in 0..16 {
        let s: i32 = b.qs[16 * g..16 * g + 16].iter().map(|&q| q as i32).sum();
        b.bsums[2 * g..2 * g + 2].copy_from_slice(&(s as i16).to_le_bytes());
    }
    b.d = (1.0 / iscale).to_le_bytes();
}

/// ggml's `nearest_int`: round half to even (valid for |v| < 2^22, which holds here since
/// |v| <= 127 up to rounding).
#[inline(always)]
fn nearest_int(v: f32) -> i32 {
    v.round_ties_even() as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vec_dot_types_follow_ggml_table() {
        use GgmlType::*;
        for (w, a) in [
            (Q4_0, Q8_0),
            (Q4_1, Q8_1),
            (Q5_0, Q8_0),
            (Q5_1, Q8_1),
            (Q8_0, Q8_0),
        ] {
            assert_eq!(vec_dot_type(w), a);
        }
        for w in [Q2_K, Q3_K, Q4_K, Q5_K, Q6_K] {
            assert_eq!(vec_dot_type(w), Q8_K);
        }
        assert_eq!(vec_dot_type(F16), F16);
        assert_eq!(vec_dot_type(F32), F32);
    }

    #[test]
    fn q8_0_rounds_half_to_even() {
        // amax 127 -> id = 1, so quants are round_half_even(x).
        let mut x = [0f32; 32];
        x[0] = 127.0;
        x[1] = 2.5;
        x[2] = -2.5;
        x[3] = 3.5;
        x[4] = 0.5;
        let mut dst = vec![0u8; 34];
        quantize_activations(GgmlType::Q8_0, &x, &mut dst).unwrap();
        let b = &cast_blocks::<BlockQ8_0>(&dst).unwrap()[0];
        assert_eq!(&b.qs[..5], &[127, 2, -2, 4, 0]);
        assert_eq!(b.d(), 1.0);
    }

    #[test]
    fn q8_k_uses_signed_max_and_bsums() {
        let x: Vec<f32> = (0..256).map(|i| (i as f32 - 100.0) / 7.0).collect();
        let mut dst = vec![0u8; 292];
        quantize_activations(GgmlType::Q8_K, &x, &mut dst).unwrap();
        let b = &cast_blocks::<BlockQ8K>(&dst).unwrap()[0];
        // Largest |x| is x[255] > 0, so iscale < 0 and d < 0; that element maps to -127.
        assert!(b.d() < 0.0);
        assert_eq!(b.qs[255], -127);
        for g in 0..16 {
            let s: i32 = b.qs[16 * g..16 * g + 16].iter().map(|&q| q as i32).sum();
            assert_eq!(b.bsum(g) as i32, s);
        }
        assert!(quantize_activations(GgmlType::Q8_K, &x, &mut dst[..291]).is_err());
        assert!(quantize_activations(GgmlType::Q4_K, &x, &mut [0u8; 144]).is_err());
    }

    /// Rows that stress the AVX2 path: random magnitudes over many decades, exact ties
    /// (x * 127 / amax landing on k + 0.5), zero and negative-zero blocks, a block whose
    /// largest magnitude appears with both signs, subnormal maxima (scale overflows), NaN and
    /// infinities (scalar fallback).
    fn stress_rows() -> Vec<Vec<f32>> {
        let mut rng = crate::sampling::Rng::new(7);
        let mut rows = Vec::new();
        for decade in [-30i32, -6, -1, 0, 2, 9] {
            let row: Vec<f32> = (0..1024)
                .map(|_| {
                    let u = rng.next_f64() * 2.0 - 1.0;
                    (u * 10f64.powi(decade)) as f32
                })
                .collect();
            rows.push(row);
        }
        // Ties: amax 127 so that x * id == x exactly, and halves.
        let mut ties: Vec<f32> = (0..512).map(|i| (i % 255) as f32 * 0.5 - 63.5).collect();
        for c in ties.chunks_mut(32) {
            c[0] = 127.0;
        }
        rows.push(ties);
        let mut special = vec![0f32; 1024];
        special[256..512].fill(-0.0);
        special[512] = 3.0;
        special[520] = -3.0; // same magnitude, later: Q8_K keeps the first (+3)
        special[530] = 1.5;
        special[600] = f32::from_bits(1); // subnormal maximum of its 32-block
        special[700] = f32::NAN;
        special[701] = 2.0;
        special[800] = f32::INFINITY;
        special[801] = -7.0;
        special[900] = f32::NEG_INFINITY;
        special[1000] = f32::MIN_POSITIVE * 0.25;
        special[1001] = -f32::MIN_POSITIVE * 0.5;
        rows.push(special);
        rows
    }

    #[test]
    fn simd_quantization_writes_the_scalar_bytes() {
        if best_supported_isa() == Isa::Scalar {
            eprintln!("SKIPPED: no SIMD activation path on this CPU");
            return;
        }
        for row in stress_rows() {
            for vdt in [GgmlType::Q8_0, GgmlType::Q8_1, GgmlType::Q8_K] {
                let n = vdt.row_bytes(row.len() as u64).unwrap() as usize;
                let (mut want, mut got) = (vec![0u8; n], vec![0xa5u8; n]);
                quantize_activations_with_isa(Isa::Scalar, vdt, &row, &mut want).unwrap();
                quantize_activations_with_isa(best_supported_isa(), vdt, &row, &mut got).unwrap();
                let bs = vdt.type_size();
                for (k, (w, g)) in want.chunks(bs).zip(got.chunks(bs)).enumerate() {
                    assert_eq!(w, g, "{vdt} block {k} differs");
                }
            }
        }
    }
}
