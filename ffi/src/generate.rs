//! gc_generate: prompt in, streamed text pieces out, with sampling and statistics.

use std::ffi::{c_char, c_void};

use crate::args::{c_str, handle, read_params, write_versioned, Params};
use crate::context::{gc_ctx, gc_token};
use crate::engine::{GenerateOptions, StopReason};
use crate::status::{boundary, gc_status, invalid_arg};

/// Called by gc_generate for each generated token, in order. `piece` points to `len`
/// bytes of text (not NUL-terminated; may be an incomplete UTF-8 sequence that the next
/// piece completes) valid only during the call. Return true to continue, false to stop
/// generation (gc_generate then returns GC_OK with stop_reason GC_STOP_CALLBACK). The
/// callback must not call into GhostCore with the same context (that call fails with
/// GC_ERR_INVALID_ARG), and must return normally: no longjmp or C++ exception may cross
/// the library.
pub type gc_token_callback = Option<
    unsafe extern "C" fn(
        piece: *const c_char,
        len: usize,
        token: gc_token,
        user_data: *mut c_void,
    ) -> bool,
>;

/// Why gc_generate stopped (gc_generate_stats.stop_reason).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum gc_stop_reason {
    /// max_tokens tokens were generated.
    GC_STOP_MAX_TOKENS = 0,
    /// The model produced an end-of-generation token (EOS, EOT); it is not passed to the
    /// callback.
    GC_STOP_END_OF_GENERATION = 1,
    /// The callback returned false.
    GC_STOP_CALLBACK = 2,
    /// The context is full (n_ctx tokens).
    GC_STOP_CONTEXT_FULL = 3,
}

/// Sampling and stopping options for gc_generate. Start from
/// gc_generate_default_params().
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct gc_generate_params {
    /// sizeof(gc_generate_params); set by gc_generate_default_params().
    pub struct_size: u32,
    /// Most tokens to generate (default 128). Must be > 0.
    pub max_tokens: u32,
    /// Softmax temperature; 0 means greedy (always the most likely token). Default 0.8.
    pub temperature: f32,
    /// Keep only the k most likely tokens; 0 disables. Default 40.
    pub top_k: u32,
    /// Nucleus sampling: keep the smallest set with probability >= top_p; 1 disables.
    /// Default 0.95.
    pub top_p: f32,
    /// Drop tokens less likely than min_p times the most likely one; 0 disables.
    /// Default 0.05.
    pub min_p: f32,
    /// Penalty for tokens seen in the last repeat_last_n tokens; 1 disables. Default 1.
    pub repeat_penalty: f32,
    /// Window of the repeat penalty, in tokens. Default 64.
    pub repeat_last_n: u32,
    /// Random seed: the same seed, params and prompt give the same text. Default 0.
    pub seed: u64,
    /// Add the model's BOS token etc. to the prompt (default true); only done when the
    /// context is empty, so continuing a sequence never inserts a second BOS.
    pub add_special: bool,
    /// Turn special-token text in the prompt (chat-template markers) into special tokens
    /// (default true).
    pub parse_special: bool,
    /// Stop at the model's end-of-generation token (default true).
    pub stop_at_eog: bool,
}

// SAFETY: repr(C), leading u32 struct_size, plain numeric/bool fields.
unsafe impl Params for gc_generate_params {
    const MIN_SIZE: usize = std::mem::size_of::<Self>();
    const NAME: &'static str = "gc_generate_params";
    fn defaults() -> Self {
        gc_generate_params {
            struct_size: std::mem::size_of::<Self>() as u32,
            max_tokens: 128,
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 0,
            add_special: true,
            parse_special: true,
            stop_at_eog: true,
        }
    }
}

/// Figures of one gc_generate call. Set struct_size = sizeof(gc_generate_stats) before
/// the call.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct gc_generate_stats {
    /// Set by the caller to sizeof(gc_generate_stats).
    pub struct_size: u32,
    /// Tokens in the prompt (after tokenization).
    pub n_prompt_tokens: u32,
    /// Tokens generated (passed to the callback).
    pub n_generated_tokens: u32,
    /// A gc_stop_reason value.
    pub stop_reason: u32,
    /// Prompt evaluation time in seconds, and its throughput in tokens per second.
    pub prompt_seconds: f64,
    pub prompt_tokens_per_second: f64,
    /// Generation time in seconds (sampling included), and its throughput.
    pub generate_seconds: f64,
    pub generate_tokens_per_second: f64,
    /// Fraction of FFN neurons skipped during generation (0 when dense).
    pub sparsity: f32,
}

// SAFETY: repr(C), leading u32 struct_size; written by us, never read from C.
unsafe impl Params for gc_generate_stats {
    const MIN_SIZE: usize = std::mem::size_of::<Self>();
    const NAME: &'static str = "gc_generate_stats";
    fn defaults() -> Self {
        gc_generate_stats {
            struct_size: std::mem::size_of::<Self>() as u32,
            n_prompt_tokens: 0,
            n_generated_tokens: 0,
            stop_reason: 0,
            prompt_seconds: 0.0,
            prompt_tokens_per_second: 0.0,
            generate_seconds: 0.0,
            generate_tokens_per_second: 0.0,
            sparsity: 0.0,
        }
    }
}

/// Returns the default generation params (struct_size set).
#[no_mangle]
pub extern "C" fn gc_generate_default_params() -> gc_generate_params {
    gc_generate_params::defaults()
}

/// Tokenizes `prompt` (NUL-terminated UTF-8), appends it to the context, then samples up
/// to max_tokens tokens, calling `on_token` with each one's text as soon as it is chosen.
/// The context keeps the whole exchange, so a later call continues the same sequence
/// (pass add_special = false then); call gc_ctx_reset to start over. `params` may be
/// NULL for the defaults; `on_token` may be NULL (the text is then only counted);
/// `stats` may be NULL, or has struct_size set and receives the figures on success.
///
/// Errors: GC_ERR_INVALID_ARG (NULL ctx/prompt, a prompt of no tokens on an empty
/// context, bad params, a prompt longer than the room left in the context), plus those of
/// gc_decode.
///
/// # Safety
/// `ctx` is NULL or a live context; `prompt` is NULL or NUL-terminated; `params` is NULL
/// or a valid params struct; `on_token` is NULL or a function safe to call with
/// `user_data`; `stats` is NULL or points to `struct_size` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn gc_generate(
    ctx: *mut gc_ctx,
    prompt: *const c_char,
    params: *const gc_generate_params,
    on_token: gc_token_callback,
    user_data: *mut c_void,
    stats: *mut gc_generate_stats,
) -> gc_status {
    boundary(|| {
        // SAFETY (all): caller's contract.
        let ctx = unsafe { handle(ctx.cast_const(), "ctx") }?;
        let prompt = unsafe { c_str(prompt, "prompt") }?;
        let p = unsafe { read_params(params, "params") }?;
        if !stats.is_null() {
            // Check struct_size before generating, so a bad stats struct costs nothing.
            let probe = gc_generate_stats::defaults();
            // SAFETY: caller's contract; writes zeros/defaults that the real write
            // overwrites on success.
            unsafe { write_versioned(stats, "stats", &probe) }?;
        }
        let options = generate_options(&p)?;
        let mut guard = ctx.lock()?;
        let mut on_piece = |piece: &[u8], token: u32| -> bool {
            match on_token {
                None => true,
                // SAFETY: the caller promises `f` is safe to call with `user_data`; the
                // piece pointer is valid for `len` bytes during the call. A token id is
                // below n_vocab (u32 -> i32 cannot wrap for real vocabularies; clamp).
                Some(f) => unsafe {
                    f(
                        piece.as_ptr().cast(),
                        piece.len(),
                        gc_token::try_from(token).unwrap_or(gc_token::MAX),
                        user_data,
                    )
                },
            }
        };
        let (reason, figures) = guard.generate(prompt, options, &mut on_piece)?;
        if !stats.is_null() {
            let per_second = |n: u32, s: f64| if s > 0.0 { f64::from(n) / s } else { 0.0 };
            let value = gc_generate_stats {
                struct_size: std::mem::size_of::<gc_generate_stats>() as u32,
                n_prompt_tokens: figures.n_prompt_tokens,
                n_generated_tokens: figures.n_generated_tokens,
                stop_reason: match reason {
                    StopReason::MaxTokens => gc_stop_reason::GC_STOP_MAX_TOKENS,
                    StopReason::EndOfGeneration => gc_stop_reason::GC_STOP_END_OF_GENERATION,
                    StopReason::Callback => gc_stop_reason::GC_STOP_CALLBACK,
                    StopReason::ContextFull => gc_stop_reason::GC_STOP_CONTEXT_FULL,
                } as u32,
                prompt_seconds: figures.prompt_seconds,
                prompt_tokens_per_second: per_second(
                    figures.n_prompt_tokens,
                    figures.prompt_seconds,
                ),
                generate_seconds: figures.generate_seconds,
                generate_tokens_per_second: per_second(
                    figures.n_generated_tokens,
                    figures.generate_seconds,
                ),
                sparsity: figures.sparsity,
            };
            // SAFETY: caller's contract (checked above).
            unsafe { write_versioned(stats, "stats", &value) }?;
        }
        Ok(())
    })
}

/// Validates sampling params.
fn generate_options(p: &gc_generate_params) -> Result<GenerateOptions, crate::status::FfiError> {
    if p.max_tokens == 0 {
        return invalid_arg("params.max_tokens is 0");
    }
    let finite_in = |name: &str, v: f32, lo: f32, hi: f32| {
        if v.is_finite() && (lo..=hi).contains(&v) {
            Ok(())
        } else {
            invalid_arg(format!("params.{name} = {v} is outside [{lo}, {hi}]"))
        }
    };
    finite_in("temperature", p.temperature, 0.0, 100.0)?;
    finite_in("top_p", p.top_p, 0.0, 1.0)?;
    finite_in("min_p", p.min_p, 0.0, 1.0)?;
    finite_in("repeat_penalty", p.repeat_penalty, 0.01, 100.0)?;
    Ok(GenerateOptions {
        max_tokens: p.max_tokens,
        temperature: p.temperature,
        top_k: p.top_k,
        top_p: p.top_p,
        min_p: p.min_p,
        repeat_penalty: p.repeat_penalty,
        repeat_last_n: p.repeat_last_n,
        seed: p.seed,
        add_special: p.add_special,
        parse_special: p.parse_special,
        stop_at_eog: p.stop_at_eog,
    })
}
