//! Calibration: run the dense model over a corpus, record what every FFN neuron does, derive
//! thresholds, then measure candidate settings on a held-out slice of the corpus and keep the
//! best per perplexity budget.

use std::sync::{Arc, Mutex};

use super::engine::{build_down_copies, install, install_calibration, uninstall};
use super::eval::{perplexity, DenseReference, PplConfig};
use super::ffn::LayerPlan;
use super::mode::SparsityMode;
use super::plan::resolve_plans;
use super::sidecar::{BudgetEntry, DownCopy, Sidecar};
use super::stats::CalibrationStats;
use crate::context::{Context, ContextParams};
use crate::model::Model;
use crate::quant::GgmlType;
use crate::{bail, Result};

/// Settings of [`calibrate`].
#[derive(Clone, Debug)]
pub struct CalibrateOptions {
    /// Firing threshold ε for frequencies and the dead mask.
    pub eps: f32,
    /// Chunk length (tokens per context window).
    pub n_ctx: usize,
    pub n_threads: usize,
    /// Share of the corpus kept out of the statistics to measure the budget frontier.
    pub heldout_share: f64,
    /// Perplexity budgets (percent) to store settings for; empty: no frontier measurement.
    pub budgets: Vec<f32>,
    /// Candidate modes measured for the budget table.
    pub candidates: Vec<String>,
    /// Store the neuron-major down copy in the sidecar (type: `None` = default per model).
    pub store_down_copy: bool,
    pub down_copy_type: Option<GgmlType>,
}

impl Default for CalibrateOptions {
    fn default() -> Self {
        CalibrateOptions {
            eps: 0.01,
            n_ctx: 512,
            n_threads: 0,
            heldout_share: 0.15,
            budgets: vec![0.5, 1.0, 2.0, 3.0, 5.0, 10.0],
            candidates: default_candidates(),
            store_down_copy: true,
            down_copy_type: None,
        }
    }
}

/// The settings calibration tries for the budget table (a short list: each costs one
/// perplexity run over the held-out slice). Measured on SmolLM2 (GPL-3, 6 chunks): the
/// product stage decides the quality (`target:0.6:product` alone +8.4%), while a first stage
/// by |act|·mean|up| (`:upw`) of 20% costs under 1% more and skips the up rows too.
pub fn default_candidates() -> Vec<String> {
    [
        "target:0.2:act",
        "target:0.3:product",
        "target:0.4:product",
        "target:0.5:product",
        "cascade:0.1:0.5",
        "cascade:0.1:0.4:upw",
        "cascade:0.2:0.4:upw",
        "cascade:0.2:0.45:upw",
        "cascade:0.3:0.45:upw",
        "cascade:0.3:0.5:upw",
        "cascade:0.2:0.6:upw",
    ]
    .map(String::from)
    .to_vec()
}

/// Progress events for a front end.
pub enum Progress<'a> {
    /// Statistics pass: chunks done of total.
    Stats(usize, usize),
    /// Frontier: candidate `i` of `n` finished with (mode, ΔPPL %, bytes skipped).
    Candidate(usize, usize, &'a str, f64, f64),
}

/// Split `tokens` into (statistics part, held-out part), both whole chunks of `n_ctx`.
fn split_corpus(tokens: &[u32], n_ctx: usize, heldout: f64) -> (&[u32], &[u32]) {
    let n_chunks = tokens.len() / n_ctx;
    let n_held = if heldout > 0.0 && n_chunks >= 2 {
        ((n_chunks as f64 * heldout).round() as usize).clamp(1, n_chunks - 1)
    } else {
        0
    };
    let n_stat = n_chunks - n_held;
    (
        &tokens[..n_stat * n_ctx],
        &tokens[n_stat * n_ctx..n_chunks * n_ctx],
    )
}

/// Run calibration of `model` over `tokens` (the tokenized corpus); `corpus` names it.
pub fn calibrate(
    model: Arc<Model>,
    tokens: &[u32],
    bos: Option<u32>,
    corpus: &str,
    opts: &CalibrateOptions,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Sidecar> {
    let cfg = model.config();
    let (n_layer, n_embd, n_ff) = (cfg.n_layer, cfg.n_embd, cfg.n_ff);
    let n_ctx = opts.n_ctx;
    if tokens.len() < n_ctx {
        bail!(
            InvalidArgument,
            "the corpus has {} tokens, fewer than one chunk of {n_ctx}",
            tokens.len()
        );
    }
    let (stat_part, held) = split_corpus(tokens, n_ctx, opts.heldout_share);
    let mut ctx = Context::new(
        model.clone(),
        ContextParams {
            n_ctx,
            n_batch: n_ctx,
            n_threads: opts.n_threads,
            // Decode-path arithmetic (8-bit activations) in batches too.
            exact_prefill: false,
            ..Default::default()
        },
    )?;
    ctx.set_decode_ffn_in_batches(true);

    // 1. Statistics.
    let stats = Arc::new(Mutex::new(CalibrationStats::new(
        n_layer, n_embd, n_ff, opts.eps,
    )));
    install_calibration(&mut ctx, stats.clone())?;
    let n_chunks = stat_part.len() / n_ctx;
    for c in 0..n_chunks {
        let mut chunk = stat_part[c * n_ctx..(c + 1) * n_ctx].to_vec();
        if let Some(b) = bos {
            chunk[0] = b;
        }
        ctx.reset();
        ctx.decode(&chunk)?;
        progress(Progress::Stats(c + 1, n_chunks));
    }
    uninstall(&mut ctx)?;
    let stats = Arc::try_unwrap(stats)
        .map_err(|_| crate::Error::Internal("calibration statistics still shared".into()))?
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    let mut sidecar = Sidecar::from_stats(model.gguf(), &stats, corpus)?;

    // 2. Neuron-major down copies.
    let copies: Option<Arc<Vec<DownCopy>>> = if opts.store_down_copy || !opts.budgets.is_empty() {
        Some(Arc::new(build_down_copies(&model, opts.down_copy_type)?.0))
    } else {
        None
    };

    // 3. Budget frontier on the held-out slice.
    if !opts.budgets.is_empty() && !held.is_empty() {
        let pcfg = PplConfig {
            n_ctx,
            max_chunks: None,
            top_k: 32,
        };
        let mut reference = DenseReference::default();
        // The dense reference runs the decode path's FFN too (same kernels as the sparse runs).
        install(&mut ctx, vec![LayerPlan::DENSE; n_layer], None)?;
        let dense = perplexity(
            &mut ctx,
            held,
            bos,
            &pcfg,
            None,
            Some(&mut reference),
            &mut |_, _| {},
        )?;
        uninstall(&mut ctx)?;
        let mut measured: Vec<(String, f64, f64)> = Vec::new();
        for (i, cand) in opts.candidates.iter().enumerate() {
            let mode: SparsityMode = cand.parse()?;
            let plans = resolve_plans(&mode, Some(&sidecar), n_layer)?;
            let handle = install(&mut ctx, plans, copies.clone())?;
            let r = perplexity(&mut ctx, held, bos, &pcfg, None, None, &mut |_, _| {})?;
            uninstall(&mut ctx)?;
            let dppl = 100.0 * (r.ppl / dense.ppl - 1.0);
            let skipped = handle.tally().bytes_skipped();
            progress(Progress::Candidate(
                i + 1,
                opts.candidates.len(),
                cand,
                dppl,
                skipped,
            ));
            measured.push((cand.clone(), dppl, skipped));
        }
        for &b in &opts.budgets {
            let best = measured
                .iter()
                .filter(|m| m.1 <= b as f64)
                .max_by(|x, y| x.2.total_cmp(&y.2));
            if let Some((mode, dppl, skipped)) = best {
                sidecar.budget.push(BudgetEntry {
                    max_ppl_increase_pct: b,
                    mode: mode.clone(),
                    measured_ppl_increase_pct: *dppl as f32,
                    bytes_skipped: *skipped as f32,
                });
            }
        }
    }
    if opts.store_down_copy {
        sidecar.down_copies = copies.map(|c| (*c).clone());
    }
    Ok(sidecar)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corpus_split_keeps_whole_chunks() {
        let t: Vec<u32> = (0..1000).collect();
        let (a, b) = split_corpus(&t, 100, 0.15);
        assert_eq!((a.len(), b.len()), (800, 200));
        let (a, b) = split_corpus(&t, 600, 0.5);
        assert_eq!((a.len(), b.len()), (600, 0));
        let (a, b) = split_corpus(&t, 100, 0.0);
        assert_eq!((a.len(), b.len()), (1000, 0));
        for c in default_candidates() {
            assert!(c.parse::<SparsityMode>().is_ok(), "{c}");
        }
    }
}
