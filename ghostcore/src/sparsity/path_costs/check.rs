//! Tuning the path choice in decode: kernels timed in isolation are not decode (on an AVX2
//! VM the measured curves chose the dense down at the 8B shape's 50% setting and decoded
//! 0.03–0.13 slower than the built-in ones, `bench/results/2026-12-06-s7-path-tuning.md`;
//! on another AVX2 VM the input-major copy, cheaper than the rows by every curve, decoded
//! SmolLM2 at 0.87× the dense speed with 2 threads). So before a process keeps measured
//! curves it decodes with its sparse FFN, built-in and measured curves alternating in paired
//! blocks ([`crate::paired_speed`]), keeps the faster set ([`check_in_decode`]), then tries
//! each class of sparse paths that decode took never taken, one at a time in the same
//! paired way, and turns off those it decodes faster without ([`tune_in_decode`]). Last, it
//! decodes with the sparse FFN so tuned against the dense FFN: a sparse FFN can be the
//! fastest of its kind and still slower than dense (SmolLM2's `budget:2` at 0.94–0.96× with
//! 2 threads on a Zen 3 VM), and then the front ends decode densely. The verdicts go into
//! the cache file (see [`super::cache`]); `ghost tune` and `gc_ctx_tune_path_costs` run it.

use std::path::Path;

use super::cache::{self, mode_word, DecodeCheck, PathCheck, SparseCheck, Verdicts};
use super::measure::FfnShape;
use super::{clear_tuned, install_tuned, PathCosts, PathSet};
use crate::context::Context;
use crate::paired_speed::{
    install_decode_ffns, paired_decode_speed, paired_speed, PairedSpeed, Side,
};
use crate::sparsity::calibrate::BUILTIN_CORPUS;
use crate::sparsity::engine::SparseHandle;
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
    let width = ctx.model().config().n_embd;
    let builtin = PathCosts::builtin(width, ctx.n_threads());
    let speed = compare_in_decode(ctx, &builtin, costs, opts)?;
    Ok(DecodeCheck {
        mode: mode_word(mode),
        speedup: speed.speedup,
        pairs: speed.pairs,
    })
}

/// [`check_in_decode`], then each class of sparse paths that decode takes with the curves it
/// kept tried never taken, in [`PathClass::ALL`]'s order, against the setting so far (which
/// it joins when it decoded faster, [`PathCheck::turns_off`]); then the sparse FFN with the
/// setting so found against the dense FFN ([`SparseCheck`]). `sparse` is the handle of the
/// sparse FFN installed in `ctx` (its tally tells which paths decode took; it is reset).
/// The context is left holding the check's tokens, with its sparse FFN and the built-in
/// curves installed.
pub fn tune_in_decode(
    ctx: &mut Context,
    sparse: &SparseHandle,
    measured: &PathCosts,
    mode: &str,
    opts: &CheckOptions,
) -> Result<Verdicts> {
    let mut verdicts = Verdicts::of_one_mode(check_in_decode(ctx, measured, mode, opts)?, vec![]);
    let width = ctx.model().config().n_embd;
    let mut current = verdicts.decode_costs(measured, width, ctx.n_threads(), None);
    let taken = paths_taken(ctx, sparse, &current, opts)?;
    for class in taken.iter() {
        let candidate = current.without(class);
        let speed = compare_in_decode(ctx, &current, &candidate, opts)?;
        let check = PathCheck {
            class,
            mode: mode_word(mode),
            speedup: speed.speedup,
            pairs: speed.pairs,
            wins: speed.candidate_wins,
        };
        if check.turns_off() {
            current = candidate;
        }
        verdicts.paths.push(check);
    }
    verdicts
        .sparse
        .push(check_against_dense(ctx, &current, mode, opts)?);
    clear_tuned(width, ctx.n_threads());
    Ok(verdicts)
}

/// Decode speed of the sparse FFN installed in `ctx`, with `costs` installed for its
/// model's width, against the dense FFN, in paired blocks; the sparse FFN is installed again
/// afterwards, and no curves are (the built-in ones serve).
fn check_against_dense(
    ctx: &mut Context,
    costs: &PathCosts,
    mode: &str,
    opts: &CheckOptions,
) -> Result<SparseCheck> {
    let n_tokens = check_length(ctx, opts)?;
    let ids = check_tokens(ctx, PROMPT_TOKENS + n_tokens)?;
    let (width, n_threads) = (ctx.model().config().n_embd, ctx.n_threads());
    let sparse = ctx.decode_ffns().to_vec();
    install_tuned(width, n_threads, *costs);
    let speed = paired_decode_speed(
        ctx,
        &sparse,
        &ids[..PROMPT_TOKENS],
        &ids[PROMPT_TOKENS..],
        opts.reps,
        opts.block.max(1),
        n_threads == 1,
    );
    let restored = install_decode_ffns(ctx, &sparse);
    clear_tuned(width, n_threads);
    let speed = speed?;
    restored?;
    Ok(SparseCheck {
        mode: mode_word(mode),
        speedup: speed.speedup,
        pairs: speed.pairs,
        wins: speed.candidate_wins,
    })
}

/// The sparse path classes decode takes in `ctx` with `costs`, over one repetition's tokens.
fn paths_taken(
    ctx: &mut Context,
    sparse: &SparseHandle,
    costs: &PathCosts,
    opts: &CheckOptions,
) -> Result<PathSet> {
    let width = ctx.model().config().n_embd;
    let n_tokens = check_length(ctx, opts)?;
    let ids = check_tokens(ctx, PROMPT_TOKENS + n_tokens)?;
    install_tuned(width, ctx.n_threads(), *costs);
    ctx.reset();
    let run = (|| {
        ctx.decode(&ids[..PROMPT_TOKENS])?;
        sparse.reset();
        for &t in &ids[PROMPT_TOKENS..] {
            ctx.decode(&[t])?;
        }
        Ok(sparse.tally().paths_taken())
    })();
    clear_tuned(width, ctx.n_threads());
    ctx.reset();
    run
}

/// Tokens each repetition decodes after the prompt, after checking that `ctx` can run the
/// comparison.
fn check_length(ctx: &Context, opts: &CheckOptions) -> Result<usize> {
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
    Ok(n_tokens)
}

/// Decode speed in `ctx` with `candidate` installed for its model's width and thread count
/// against `baseline`, in paired blocks; afterwards no curves are installed (the built-in
/// ones serve).
fn compare_in_decode(
    ctx: &mut Context,
    baseline: &PathCosts,
    candidate: &PathCosts,
    opts: &CheckOptions,
) -> Result<PairedSpeed> {
    let n_tokens = check_length(ctx, opts)?;
    let ids = check_tokens(ctx, PROMPT_TOKENS + n_tokens)?;
    let (width, n_threads) = (ctx.model().config().n_embd, ctx.n_threads());
    let cpu_time = n_threads == 1;
    let speed = paired_speed(
        ctx,
        &ids[..PROMPT_TOKENS],
        &ids[PROMPT_TOKENS..],
        opts.reps,
        opts.block.max(1),
        cpu_time,
        &mut |_, side| {
            let costs = match side {
                Side::Baseline => baseline,
                Side::Candidate => candidate,
            };
            install_tuned(width, n_threads, *costs);
            Ok(())
        },
    );
    clear_tuned(width, n_threads);
    speed
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

/// Record `verdicts` on the measured `costs` in the cache file `path` for `shape` at
/// `n_threads` workers (replacing those of the same modes, keeping the other modes' when the
/// file holds the same curves), and install the setting they pick
/// ([`Verdicts::decode_costs`]) for the mode they were found with.
pub fn record_and_install(
    path: &Path,
    shape: &FfnShape,
    n_threads: usize,
    costs: &PathCosts,
    verdicts: &Verdicts,
) -> Result<()> {
    let held = match cache::read(path, shape, n_threads) {
        Ok(Some(c)) if c.costs == *costs => c.verdicts,
        _ => Verdicts::default(),
    };
    cache::write(path, shape, n_threads, costs, &held.merged_with(verdicts))?;
    let mode = verdicts.checks.first().map(|c| c.mode.as_str());
    install_tuned(
        shape.n_embd,
        n_threads,
        verdicts.decode_costs(costs, shape.n_embd, n_threads, mode),
    );
    Ok(())
}

/// A one-line account of `verdicts` for messages: the curves kept and the classes off.
pub fn describe(verdicts: &Verdicts) -> String {
    let curves = match verdicts.checks.first() {
        None => "measured curves (unchecked)".to_string(),
        Some(c) if c.keeps_measured() => {
            format!(
                "measured curves ({:.3}× the built-in ones' speed)",
                c.speedup
            )
        }
        Some(c) => format!(
            "built-in curves (the measured ones decoded at {:.3}× their speed)",
            c.speedup
        ),
    };
    let paths: Vec<String> = verdicts
        .paths
        .iter()
        .map(|p| {
            format!(
                "{} {} ({:.3}× off, faster in {} of {} pairs)",
                p.class.name(),
                if p.turns_off() { "off" } else { "kept" },
                p.speedup,
                p.wins,
                p.pairs
            )
        })
        .collect();
    let setting = if paths.is_empty() {
        curves
    } else {
        format!("{curves}; {}", paths.join(", "))
    };
    match verdicts.sparse.first() {
        None => setting,
        Some(c) => format!("{setting}; {}", describe_sparse_check(c)),
    }
}

/// A sparse-against-dense check in words, with what decode does about it.
pub fn describe_sparse_check(c: &SparseCheck) -> String {
    format!(
        "the sparse FFN decoded {} at {:.3}× the dense speed (faster in {} of {} pairs): {}",
        c.mode,
        c.speedup,
        c.wins,
        c.pairs,
        if c.decodes_dense() {
            "dense decodes faster here"
        } else {
            "sparse kept"
        }
    )
}
