//! Compute backends. The CPU backend is always present; CUDA lives in `cuda/` (feature `cuda`).

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
