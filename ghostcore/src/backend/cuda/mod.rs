//! CUDA backend (feature `cuda`): kernels from `kernels/*.cu`, compiled by `build.rs` with
//! nvcc into one embedded fatbin and loaded at run time through cudarc (dynamic loading, so
//! the binary links no CUDA library and runs, on the CPU, where there is no driver).
//!
//! - [`device`]: driver probing, [`CudaBackend::try_new`], the panic/error guard.
//! - [`kernels`]: the embedded module and its entry points.
//! - [`buffers`]: device weights (uploaded once, padded), vectors, Q8_1 activations, KV cache.
//! - [`ops`]: launch wrappers mirroring the CPU kernels (matvec, norm, rope, attention, ...).
//!
//! - [`forward`]: the whole forward pass on the device ([`forward::CudaForward`]).
//!
//! Prompts run in batches through the `gc_matmul_*` kernels (dp4a); decode steps replay one
//! recorded CUDA graph.

pub mod buffers;
pub mod device;
pub mod forward;
pub mod kernels;
pub mod ops;

pub use buffers::{
    DecodeStep, DeviceActivations, DeviceMatrix, DeviceVec, FfnCounters, KvCache, KvCacheShape,
    NeuronMajorDown, SparseFfnScratch, SPARSE_DOWN_MAX_SLICES, WEIGHT_PADDING_BYTES,
};
pub use device::{driver_present, CudaBackend, DeviceInfo, RecordedGraph};
pub use kernels::SUPPORTED_WEIGHT_TYPES;
pub use ops::{AttentionWorkspace, GatedActivation, RopeParams, RopeStyle, SparseFfnRule};
