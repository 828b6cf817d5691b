//! CPU backend: quantized linear layers spread over the thread pool, and the f32 ops of the
//! forward pass.

pub mod gemm;
pub mod linear;
pub mod ops;
pub mod vmath;
