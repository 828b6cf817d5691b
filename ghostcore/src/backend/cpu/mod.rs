//! CPU backend: linear layers spread over the thread pool (quantized vec-dot drivers for
//! decode, an f32 GEMM for prompt batches), and the f32 ops of the forward pass.

pub mod gemm;
pub mod linear;
pub mod ops;
pub mod vmath;
