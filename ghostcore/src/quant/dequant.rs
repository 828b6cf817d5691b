//! Scalar reference dequantization: one row of a ggml tensor to f32.
//!
//! The formulas follow ggml's `dequantize_row_*` reference functions (same operation
//! order, so results are bit-identical to ggml's scalar code).

// Index loops mirror ggml's reference formulas element for element.
#![allow(clippy::needless_range_loop)]

use crate::error::Result;
use crate::quant::blocks::*;
use crate::quant::types::GgmlType;
use crate::quant::QK_K;

/// Dequantize `src` (whole blocks of `ty`) into `dst`.
///
/// `dst.len()` must be the number of weights `src` holds. Errors on an unsupported type or a
/// length mismatch; never panics.
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<()> {
    let expected = ty.row_bytes(dst.len() as u64);
    if expected != Some(src.len() as u64) {
        crate::bail!(
            InvalidArgument,
            "dequantize {ty}: {} bytes do not hold {} weights (expected {:?} bytes)",
            src.len(),
            dst.len(),
            expected
        );
    }
    match ty {
        GgmlType::F32 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *d = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
            }
        }
        GgmlType::F16 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = f16_le([s[0], s[1]]);
            }
        }
        GgmlType::BF16 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = bf16_to_f32(u16::from_le_bytes([s[0], s[1]]));
            }
        }
        GgmlType::Q4_0 => blocks_into(cast_blocks::<BlockQ4_0>(src)?, dst, 32, dq_q4_0),
        GgmlType::Q4_1 => blocks_into(cast_blocks::<BlockQ4_1>(src)?, dst, 32, dq_q4_1),
        GgmlType::Q5_0 => blocks_into(cast_blocks::<BlockQ5_0>(src)?, dst, 32, dq_q5_0),
        GgmlType::Q5_1 => blocks_into(cast_blocks::<BlockQ5_1>(src)?, dst, 32, dq_q5_1),
        GgmlType::Q8_0 => blocks_into(cast_blocks::<BlockQ8_0>(src)?, dst, 32, dq_q8_0),
        GgmlType::Q8_1 => blocks_into(cast_blocks::<BlockQ8_1>(src)?, dst, 32, dq_q8_1),
        GgmlType::Q2_K => blocks_into(cast_blocks::<BlockQ2K>(src)?, dst, QK_K, dq_q2_k),
        GgmlType::Q3_K => blocks_into(cast_blocks::<BlockQ3K>(src)?, dst, QK_K, dq_q3_k),
        GgmlType::Q4_K => blocks_into(cast_blocks::<BlockQ4K>(src)?, dst, QK_K, dq_q4_k),
        GgmlType::Q5_K => blocks_into(cast_blocks::<BlockQ5K>(src)?, dst, QK_K, dq_q5_k),
        GgmlType::Q6_K => blocks_into(cast_blocks::<BlockQ6K>(src)?, dst, QK_K, dq_q6_k),
        GgmlType::Q8_K => blocks_into(cast_blocks::<BlockQ8K>(src)?, dst, QK_K, dq_q8_k),
        other => crate::bail!(Unsupported, "dequantization of {other} tensors"),
    }
    Ok(())
}

/// bf16 bits to f32 (exact).
#[inline(always)]
pub fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits((bits as u32) << 16)
}

#[inline(always)]
fn blocks_into<B>(blocks: &[B], dst: &mut [f32], per_block: usize, f: fn(&B, &mut [f32])) {
    for (b, out) in blocks.iter().zip(dst.chunks_exact_mut(per_block)) {
        f(b, out);
    }
}

pub(crate) fn dq_q4_0(b: &BlockQ4_0, y: &mut [f32]) {
    let d = b.d();
    for j in 0..16 {
        let x0 = (b.qs[j] & 0x0f) as i32 - 8;
        let x1 = (b.qs[j] >> 4) as i32 - 8;
        y[j] = x0 as f32 * d;
        y[j + 16] = x1 as f32 * d;
    }
}

pub(crate) fn dq_q4_1(b: &BlockQ4_1, y: &mut [f32]) {
    let (d, m) = (b.d(), b.m());
    for j in 0..16 {
        let x0 = (b.qs[j] & 0x0f) as i32;
        let x1 = (b.qs[j] >> 4) as i32;
        y[j] = x0 as f32 * d + m;
        y[j + 16] = x1 as f32 * d + m;
    }
}

pub(crate) fn dq_q5_0(b: &BlockQ5_0, y: &mut [f32]) {
    let d = b.d();
    let qh = b.qh();
    for j in 0..16 {
        let h0 = (((qh >> j) << 4) & 0x10) as i32;
        let h1 = ((qh >> (j + 12)) & 0x10) as i32;
        let x0 = ((b.qs[j] & 0x0f) as i32 | h0) - 16;
        let x1 = ((b.qs[j] >> 4) as i32 | h1) - 16;
        y[j] = x0 as f32 * d;
        y[j + 16] = x1 as f32 * d;
    }
}

pub(crate) fn dq_q5_1(b: &BlockQ5_1, y: &mut [f32]) {
    let (d, m) = (b.d(), b.m());
    let qh = b.qh();
    for j in 0..16 {
        let h0 = (((qh >> j) << 4) & 0x10) as i32;
        let h1 = ((qh >> (j + 12)) & 0x10) as i32;
        let x0 = (b.qs[j] & 0x0f) as i32 | h0;
        let x1 = (b.qs[j] >> 4) as i32 | h1;
        y[j] = x0 as f32 * d + m;
        y[j + 16] = x1 as f32 * d + m;
    }
}

pub(crate) fn dq_q8_0(b: &BlockQ8_0, y: &mut [f32]) {
    let d = b.d();
    for (o, &q) in y.iter_mut().zip(b.qs.iter()) {
        *o = q as f32 * d;
    }
}

pub(crate) fn dq_q8_1(b: &BlockQ8_1, y: &mut [f32]) {
    let d = b.d();
    for (o, &q) in y.iter_mut().zip(b.qs.iter()) {
        *o = q as f32 * d;
    }
}

pub(crate) fn dq_q2_k(b: &BlockQ2K, y: &mut [f32]) {
    let d = b.d();
    let min = b.dmin();
    let mut is = 0;
    let mut out = 0;
    for half in 0..2 {
        let q = &b.qs[32 * half..32 * half + 32];
        for shift in [0u32, 2, 4, 6] {
            for part in 0..2 {
                let sc = b.scales[is];
                is += 1;
                let dl = d * (sc & 0x0f) as f32;
                let ml = min * (sc >> 4) as f32;
                for &byte in &q[16 * part..16 * part + 16] {
                    y[out] = dl * ((byte >> shift) & 3) as f32 - ml;
                    out += 1;
                }
            }
        }
    }
}

pub(crate) fn dq_q3_k(b: &BlockQ3K, y: &mut [f32]) {
    let d_all = b.d();
    let scales = b.unpacked_scales();
    let mut is = 0;
    let mut out = 0;
    let mut m = 1u8;
    for half in 0..2 {
        let q = &b.qs[32 * half..32 * half + 32];
        for shift in [0u32, 2, 4, 6] {
            for part in 0..2 {
                let dl = d_all * (scales[is] as i32 - 32) as f32;
                is += 1;
                for l in 16 * part..16 * part + 16 {
                    let low = ((q[l] >> shift) & 3) as i32;
                    let high = if b.hmask[l] & m != 0 { 0 } else { 4 };
                    y[out] = dl * (low - high) as f32;
                    out += 1;
                }
            }
            m <<= 1;
        }
    }
}

pub(crate) fn dq_q4_k(b: &BlockQ4K, y: &mut [f32]) {
    let d = b.d();
    let min = b.dmin();
    let (sc, mn) = unpack_scales_mins_k4(&b.scales);
    for c in 0..4 {
        let q = &b.qs[32 * c..32 * c + 32];
        let d1 = d * sc[2 * c] as f32;
        let m1 = min * mn[2 * c] as f32;
        let d2 = d * sc[2 * c + 1] as f32;
        let m2 = min * mn[2 * c + 1] as f32;
        for l in 0..32 {
            y[64 * c + l] = d1 * (q[l] & 0x0f) as f32 - m1;
            y[64 * c + 32 + l] = d2 * (q[l] >> 4) as f32 - m2;
        }
    }
}

pub(crate) fn dq_q5_k(b: &BlockQ5K, y: &mut [f32]) {
    let d = b.d();
    let min = b.dmin();
    let (sc, mn) = unpack_scales_mins_k4(&b.scales);
    for c in 0..4 {
        let ql = &b.qs[32 * c..32 * c + 32];
        let u1 = 1u8 << (2 * c);
        let u2 = 2u8 << (2 * c);
        let d1 = d * sc[2 * c] as f32;
        let m1 = min * mn[2 * c] as f32;
        let d2 = d * sc[2 * c + 1] as f32;
        let m2 = min * mn[2 * c + 1] as f32;
        for l in 0..32 {
            let h1 = if b.qh[l] & u1 != 0 { 16 } else { 0 };
            let h2 = if b.qh[l] & u2 != 0 { 16 } else { 0 };
            y[64 * c + l] = d1 * ((ql[l] & 0x0f) + h1) as f32 - m1;
            y[64 * c + 32 + l] = d2 * ((ql[l] >> 4) + h2) as f32 - m2;
        }
    }
}

pub(crate) fn dq_q6_k(b: &BlockQ6K, y: &mut [f32]) {
    let d = b.d();
    for half in 0..2 {
        let ql = &b.ql[64 * half..64 * half + 64];
        let qh = &b.qh[32 * half..32 * half + 32];
        let sc = &b.scales[8 * half..8 * half + 8];
        let y = &mut y[128 * half..128 * half + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            y[l] = d * sc[is] as f32 * q1 as f32;
            y[l + 32] = d * sc[is + 2] as f32 * q2 as f32;
            y[l + 64] = d * sc[is + 4] as f32 * q3 as f32;
            y[l + 96] = d * sc[is + 6] as f32 * q4 as f32;
        }
    }
}

pub(crate) fn dq_q8_k(b: &BlockQ8K, y: &mut [f32]) {
    let d = b.d();
    for (o, &q) in y.iter_mut().zip(b.qs.iter()) {
        *o = d * q as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_lengths_and_types() {
        let mut out = vec![0f32; 256];
        assert!(dequantize_row(GgmlType::Q4_K, &[0u8; 143], &mut out).is_err());
        assert!(dequantize_row(GgmlType::Q4_K, &[0u8; 144], &mut out).is_ok());
        assert!(dequantize_row(GgmlType::Q4_K, &[0u8; 144], &mut out[..255]).is_err());
        assert!(dequantize_row(GgmlType::IQ2_XXS, &[0u8; 66], &mut out).is_err());
    }

    #[test]
    fn q4_0_hand_block() {
        // d = 0.5 (f16 0x3800); byte j holds q_j (low) and q_{j+16} (high).
        let mut b = vec![0x00, 0x38];
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let mut y = [0f32; 32];
        dequantize_row(GgmlType::Q4_0, &b, &mut y).unwrap();
        for j in 0..16 {
            assert_eq!(y[j], (j as f32 - 8.0) * 0.5);
            assert_eq!(y[j + 16], (7.0 - j as f32) * 0.5);
        }
    }
}
