//! The 256-weight super-block formats: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (ggml's
//! `quantize_row_q*_K_ref`, i.e. without an importance matrix).
//!
//! Each function takes whole super-blocks (`x.len() == 256 · n_blocks`) and an output of
//! exactly `n_blocks · type_size` bytes; the caller checks both.

use super::search::{
    make_q3_quants, make_qkx2_quants, make_qx_quants, nearest_int, AsymSearch, GROUP_MAX_EPS,
};
use super::{f16_bits, f16_value};
use crate::quant::QK_K;

/// Sub-block scale and min of a Q4_K/Q5_K `scales[12]` array (ggml's `get_scale_min_k4`).
#[inline]
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Pack eight 6-bit scales and mins into Q4_K/Q5_K's 12-byte layout.
pub(crate) fn pack_scales_mins_k4(ls: &[u8; 8], lm: &[u8; 8], out: &mut [u8]) {
    out[..12].fill(0);
    for j in 0..8 {
        if j < 4 {
            out[j] = ls[j];
            out[j + 4] = lm[j];
        } else {
            out[j + 4] = (ls[j] & 0x0F) | ((lm[j] & 0x0F) << 4);
            out[j - 4] |= (ls[j] >> 4) << 6;
            out[j] |= (lm[j] >> 4) << 6;
        }
    }
}

/// The part Q4_K and Q5_K share: per 32-weight sub-block an asymmetric scale/min search,
/// both quantized to 6 bits against super-block `d`/`dmin`, then the weights re-rounded
/// with the quantized scales. Writes `d`, `dmin`, `scales[12]` into `head` (16 bytes) and
/// returns the 256 levels.
fn quantize_scales_mins_k4(x: &[f32], search: &AsymSearch, head: &mut [u8]) -> [u8; QK_K] {
    let mut levels = [0u8; QK_K];
    let mut aux = [0u8; 32];
    let mut weights = [0.0f32; 32];
    let mut scales = [0.0f32; 8];
    let mut mins = [0.0f32; 8];
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let mut sum_x2 = 0.0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        let (scale, min) = make_qkx2_quants(
            search,
            xs,
            &weights,
            &mut levels[32 * j..32 * j + 32],
            &mut aux,
        );
        scales[j] = scale;
        mins[j] = min;
        if scale > max_scale {
            max_scale = scale;
        }
        if min > max_min {
            max_min = min;
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    for j in 0..8 {
        // ggml stores the int into a uint8_t (keeping the low byte) before clamping.
        ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
    }
    let d_bits = f16_bits(max_scale / 63.0);
    let dmin_bits = f16_bits(max_min / 63.0);
    head[0..2].copy_from_slice(&d_bits.to_le_bytes());
    head[2..4].copy_from_slice(&dmin_bits.to_le_bytes());
    pack_scales_mins_k4(&ls, &lm, &mut head[4..16]);
    let d_all = f16_value(d_bits);
    let dmin_all = f16_value(dmin_bits);
    let nmax = search.nmax;
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, &head[4..16]);
        let d = d_all * sc as f32;
        if d == 0.0 {
            continue;
        }
        let dm = dmin_all * m as f32;
        for ii in 0..32 {
            let l = nearest_int((x[32 * j + ii] + dm) / d).clamp(0, nmax);
            levels[32 * j + ii] = l as u8;
        }
    }
    levels
}

/// Q4_K, 144 bytes per 256 weights: `d`, `dmin` (f16), `scales[12]`, `qs[128]`.
pub(super) fn quantize_q4_k(x: &[f32], dst: &mut [u8]) {
    const SEARCH: AsymSearch = AsymSearch {
        nmax: 15,
        rmin: -1.0,
        rdelta: 0.1,
        nstep: 20,
        use_mad: false,
    };
    for (xb, yb) in x.chunks_exact(QK_K).zip(dst.chunks_exact_mut(144)) {
        let levels = quantize_scales_mins_k4(xb, &SEARCH, &mut yb[..16]);
        let qs = &mut yb[16..144];
        for c in 0..4 {
            for l in 0..32 {
                qs[32 * c + l] = levels[64 * c + l] | (levels[64 * c + l + 32] << 4);
            }
        }
    }
}

/// Q5_K, 176 bytes per 256 weights: `d`, `dmin` (f16), `scales[12]`, `qh[32]`, `qs[128]`.
pub(super) fn quantize_q5_k(x: &[f32], dst: &mut [u8]) {
    const SEARCH: AsymSearch = AsymSearch {
        nmax: 31,
        rmin: -0.5,
        rdelta: 0.1,
        nstep: 15,
        use_mad: false,
    };
    for (xb, yb) in x.chunks_exact(QK_K).zip(dst.chunks_exact_mut(176)) {
        let levels = quantize_scales_mins_k4(xb, &SEARCH, &mut yb[..16]);
        let (qh, qs) = yb[16..176].split_at_mut(32);
        qh.fill(0);
        let mut m1 = 1u8;
        let mut m2 = 2u8;
        for c in 0..4 {
            for j in 0..32 {
                let mut l1 = levels[64 * c + j];
                if l1 > 15 {
                    l1 -= 16;
                    qh[j] |= m1;
                }
                let mut l2 = levels[64 * c + j + 32];
                if l2 > 15 {
                    l2 -= 16;
                    qh[j] |= m2;
                }
                qs[32 * c + j] = l1 | (l2 << 4);
            }
            m1 <<= 2;
            m2 <<= 2;
        }
    }
}

/// Q6_K, 210 bytes per 256 weights: `ql[128]`, `qh[64]`, `scales[16]` (i8), `d` (f16).
pub(super) fn quantize_q6_k(x: &[f32], dst: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(QK_K).zip(dst.chunks_exact_mut(210)) {
        let mut levels = [0i8; QK_K];
        let mut scales = [0.0f32; 16];
        let mut max_scale = 0.0f32;
        let mut max_abs_scale = 0.0f32;
        for ib in 0..16 {
            let scale = make_qx_quants(
                32,
                &xb[16 * ib..16 * ib + 16],
                &mut levels[16 * ib..16 * ib + 16],
                true,
            );
            scales[ib] = scale;
            if scale.abs() > max_abs_scale {
                max_abs_scale = scale.abs();
                max_scale = scale;
            }
        }
        if max_abs_scale < GROUP_MAX_EPS {
            yb.fill(0);
            continue;
        }
        let iscale = -128.0 / max_scale;
        let d_bits = f16_bits(1.0 / iscale);
        yb[208..210].copy_from_slice(&d_bits.to_le_bytes());
        let d_all = f16_value(d_bits);
        let mut sc = [0i8; 16];
        for ib in 0..16 {
            sc[ib] = nearest_int(iscale * scales[ib]).min(127) as i8;
            yb[192 + ib] = sc[ib] as u8;
        }
        for j in 0..16 {
            let d = d_all * sc[j] as f32;
            if d == 0.0 {
                continue;
            }
            for ii in 0..16 {
                let l = nearest_int(xb[16 * j + ii] / d).clamp(-32, 31);
                levels[16 * j + ii] = (l + 32) as i8;
            }
        }
        let (ql, rest) = yb.split_at_mut(128);
        let qh = &mut rest[..64];
        for half in 0..2 {
            let lv = &levels[128 * half..128 * half + 128];
            let ql = &mut ql[64 * half..64 * half + 64];
            let qh = &mut qh[32 * half..32 * half + 32];
            for l in 0..32 {
                let q1 = lv[l] as u8;
                let q2 = lv[l + 32] as u8;
                let q3 = lv[l + 64] as u8;
                let q4 = lv[l + 96] as u8;
                ql[l] = (q1 & 0x0F) | ((q3 & 0x0F) << 4);
                ql[l + 32] = (q2 & 0x0F) | ((q4 & 0x0F) << 4);
                qh[l] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
            }
        }
    }
}

/// Q3_K, 110 bytes per 256 weights: `hmask[32]`, `qs[64]`, `scales[12]`, `d` (f16).
pub(super) fn quantize_q3_k(x: &[f32], dst: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(QK_K).zip(dst.chunks_exact_mut(110)) {
        let mut levels = [0i8; QK_K];
        let mut scales = [0.0f32; 16];
        let mut max_scale = 0.0f32;
        let mut amax = 0.0f32;
        for j in 0..16 {
            scales[j] = make_q3_quants(
                4,
                &xb[16 * j..16 * j + 16],
                &mut levels[16 * j..16 * j + 16],
            );
            let scale = scales[j].abs();
            if scale > amax {
                amax = scale;
                max_scale = scales[j];
            }
        }
        let (hmask, rest) = yb.split_at_mut(32);
        let (qs, rest) = rest.split_at_mut(64);
        let (sc_bytes, d_bytes) = rest.split_at_mut(12);
        sc_bytes.fill(0);
        if max_scale != 0.0 {
            let iscale = -32.0 / max_scale;
            for j in 0..16 {
                // ggml: int8_t l = nearest_int(..); clamped to -32..31, then +32.
                let l = (nearest_int(iscale * scales[j]) as i8).clamp(-32, 31) + 32;
                let l = l as u8;
                if j < 8 {
                    sc_bytes[j] = l & 0x0F;
                } else {
                    sc_bytes[j - 8] |= (l & 0x0F) << 4;
                }
                sc_bytes[j % 4 + 8] |= (l >> 4) << (2 * (j / 4));
            }
            d_bytes.copy_from_slice(&f16_bits(1.0 / iscale).to_le_bytes());
        } else {
            d_bytes.copy_from_slice(&f16_bits(0.0).to_le_bytes());
        }
        let d_all = f16_value(u16::from_le_bytes([d_bytes[0], d_bytes[1]]));
        for j in 0..16 {
            let low = if j < 8 {
                sc_bytes[j] & 0x0F
            } else {
                sc_bytes[j - 8] >> 4
            };
            let sc = (low | (((sc_bytes[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) as i32 - 32;
            let d = d_all * sc as f32;
            if d == 0.0 {
                continue;
            }
            for ii in 0..16 {
                let l = nearest_int(xb[16 * j + ii] / d).clamp(-4, 3);
                levels[16 * j + ii] = (l + 4) as i8;
            }
        }
        hmask.fill(0);
        for (j, l) in levels.iter_mut().enumerate() {
            if *l > 3 {
                hmask[j % 32] |= 1 << (j / 32);
                *l -= 4;
            }
        }
        for half in 0..2 {
            let lv = &levels[128 * half..128 * half + 128];
            for l in 0..32 {
                qs[32 * half + l] = (lv[l] as u8)
                    | ((lv[l + 32] as u8) << 2)
                    | ((lv[l + 64] as u8) << 4)
                    | ((lv[l + 96] as u8) << 6);
            }
        }
    }
}

/// Q2_K, 84 bytes per 256 weights: `scales[16]` (4-bit scale | 4-bit min), `qs[64]`, `d`,
/// `dmin` (f16).
pub(super) fn quantize_q2_k(x: &[f32], dst: &mut [u8]) {
    const SEARCH: AsymSearch = AsymSearch {
        nmax: 3,
        rmin: -0.5,
        rdelta: 0.1,
        nstep: 15,
        use_mad: true,
    };
    const Q4SCALE: f32 = 15.0;
    for (xb, yb) in x.chunks_exact(QK_K).zip(dst.chunks_exact_mut(84)) {
        let mut levels = [0u8; QK_K];
        let mut aux = [0u8; 16];
        let mut weights = [0.0f32; 16];
        let mut scales = [0.0f32; 16];
        let mut mins = [0.0f32; 16];
        let mut max_scale = 0.0f32;
        let mut max_min = 0.0f32;
        for j in 0..16 {
            let xs = &xb[16 * j..16 * j + 16];
            for (w, &v) in weights.iter_mut().zip(xs) {
                *w = v.abs();
            }
            let (scale, min) = make_qkx2_quants(
                &SEARCH,
                xs,
                &weights,
                &mut levels[16 * j..16 * j + 16],
                &mut aux,
            );
            scales[j] = scale;
            mins[j] = min;
            if scale > max_scale {
                max_scale = scale;
            }
            if min > max_min {
                max_min = min;
            }
        }
        let (sc_bytes, rest) = yb.split_at_mut(16);
        let (qs, dd) = rest.split_at_mut(64);
        if max_scale > 0.0 {
            let iscale = Q4SCALE / max_scale;
            for j in 0..16 {
                sc_bytes[j] = nearest_int(iscale * scales[j]) as u8;
            }
            dd[0..2].copy_from_slice(&f16_bits(max_scale / Q4SCALE).to_le_bytes());
        } else {
            sc_bytes.fill(0);
            dd[0..2].copy_from_slice(&f16_bits(0.0).to_le_bytes());
        }
        if max_min > 0.0 {
            let iscale = Q4SCALE / max_min;
            for j in 0..16 {
                sc_bytes[j] |= (nearest_int(iscale * mins[j]) as u8) << 4;
            }
            dd[2..4].copy_from_slice(&f16_bits(max_min / Q4SCALE).to_le_bytes());
        } else {
            dd[2..4].copy_from_slice(&f16_bits(0.0).to_le_bytes());
        }
        let d_all = f16_value(u16::from_le_bytes([dd[0], dd[1]]));
        let dmin_all = f16_value(u16::from_le_bytes([dd[2], dd[3]]));
        for j in 0..16 {
            let d = d_all * (sc_bytes[j] & 0x0F) as f32;
            if d == 0.0 {
                continue;
            }
            let dm = dmin_all * (sc_bytes[j] >> 4) as f32;
            for ii in 0..16 {
                let l = nearest_int((xb[16 * j + ii] + dm) / d).clamp(0, 3);
                levels[16 * j + ii] = l as u8;
            }
        }
        for half in 0..2 {
            let lv = &levels[128 * half..128 * half + 128];
            for l in 0..32 {
                qs[32 * half + l] =
                    lv[l] | (lv[l + 32] << 2) | (lv[l + 64] << 4) | (lv[l + 96] << 6);
            }
        }
    }
}
