//! FFN activation sparsity: calibrated masks (gc_mask) and per-context sparsity settings.
//!
//! The sparsity engine is written separately; until it lands in this build these
//! functions validate their arguments exactly as they will then, and report
//! GC_ERR_UNSUPPORTED (with a gc_last_error() message saying so) for the work itself.
//! Dense operation (gc_ctx_set_mask with NULL, GC_SPARSITY_DENSE) works already.

use std::ffi::c_char;
use std::path::Path;

use crate::args::{c_str, handle, out_ptr, read_params, slice, write_out, Handle, Params};
use crate::context::gc_ctx;
use crate::engine::{self, CalibrateOptions, Sparsity};
use crate::model::gc_model;
use crate::status::{boundary, gc_status, invalid_arg};

/// How a context skips FFN neurons (gc_sparsity_params.mode).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum gc_sparsity_mode {
    /// Compute every neuron (default).
    GC_SPARSITY_DENSE = 0,
    /// Skip neurons whose gate activation magnitude is below `threshold`.
    GC_SPARSITY_THRESHOLD = 1,
    /// Skip the fraction `target_sparsity` of neurons, using the per-layer thresholds of
    /// the context's mask (gc_ctx_set_mask; required).
    GC_SPARSITY_TARGET = 2,
}

/// Sparsity settings for gc_ctx_set_sparsity. Start from
/// gc_sparsity_default_params().
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct gc_sparsity_params {
    /// sizeof(gc_sparsity_params); set by gc_sparsity_default_params().
    pub struct_size: u32,
    /// A gc_sparsity_mode value (default GC_SPARSITY_DENSE).
    pub mode: u32,
    /// For GC_SPARSITY_THRESHOLD: the activation magnitude below which a neuron is
    /// skipped (>= 0).
    pub threshold: f32,
    /// For GC_SPARSITY_TARGET: the fraction of neurons to skip, in [0, 1).
    pub target_sparsity: f32,
}

// SAFETY: repr(C), leading u32 struct_size, u32/f32 fields (mode is a plain u32).
unsafe impl Params for gc_sparsity_params {
    const MIN_SIZE: usize = std::mem::size_of::<Self>();
    const NAME: &'static str = "gc_sparsity_params";
    fn defaults() -> Self {
        gc_sparsity_params {
            struct_size: std::mem::size_of::<Self>() as u32,
            mode: gc_sparsity_mode::GC_SPARSITY_DENSE as u32,
            threshold: 0.0,
            target_sparsity: 0.0,
        }
    }
}

/// Options for gc_mask_calibrate. Start from gc_calibrate_default_params().
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct gc_calibrate_params {
    /// sizeof(gc_calibrate_params); set by gc_calibrate_default_params().
    pub struct_size: u32,
    /// The sparsity the thresholds are calibrated for, in [0, 1). Default 0.4.
    pub target_sparsity: f32,
    /// Most tokens of each text that are run (longer texts are cut). Default 512.
    pub max_tokens_per_text: u32,
    /// CPU threads; 0 (default): all available cores.
    pub n_threads: u32,
}

// SAFETY: repr(C), leading u32 struct_size, u32/f32 fields.
unsafe impl Params for gc_calibrate_params {
    const MIN_SIZE: usize = std::mem::size_of::<Self>();
    const NAME: &'static str = "gc_calibrate_params";
    fn defaults() -> Self {
        gc_calibrate_params {
            struct_size: std::mem::size_of::<Self>() as u32,
            target_sparsity: 0.4,
            max_tokens_per_text: 512,
            n_threads: 0,
        }
    }
}

/// The opaque mask handle (see the header).
#[repr(C)]
pub struct gc_mask {
    magic: u64,
    pub(crate) inner: engine::Mask,
}

// SAFETY: repr(C) with `magic: u64` first.
unsafe impl Handle for gc_mask {
    const MAGIC: u64 = u64::from_le_bytes(*b"gcMASK\0\x01");
    const NAME: &'static str = "gc_mask";
}

impl gc_mask {
    fn into_raw(mask: engine::Mask) -> *mut gc_mask {
        Box::into_raw(Box::new(gc_mask {
            magic: gc_mask::MAGIC,
            inner: mask,
        }))
    }
}

/// Returns the default sparsity params (dense).
#[no_mangle]
pub extern "C" fn gc_sparsity_default_params() -> gc_sparsity_params {
    gc_sparsity_params::defaults()
}

/// Returns the default calibration params.
#[no_mangle]
pub extern "C" fn gc_calibrate_default_params() -> gc_calibrate_params {
    gc_calibrate_params::defaults()
}

fn check_fraction(name: &str, v: f32) -> Result<(), crate::status::FfiError> {
    if v.is_finite() && (0.0..1.0).contains(&v) {
        Ok(())
    } else {
        invalid_arg(format!("{name} = {v} is outside [0, 1)"))
    }
}

/// Calibrates a sparsity mask for `model` by running it over `n_texts` sample texts
/// (NUL-terminated UTF-8; representative of the intended use, a few thousand tokens in
/// all). `params` may be NULL for the defaults. On success writes a new mask to
/// `*out_mask` (free with gc_mask_free). The model must be the one the mask is used with.
///
/// Not yet available: returns GC_ERR_UNSUPPORTED after validating the arguments, until
/// the sparsity engine is in the build.
///
/// # Safety
/// `model` is NULL or a live model; `texts` is NULL or points to `n_texts` pointers that
/// are each NULL or NUL-terminated; `params` is NULL or valid; `out_mask` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn gc_mask_calibrate(
    model: *const gc_model,
    texts: *const *const c_char,
    n_texts: usize,
    params: *const gc_calibrate_params,
    out_mask: *mut *mut gc_mask,
) -> gc_status {
    boundary(|| {
        // SAFETY (all): caller's contract.
        let model = unsafe { handle(model, "model") }?;
        let ptrs = unsafe { slice(texts, n_texts, "texts") }?;
        let p = unsafe { read_params(params, "params") }?;
        let out_mask = out_ptr(out_mask, "out_mask")?;
        if ptrs.is_empty() {
            return invalid_arg("n_texts is 0: calibration needs sample text");
        }
        let texts = ptrs
            .iter()
            .enumerate()
            // SAFETY: caller's contract: each entry NULL or NUL-terminated.
            .map(|(i, &t)| unsafe { c_str(t, &format!("texts[{i}]")) })
            .collect::<Result<Vec<_>, _>>()?;
        check_fraction("params.target_sparsity", p.target_sparsity)?;
        if p.max_tokens_per_text == 0 {
            return invalid_arg("params.max_tokens_per_text is 0");
        }
        let mask = engine::Mask::calibrate(
            &model.inner,
            &texts,
            CalibrateOptions {
                target_sparsity: p.target_sparsity,
                max_tokens_per_text: p.max_tokens_per_text,
                n_threads: p.n_threads,
            },
        )?;
        // SAFETY: checked non-NULL, writable per contract.
        unsafe { write_out(out_mask, gc_mask::into_raw(mask)) };
        Ok(())
    })
}

/// Loads a mask saved by gc_mask_save (or `ghost calibrate`) for `model`. Fails with
/// GC_ERR_FORMAT if the file is not a mask or was made for another model.
///
/// Not yet available: returns GC_ERR_UNSUPPORTED after validating the arguments, until
/// the sparsity engine is in the build.
///
/// # Safety
/// `model` NULL or live; `path` NULL or NUL-terminated; `out_mask` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn gc_mask_load(
    model: *const gc_model,
    path: *const c_char,
    out_mask: *mut *mut gc_mask,
) -> gc_status {
    boundary(|| {
        // SAFETY (all): caller's contract.
        let model = unsafe { handle(model, "model") }?;
        let path = unsafe { c_str(path, "path") }?;
        let out_mask = out_ptr(out_mask, "out_mask")?;
        if path.is_empty() {
            return invalid_arg("path is empty");
        }
        let mask = engine::Mask::load(&model.inner, Path::new(path))?;
        // SAFETY: checked non-NULL, writable per contract.
        unsafe { write_out(out_mask, gc_mask::into_raw(mask)) };
        Ok(())
    })
}

/// Saves a mask to `path` (overwriting it).
///
/// # Safety
/// `mask` NULL or live; `path` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn gc_mask_save(mask: *const gc_mask, path: *const c_char) -> gc_status {
    boundary(|| {
        // SAFETY (both): caller's contract.
        let mask = unsafe { handle(mask, "mask") }?;
        let path = unsafe { c_str(path, "path") }?;
        if path.is_empty() {
            return invalid_arg("path is empty");
        }
        mask.inner.save(Path::new(path))
    })
}

/// Frees a mask. A context it was set on keeps its own reference, so the mask may be
/// freed right after gc_ctx_set_mask. NULL is a no-op.
///
/// # Safety
/// `mask` is NULL or a live mask handle not in use by another thread.
#[no_mangle]
pub unsafe extern "C" fn gc_mask_free(mask: *mut gc_mask) {
    let _ = boundary(|| {
        if mask.is_null() {
            return Ok(());
        }
        // SAFETY: caller's contract; the magic check rejects other kinds of handle.
        unsafe { handle(mask.cast_const(), "mask") }?;
        // SAFETY: a live gc_mask made by Box::into_raw, taken back once.
        let mut boxed = unsafe { Box::from_raw(mask) };
        boxed.magic = 0;
        drop(boxed);
        Ok(())
    });
}

/// Sets the mask (calibrated thresholds) the context uses; NULL returns the context to
/// dense operation. The mask must have been made for the context's model.
///
/// # Safety
/// `ctx` NULL or live; `mask` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn gc_ctx_set_mask(ctx: *mut gc_ctx, mask: *const gc_mask) -> gc_status {
    boundary(|| {
        // SAFETY (both): caller's contract.
        let ctx = unsafe { handle(ctx.cast_const(), "ctx") }?;
        let mask = if mask.is_null() {
            None
        } else {
            Some(&unsafe { handle(mask, "mask") }?.inner)
        };
        ctx.lock()?.set_mask(mask)
    })
}

/// Sets how the context skips FFN neurons from the next decoded token on. `params` may
/// be NULL for dense. GC_SPARSITY_DENSE always works; the other modes return
/// GC_ERR_UNSUPPORTED until the sparsity engine is in the build.
///
/// # Safety
/// `ctx` NULL or live; `params` NULL or a valid params struct.
#[no_mangle]
pub unsafe extern "C" fn gc_ctx_set_sparsity(
    ctx: *mut gc_ctx,
    params: *const gc_sparsity_params,
) -> gc_status {
    boundary(|| {
        // SAFETY (both): caller's contract.
        let ctx = unsafe { handle(ctx.cast_const(), "ctx") }?;
        let p = unsafe { read_params(params, "params") }?;
        let sparsity = match p.mode {
            m if m == gc_sparsity_mode::GC_SPARSITY_DENSE as u32 => Sparsity::Dense,
            m if m == gc_sparsity_mode::GC_SPARSITY_THRESHOLD as u32 => {
                if !(p.threshold.is_finite() && p.threshold >= 0.0) {
                    return invalid_arg(format!("params.threshold = {} must be >= 0", p.threshold));
                }
                Sparsity::Threshold(p.threshold)
            }
            m if m == gc_sparsity_mode::GC_SPARSITY_TARGET as u32 => {
                check_fraction("params.target_sparsity", p.target_sparsity)?;
                Sparsity::Target(p.target_sparsity)
            }
            m => return invalid_arg(format!("params.mode = {m} is not a gc_sparsity_mode")),
        };
        ctx.lock()?.set_sparsity(sparsity)
    })
}
