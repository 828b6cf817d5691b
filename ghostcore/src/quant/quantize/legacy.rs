//! The 32-weight block formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 (ggml's `quantize_row_*_ref`).
//!
//! Each function takes whole blocks of input (`x.len() == 32 · n_blocks`) and an output of
//! exactly `n_blocks · type_size` bytes; the caller checks both.

use super::f16_bits;

const QK: usize = 32;

/// C's float → small-int conversion as x86 does it (truncate toward zero, keep the low
/// bits). Every call site keeps the value in range for finite input.
#[inline]
fn trunc_i32(v: f32) -> i32 {
    v as i32
}

/// Signed value of largest magnitude (the first one if several tie), and that magnitude.
#[inline]
fn signed_absmax(block: &[f32]) -> (f32, f32) {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in block {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    (max, amax)
}

#[inline]
fn min_max(block: &[f32]) -> (f32, f32) {
    let mut min = f32::MAX;
    let mut max = -f32::MAX;
    for &v in block {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

#[inline]
fn inverse(d: f32) -> f32 {
    if d != 0.0 {
        1.0 / d
    } else {
        0.0
    }
}

/// Q4_0: `d` (f16), 16 bytes of 4-bit quants; weight = d·(q − 8). Block 18 bytes.
pub(super) fn quantize_q4_0(x: &[f32], dst: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(QK).zip(dst.chunks_exact_mut(18)) {
        let (max, _) = signed_absmax(xb);
        let d = max / -8.0;
        let id = inverse(d);
        yb[0..2].copy_from_slice(&f16_bits(d).to_le_bytes());
        for j in 0..QK / 2 {
            let q0 = trunc_i32(xb[j] * id + 8.5).min(15) as u8;
            let q1 = trunc_i32(xb[j + QK / 2] * id + 8.5).min(15) as u8;
            yb[2 + j] = q0 | (q1 << 4);
        }
    }
}

/// Q4_1: `d`, `m` (f16), 16 bytes of 4-bit quants; weight = d·q + m. Block 20 bytes.
pub(super) fn quantize_q4_1(x: &[f32], dst: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(QK).zip(dst.chunks_exact_mut(20)) {
        let (min, max) = min_max(xb);
        let d = (max - min) / 15.0;
        let id = inverse(d);
        yb[0..2].copy_from_slice(&f16_bits(d).to_le_bytes());
        yb[2..4].copy_from_slice(&f16_bits(min).to_le_bytes());
        for j in 0..QK / 2 {
            let q0 = trunc_i32((xb[j] - min) * id + 0.5).min(15) as u8;
            let q1 = trunc_i32((xb[j + QK / 2] - min) * id + 0.5).min(15) as u8;
            yb[4 + j] = q0 | (q1 << 4);
        }
    }
}

/// Q5_0: `d` (f16), 4 bytes of fifth bits, 16 bytes of low nibbles; weight = d·(q − 16).
/// Block 22 bytes.
pub(super) fn quantize_q5_0(x: &[f32], dst: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(QK).zip(dst.chunks_exact_mut(22)) {
        let (max, _) = signed_absmax(xb);
        let d = max / -16.0;
        let id = inverse(d);
        yb[0..2].copy_from_slice(&f16_bits(d).to_le_bytes());
        let mut qh = 0u32;
        for j in 0..QK / 2 {
            let q0 = trunc_i32(xb[j] * id + 16.5).min(31) as u32;
            let q1 = trunc_i32(xb[j + QK / 2] * id + 16.5).min(31) as u32;
            yb[6 + j] = ((q0 & 0x0F) | ((q1 & 0x0F) << 4)) as u8;
            qh |= ((q0 & 0x10) >> 4) << j;
            qh |= ((q1 & 0x10) >> 4) << (j + QK / 2);
        }
        yb[2..6].copy_from_slice(&qh.to_le_bytes());
    }
}

/// Q5_1: `d`, `m` (f16), 4 bytes of fifth bits, 16 bytes of low nibbles; weight = d·q + m.
/// Block 24 bytes.
pub(super) fn quantize_q5_1(x: &[f32], dst: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(QK).zip(dst.chunks_exact_mut(24)) {
        let (min, max) = min_max(xb);
        let d = (max - min) / 31.0;
        let id = inverse(d);
        yb[0..2].copy_from_slice(&f16_bits(d).to_le_bytes());
        yb[2..4].copy_from_slice(&f16_bits(min).to_le_bytes());
        let mut qh = 0u32;
        for j in 0..QK / 2 {
            // ggml converts straight to uint8_t here, without a clamp.
            let q0 = (trunc_i32((xb[j] - min) * id + 0.5) as u8) as u32;
            let q1 = (trunc_i32((xb[j + QK / 2] - min) * id + 0.5) as u8) as u32;
            yb[8 + j] = ((q0 & 0x0F) | ((q1 & 0x0F) << 4)) as u8;
            qh |= ((q0 & 0x10) >> 4) << j;
            qh |= ((q1 & 0x10) >> 4) << (j + QK / 2);
        }
        yb[4..8].copy_from_slice(&qh.to_le_bytes());
    }
}

/// Q8_0: `d` (f16), 32 signed bytes; weight = d·q. Block 34 bytes.
pub(super) fn quantize_q8_0(x: &[f32], dst: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(QK).zip(dst.chunks_exact_mut(34)) {
        let mut amax = 0.0f32;
        for &v in xb {
            // MAX(amax, fabsf(v)) in ggml: `a > b ? a : b`.
            let a = v.abs();
            amax = if amax > a { amax } else { a };
        }
        let d = amax / 127.0;
        let id = inverse(d);
        yb[0..2].copy_from_slice(&f16_bits(d).to_le_bytes());
        for j in 0..QK {
            // roundf: half away from zero.
            yb[2 + j] = ((xb[j] * id).round() as i32) as i8 as u8;
        }
    }
}
