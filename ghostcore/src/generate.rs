//! Text generation: prompt prefill, then sample → decode one token at a time, streaming
//! valid UTF-8 pieces.

use std::time::{Duration, Instant};

use crate::context::Context;
use crate::sampling::{Sampler, SamplerParams};
use crate::{bail, Result};

/// Options for [`generate_tokens`] / `generate`.
#[derive(Debug, Clone)]
pub struct GenerateParams {
    /// Most tokens to generate.
    pub max_tokens: usize,
    pub sampling: SamplerParams,
    /// Keep generating past end-of-generation tokens.
    pub ignore_eog: bool,
}

impl Default for GenerateParams {
    fn default() -> Self {
        GenerateParams {
            max_tokens: 128,
            sampling: SamplerParams::default(),
            ignore_eog: false,
        }
    }
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// `max_tokens` reached.
    Length,
    /// An end-of-generation token was sampled (it is not emitted).
    EndOfGeneration,
    /// The callback returned `false`.
    Callback,
    /// The context is full.
    ContextFull,
}

#[derive(Debug, Clone)]
pub struct GenerateStats {
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub prompt_time: Duration,
    pub generation_time: Duration,
    /// Time the model took to load (copied from the model's info).
    pub load_time: Duration,
    pub stop: StopReason,
}

impl GenerateStats {
    pub fn prompt_tokens_per_second(&self) -> f64 {
        rate(self.prompt_tokens, self.prompt_time)
    }

    pub fn generation_tokens_per_second(&self) -> f64 {
        rate(self.generated_tokens, self.generation_time)
    }
}

fn rate(n: usize, t: Duration) -> f64 {
    if t.is_zero() {
        0.0
    } else {
        n as f64 / t.as_secs_f64()
    }
}

/// Generates from `prompt` tokens appended to whatever the context holds.
/// `is_eog(token)` marks end-of-generation tokens; `on_token(token)` returns `false` to stop.
/// The penalties see the prompt tokens.
pub fn generate_tokens(
    ctx: &mut Context,
    prompt: &[u32],
    params: &GenerateParams,
    is_eog: impl Fn(u32) -> bool,
    mut on_token: impl FnMut(u32) -> Result<bool>,
) -> Result<GenerateStats> {
    if prompt.is_empty() && ctx.n_past() == 0 {
        bail!(
            InvalidArgument,
            "empty prompt and empty context: nothing to continue from"
        );
    }
    let mut sampler = Sampler::new(params.sampling.clone());
    // An embedding may have more rows than the tokenizer has tokens (padded vocabularies,
    // synthetic models): only ids the tokenizer can name are sampled.
    let n_named = ctx.model().tokenizer().map_or(usize::MAX, |t| t.n_vocab());
    for &t in prompt {
        sampler.accept(t);
    }
    let t0 = Instant::now();
    if !prompt.is_empty() {
        ctx.decode(prompt)?;
    }
    let prompt_time = t0.elapsed();
    let t1 = Instant::now();
    let mut generated = 0;
    let mut stop = StopReason::Length;
    while generated < params.max_tokens {
        let logits = ctx.logits();
        let tok = sampler.sample(&logits[..n_named.min(logits.len())]);
        sampler.accept(tok);
        if !params.ignore_eog && is_eog(tok) {
            stop = StopReason::EndOfGeneration;
            break;
        }
        generated += 1;
        if !on_token(tok)? {
            stop = StopReason::Callback;
            break;
        }
        if generated == params.max_tokens {
            break;
        }
        if ctx.n_past() >= ctx.n_ctx() {
            stop = StopReason::ContextFull;
            break;
        }
        ctx.decode(&[tok])?;
    }
    Ok(GenerateStats {
        prompt_tokens: prompt.len(),
        generated_tokens: generated,
        prompt_time,
        generation_time: t1.elapsed(),
        load_time: ctx.model().info().load_time,
        stop,
    })
}

/// What to generate from.
#[derive(Debug, Clone, Copy)]
pub enum Prompt<'a> {
    /// Text, tokenized with the model's tokenizer: special tokens are parsed, and BOS is
    /// added (when the model wants it) only if the context is empty.
    Text(&'a str),
    /// Token ids, used as given.
    Tokens(&'a [u32]),
}

/// Generates text from `prompt` appended to the context, streaming valid UTF-8 pieces to
/// `on_piece` (return `false` to stop). Stops at end-of-generation tokens unless
/// `params.ignore_eog`.
pub fn generate(
    ctx: &mut Context,
    prompt: Prompt<'_>,
    params: &GenerateParams,
    mut on_piece: impl FnMut(&str) -> bool,
) -> Result<GenerateStats> {
    let model = std::sync::Arc::clone(ctx.model());
    let tok = model.tokenizer()?;
    let owned;
    let tokens: &[u32] = match prompt {
        Prompt::Text(text) => {
            owned = tok.encode(text, ctx.n_past() == 0, true)?;
            &owned
        }
        Prompt::Tokens(t) => t,
    };
    let mut stream = Utf8Stream::new();
    let mut stopped = false;
    let mut stats = generate_tokens(
        ctx,
        tokens,
        params,
        |t| tok.is_eog(t),
        |t| {
            let piece = tok.token_to_piece(t, true)?;
            let text = stream.push(&piece);
            if !text.is_empty() && !on_piece(&text) {
                stopped = true;
                return Ok(false);
            }
            Ok(true)
        },
    )?;
    let rest = stream.finish();
    if !stopped && !rest.is_empty() && !on_piece(&rest) {
        stats.stop = StopReason::Callback;
    }
    Ok(stats)
}

/// Joins token byte pieces into valid UTF-8 text, holding back an incomplete multi-byte
/// sequence until the next piece completes it. Invalid bytes become U+FFFD.
#[derive(Debug, Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `bytes` and returns the text that is now complete (possibly empty).
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // SAFETY-free: the prefix is valid UTF-8 by `valid_up_to`.
                    out.push_str(std::str::from_utf8(&self.pending[..valid]).unwrap_or_default());
                    match e.error_len() {
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            self.pending.drain(..valid + bad);
                        }
                        None => {
                            // Incomplete sequence at the end: keep it for later.
                            self.pending.drain(..valid);
                            return out;
                        }
                    }
                }
            }
        }
    }

    /// Flushes whatever is held back (as U+FFFD if incomplete).
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_stream_buffers_split_sequences() {
        let text = "héllo 世界 🙂";
        let bytes = text.as_bytes();
        let mut s = Utf8Stream::new();
        let mut out = String::new();
        for b in bytes {
            out.push_str(&s.push(&[*b]));
        }
        out.push_str(&s.finish());
        assert_eq!(out, text);
        let mut s = Utf8Stream::new();
        assert_eq!(s.push(&[0xE4, 0xB8]), "");
        assert_eq!(s.push(&[0x96, b'a']), "世a");
        assert_eq!(s.push(&[0xFF, b'b']), "\u{FFFD}b");
    }
}
