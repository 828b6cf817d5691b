//! Quantization formats: the type table, block layouts, dequantization, activation
//! quantization, dot-product kernels (scalar reference + SIMD), and the quantizer.
//!
//! How a matrix-vector product runs on the CPU (as in llama.cpp's CPU backend):
//! 1. quantize the f32 activations once per row with
//!    [`quantize_activations`]`(`[`vec_dot_type`]`(w_ty), x, buf)` (Q8_K for k-quants, Q8_0
//!    for Q4_0/Q5_0/Q8_0, Q8_1 for Q4_1/Q5_1, F16 for F16, F32 for F32);
//! 2. call a driver on a range or list of weight rows: [`matvec`] (decode), [`matmul`]
//!    (prompt batches: weight tiles reused across activation rows, 1x4 micro-kernels),
//!    [`matvec_gather`] / [`axpy_rows`] (sparse FFN). Drivers check lengths and return
//!    `InvalidArgument` on mismatch; the single-row [`vec_dot`] panics on a contract
//!    violation instead (see its docs).
//!
//! Kernels: scalar reference for every computable type; AVX2+FMA+F16C for F32, F16, Q4_0,
//! Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, chosen once per process
//! ([`active_isa`]; `GHOST_FORCE_SCALAR=1` forces scalar). On CPUs with AVX-512 VNNI the
//! decode matvec of Q4_0, Q5_0 and Q8_0 runs `dot_vnni` kernels, bit-identical to the AVX2
//! ones (`GHOST_NO_VNNI=1` keeps them off). Integer block sums are exact for any input; SIMD
//! and scalar differ only by float summation order. `matmul` gives results bit-identical to
//! `matvec` on the same rows.

mod types;

pub use types::{GgmlType, QK_K};

pub mod activation;
#[cfg(target_arch = "x86_64")]
mod activation_avx2;
mod axpy;
pub mod blocks;
pub mod dequant;
mod dequant_simd;
#[cfg(target_arch = "x86_64")]
pub(crate) mod dot_avx2;
mod dot_scalar;
#[cfg(target_arch = "x86_64")]
pub(crate) mod dot_vnni;
mod drivers;
mod kernels;
pub mod random;

pub use activation::{quantize_activations, quantize_activations_with_isa, vec_dot_type};
pub use dequant::dequantize_row;
pub use dequant_simd::dequantize_row_fast;
pub use drivers::{axpy_rows, matmul, matvec, matvec_gather, matvec_with_isa, row_bytes};
pub(crate) use kernels::vnni_active;
pub use kernels::{
    active_isa, best_supported_isa, has_simd_kernel, try_vec_dot, vec_dot, vec_dot_with_isa, Isa,
    FORCE_SCALAR_ENV, NO_VNNI_ENV,
};

pub mod quantize;
pub mod recipe;
