//! Checking measured path costs in decode: kernels timed in isolation are not decode (on an
//! AVX2 VM the measured curves chose the dense down at the 8B shape's 50% setting and
//! decoded 0.03–0.13 slower than the built-in ones, `bench/results/2026-12-06-s7-path-tuning.md`),
//! so before a process keeps measured curves it decodes with its sparse FFN, built-in and
//! measured curves alternating in paired blocks ([`crate::paired_speed`]), and keeps them
//! only when they were not slower ([`keep_if_not_slower`]; the verdict goes into the cache
//! file, see [`super::cache`]). `ghost tune` and `gc_ctx_tune_path_costs` run it.

use std::path::Path;

use super::cache::{self, DecodeCheck};
use super::measure::FfnShape;
use super::{clear_tuned_width, install_tuned, PathCosts};
use crate::context::Context;
use crate::paired_speed::{paired_speed, Side};
use crate::sparsity::calibrate::BUILTIN_CORPUS;
use crate::tokenizer::Tokenizer;
use crate::{bail, Result};

/// Tokens of [`BUILTIN_CORPUS`] decoded as the prompt of each repetition.
pub const PROMPT_TOKENS: usize = 16;

/// How long the decode check runs.
#[derive(Clone, Copy, Debug)]
pub struct CheckOptions {
    /// Tokens decoded per repetition after the prompt (fewer where the context holds less).
    pub n_tokens: usize,
    pub reps: usize,
    /// Tokens per block (built-in and measured blocks alternate).
    pub block: usize,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            n_tokens: 128,
            reps: 3,
            block: 8,
        }
    }
}

/// Decode speed in `ctx` with `costs` installed for its model's width against the built-in
/// curves, in paired blocks over [`BUILTIN_CORPUS`] (or fixed pseudo-random ids when the
/// model has no vocabulary). `ctx` must decode with its sparse FFN already installed, with
/// the sparsity mode `mode` (recorded in the verdict). The context is reset before each
/// repetition and left holding the check's tokens, with the built-in curves installed.
pub fn check_in_decode(
    ctx: &mut Context,
    costs: &PathCosts,
    mode: &str,
    opts: &CheckOptions,
) -> Result<DecodeCheck> {
    if ctx.is_accelerated() {
        bail!(
            InvalidArgument,
            "path costs steer the CPU's sparse kernels: this context runs on an accelerator"
        );
    }
    if ctx.decode_ffns().iter().all(Option::is_none) {
        bail!(
            InvalidArgument,
            "the path-cost check decodes with a sparse FFN: this context is dense"
        );
    }
    let block = opts.block.max(1);
    let n_tokens = opts.n_tokens.min(ctx.n_ctx().saturating_sub(PROMPT_TOKENS));
    if n_tokens < 2 * block {
        bail!(
            InvalidArgument,
            "the path-cost check needs {} tokens of context (a {PROMPT_TOKENS}-token prompt and \
             one pair of {block}-token blocks), the context holds {}",
            PROMPT_TOKENS + 2 * block,
            ctx.n_ctx()
        );
    }
    let ids = check_tokens(ctx, PROMPT_TOKENS + n_tokens)?;
    let width = ctx.model().config().n_embd;
    let cpu_time = ctx.n_threads() == 1;
    let speed = paired_speed(
        ctx,
        &ids[..PROMPT_TOKENS],
        &ids[PROMPT_TOKENS..],
        opts.reps,
        block,
        cpu_time,
        &mut |_, side| {
            match side {
                Side::Baseline => clear_tuned_width(width),
                Side::Candidate => install_tuned(width, *costs),
            }
            Ok(())
        },
    )?;
    Ok(DecodeCheck {
        mode: mode.split_whitespace().collect(),
        speedup: speed.speedup,
        pairs: speed.pairs,
    })
}

/// `n` tokens of the built-in corpus in the model's vocabulary; pseudo-random ids where the
/// model has no tokenizer (synthetic models) or the corpus is too short.
fn check_tokens(ctx: &Context, n: usize) -> Result<Vec<u32>> {
    let model = ctx.model();
    let ids = match Tokenizer::from_gguf(model.gguf()) {
        Ok(tok) => tok.encode(BUILTIN_CORPUS, false, false)?,
        Err(_) => Vec::new(),
    };
    if ids.len() >= n {
        return Ok(ids[..n].to_vec());
    }
    let n_vocab = model.config().n_vocab.max(1) as u64;
    Ok((0..n as u64)
        .map(|i| ((i * 7919 + 13) % n_vocab) as u32)
        .collect())
}

/// Record `check`'s verdict on `costs` in the cache file `path` for `shape`, and install the
/// curves for the shape's width if they were not slower than the built-in ones, else the
/// built-in curves.
pub fn keep_if_not_slower(
    path: &Path,
    shape: &FfnShape,
    costs: &PathCosts,
    check: &DecodeCheck,
) -> Result<()> {
    cache::write(path, shape, costs, Some(check))?;
    if check.keeps_measured() {
        install_tuned(shape.n_embd, *costs);
    } else {
        clear_tuned_width(shape.n_embd);
    }
    Ok(())
}
