//! libghostcore: the stable C ABI of GhostCore (header: include/ghostcore.h, generated from
//! this crate by cbindgen).
//!
//! Conventions, stated once here and in the header:
//! - Opaque handles (`gc_model`, `gc_ctx`, `gc_mask`) are made by `_load`/`_new`/
//!   `_calibrate` functions and released by the matching `_free`; freeing NULL is a no-op.
//! - Fallible calls return `gc_status`; the detail is in `gc_last_error()` (per thread).
//! - Out-parameters are written only on success (caller-buffer sizes are also written
//!   on `GC_ERR_BUFFER_TOO_SMALL`).
//! - Every export runs inside a panic boundary: a Rust panic becomes `GC_ERR_INTERNAL`.
//! - Params structs begin with `struct_size` so fields can be appended.
//!
//! Module per concern: [`status`] (codes, last error, panic boundary), [`args`] (checked
//! raw-argument conversions), [`version`], [`model`], [`context`], [`tokenize`],
//! [`generate`], [`sparsity`], and [`engine`] (the adapter to the Rust engine).

#![allow(non_camel_case_types)]

mod args;
pub mod context;
mod engine;
pub mod generate;
pub mod model;
pub mod sparsity;
pub mod status;
pub mod tokenize;
pub mod version;
