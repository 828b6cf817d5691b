//! Text <-> tokens with the model's own tokenizer, into caller buffers.

use std::ffi::c_char;

use crate::args::{copy_to_buffer, handle, out_ptr, slice};
use crate::context::{gc_token, tokens_to_ids};
use crate::model::gc_model;
use crate::status::{boundary, gc_status, invalid_arg};

/// Splits `text` (`text_len` bytes of UTF-8, no NUL needed) into tokens, written to
/// `out` (room for `capacity` tokens). `*n_tokens` receives the number of tokens. If they
/// do not fit, returns GC_ERR_BUFFER_TOO_SMALL with `*n_tokens` set and `out` untouched:
/// allocate that many and call again.
///
/// `add_special`: add the model's BOS/EOS tokens as it was trained to.
/// `parse_special`: turn special-token text such as "<|im_start|>" into its token instead
/// of tokenizing it as plain text.
///
/// Thread-safe: any number of threads may tokenize with one model.
///
/// # Safety
/// `model` is NULL or a live model; `text` is NULL or readable for `text_len` bytes;
/// `out` is NULL or writable for `capacity` tokens; `n_tokens` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn gc_tokenize(
    model: *const gc_model,
    text: *const c_char,
    text_len: usize,
    add_special: bool,
    parse_special: bool,
    out: *mut gc_token,
    capacity: usize,
    n_tokens: *mut usize,
) -> gc_status {
    boundary(|| {
        // SAFETY (all): caller's contract.
        let model = unsafe { handle(model, "model") }?;
        let bytes = unsafe { slice(text.cast::<u8>(), text_len, "text") }?;
        out_ptr(n_tokens, "n_tokens")?;
        let text = match std::str::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => return invalid_arg(format!("text is not valid UTF-8: {e}")),
        };
        let ids = model.inner.tokenize(text, add_special, parse_special)?;
        let tokens = ids
            .into_iter()
            .map(|t| gc_token::try_from(t).map_err(|_| internal_token_range(t)))
            .collect::<Result<Vec<_>, _>>()?;
        // SAFETY: caller's contract for out/capacity/n_tokens.
        unsafe { copy_to_buffer(&tokens, out, capacity, n_tokens, false) }
    })
}

fn internal_token_range(t: u32) -> crate::status::FfiError {
    crate::status::FfiError::new(
        gc_status::GC_ERR_INTERNAL,
        format!("tokenizer produced token {t}, beyond the range of gc_token"),
    )
}

/// Writes the text of one token to `buf` (room for `capacity` bytes) followed by a NUL.
/// `*n_bytes` receives the text length without the NUL; the buffer needs `*n_bytes + 1`
/// bytes. If it is too small, returns GC_ERR_BUFFER_TOO_SMALL with `*n_bytes` set and
/// `buf` untouched. The text may be an incomplete UTF-8 sequence (byte tokens).
/// `special`: render control tokens such as "<|im_end|>" (otherwise they give "").
///
/// # Safety
/// `model` is NULL or a live model; `buf` is NULL or writable for `capacity` bytes;
/// `n_bytes` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn gc_token_to_piece(
    model: *const gc_model,
    token: gc_token,
    special: bool,
    buf: *mut c_char,
    capacity: usize,
    n_bytes: *mut usize,
) -> gc_status {
    boundary(|| {
        // SAFETY: caller's contract.
        let model = unsafe { handle(model, "model") }?;
        out_ptr(n_bytes, "n_bytes")?;
        let id = tokens_to_ids(&[token])?[0];
        let piece = model.inner.token_to_piece(id, special)?;
        // SAFETY: caller's contract for buf/capacity/n_bytes.
        unsafe { copy_to_buffer(&piece, buf.cast::<u8>(), capacity, n_bytes, true) }
    })
}

/// Turns `n_tokens` tokens back into text, written to `buf` (room for `capacity` bytes)
/// followed by a NUL. `*n_bytes` receives the text length without the NUL; the buffer
/// needs `*n_bytes + 1` bytes. If it is too small, returns GC_ERR_BUFFER_TOO_SMALL with
/// `*n_bytes` set and `buf` untouched. `remove_special`: drop BOS/EOS and other control
/// tokens from the text.
///
/// # Safety
/// `model` is NULL or a live model; `tokens` is NULL or readable for `n_tokens` tokens;
/// `buf` is NULL or writable for `capacity` bytes; `n_bytes` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn gc_detokenize(
    model: *const gc_model,
    tokens: *const gc_token,
    n_tokens: usize,
    remove_special: bool,
    buf: *mut c_char,
    capacity: usize,
    n_bytes: *mut usize,
) -> gc_status {
    boundary(|| {
        // SAFETY (all): caller's contract.
        let model = unsafe { handle(model, "model") }?;
        let tokens = unsafe { slice(tokens, n_tokens, "tokens") }?;
        out_ptr(n_bytes, "n_bytes")?;
        let ids = tokens_to_ids(tokens)?;
        let text = model.inner.detokenize(&ids, remove_special)?;
        // SAFETY: caller's contract for buf/capacity/n_bytes.
        unsafe { copy_to_buffer(&text, buf.cast::<u8>(), capacity, n_bytes, true) }
    })
}
