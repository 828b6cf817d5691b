//! Quantizers: f32 rows → ggml block formats.
//!
//! [`quantize_row`] reproduces ggml's *reference* quantizers (`quantize_row_*_ref` in
//! `ggml-quants.c`, the path `llama-quantize` takes without an importance matrix) bit for
//! bit: the same single-precision operations in the same order, ties-to-even
//! `nearest_int`, `roundf` where ggml uses it, and round-to-nearest-even f16 conversion.
//! [`quantize_model`] applies a [`crate::quant::recipe`] to a whole GGUF file.

mod k_quants;
mod legacy;
mod model;
mod search;

pub(crate) use k_quants::pack_scales_mins_k4;
pub use model::{
    quantize_gguf, quantize_model, QuantizeProgress, QuantizeSummary, TensorOutcome,
    QUANTIZATION_VERSION,
};

use crate::quant::GgmlType;
use crate::{bail, Result};

/// f32 → IEEE half bits, round to nearest even (what ggml's `GGML_FP32_TO_FP16` does).
#[inline]
pub(crate) fn f16_bits(v: f32) -> u16 {
    half::f16::from_f32(v).to_bits()
}

/// IEEE half bits → f32 (exact).
#[inline]
pub(crate) fn f16_value(bits: u16) -> f32 {
    half::f16::from_bits(bits).to_f32()
}

/// Types [`quantize_row`] can produce.
pub const QUANTIZE_TARGETS: [GgmlType; 13] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

/// Whether [`quantize_row`] can produce `ty`.
pub fn can_quantize_to(ty: GgmlType) -> bool {
    QUANTIZE_TARGETS.contains(&ty)
}

/// Quantize `x` (a whole number of `ty`'s blocks) into `dst`, which must be exactly
/// `ty.row_bytes(x.len())` long. Output is byte-identical to ggml's reference quantizer.
///
/// Errors: `Unsupported` for a type this engine cannot produce; `InvalidArgument` when
/// `x.len()` is not a multiple of the block size, `dst` has the wrong length, or `x` holds
/// a NaN or infinity (ggml's result would be meaningless).
pub fn quantize_row(ty: GgmlType, x: &[f32], dst: &mut [u8]) -> Result<()> {
    if !can_quantize_to(ty) {
        bail!(Unsupported, "quantizing to {ty} is not supported");
    }
    let Some(need) = ty.row_bytes(x.len() as u64) else {
        bail!(
            InvalidArgument,
            "{} values is not a whole number of {ty} blocks ({} values each)",
            x.len(),
            ty.block_size()
        );
    };
    if dst.len() as u64 != need {
        bail!(
            InvalidArgument,
            "{} values of {ty} take {need} bytes, the destination has {}",
            x.len(),
            dst.len()
        );
    }
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        bail!(
            InvalidArgument,
            "value {i} is {} and cannot be quantized",
            x[i]
        );
    }
    match ty {
        GgmlType::F32 => {
            for (d, v) in dst.chunks_exact_mut(4).zip(x) {
                d.copy_from_slice(&v.to_le_bytes());
            }
        }
        GgmlType::F16 => {
            for (d, &v) in dst.chunks_exact_mut(2).zip(x) {
                d.copy_from_slice(&f16_bits(v).to_le_bytes());
            }
        }
        GgmlType::BF16 => {
            for (d, &v) in dst.chunks_exact_mut(2).zip(x) {
                d.copy_from_slice(&half::bf16::from_f32(v).to_bits().to_le_bytes());
            }
        }
        GgmlType::Q4_0 => legacy::quantize_q4_0(x, dst),
        GgmlType::Q4_1 => legacy::quantize_q4_1(x, dst),
        GgmlType::Q5_0 => legacy::quantize_q5_0(x, dst),
        GgmlType::Q5_1 => legacy::quantize_q5_1(x, dst),
        GgmlType::Q8_0 => legacy::quantize_q8_0(x, dst),
        GgmlType::Q2_K => k_quants::quantize_q2_k(x, dst),
        GgmlType::Q3_K => k_quants::quantize_q3_k(x, dst),
        GgmlType::Q4_K => k_quants::quantize_q4_k(x, dst),
        GgmlType::Q5_K => k_quants::quantize_q5_k(x, dst),
        GgmlType::Q6_K => k_quants::quantize_q6_k(x, dst),
        other => bail!(Internal, "no quantizer for {other}"),
    }
    Ok(())
}
