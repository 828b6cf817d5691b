//! Scalar reference dot products: one weight row against one row of quantized activations
//! (of the type [`vec_dot_type`](crate::quant::vec_dot_type) gives).
//!
//! Integer arithmetic inside each block, then one float multiply-add per block (per
//! sub-block sum for the offset formats), as ggml's generic kernels do. These are the
//! reference the SIMD kernels are tested against.

// Index loops mirror ggml's reference formulas element for element.
#![allow(clippy::needless_range_loop)]

use crate::quant::blocks::*;
use crate::quant::dequant::bf16_to_f32;

pub(crate) fn dot_f32(w: &[u8], a: &[u8]) -> f32 {
    let mut acc = 0f64;
    for (x, y) in w.chunks_exact(4).zip(a.chunks_exact(4)) {
        let x = f32::from_le_bytes([x[0], x[1], x[2], x[3]]);
        let y = f32::from_le_bytes([y[0], y[1], y[2], y[3]]);
        acc += x as f64 * y as f64;
    }
    acc as f32
}

pub(crate) fn dot_f16(w: &[u8], a: &[u8]) -> f32 {
    let mut acc = 0f64;
    for (x, y) in w.chunks_exact(2).zip(a.chunks_exact(2)) {
        acc += f16_le([x[0], x[1]]) as f64 * f16_le([y[0], y[1]]) as f64;
    }
    acc as f32
}

pub(crate) fn dot_bf16(w: &[u8], a: &[u8]) -> f32 {
    let mut acc = 0f64;
    for (x, y) in w.chunks_exact(2).zip(a.chunks_exact(2)) {
        let x = bf16_to_f32(u16::from_le_bytes([x[0], x[1]]));
        let y = bf16_to_f32(u16::from_le_bytes([y[0], y[1]]));
        acc += x as f64 * y as f64;
    }
    acc as f32
}

pub(crate) fn dot_q4_0(w: &[BlockQ4_0], a: &[BlockQ8_0]) -> f32 {
    let mut sum = 0f32;
    for (x, y) in w.iter().zip(a) {
        let mut isum = 0i32;
        for j in 0..16 {
            isum += ((x.qs[j] & 0x0f) as i32 - 8) * y.qs[j] as i32;
            isum += ((x.qs[j] >> 4) as i32 - 8) * y.qs[j + 16] as i32;
        }
        sum += isum as f32 * (x.d() * y.d());
    }
    sum
}

pub(crate) fn dot_q4_1(w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f32 {
    let mut sum = 0f32;
    for (x, y) in w.iter().zip(a) {
        let mut isum = 0i32;
        for j in 0..16 {
            isum += (x.qs[j] & 0x0f) as i32 * y.qs[j] as i32;
            isum += (x.qs[j] >> 4) as i32 * y.qs[j + 16] as i32;
        }
        sum += (x.d() * y.d()) * isum as f32 + x.m() * y.s();
    }
    sum
}

#[inline(always)]
fn q5_pair(qs: u8, qh: u32, j: usize) -> (i32, i32) {
    let h0 = (((qh >> j) << 4) & 0x10) as i32;
    let h1 = ((qh >> (j + 12)) & 0x10) as i32;
    ((qs & 0x0f) as i32 | h0, (qs >> 4) as i32 | h1)
}

pub(crate) fn dot_q5_0(w: &[BlockQ5_0], a: &[BlockQ8_0]) -> f32 {
    let mut sum = 0f32;
    for (x, y) in w.iter().zip(a) {
        let qh = x.qh();
        let mut isum = 0i32;
        for j in 0..16 {
            let (q0, q1) = q5_pair(x.qs[j], qh, j);
            isum += (q0 - 16) * y.qs[j] as i32 + (q1 - 16) * y.qs[j + 16] as i32;
        }
        sum += isum as f32 * (x.d() * y.d());
    }
    sum
}

pub(crate) fn dot_q5_1(w: &[BlockQ5_1], a: &[BlockQ8_1]) -> f32 {
    let mut sum = 0f32;
    for (x, y) in w.iter().zip(a) {
        let qh = x.qh();
        let mut isum = 0i32;
        for j in 0..16 {
            let (q0, q1) = q5_pair(x.qs[j], qh, j);
            isum += q0 * y.qs[j] as i32 + q1 * y.qs[j + 16] as i32;
        }
        sum += (x.d() * y.d()) * isum as f32 + x.m() * y.s();
    }
    sum
}

pub(crate) fn dot_q8_0(w: &[BlockQ8_0], a: &[BlockQ8_0]) -> f32 {
    let mut sum = 0f32;
    for (x, y) in w.iter().zip(a) {
        let isum: i32 =
            x.qs.iter()
                .zip(&y.qs)
                .map(|(&p, &q)| p as i32 * q as i32)
                .sum();
        sum += isum as f32 * (x.d() * y.d());
    }
    sum
}

pub(crate) fn dot_q2_k(w: &[BlockQ2K], a: &[BlockQ8K]) -> f32 {
    let mut sum = 0f32;
    for (x, y) in w.iter().zip(a) {
        let mut msum = 0i32;
        for g in 0..16 {
            msum += (x.scales[g] >> 4) as i32 * y.bsum(g) as i32;
        }
        let mut isum = 0i32;
        let mut g = 0;
        for half in 0..2 {
            let q = &x.qs[32 * half..32 * half + 32];
            for shift in [0u32, 2, 4, 6] {
                for part in 0..2 {
                    let base = 128 * half + 32 * (shift as usize / 2) + 16 * part;
                    let mut s = 0i32;
                    for l in 0..16 {
                        let qv = ((q[16 * part + l] >> shift) & 3) as i32;
                        s += qv * y.qs[base + l] as i32;
                    }
                    isum += (x.scales[g] & 0x0f) as i32 * s;
                    g += 1;
                }
            }
        }
        let dall = y.d() * x.d();
        let dmin = y.d() * x.dmin();
        sum += dall * isum as f32 - dmin * msum as f32;
    }
    sum
}

pub(crate) fn dot_q3_k(w: &[BlockQ3K], a: &[BlockQ8K]) -> f32 {
    let mut sum = 0f32;
    for (x, y) in w.iter().zip(a) {
        let scales = x.unpacked_scales();
        let mut isum = 0i32;
        let mut g = 0;
        let mut m = 1u8;
        for half in 0..2 {
            let q = &x.qs[32 * half..32 * half + 32];
            for shift in [0u32, 2, 4, 6] {
                for part in 0..2 {
                    let base = 128 * half + 32 * (shift as usize / 2) + 16 * part;
                    let mut s = 0i32;
                    for l in 16 * part..16 * part + 16 {
                        let low = ((q[l] >> shift) & 3) as i32;
                        let high = if x.hmask[l] & m != 0 { 0 } else { 4 };
                        s += (low - high) * y.qs[base + l - 16 * part] as i32;
                    }
                    isum += (scales[g] as i32 - 32) * s;
                    g += 1;
                }
                m <<= 1;
            }
        }
        sum += x.d() * y.d() * isum as f32;
    }
    sum
}

pub(crate) fn dot_q4_k(w: &[BlockQ4K], a: &[BlockQ8K]) -> f32 {
    let mut sum = 0f32;
    for (x, y) in w.iter().zip(a) {
        let (sc, mn) = unpack_scales_mins_k4(&x.scales);
        let mut isum = 0i32;
        for c in 0..4 {
            let q = &x.qs[32 * c..32 * c + 32];
            let (mut lo, mut hi) = (0i32, 0i32);
            for l in 0..32 {
                lo += (q[l] & 0x0f) as i32 * y.qs[64 * c + l] as i32;
                hi += (q[l] >> 4) as i32 * y.qs[64 * c + 32 + l] as i32;
            }
            isum += sc[2 * c] as i32 * lo + sc[2 * c + 1] as i32 * hi;
        }
        let mut msum = 0i32;
        for g in 0..16 {
            msum += mn[g / 2] as i32 * y.bsum(g) as i32;
        }
        sum += x.d() * y.d() * isum as f32 - x.dmin() * y.d() * msum as f32;
    }
    sum
}

pub(crate) fn dot_q5_k(w: &[BlockQ5K], a: &[BlockQ8K]) -> f32 {
    let mut sum = 0f32;
    for (x, y) in w.iter().zip(a) {
        let (sc, mn) = unpack_scales_mins_k4(&x.scales);
        let mut isum = 0i32;
        for c in 0..4 {
            let q = &x.qs[32 * c..32 * c + 32];
            let (u1, u2) = (1u8 << (2 * c), 2u8 << (2 * c));
            let (mut lo, mut hi) = (0i32, 0i32);
            for l in 0..32 {
                let h1 = if x.qh[l] & u1 != 0 { 16 } else { 0 };
                let h2 = if x.qh[l] & u2 != 0 { 16 } else { 0 };
                lo += ((q[l] & 0x0f) as i32 + h1) * y.qs[64 * c + l] as i32;
                hi += ((q[l] >> 4) as i32 + h2) * y.qs[64 * c + 32 + l] as i32;
            }
            isum += sc[2 * c] as i32 * lo + sc[2 * c + 1] as i32 * hi;
        }
        let mut msum = 0i32;
        for g in 0..16 {
            msum += mn[g / 2] as i32 * y.bsum(g) as i32;
        }
        sum += x.d() * y.d() * isum as f32 - x.dmin() * y.d() * msum as f32;
    }
    sum
}

pub(crate) fn dot_q6_k(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32 {
    let mut sum = 0f32;
    for (x, y) in w.iter().zip(a) {
        let mut isum = 0i32;
        for half in 0..2 {
            let ql = &x.ql[64 * half..64 * half + 64];
            let qh = &x.qh[32 * half..32 * half + 32];
            let sc = &x.scales[8 * half..8 * half + 8];
            let yq = &y.qs[128 * half..128 * half + 128];
            // Four groups of 32 (q1..q4 in ggml's dequantization), each two scales of 16.
            let mut s = [0i32; 8];
            for l in 0..32 {
                let is = l / 16;
                let q1 = ((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) as i32 - 32;
                let q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                s[is] += q1 * yq[l] as i32;
                s[is + 2] += q2 * yq[l + 32] as i32;
                s[is + 4] += q3 * yq[l + 64] as i32;
                s[is + 6] += q4 * yq[l + 96] as i32;
            }
            for k in 0..8 {
                isum += sc[k] as i32 * s[k];
            }
        }
        sum += x.d() * y.d() * isum as f32;
    }
    sum
}

pub(crate) fn dot_q8_k(w: &[BlockQ8K], a: &[BlockQ8K]) -> f32 {
    let mut sum = 0f32;
    for (x, y) in w.iter().zip(a) {
        let isum: i32 =
            x.qs.iter()
                .zip(&y.qs)
                .map(|(&p, &q)| p as i32 * q as i32)
                .sum();
        sum += x.d() * y.d() * isum as f32;
    }
    sum
}
