//! `ghost perplexity`: perplexity of a text file, computed as `llama-perplexity` does.
//!
//! The text is tokenized once (BOS added when the model wants it). It is cut into
//! `⌊n_tokens / n_ctx⌋` chunks of `n_ctx` tokens; each chunk is decoded from an empty
//! context (its first token replaced by BOS when the model adds BOS), and only the second
//! half is scored: the logits at positions `n_ctx/2 .. n_ctx-2` predict the next token.
//! The estimate is `exp(mean NLL)` with uncertainty `sqrt(var(NLL) / (N-1)) · PPL`.

use std::path::PathBuf;
use std::sync::Arc;

use crate::context::{Context, ContextParams};
use crate::model::{Model, ModelParams};
use crate::Result;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model file (default: the built-in SmolLM2-135M Q4_K_M).
    #[arg(short = 'm', long)]
    pub model: Option<PathBuf>,
    /// Text file to score.
    #[arg(short = 'f', long)]
    pub file: PathBuf,
    /// Chunk (context) size.
    #[arg(short = 'c', long = "ctx-size", default_value_t = 512)]
    pub ctx_size: usize,
    /// Compute threads (0 = one per core).
    #[arg(short = 't', long, default_value_t = 0)]
    pub threads: usize,
    /// Score at most this many chunks (default: all).
    #[arg(long = "chunks")]
    pub chunks: Option<usize>,
    /// Sparsity sidecar made by `ghost calibrate` (default: MODEL.ghost beside the model,
    /// or the one a first `ghost run --sparsity budget:2` cached).
    #[arg(long)]
    pub mask: Option<PathBuf>,
    /// Sparsity mode (e.g. `target:0.4:product`, `dead,gate:0.05`, `budget:2`): also reports
    /// KL to the dense path, per-layer sparsity and FFN bytes skipped.
    #[arg(long)]
    pub sparsity: Option<String>,
    /// How each step picks its kernels: `fastest` (this CPU's measured time curves; what
    /// decode uses) or `bytes` (fewest weight bytes read: the CPU-independent figure that
    /// compares sparsity settings, and what calibration ranks budgets by).
    #[arg(long, default_value = "fastest")]
    pub paths: crate::sparsity::PathPolicy,
    #[command(flatten)]
    pub device: super::DeviceArgs,
}

/// Result of [`perplexity`].
#[derive(Debug, Clone)]
pub struct Perplexity {
    pub ppl: f64,
    /// Standard error of the estimate (llama-perplexity's `+/-`).
    pub ppl_err: f64,
    /// Mean negative log-likelihood (nats) of the scored tokens.
    pub mean_nll: f64,
    pub n_scored: usize,
    pub n_chunks: usize,
}

/// Computes llama-perplexity's figure over `tokens` (already tokenized with BOS handling).
/// `on_chunk(i, running_ppl)` is called after each chunk.
pub fn perplexity(
    ctx: &mut Context,
    tokens: &[u32],
    n_ctx: usize,
    bos: Option<u32>,
    max_chunks: Option<usize>,
    mut on_chunk: impl FnMut(usize, f64),
) -> Result<Perplexity> {
    // Shared by the per-position and per-chunk callbacks.
    let (nll, count) = (std::cell::Cell::new(0.0f64), std::cell::Cell::new(0usize));
    let mut nll2 = 0.0f64;
    let n_chunks = crate::sparsity::eval::score_chunks(
        ctx,
        tokens,
        n_ctx,
        bos,
        max_chunks,
        &mut |row, target| {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let sum_exp: f64 = row.iter().map(|&l| ((l - max) as f64).exp()).sum();
            let lp = (row[target as usize] - max) as f64 - sum_exp.ln();
            nll.set(nll.get() - lp);
            nll2 += lp * lp;
            count.set(count.get() + 1);
            Ok(())
        },
        &mut |done, _| on_chunk(done - 1, (nll.get() / count.get() as f64).exp()),
    )?;
    let (nll, count) = (nll.get(), count.get());
    let mean = nll / count as f64;
    let var = nll2 / count as f64 - mean * mean;
    let ppl = mean.exp();
    let err = if var > 0.0 && count > 1 {
        (var / (count - 1) as f64).sqrt() * ppl
    } else {
        0.0
    };
    Ok(Perplexity {
        ppl,
        ppl_err: err,
        mean_nll: mean,
        n_scored: count,
        n_chunks,
    })
}

pub fn run(mut args: Args) -> Result<()> {
    let path = super::run::resolve_model(args.model.as_deref())?;
    let model = Model::load(&path, &ModelParams::default())?;
    if args.sparsity.is_some() && args.mask.is_none() {
        args.mask = super::sparsity_setup::existing_sidecar(&model, &path);
    }
    let text = std::fs::read(&args.file)?;
    let text = String::from_utf8_lossy(&text);
    let tok = model.tokenizer()?;
    let add_bos = tok.add_bos();
    let tokens = tok.encode(&text, add_bos, false)?;
    eprintln!(
        "ghost perplexity: {} tokens, n_ctx {}",
        tokens.len(),
        args.ctx_size
    );
    let bos = if add_bos { tok.bos() } else { None };
    if let Some(mode) = &args.sparsity {
        if args.paths == crate::sparsity::PathPolicy::Fastest {
            super::sparsity_setup::use_measured_path_costs(&model, args.threads, Some(mode));
        }
        return crate::sparsity::eval::run_sparse_perplexity(
            Arc::clone(&model),
            &tokens,
            bos,
            args.ctx_size,
            args.chunks,
            args.threads,
            args.mask.as_deref(),
            mode,
            args.paths,
        );
    }
    let mut ctx = Context::new(
        Arc::clone(&model),
        ContextParams {
            n_ctx: args.ctx_size,
            n_batch: args.ctx_size,
            n_threads: args.threads,
            device: args.device.device(),
            ..Default::default()
        },
    )?;
    let t0 = std::time::Instant::now();
    let r = perplexity(
        &mut ctx,
        &tokens,
        args.ctx_size,
        bos,
        args.chunks,
        |i, p| {
            eprint!("[{}]{:.4},", i + 1, p);
        },
    )?;
    eprintln!();
    eprintln!(
        "ghost perplexity: {} chunks, {} scored tokens, {:.1} s",
        r.n_chunks,
        r.n_scored,
        t0.elapsed().as_secs_f64()
    );
    println!("Mean NLL = {:.6}", r.mean_nll);
    println!("Final estimate: PPL = {:.4} +/- {:.5}", r.ppl, r.ppl_err);
    Ok(())
}
