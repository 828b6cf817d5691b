//! Quantization formats: the type table, block layouts, dequantization, activation
//! quantization, dot-product kernels (scalar reference + SIMD), and the quantizer.

mod types;

pub use types::{GgmlType, QK_K};

pub mod quantize;
pub mod recipe;
