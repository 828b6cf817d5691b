//! TEMPORARY stand-in for `crate::quant` kernels until the quant branch lands: scalar
//! dequantize-then-dot with f32 "activations". Same signatures as the real module, so the
//! switch is a one-line `use` change. Delete after merging `quant`.

use crate::quant::GgmlType;
use crate::{bail, Result};
use half::f16;
use std::ops::Range;

fn h(b: &[u8], o: usize) -> f32 {
    f16::from_le_bytes([b[o], b[o + 1]]).to_f32()
}

pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<()> {
    use GgmlType::*;
    let bs = ty.block_size();
    let ts = ty.type_size();
    if dst.len() % bs != 0 || src.len() < dst.len() / bs * ts {
        bail!(InvalidArgument, "dequantize_row: bad lengths");
    }
    for (b, y) in dst.chunks_exact_mut(bs).enumerate() {
        let x = &src[b * ts..(b + 1) * ts];
        match ty {
            F32 => {
                for (i, v) in y.iter_mut().enumerate() {
                    *v = f32::from_le_bytes([x[4 * i], x[4 * i + 1], x[4 * i + 2], x[4 * i + 3]]);
                }
            }
            F16 => y[0] = h(x, 0),
            Q4_0 => {
                let d = h(x, 0);
                for j in 0..16 {
                    y[j] = ((x[2 + j] & 0xF) as i32 - 8) as f32 * d;
                    y[j + 16] = ((x[2 + j] >> 4) as i32 - 8) as f32 * d;
                }
            }
            Q4_1 => {
                let (d, m) = (h(x, 0), h(x, 2));
                for j in 0..16 {
                    y[j] = (x[4 + j] & 0xF) as f32 * d + m;
                    y[j + 16] = (x[4 + j] >> 4) as f32 * d + m;
                }
            }
            Q5_0 => {
                let d = h(x, 0);
                let qh = u32::from_le_bytes([x[2], x[3], x[4], x[5]]);
                for j in 0..16 {
                    let h0 = (((qh >> j) << 4) & 0x10) as i32;
                    let h1 = ((qh >> (j + 12)) & 0x10) as i32;
                    y[j] = (((x[6 + j] & 0xF) as i32 | h0) - 16) as f32 * d;
                    y[j + 16] = (((x[6 + j] >> 4) as i32 | h1) - 16) as f32 * d;
                }
            }
            Q8_0 => {
                let d = h(x, 0);
                for j in 0..32 {
                    y[j] = (x[2 + j] as i8) as f32 * d;
                }
            }
            Q4_K => {
                let (d, dmin) = (h(x, 0), h(x, 2));
                let s = &x[4..16];
                let qs = &x[16..144];
                let sm = |j: usize| -> (f32, f32) {
                    if j < 4 {
                        ((s[j] & 63) as f32, (s[j + 4] & 63) as f32)
                    } else {
                        (
                            ((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4)) as f32,
                            ((s[j + 4] >> 4) | ((s[j] >> 6) << 4)) as f32,
                        )
                    }
                };
                for c in 0..4 {
                    let (sa, ma) = sm(2 * c);
                    let (sb, mb) = sm(2 * c + 1);
                    for l in 0..32 {
                        y[64 * c + l] = d * sa * (qs[32 * c + l] & 0xF) as f32 - dmin * ma;
                        y[64 * c + 32 + l] = d * sb * (qs[32 * c + l] >> 4) as f32 - dmin * mb;
                    }
                }
            }
            Q6_K => {
                let ql_all = &x[0..128];
                let qh_all = &x[128..192];
                let sc_all = &x[192..208];
                let d = h(x, 208);
                for half in 0..2 {
                    let ql = &ql_all[64 * half..];
                    let qh = &qh_all[32 * half..];
                    let sc = &sc_all[8 * half..];
                    let yy = &mut y[128 * half..];
                    for l in 0..32 {
                        let is = l / 16;
                        let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                        let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                        let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                        let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                        yy[l] = d * (sc[is] as i8) as f32 * q1 as f32;
                        yy[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
                        yy[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
                        yy[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
                    }
                }
            }
            other => bail!(
                Unsupported,
                "shim: dequantize {} not implemented",
                other.name()
            ),
        }
    }
    Ok(())
}

/// The shim's activations are plain f32 bytes.
pub fn vec_dot_type(_ty: GgmlType) -> GgmlType {
    GgmlType::F32
}

pub fn quantize_activations(_vdt: GgmlType, x: &[f32], dst: &mut [u8]) {
    for (i, v) in x.iter().enumerate() {
        dst[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
    }
}

thread_local! {
    static ROW: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

pub fn vec_dot(ty: GgmlType, n: usize, w_row: &[u8], act: &[u8]) -> f32 {
    ROW.with(|r| {
        let mut r = r.borrow_mut();
        r.resize(n, 0.0);
        dequantize_row(ty, w_row, &mut r).expect("shim dequantize");
        let mut s = 0.0f32;
        for (i, w) in r.iter().enumerate() {
            s += w * f32::from_le_bytes([
                act[4 * i],
                act[4 * i + 1],
                act[4 * i + 2],
                act[4 * i + 3],
            ]);
        }
        s
    })
}

#[allow(clippy::too_many_arguments)]
pub fn matmul(
    ty: GgmlType,
    n_cols: usize,
    weights: &[u8],
    rows: Range<usize>,
    acts: &[u8],
    m: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    let rb = ty.row_bytes(n_cols as u64).unwrap() as usize;
    let ab = n_cols * 4;
    for r in rows.clone() {
        let w = &weights[r * rb..(r + 1) * rb];
        for j in 0..m {
            out[j * out_stride + (r - rows.start)] =
                vec_dot(ty, n_cols, w, &acts[j * ab..(j + 1) * ab]);
        }
    }
}
