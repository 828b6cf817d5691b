//! gc_ctx: an inference context over a model (KV cache, logits), and the low-level
//! gc_decode / gc_get_logits calls.

use std::sync::{Mutex, MutexGuard, TryLockError};

use crate::args::{copy_to_buffer, handle, out_ptr, read_params, slice, write_out, Handle, Params};
use crate::engine::{self, ContextOptions};
use crate::model::gc_model;
use crate::status::{boundary, gc_status, invalid_arg, FfiError, FfiResult};

/// A token id: 0 .. n_vocab-1 (see gc_model_info).
pub type gc_token = i32;

/// Options for gc_ctx_new. Start from gc_ctx_default_params().
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct gc_ctx_params {
    /// sizeof(gc_ctx_params); set by gc_ctx_default_params().
    pub struct_size: u32,
    /// Context length in tokens (prompt + generated). 0 (default): the model's
    /// n_ctx_train, capped at 4096.
    pub n_ctx: u32,
    /// CPU threads. 0 (default): the number of available cores.
    pub n_threads: u32,
    /// Most prompt tokens evaluated in one batch. 0 (default): 512.
    pub n_batch: u32,
}

// SAFETY: repr(C), leading u32 struct_size, u32 fields only.
unsafe impl Params for gc_ctx_params {
    const MIN_SIZE: usize = std::mem::size_of::<Self>();
    const NAME: &'static str = "gc_ctx_params";
    fn defaults() -> Self {
        gc_ctx_params {
            struct_size: std::mem::size_of::<Self>() as u32,
            n_ctx: 0,
            n_threads: 0,
            n_batch: 0,
        }
    }
}

/// The opaque context handle (see the header).
#[repr(C)]
pub struct gc_ctx {
    magic: u64,
    inner: Mutex<engine::Context>,
}

// SAFETY: repr(C) with `magic: u64` first.
unsafe impl Handle for gc_ctx {
    const MAGIC: u64 = u64::from_le_bytes(*b"gcCTX\0\0\x01");
    const NAME: &'static str = "gc_ctx";
}

impl gc_ctx {
    /// Exclusive access to the context. A second thread (or a callback re-entering the
    /// library with the same context) gets GC_ERR_INVALID_ARG instead of a data race or a
    /// deadlock. After a caught panic the context must be reset first.
    pub(crate) fn lock(&self) -> FfiResult<MutexGuard<'_, engine::Context>> {
        match self.inner.try_lock() {
            Ok(g) => Ok(g),
            Err(TryLockError::WouldBlock) => invalid_arg(
                "context is in use by another call: a gc_ctx is used by one thread at a \
                 time, and not from inside its own gc_generate callback",
            ),
            Err(TryLockError::Poisoned(_)) => Err(FfiError::new(
                gc_status::GC_ERR_INTERNAL,
                "context state is unknown after an internal error; call gc_ctx_reset",
            )),
        }
    }
}

/// Returns the default context params (struct_size set, everything automatic).
#[no_mangle]
pub extern "C" fn gc_ctx_default_params() -> gc_ctx_params {
    gc_ctx_params::defaults()
}

/// Creates a context for `model`. `params` may be NULL for the defaults. The context
/// keeps the model's weights alive: gc_model_free may be called before gc_ctx_free.
/// On success writes the handle to `*out_ctx` (free with gc_ctx_free).
///
/// Thread-safety: many contexts may be made from one model and used on different
/// threads at once. One context must be used by one thread at a time (concurrent use is
/// detected and rejected with GC_ERR_INVALID_ARG).
///
/// Errors: GC_ERR_INVALID_ARG (bad params, n_ctx above 4x the training context),
/// GC_ERR_OUT_OF_MEMORY.
///
/// # Safety
/// `model` is NULL or a live model handle; `params` is NULL or a valid params struct;
/// `out_ctx` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn gc_ctx_new(
    model: *const gc_model,
    params: *const gc_ctx_params,
    out_ctx: *mut *mut gc_ctx,
) -> gc_status {
    boundary(|| {
        // SAFETY (all): the caller's contract above.
        let model = unsafe { handle(model, "model") }?;
        let params = unsafe { read_params(params, "params") }?;
        let out_ctx = out_ptr(out_ctx, "out_ctx")?;
        if params.n_ctx > model.inner.facts.n_ctx_train.max(1) * 4 {
            return invalid_arg(format!(
                "n_ctx {} is more than 4x the model's training context ({})",
                params.n_ctx, model.inner.facts.n_ctx_train
            ));
        }
        let options = ContextOptions {
            n_ctx: if params.n_ctx == 0 {
                model.inner.facts.n_ctx_train.clamp(1, 4096)
            } else {
                params.n_ctx
            },
            n_threads: params.n_threads,
            n_batch: if params.n_batch == 0 {
                512
            } else {
                params.n_batch
            },
        };
        let ctx = engine::Context::new(model.inner.clone(), options)?;
        let handle = Box::new(gc_ctx {
            magic: gc_ctx::MAGIC,
            inner: Mutex::new(ctx),
        });
        // SAFETY: checked non-NULL, writable per contract.
        unsafe { write_out(out_ctx, Box::into_raw(handle)) };
        Ok(())
    })
}

/// Frees a context. NULL is a no-op. Freeing twice is undefined behaviour.
///
/// # Safety
/// `ctx` is NULL or a live context handle that no other thread is using.
#[no_mangle]
pub unsafe extern "C" fn gc_ctx_free(ctx: *mut gc_ctx) {
    let _ = boundary(|| {
        if ctx.is_null() {
            return Ok(());
        }
        // SAFETY: caller's contract; the magic check rejects other kinds of handle.
        unsafe { handle(ctx.cast_const(), "ctx") }?;
        // SAFETY: a live gc_ctx made by Box::into_raw in gc_ctx_new, taken back once.
        let mut boxed = unsafe { Box::from_raw(ctx) };
        boxed.magic = 0;
        drop(boxed);
        Ok(())
    });
}

/// Clears the context's token history (KV cache) and logits so a new, unrelated
/// sequence can start. Keeps the sparsity settings. Also recovers a context left
/// unusable by an internal error.
///
/// # Safety
/// `ctx` is NULL or a live context handle.
#[no_mangle]
pub unsafe extern "C" fn gc_ctx_reset(ctx: *mut gc_ctx) -> gc_status {
    boundary(|| {
        // SAFETY: caller's contract.
        let ctx = unsafe { handle(ctx.cast_const(), "ctx") }?;
        if ctx.inner.is_poisoned() {
            ctx.inner.clear_poison();
        }
        ctx.lock()?.reset();
        Ok(())
    })
}

/// Appends `n_tokens` tokens to the context and runs the model over them, leaving the
/// logits of the last one for gc_get_logits. Tokens must be in 0 .. n_vocab-1.
///
/// Errors: GC_ERR_INVALID_ARG (NULL tokens, n_tokens = 0, token out of range, not enough
/// room left in the context; the context is then unchanged).
///
/// # Safety
/// `ctx` is NULL or a live context; `tokens` is NULL or points to `n_tokens` tokens.
#[no_mangle]
pub unsafe extern "C" fn gc_decode(
    ctx: *mut gc_ctx,
    tokens: *const gc_token,
    n_tokens: usize,
) -> gc_status {
    boundary(|| {
        // SAFETY (both): caller's contract.
        let ctx = unsafe { handle(ctx.cast_const(), "ctx") }?;
        let tokens = unsafe { slice(tokens, n_tokens, "tokens") }?;
        if tokens.is_empty() {
            return invalid_arg("n_tokens is 0: nothing to decode");
        }
        let ids = tokens_to_ids(tokens)?;
        ctx.lock()?.decode(&ids)
    })
}

/// Copies the logits (one float per vocabulary token, unnormalised) of the last token
/// decoded into `out`, which holds `capacity` floats. `*n_logits` receives n_vocab. If
/// `capacity` < n_vocab, returns GC_ERR_BUFFER_TOO_SMALL and leaves `out` untouched
/// (call with out = NULL, capacity = 0 to learn the size).
///
/// Errors: GC_ERR_INVALID_ARG (no token decoded since the context was made or reset).
///
/// # Safety
/// `ctx` is NULL or a live context; `out` is NULL or writable for `capacity` floats;
/// `n_logits` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn gc_get_logits(
    ctx: *mut gc_ctx,
    out: *mut f32,
    capacity: usize,
    n_logits: *mut usize,
) -> gc_status {
    boundary(|| {
        // SAFETY: caller's contract.
        let ctx = unsafe { handle(ctx.cast_const(), "ctx") }?;
        out_ptr(n_logits, "n_logits")?;
        let guard = ctx.lock()?;
        let logits = guard.logits()?;
        // SAFETY: caller's contract for out/capacity/n_logits.
        unsafe { copy_to_buffer(logits, out, capacity, n_logits, false) }
    })
}

/// Converts C token ids to engine ids, rejecting negative ones (range is checked by
/// the engine against the vocabulary).
pub(crate) fn tokens_to_ids(tokens: &[gc_token]) -> FfiResult<Vec<u32>> {
    tokens
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            u32::try_from(t).map_err(|_| {
                FfiError::new(
                    gc_status::GC_ERR_INVALID_ARG,
                    format!("tokens[{i}] = {t} is negative"),
                )
            })
        })
        .collect()
}
