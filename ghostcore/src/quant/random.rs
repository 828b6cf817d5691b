//! Random but valid quantized tensors: the weights of `ghost synth`'s synthetic models and of
//! the path-cost measurements (`sparsity::path_costs::measure`), where only shapes, types and
//! weight statistics matter, not what a model learned.

use half::f16;

use super::GgmlType;
use crate::sampling::Rng;
use crate::{bail, Result};

fn f16_bytes(v: f32) -> [u8; 2] {
    f16::from_f32(v).to_le_bytes()
}

/// Random bytes of a valid `ty` tensor of `n` elements (`n` a multiple of the block size).
/// Scales are chosen so that weights have a standard deviation of a few hundredths.
pub fn random_tensor(ty: GgmlType, n: usize, rng: &mut Rng) -> Result<Vec<u8>> {
    let bs = ty.block_size();
    if n % bs != 0 {
        bail!(InvalidArgument, "{n} elements are not whole {ty} blocks");
    }
    let n_blocks = n / bs;
    let mut out = Vec::with_capacity(n_blocks * ty.type_size());
    let byte = |rng: &mut Rng| (rng.next_u64() >> 56) as u8;
    let unit = |rng: &mut Rng| rng.next_f64() as f32;
    for _ in 0..n_blocks {
        match ty {
            GgmlType::F16 => {
                let v = (unit(rng) - 0.5) * 0.1;
                out.extend_from_slice(&f16_bytes(v));
            }
            GgmlType::Q8_0 => {
                out.extend_from_slice(&f16_bytes(0.0004 + 0.0002 * unit(rng)));
                out.extend((0..32).map(|_| byte(rng)));
            }
            GgmlType::Q4_0 => {
                out.extend_from_slice(&f16_bytes(0.006 + 0.004 * unit(rng)));
                out.extend((0..16).map(|_| byte(rng)));
            }
            GgmlType::Q5_0 => {
                // d, 4 bytes of high bits, 16 of low nibbles: weights d·(q − 16).
                out.extend_from_slice(&f16_bytes(0.003 + 0.002 * unit(rng)));
                out.extend((0..4 + 16).map(|_| byte(rng)));
            }
            GgmlType::Q4_K => {
                // Zero-mean weights d·sc·(q − 7.5): each sub-block's min is its scale
                // (m = sc, dmin = 7.5·d). Independent random mins gave every weight a mean
                // above its spread, so every neuron saw the same dominant term and an
                // 8B-shaped model had 97% of its neurons below 0.01.
                let d = 0.0002 + 0.0001 * unit(rng);
                out.extend_from_slice(&f16_bytes(d));
                out.extend_from_slice(&f16_bytes(7.5 * d));
                let sc: [u8; 8] = std::array::from_fn(|_| 16 + byte(rng) % 48);
                let mut packed = [0u8; 12];
                crate::quant::quantize::pack_scales_mins_k4(&sc, &sc, &mut packed);
                out.extend_from_slice(&packed);
                out.extend((0..128).map(|_| byte(rng)));
            }
            GgmlType::Q6_K => {
                out.extend((0..128 + 64).map(|_| byte(rng)));
                out.extend((0..16).map(|_| (byte(rng) % 64) as i8 as u8));
                out.extend_from_slice(&f16_bytes(0.00005 + 0.00002 * unit(rng)));
            }
            other => bail!(Unsupported, "synth cannot generate {other} blocks"),
        }
    }
    Ok(out)
}
