//! Compute backends. The CPU backend is always present; CUDA lives in `cuda/` (feature `cuda`).
//!
//! A [`crate::context::Context`] runs its forward pass either on the CPU
//! (`crate::model::forward`) or, with [`Device::Gpu`], through an [`AcceleratedForward`]
//! that holds its own copy of the weights and the KV cache on the device. Everything above
//! the context (generation, sampling, the CLI, the C ABI) sees the same logits either way.

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;

use crate::model::Model;
use crate::Result;

pub use crate::model::forward::LogitsFor;

/// Where a context's forward pass runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    /// The CPU backend (always available).
    #[default]
    Cpu,
    /// A CUDA GPU when this build has the `cuda` feature and a usable device; otherwise the
    /// CPU, with a one-time note on stderr saying why.
    Gpu,
}

/// A forward pass on an accelerator: weights and KV cache resident on the device, tokens
/// in, logits out.
pub trait AcceleratedForward: Send + std::fmt::Debug {
    /// Device and weights, for logs (e.g. "CUDA NVIDIA H100 (sm_90), 91.2 MiB of weights").
    fn describe(&self) -> String;
    /// Positions the device KV cache holds.
    fn n_ctx(&self) -> usize;
    /// Runs `tokens` at positions `n_past..`, appending to the device cache, and writes the
    /// logits of the last token (or of every token) into `logits`.
    fn forward(
        &mut self,
        tokens: &[u32],
        n_past: usize,
        which: LogitsFor,
        logits: &mut [f32],
    ) -> Result<()>;
    /// Bytes of the device KV cache.
    fn kv_size_bytes(&self) -> usize;
}

/// The accelerated forward pass for `model` with a cache of `n_ctx` positions, or `Ok(None)`
/// with the reason when none is usable here (no `cuda` feature, no driver, no device).
/// Errors are for a device that exists but cannot take the model (a weight type without
/// kernels, out of device memory).
pub fn open_accelerated(
    model: &Model,
    n_ctx: usize,
) -> Result<std::result::Result<Box<dyn AcceleratedForward>, String>> {
    #[cfg(feature = "cuda")]
    {
        let Some(gpu) = cuda::CudaBackend::try_new()? else {
            return Ok(Err("no CUDA driver or device".into()));
        };
        let fwd = cuda::forward::CudaForward::new(std::sync::Arc::new(gpu), model, n_ctx)?;
        Ok(Ok(Box::new(fwd)))
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (model, n_ctx);
        Ok(Err(
            "this build has no CUDA support (cargo feature `cuda`)".into()
        ))
    }
}
