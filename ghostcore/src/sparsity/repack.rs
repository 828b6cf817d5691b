//! The neuron-major copy of `ffn_down`.
//!
//! GGUF stores `ffn_down` output-major: `n_embd` rows of `n_ff`, so neuron `j` is a column
//! spread over every row's blocks and skipping it saves nothing. The sparse FFN needs row `j`
//! = neuron `j`'s `n_embd` output weights. The copy is made by dequantizing, transposing and
//! requantizing, which adds error; [`RepackError`] measures it on the weights, and the sweep
//! measures what it costs in KL and perplexity.

use super::rows::QMatrix;
use crate::quant::{dequantize_row, quantize::quantize_row, GgmlType};
use crate::{bail, Result};

/// The copy type to use when the user does not choose: Q8_0 (32-wide blocks fit any `n_embd`
/// divisible by 32, and requantizing to 8 bits adds little error; 5-bit and 4-bit copies
/// measurably change the logits, see `ghost sweep --copy-types`), else F16.
pub fn default_copy_type(_down_ty: GgmlType, n_embd: usize) -> GgmlType {
    if n_embd % 32 == 0 {
        GgmlType::Q8_0
    } else {
        GgmlType::F16
    }
}

/// The type of the coarse neuron-major down copy (`coarse:S`) for a `down_ty` down at width
/// `n_embd`: about 2 bits fewer per weight than the exact copy, or `None` where no block type
/// of the width is that much smaller. A Q6_K down (6.56 bits) gets Q4_K (4.5) where rows are
/// whole 256-blocks, else Q4_0 (4.5, blocks of 32); a Q4_K down (4.5) gets Q3_K (3.44) where
/// rows are whole 256-blocks, else nothing (the 32-blocks' Q4_0 is as large as the exact copy).
pub fn coarse_copy_type(down_ty: GgmlType, n_embd: usize) -> Option<GgmlType> {
    match down_ty {
        GgmlType::Q6_K if n_embd % 256 == 0 => Some(GgmlType::Q4_K),
        GgmlType::Q6_K if n_embd % 32 == 0 => Some(GgmlType::Q4_0),
        GgmlType::Q4_K if n_embd % 256 == 0 => Some(GgmlType::Q3_K),
        _ => None,
    }
}

/// How far the requantized copy is from the original weights.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RepackError {
    /// RMS(copy − original) / RMS(original).
    pub rel_rmse: f64,
    /// max |copy − original|.
    pub max_abs: f32,
}

/// Build the neuron-major copy of `down` (`n_embd` rows of `n_ff`) as `n_ff` rows of
/// `n_embd` weights of type `ty`, and measure its error against the original.
pub fn neuron_major_down(down: &QMatrix, ty: GgmlType) -> Result<(Vec<u8>, RepackError)> {
    let (n_embd, n_ff) = (down.n_rows, down.n_cols);
    let Some(out_row) = ty.row_bytes(n_embd as u64) else {
        bail!(
            Unsupported,
            "a neuron-major down row of {n_embd} weights is not a whole number of {ty} blocks"
        );
    };
    let out_row = out_row as usize;
    let mut orig = vec![0f32; n_embd * n_ff];
    for (r, dst) in orig.chunks_exact_mut(n_ff).enumerate() {
        let rb = down.row_bytes();
        dequantize_row(down.ty, &down.data[r * rb..(r + 1) * rb], dst)?;
    }
    let mut data = vec![0u8; out_row * n_ff];
    let mut col = vec![0f32; n_embd];
    let mut back = vec![0f32; n_embd];
    let (mut se, mut ss, mut max_abs) = (0f64, 0f64, 0f32);
    for (j, dst) in data.chunks_exact_mut(out_row).enumerate() {
        for (o, c) in col.iter_mut().enumerate() {
            *c = orig[o * n_ff + j];
        }
        quantize_row(ty, &col, dst)?;
        dequantize_row(ty, dst, &mut back)?;
        for (a, b) in col.iter().zip(&back) {
            let d = b - a;
            se += (d as f64) * (d as f64);
            ss += (*a as f64) * (*a as f64);
            max_abs = max_abs.max(d.abs());
        }
    }
    let rel_rmse = if ss > 0.0 { (se / ss).sqrt() } else { 0.0 };
    Ok((data, RepackError { rel_rmse, max_abs }))
}
