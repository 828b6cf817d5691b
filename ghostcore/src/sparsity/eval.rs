//! Perplexity and KL divergence to the dense path, chunked like `llama-perplexity`: chunks of
//! `n_ctx` tokens (the first replaced by BOS when the model adds one), the second half of each
//! chunk scored.
//!
//! KL(dense ‖ sparse) is computed against the dense run's top-K probabilities with the rest
//! of the mass pooled into one bucket; by the log-sum inequality this is a (tight, for K = 32)
//! lower bound of the full-vocabulary KL.
//!
//! The perplexity change is measured paired, position by position: the mean of
//! `nll_sparse − nll_dense` over the scored positions and its standard error (as
//! `llama-perplexity --kl-divergence` reports `ln(PPL(Q)/PPL(base))`). On a few thousand
//! tokens that error is of the order of a percent of perplexity: a ΔPPL without it says
//! little about settings a percent apart.

use crate::context::Context;
use crate::{bail, Result};

/// Options of a perplexity run.
#[derive(Clone, Copy, Debug)]
pub struct PplConfig {
    pub n_ctx: usize,
    /// Score at most this many chunks (`None`: all whole chunks).
    pub max_chunks: Option<usize>,
    /// Dense probabilities kept per position for KL.
    pub top_k: usize,
}

impl Default for PplConfig {
    fn default() -> Self {
        PplConfig {
            n_ctx: 512,
            max_chunks: None,
            top_k: 32,
        }
    }
}

/// The dense run's distribution at each scored position.
#[derive(Clone, Debug, Default)]
pub struct DenseReference {
    /// Per scored position: the top-K (token, log-prob), descending.
    pub top: Vec<Vec<(u32, f32)>>,
    /// Per scored position: the dense run's NLL of the actual next token.
    pub nll: Vec<f64>,
}

/// What a run measured.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PplResult {
    pub n_scored: usize,
    pub mean_nll: f64,
    pub ppl: f64,
    /// Mean KL(dense ‖ this run) per scored token (0 without a reference).
    pub mean_kl: f64,
    /// Share of positions where the top-1 token equals the dense run's.
    pub top1_agree: f64,
    /// Mean of `nll − nll_dense` per scored token, i.e. `ln(PPL / PPL_dense)` (0 without a
    /// reference).
    pub delta_nll: f64,
    /// Standard error of [`Self::delta_nll`] (0 without a reference).
    pub delta_nll_se: f64,
}

impl PplResult {
    /// ΔPPL relative to the reference, `PPL / PPL_dense − 1`.
    pub fn delta_ppl(&self) -> f64 {
        self.delta_nll.exp_m1()
    }

    /// The 95% confidence interval of [`Self::delta_ppl`] (ΔNLL ± 1.96 standard errors).
    pub fn delta_ppl_ci95(&self) -> (f64, f64) {
        let h = 1.96 * self.delta_nll_se;
        ((self.delta_nll - h).exp_m1(), (self.delta_nll + h).exp_m1())
    }
}

fn log_softmax_into(logits: &[f32], out: &mut Vec<f32>) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
    let lse = max as f64 + sum.ln();
    out.clear();
    out.extend(logits.iter().map(|&l| (l as f64 - lse) as f32));
}

fn top_k(logp: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut idx: Vec<u32> = (0..logp.len() as u32).collect();
    let k = k.min(idx.len());
    if k == 0 {
        return Vec::new();
    }
    idx.select_nth_unstable_by(k - 1, |&a, &b| {
        logp[b as usize].total_cmp(&logp[a as usize])
    });
    let mut top: Vec<(u32, f32)> = idx[..k].iter().map(|&i| (i, logp[i as usize])).collect();
    top.sort_by(|a, b| b.1.total_cmp(&a.1));
    top
}

/// KL(P ‖ Q) from P's top-K (token, log p) and Q's full log-probs, rest pooled.
fn kl_topk(top: &[(u32, f32)], logq: &[f32]) -> f64 {
    let mut kl = 0f64;
    let (mut pm, mut qm) = (0f64, 0f64);
    for &(t, lp) in top {
        let lq = logq[t as usize] as f64;
        let p = (lp as f64).exp();
        kl += p * (lp as f64 - lq);
        pm += p;
        qm += lq.exp();
    }
    let (pr, qr) = ((1.0 - pm).max(0.0), (1.0 - qm).max(1e-30));
    if pr > 1e-12 {
        kl += pr * (pr / qr).ln();
    }
    kl.max(0.0)
}

/// Mean and standard error of the mean of `n` values from their sum and sum of squares
/// (sample variance with Bessel's correction; error 0 for fewer than two values).
fn mean_and_standard_error(sum: f64, sum_sq: f64, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 0.0);
    }
    let nf = n as f64;
    let mean = sum / nf;
    if n < 2 {
        return (mean, 0.0);
    }
    let var = ((sum_sq - nf * mean * mean) / (nf - 1.0)).max(0.0);
    (mean, (var / nf).sqrt())
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// The `llama-perplexity` chunk loop shared by `ghost perplexity` and the sparsity tools:
/// cut `tokens` into whole chunks of `n_ctx` (at most `max_chunks`), decode each from an
/// empty context with its first token replaced by `bos` when given, and call
/// `on_position(logits, target)` for every position of the second half that predicts a next
/// token (`n_ctx/2 .. n_ctx-2`), in order; `on_chunk(chunks_done, n_chunks)` after each
/// chunk. Returns the number of chunks scored.
pub fn score_chunks(
    ctx: &mut Context,
    tokens: &[u32],
    n_ctx: usize,
    bos: Option<u32>,
    max_chunks: Option<usize>,
    on_position: &mut dyn FnMut(&[f32], u32) -> Result<()>,
    on_chunk: &mut dyn FnMut(usize, usize),
) -> Result<usize> {
    if n_ctx < 4 {
        bail!(
            InvalidArgument,
            "context size {n_ctx} is too small for perplexity"
        );
    }
    if ctx.n_ctx() < n_ctx {
        bail!(
            InvalidArgument,
            "context holds {} tokens, chunks need {n_ctx}",
            ctx.n_ctx()
        );
    }
    let mut n_chunks = tokens.len() / n_ctx;
    if let Some(m) = max_chunks {
        n_chunks = n_chunks.min(m);
    }
    if n_chunks == 0 {
        bail!(
            InvalidArgument,
            "need at least {n_ctx} tokens, the text has {}",
            tokens.len()
        );
    }
    let n_vocab = ctx.model().config().n_vocab;
    let first = n_ctx / 2;
    let mut chunk = vec![0u32; n_ctx];
    for c in 0..n_chunks {
        let start = c * n_ctx;
        chunk.copy_from_slice(&tokens[start..start + n_ctx]);
        if let Some(b) = bos {
            chunk[0] = b;
        }
        ctx.reset();
        let logits = ctx.decode_all_logits(&chunk)?;
        for j in first..n_ctx - 1 {
            on_position(
                &logits[j * n_vocab..(j + 1) * n_vocab],
                tokens[start + j + 1],
            )?;
        }
        on_chunk(c + 1, n_chunks);
    }
    Ok(n_chunks)
}

/// Run perplexity over `tokens`. With `reference`, also KL and top-1 agreement against it;
/// with `record`, fill it with this run's top-K (to serve as the dense reference).
/// `progress(chunks_done, n_chunks)` is called after each chunk.
pub fn perplexity(
    ctx: &mut Context,
    tokens: &[u32],
    bos: Option<u32>,
    cfg: &PplConfig,
    reference: Option<&DenseReference>,
    mut record: Option<&mut DenseReference>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<PplResult> {
    let (mut nll, mut kl, mut agree, mut n) = (0f64, 0f64, 0usize, 0usize);
    // Paired differences to the reference: sum and sum of squares.
    let (mut dsum, mut dsq) = (0f64, 0f64);
    let mut logp = Vec::new();
    if let Some(r) = record.as_deref_mut() {
        r.top.clear();
        r.nll.clear();
    }
    score_chunks(
        ctx,
        tokens,
        cfg.n_ctx,
        bos,
        cfg.max_chunks,
        &mut |row, next| {
            log_softmax_into(row, &mut logp);
            let here = -(logp[next as usize] as f64);
            nll += here;
            if let Some(r) = reference {
                let (top, base) = r.top.get(n).zip(r.nll.get(n)).ok_or_else(|| {
                    crate::Error::InvalidArgument("dense reference is shorter than this run".into())
                })?;
                kl += kl_topk(top, &logp);
                agree += usize::from(top.first().map(|t| t.0) == Some(argmax(&logp)));
                let d = here - base;
                dsum += d;
                dsq += d * d;
            }
            if let Some(r) = record.as_deref_mut() {
                r.top.push(top_k(&logp, cfg.top_k));
                r.nll.push(here);
            }
            n += 1;
            Ok(())
        },
        progress,
    )?;
    let mean_nll = nll / n as f64;
    let (delta_nll, delta_nll_se) = mean_and_standard_error(dsum, dsq, n);
    Ok(PplResult {
        delta_nll,
        delta_nll_se,
        n_scored: n,
        mean_nll,
        ppl: mean_nll.exp(),
        mean_kl: if reference.is_some() {
            kl / n as f64
        } else {
            0.0
        },
        top1_agree: if reference.is_some() {
            agree as f64 / n as f64
        } else {
            0.0
        },
    })
}

/// `ghost perplexity --mask FILE --sparsity MODE`: the dense decode path's perplexity (the
/// reference), then the sparse one; prints PPL, ΔPPL, KL to dense, top-1 agreement,
/// per-layer sparsity and the share of FFN weight bytes skipped.
#[allow(clippy::too_many_arguments)]
pub fn run_sparse_perplexity(
    model: std::sync::Arc<crate::model::Model>,
    tokens: &[u32],
    bos: Option<u32>,
    n_ctx: usize,
    max_chunks: Option<usize>,
    n_threads: usize,
    mask: Option<&std::path::Path>,
    mode: &str,
    paths: super::ffn::PathPolicy,
) -> Result<()> {
    use super::engine::{attach, install, tally_summary, uninstall};
    use super::ffn::LayerPlan;
    let n_layer = model.config().n_layer;
    let mut ctx = Context::new(
        model,
        crate::context::ContextParams {
            n_ctx,
            n_batch: n_ctx,
            n_threads,
            // Decode-path arithmetic in batches, so dense and sparse differ only by the FFN.
            exact_prefill: false,
            ..Default::default()
        },
    )?;
    ctx.set_decode_ffn_in_batches(true);
    let cfg = PplConfig {
        n_ctx,
        max_chunks,
        top_k: 32,
    };
    let mut reference = DenseReference::default();
    install(&mut ctx, vec![LayerPlan::DENSE; n_layer], None)?;
    let dense = perplexity(
        &mut ctx,
        tokens,
        bos,
        &cfg,
        None,
        Some(&mut reference),
        &mut |i, n| eprint!("\rdense {i}/{n}"),
    )?;
    uninstall(&mut ctx)?;
    eprintln!();
    let handle = attach(&mut ctx, mask, mode, paths)?;
    let sparse = perplexity(
        &mut ctx,
        tokens,
        bos,
        &cfg,
        Some(&reference),
        None,
        &mut |i, n| eprint!("\r{mode} {i}/{n}"),
    )?;
    eprintln!();
    println!("dense (decode path): PPL = {:.4}", dense.ppl);
    let (lo, hi) = sparse.delta_ppl_ci95();
    println!(
        "sparse {mode}: PPL = {:.4} ({:+.2}%, 95% CI {:+.2}% .. {:+.2}%), KL to dense = {:.5} nats/token, top-1 agreement {:.1}%, {} scored tokens",
        sparse.ppl,
        100.0 * sparse.delta_ppl(),
        100.0 * lo,
        100.0 * hi,
        sparse.mean_kl,
        100.0 * sparse.top1_agree,
        sparse.n_scored
    );
    if let Some(h) = handle {
        println!("{}", tally_summary(&h.tally()));
    } else {
        println!("FFN bytes skipped: 0.0%");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the two-pass textbook formula on values with a known spread.
    #[test]
    fn standard_error_matches_two_pass_formula() {
        let v: Vec<f64> = (0..50)
            .map(|i| 0.3 + ((i * 37) % 11) as f64 * 0.05)
            .collect();
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
        let (m, se) =
            mean_and_standard_error(v.iter().sum(), v.iter().map(|x| x * x).sum(), v.len());
        assert!((m - mean).abs() < 1e-12);
        assert!((se - (var / n).sqrt()).abs() < 1e-12, "{se}");
        assert_eq!(mean_and_standard_error(2.0, 4.0, 1), (2.0, 0.0));
        assert_eq!(mean_and_standard_error(0.0, 0.0, 0), (0.0, 0.0));
        let r = PplResult {
            delta_nll: 0.02,
            delta_nll_se: 0.01,
            ..Default::default()
        };
        let (lo, hi) = r.delta_ppl_ci95();
        assert!(lo < r.delta_ppl() && r.delta_ppl() < hi);
        assert!((lo - (0.02f64 - 0.0196).exp_m1()).abs() < 1e-12);
    }

    #[test]
    fn kl_of_identical_distributions_is_zero_and_grows_with_difference() {
        let logits: Vec<f32> = (0..100).map(|i| ((i * 7) % 13) as f32 * 0.3).collect();
        let mut lp = Vec::new();
        log_softmax_into(&logits, &mut lp);
        let top = top_k(&lp, 32);
        assert!(kl_topk(&top, &lp).abs() < 1e-9);
        // Full-vocabulary KL of a perturbed distribution vs the top-K estimate.
        let other: Vec<f32> = logits
            .iter()
            .enumerate()
            .map(|(i, l)| l + (i % 5) as f32 * 0.1)
            .collect();
        let mut lq = Vec::new();
        log_softmax_into(&other, &mut lq);
        let full: f64 = lp
            .iter()
            .zip(&lq)
            .map(|(&p, &q)| (p as f64).exp() * (p as f64 - q as f64))
            .sum();
        let est = kl_topk(&top, &lq);
        assert!(est <= full + 1e-9 && est > 0.5 * full, "{est} vs {full}");
        let all = top_k(&lp, 100);
        assert!((kl_topk(&all, &lq) - full).abs() < 1e-6);
    }
}
