//! Quantization formats: the type table, block layouts, dequantization, activation
//! quantization, dot-product kernels (scalar reference + SIMD), and the quantizer.

mod types;

pub use types::{GgmlType, QK_K};

pub mod activation;
mod axpy;
pub mod blocks;
pub mod dequant;
#[cfg(target_arch = "x86_64")]
mod dot_avx2;
mod dot_scalar;
mod drivers;
mod kernels;

pub use activation::{quantize_activations, vec_dot_type};
pub use dequant::dequantize_row;
pub use drivers::{axpy_rows, matmul, matvec, matvec_gather, matvec_with_isa, row_bytes};
pub use kernels::{
    active_isa, best_supported_isa, has_simd_kernel, vec_dot, vec_dot_with_isa, Isa, FORCE_SCALAR_ENV,
};

pub mod quantize;
pub mod recipe;
