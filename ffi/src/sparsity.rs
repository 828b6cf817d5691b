//! FFN activation sparsity: calibrated masks (gc_mask) and per-context sparsity settings,
//! over `ghostcore::sparsity`.

use std::ffi::c_char;
use std::path::Path;
use std::sync::Arc;

use crate::args::{c_str, handle, out_ptr, read_params, slice, write_out, Handle, Params};
use crate::context::gc_ctx;
use crate::engine::{self, CalibrateOptions};
use crate::model::gc_model;
use crate::status::{boundary, gc_status, invalid_arg};
use ghostcore::sparsity::{Rule, Score, SparsityMode};

/// How a context skips FFN neurons (gc_sparsity_params.mode). Decoding of single tokens
/// (generation) is sparse; prompt batches stay dense.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum gc_sparsity_mode {
    /// Compute every neuron (default).
    GC_SPARSITY_DENSE = 0,
    /// Skip neurons whose |act(gate·x)| is at most `threshold` (one global threshold;
    /// needs no mask).
    GC_SPARSITY_THRESHOLD = 1,
    /// Skip the fraction `target_sparsity` of neurons using the per-layer thresholds of
    /// the context's mask (gc_ctx_set_mask first).
    GC_SPARSITY_TARGET = 2,
    /// A mode in the `ghost --sparsity` language, given in `spec`: e.g. "budget:1" (the
    /// mask's best setting within a 1% perplexity increase), "cascade:0.2:0.5",
    /// "target:0.4:product", "dead", "gate:0.05,dead". Modes that use calibration data
    /// need the context's mask.
    GC_SPARSITY_SPEC = 3,
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
    /// For GC_SPARSITY_THRESHOLD: the activation magnitude at or below which a neuron is
    /// skipped (>= 0).
    pub threshold: f32,
    /// For GC_SPARSITY_TARGET: the fraction of neurons to skip, in [0, 1).
    pub target_sparsity: f32,
    /// For GC_SPARSITY_SPEC: the mode text (NUL-terminated; read during the call only).
    pub spec: *const c_char,
}

// SAFETY: repr(C), leading u32 struct_size, u32/f32 fields and a raw pointer (any bit
// pattern is a valid raw pointer; it is only dereferenced through c_str's contract).
unsafe impl Params for gc_sparsity_params {
    const MIN_SIZE: usize = std::mem::size_of::<Self>();
    const NAME: &'static str = "gc_sparsity_params";
    fn defaults() -> Self {
        gc_sparsity_params {
            struct_size: std::mem::size_of::<Self>() as u32,
            mode: gc_sparsity_mode::GC_SPARSITY_DENSE as u32,
            threshold: 0.0,
            target_sparsity: 0.0,
            spec: std::ptr::null(),
        }
    }
}

/// Options for gc_mask_calibrate. Start from gc_calibrate_default_params().
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct gc_calibrate_params {
    /// sizeof(gc_calibrate_params); set by gc_calibrate_default_params().
    pub struct_size: u32,
    /// Tokens per calibration chunk (the texts are joined, then cut into chunks of this
    /// length; a shorter tail is dropped). Default 512; the texts must hold at least one
    /// chunk.
    pub n_ctx: u32,
    /// CPU threads; 0 (default): one per available core.
    pub n_threads: u32,
    /// Activation magnitude counted as "firing" for the statistics and the dead-neuron
    /// mask. Default 0.01.
    pub eps: f32,
    /// Also measure, on a held-out 15% of the chunks, which sparsity setting stays within
    /// each perplexity budget (0.5% .. 10%), enabling "budget:P" modes. Slow: runs ~20
    /// perplexity evaluations. Default false.
    pub measure_budgets: bool,
    /// Store the requantized neuron-major ffn_down copy in the mask for layers that have no
    /// exact copy (faster loading, larger mask file; Q4_K and Q6_K downs, all of a Q4_K_M
    /// model's, get exact copies at load and need none). Default true.
    pub store_down_copy: bool,
}

// SAFETY: repr(C), leading u32 struct_size, u32/f32/bool fields.
unsafe impl Params for gc_calibrate_params {
    const MIN_SIZE: usize = std::mem::size_of::<Self>();
    const NAME: &'static str = "gc_calibrate_params";
    fn defaults() -> Self {
        gc_calibrate_params {
            struct_size: std::mem::size_of::<Self>() as u32,
            n_ctx: 512,
            n_threads: 0,
            eps: 0.01,
            measure_budgets: false,
            store_down_copy: true,
        }
    }
}

/// The opaque mask handle (see the header).
#[repr(C)]
pub struct gc_mask {
    magic: u64,
    pub(crate) inner: Arc<engine::Mask>,
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
            inner: Arc::new(mask),
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

/// Calibrates a sparsity mask for `model` by running it densely over `n_texts` sample
/// texts (NUL-terminated UTF-8, representative of the intended use; together at least
/// params->n_ctx tokens, ideally tens of thousands). `params` may be NULL for the
/// defaults. On success writes a new mask to `*out_mask` (free with gc_mask_free). The
/// mask is bound to this model's FFN weights. Takes a few seconds per chunk of n_ctx
/// tokens on small models (much longer with measure_budgets).
///
/// Errors: GC_ERR_INVALID_ARG (NULL or non-UTF-8 texts, too little text, bad params).
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
        if p.n_ctx < 16 || p.n_ctx > 1 << 20 {
            return invalid_arg(format!("params.n_ctx = {} is outside [16, 2^20]", p.n_ctx));
        }
        if !(p.eps.is_finite() && p.eps >= 0.0) {
            return invalid_arg(format!("params.eps = {} must be >= 0", p.eps));
        }
        let mask = engine::Mask::calibrate(
            &model.inner,
            &texts,
            CalibrateOptions {
                n_ctx: p.n_ctx,
                n_threads: p.n_threads,
                eps: p.eps,
                measure_budgets: p.measure_budgets,
                store_down_copy: p.store_down_copy,
            },
        )?;
        // SAFETY: checked non-NULL, writable per contract.
        unsafe { write_out(out_mask, gc_mask::into_raw(mask)) };
        Ok(())
    })
}

/// Loads a mask saved by gc_mask_save (or made by `ghost calibrate`, MODEL.ghost) for
/// `model`. Errors: GC_ERR_IO (cannot read), GC_ERR_FORMAT (not a mask file),
/// GC_ERR_INVALID_ARG (made for a model with other FFN weights).
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

/// Sets the mask (calibration data) the context uses; NULL removes it and returns the
/// context to dense decoding. The mask must have been made for the context's model's
/// weights (GC_ERR_INVALID_ARG otherwise). If the context is dense when a mask is set, it
/// switches to the mask's default mode: its best setting within a 1% perplexity increase
/// when the mask has a budget table (measure_budgets), otherwise skipping only the
/// neurons calibration found dead. Choose another mode with gc_ctx_set_sparsity.
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
            Some(Arc::clone(&unsafe { handle(mask, "mask") }?.inner))
        };
        ctx.lock()?.set_mask(mask)
    })
}

/// Sets how the context skips FFN neurons from the next decoded token on. `params` may
/// be NULL for dense. The mask (if any) stays set. gc_generate_stats.sparsity reports the
/// fraction of FFN neurons skipped during generation. On error the previous settings stay.
///
/// Errors: GC_ERR_INVALID_ARG (unknown mode, value out of range, bad spec text, or a mode
/// that needs calibration data while the context has no mask).
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
        let mode = match p.mode {
            m if m == gc_sparsity_mode::GC_SPARSITY_DENSE as u32 => SparsityMode::DENSE,
            m if m == gc_sparsity_mode::GC_SPARSITY_THRESHOLD as u32 => {
                if !(p.threshold.is_finite() && p.threshold >= 0.0) {
                    return invalid_arg(format!("params.threshold = {} must be >= 0", p.threshold));
                }
                SparsityMode {
                    dead: false,
                    input: None,
                    coarse: None,
                    rule: Some(Rule::Gate(p.threshold)),
                }
            }
            m if m == gc_sparsity_mode::GC_SPARSITY_TARGET as u32 => {
                check_fraction("params.target_sparsity", p.target_sparsity)?;
                SparsityMode {
                    dead: false,
                    input: None,
                    coarse: None,
                    rule: Some(Rule::Target {
                        sparsity: p.target_sparsity,
                        score: Score::Act,
                    }),
                }
            }
            m if m == gc_sparsity_mode::GC_SPARSITY_SPEC as u32 => {
                // SAFETY: caller's contract: spec is NULL or NUL-terminated.
                let spec = unsafe { c_str(p.spec, "params.spec") }?;
                spec.parse::<SparsityMode>()
                    .map_err(crate::status::FfiError::from)?
            }
            m => return invalid_arg(format!("params.mode = {m} is not a gc_sparsity_mode")),
        };
        ctx.lock()?.set_sparsity(mode)
    })
}

/// Tunes the sparse kernels to this CPU for the context's model: measures how long each
/// sparse path takes at the model's FFN shape (a few seconds; or reads what an earlier call
/// or `ghost tune` cached under the user's cache directory, unless `force`), then decodes
/// with the context's sparsity setting (gc_ctx_set_sparsity / gc_ctx_set_mask), built-in and
/// measured costs alternating in paired blocks of 8 tokens (3 × 128 tokens of a built-in
/// text), and keeps the measured costs, for this process and later ones, only if they were
/// not slower. Then each class of sparse paths the decode took (input-major copy, gathered
/// rows, exact down copies) is tried never taken, in the same paired way, and turned off
/// where decode was faster without it. Last, the sparse FFN so tuned decodes against the
/// dense one, and that verdict is recorded too (`ghost run` then decodes dense where dense
/// was significantly faster); this context keeps the sparsity it was given. The verdicts
/// are cached with the costs. All of it
/// holds for the context's thread count (its n_threads): contexts with another count
/// use what was tuned for theirs. The context's token history is cleared.
/// `out_speedup` (may be NULL) receives the decode speed with the measured costs relative
/// to the built-in ones (> 1: faster).
///
/// Errors: GC_ERR_INVALID_ARG (a dense context, a GPU context, a context of fewer than 32
/// tokens), GC_ERR_UNSUPPORTED (this CPU runs the scalar kernels, where bytes alone decide,
/// or GHOST_PATH_COSTS=builtin, or no cache directory).
///
/// # Safety
/// `ctx` NULL or live; `out_speedup` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn gc_ctx_tune_path_costs(
    ctx: *mut gc_ctx,
    force: bool,
    out_speedup: *mut f64,
) -> gc_status {
    boundary(|| {
        // SAFETY: caller's contract.
        let ctx = unsafe { handle(ctx.cast_const(), "ctx") }?;
        let speedup = ctx.lock()?.tune_path_costs(force)?;
        if !out_speedup.is_null() {
            // SAFETY: non-NULL and writable per the caller's contract.
            unsafe { write_out(out_speedup, speedup) };
        }
        Ok(())
    })
}

/// Whether sparsity pays on this CPU for the context: what the last tune
/// (gc_ctx_tune_path_costs, or `ghost tune -t N --sparsity MODE`) found when it decoded the
/// context's sparsity mode at its thread count with the tuned sparse FFN against the dense
/// one, in paired blocks. `*out_checked` is false where no tune with that mode and thread
/// count is cached on this machine (and on the GPU); otherwise `*out_speedup` receives the
/// sparse FFN's decode speed relative to dense (> 1: faster; median of the pairs) and
/// `*out_dense_faster` whether dense was faster in significantly more pairs (sign test,
/// one-sided 5%). `ghost run` decodes dense where it was; a program may do the same by
/// setting GC_SPARSITY_DENSE. Any out pointer may be NULL.
///
/// Errors: GC_ERR_INVALID_ARG (NULL or dense context), GC_ERR_FORMAT (a damaged cache file,
/// named in the message), GC_ERR_IO.
///
/// # Safety
/// `ctx` NULL or live; each out pointer NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn gc_ctx_sparse_check(
    ctx: *const gc_ctx,
    out_checked: *mut bool,
    out_speedup: *mut f64,
    out_dense_faster: *mut bool,
) -> gc_status {
    boundary(|| {
        // SAFETY: caller's contract.
        let ctx = unsafe { handle(ctx, "ctx") }?;
        let check = ctx.lock()?.sparse_check()?;
        // SAFETY (each write): non-NULL and writable per the caller's contract.
        if !out_checked.is_null() {
            unsafe { write_out(out_checked, check.is_some()) };
        }
        if !out_speedup.is_null() {
            unsafe { write_out(out_speedup, check.as_ref().map_or(1.0, |c| c.speedup)) };
        }
        if !out_dense_faster.is_null() {
            let dense = check.as_ref().is_some_and(|c| c.decodes_dense());
            unsafe { write_out(out_dense_faster, dense) };
        }
        Ok(())
    })
}
