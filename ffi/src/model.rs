//! gc_model: loading a GGUF model and reading its facts.

use std::ffi::c_char;
use std::path::Path;
use std::sync::Arc;

use crate::args::{
    c_str, handle, out_ptr, read_params, write_out, write_versioned, Handle, Params,
};
use crate::engine::{self, ModelOptions};
use crate::status::{boundary, gc_status, invalid_arg};

/// Options for gc_model_load. Start from gc_model_default_params().
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct gc_model_params {
    /// sizeof(gc_model_params); set by gc_model_default_params().
    pub struct_size: u32,
    /// Run contexts on a CUDA GPU (weights and KV cache on the device). false (default):
    /// CPU only. A build without CUDA returns GC_ERR_UNSUPPORTED when this is true; a CUDA
    /// build on a machine without a driver or device runs on the CPU and says so once on
    /// stderr.
    pub use_gpu: bool,
    /// CUDA device ordinal when use_gpu is true (default 0; other ordinals are
    /// GC_ERR_UNSUPPORTED in this version).
    pub gpu_device: u32,
}

// SAFETY: repr(C), leading u32 struct_size, fields are u32/bool only.
unsafe impl Params for gc_model_params {
    const MIN_SIZE: usize = std::mem::size_of::<Self>();
    const NAME: &'static str = "gc_model_params";
    fn defaults() -> Self {
        gc_model_params {
            struct_size: std::mem::size_of::<Self>() as u32,
            use_gpu: false,
            gpu_device: 0,
        }
    }
}

/// Facts about a loaded model, filled by gc_model_get_info.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct gc_model_info {
    /// Set to sizeof(gc_model_info) before calling gc_model_get_info.
    pub struct_size: u32,
    /// Architecture from the GGUF (general.architecture), e.g. "llama", "gemma3". Owned by
    /// the model; valid until gc_model_free.
    pub architecture: *const c_char,
    /// Model name (general.name), "" if absent. Owned by the model; valid until
    /// gc_model_free.
    pub name: *const c_char,
    /// Number of weights (elements of all tensors).
    pub n_params: u64,
    /// Context length the model was trained with (<arch>.context_length).
    pub n_ctx_train: u32,
    /// Number of tokens in the vocabulary; valid tokens are 0 .. n_vocab-1.
    pub n_vocab: u32,
    /// Number of transformer blocks.
    pub n_layer: u32,
    /// Embedding width.
    pub n_embd: u32,
}

// SAFETY: repr(C), leading u32 struct_size; written by us, never read from C.
unsafe impl Params for gc_model_info {
    const MIN_SIZE: usize = std::mem::size_of::<Self>();
    const NAME: &'static str = "gc_model_info";
    fn defaults() -> Self {
        gc_model_info {
            struct_size: std::mem::size_of::<Self>() as u32,
            architecture: std::ptr::null(),
            name: std::ptr::null(),
            n_params: 0,
            n_ctx_train: 0,
            n_vocab: 0,
            n_layer: 0,
            n_embd: 0,
        }
    }
}

/// The opaque model handle (see the header).
#[repr(C)]
pub struct gc_model {
    magic: u64,
    pub(crate) inner: Arc<engine::Model>,
}

// SAFETY: repr(C) with `magic: u64` first.
unsafe impl Handle for gc_model {
    const MAGIC: u64 = u64::from_le_bytes(*b"gcMODEL\x01");
    const NAME: &'static str = "gc_model";
}

/// Returns the default model params (struct_size set, CPU).
#[no_mangle]
pub extern "C" fn gc_model_default_params() -> gc_model_params {
    gc_model_params::defaults()
}

/// Loads a GGUF model from `path` (NUL-terminated UTF-8). `params` may be NULL for the
/// defaults. On success writes a new handle to `*out_model` (free it with gc_model_free);
/// on failure leaves `*out_model` untouched.
///
/// Errors: GC_ERR_INVALID_ARG (NULL path/out_model, bad params), GC_ERR_IO (cannot open),
/// GC_ERR_FORMAT (not a valid GGUF model), GC_ERR_UNSUPPORTED (architecture or tensor
/// type this build does not run, or use_gpu without CUDA), GC_ERR_OUT_OF_MEMORY.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `params` is NULL or a valid params struct;
/// `out_model` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn gc_model_load(
    path: *const c_char,
    params: *const gc_model_params,
    out_model: *mut *mut gc_model,
) -> gc_status {
    boundary(|| {
        // SAFETY (all three): the caller's contract in the doc comment above.
        let path = unsafe { c_str(path, "path") }?;
        let params = unsafe { read_params(params, "params") }?;
        let out_model = out_ptr(out_model, "out_model")?;
        if path.is_empty() {
            return invalid_arg("path is empty");
        }
        let model = engine::Model::load(
            Path::new(path),
            ModelOptions {
                use_gpu: params.use_gpu,
                gpu_device: params.gpu_device,
            },
        )?;
        let handle = Box::new(gc_model {
            magic: gc_model::MAGIC,
            inner: Arc::new(model),
        });
        // SAFETY: out_model checked non-NULL, writable per contract.
        unsafe { write_out(out_model, Box::into_raw(handle)) };
        Ok(())
    })
}

/// Frees a model handle. The weights stay alive until the last context made from the
/// model is freed too, so contexts may outlive this call. NULL is a no-op. Freeing a
/// handle twice is undefined behaviour.
///
/// # Safety
/// `model` is NULL or a handle from gc_model_load not yet freed, and no other thread is
/// using it during this call.
#[no_mangle]
pub unsafe extern "C" fn gc_model_free(model: *mut gc_model) {
    let _ = boundary(|| {
        if model.is_null() {
            return Ok(());
        }
        // SAFETY: caller's contract; the magic check rejects other kinds of handle.
        unsafe { handle(model.cast_const(), "model") }?;
        // SAFETY: a live gc_model made by Box::into_raw in gc_model_load; we take it back
        // once and clear the magic so a repeated free is caught while the memory is unused.
        let mut boxed = unsafe { Box::from_raw(model) };
        boxed.magic = 0;
        drop(boxed);
        Ok(())
    });
}

/// Fills `*info` with facts about the model. Set `info->struct_size = sizeof(gc_model_info)`
/// first. The strings it points to stay valid until gc_model_free.
///
/// Thread-safe: any number of threads may query one model.
///
/// # Safety
/// `model` is NULL or a live handle; `info` is NULL or points to `struct_size` writable
/// bytes.
#[no_mangle]
pub unsafe extern "C" fn gc_model_get_info(
    model: *const gc_model,
    info: *mut gc_model_info,
) -> gc_status {
    boundary(|| {
        // SAFETY: caller's contract.
        let model = unsafe { handle(model, "model") }?;
        let f = &model.inner.facts;
        let value = gc_model_info {
            struct_size: std::mem::size_of::<gc_model_info>() as u32,
            architecture: f.architecture.as_ptr(),
            name: f.name.as_ptr(),
            n_params: f.n_params,
            n_ctx_train: f.n_ctx_train,
            n_vocab: f.n_vocab,
            n_layer: f.n_layer,
            n_embd: f.n_embd,
        };
        // SAFETY: caller's contract.
        unsafe { write_versioned(info, "info", &value) }
    })
}
