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

    /// Runs single-token steps with the sparse FFN described per layer (`None` in a slot: that
    /// layer dense; `None` as a whole: every layer dense again). Prefill stays dense.
    fn set_ffn_sparsity(&mut self, layers: Option<&[Option<LayerFfnSparsity<'_>>]>) -> Result<()> {
        let _ = layers;
        crate::bail!(Unsupported, "{} has no sparse FFN", self.describe())
    }

    /// Switches the sparse FFN set by [`Self::set_ffn_sparsity`] off (dense decode) and back
    /// on without dropping its device data (side-by-side benchmarks).
    fn set_ffn_sparsity_enabled(&mut self, on: bool) -> Result<()> {
        let _ = on;
        Ok(())
    }

    /// Per layer, what the sparse FFN read since the last reset; `None` without sparsity.
    fn ffn_sparsity_counts(&self) -> Result<Option<Vec<LayerFfnCounts>>> {
        Ok(None)
    }

    fn reset_ffn_sparsity_counts(&mut self) -> Result<()> {
        Ok(())
    }
}

/// What the sparse FFN of one layer skips on an accelerated backend: the thresholds of the
/// gate stage (`|act(gate_n . x)| * scale_n > act_threshold`) and of the product stage
/// (`|h_n| > product_threshold`; negative: none), and optionally a neuron-major copy of
/// `ffn_down` (`n_ff` rows of `n_embd`, ggml blocks) so that the down rows of skipped neurons
/// are not read either. Without a copy the model's own `ffn_down` runs over the hidden vector
/// with the skipped neurons at zero (gate and up rows are still skipped).
#[derive(Clone, Debug)]
pub struct LayerFfnSparsity<'a> {
    pub act_threshold: f32,
    pub neuron_scale: Option<&'a [f32]>,
    pub product_threshold: f32,
    pub down_copy: Option<(crate::quant::GgmlType, &'a [u8])>,
}

/// Neurons one layer's sparse FFN read, summed over `tokens` single-token steps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LayerFfnCounts {
    pub tokens: u64,
    /// Neurons kept past the gate (their up rows read).
    pub up_rows: u64,
    /// Neurons whose down rows were read (through the copy; with the model's own down, every
    /// row is read).
    pub down_rows: u64,
    /// Bytes of one row of the neuron-major down copy the layer reads (its type's row size
    /// at `n_embd`); `None` when the layer reads the model's own down.
    pub down_copy_row_bytes: Option<u64>,
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
