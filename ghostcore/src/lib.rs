//! GhostCore: a GGUF inference engine that exploits activation sparsity.
//!
//! Layout, one concern per module:
//! - [`gguf`]: the file format (validating zero-copy reader, writer).
//! - [`quant`]: tensor types, dequantization, dot-product kernels, the quantizer.
//! - [`tokenizer`]: BPE and SentencePiece tokenizers built from GGUF metadata.
//! - [`model`]: architectures, weights, the forward pass, KV cache.
//! - [`sparsity`]: calibration, sidecar file, masks and thresholds, the sparse FFN.
//! - [`backend`]: CPU (always) and CUDA (feature `cuda`) compute backends.
//! - [`paired_speed`]: decode speed of two configurations of a context, in paired blocks.
//! - [`cli`]: the `ghost` command-line tool's subcommands.

pub mod backend;
pub mod chat;
pub mod cli;
pub mod context;
pub mod error;
pub mod generate;
pub mod gguf;
pub mod model;
pub mod paired_speed;
pub mod quant;
pub mod sampling;
pub mod sparsity;
#[doc(hidden)]
pub mod test_models;
pub mod threadpool;
pub mod tokenizer;

pub use error::{Error, Result};
