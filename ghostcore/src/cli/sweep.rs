//! `ghost sweep -m MODEL --mask MODEL.ghost -f TEXT`: run sparsity modes over a grid, measure
//! perplexity, KL to dense, FFN bytes skipped and (optionally) decode speed side by side with
//! dense, and write CSV + Markdown + SVG.

use std::path::PathBuf;
use std::sync::Arc;

use crate::context::{Context, ContextParams};
use crate::model::{Model, ModelParams};
use crate::paired_speed::paired_decode_speed;
use crate::quant::GgmlType;
use crate::sparsity::engine::{
    build_down_copies, build_exact_downs, install, install_with, tally_summary, uninstall,
};
use crate::sparsity::eval::{perplexity, DenseReference, PplConfig};
use crate::sparsity::report::{byte_bound, csv, decode_ffn_share, markdown, svg, SweepRow};
use crate::sparsity::{
    resolve_plans, DownCopy, DownPath, LayerPlan, LayerRule, Rule, Score, Sidecar, SparsityMode,
};
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model GGUF file.
    #[arg(short = 'm', long)]
    pub model: PathBuf,
    /// Sparsity sidecar made by `ghost calibrate` (needed by calibrated modes).
    #[arg(long)]
    pub mask: Option<PathBuf>,
    /// Text to measure perplexity on.
    #[arg(short = 'f', long)]
    pub file: Option<PathBuf>,
    /// Random-weight model without a vocabulary: speed only (implies --no-ppl).
    #[arg(long)]
    pub synthetic: bool,
    /// Modes to run, separated by ';' (default: a grid over every mode).
    #[arg(long)]
    pub modes: Option<String>,
    /// Context window per perplexity chunk.
    #[arg(long, default_value_t = 512)]
    pub ctx: usize,
    /// Score at most this many chunks.
    #[arg(long)]
    pub chunks: Option<usize>,
    /// Also measure decode speed over this many tokens per mode (0: skip).
    #[arg(long, default_value_t = 0)]
    pub speed_tokens: usize,
    /// Time decode speed in CPU seconds of this process instead of wall-clock seconds
    /// (use with -t 1 on a shared machine).
    #[arg(long)]
    pub cpu_time: bool,
    /// Speed repetitions per mode (each decodes the speed tokens once, dense and sparse
    /// blocks alternating; see --speed-block).
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Tokens per timed block: the decode alternates dense and sparse blocks of this many
    /// tokens (order swapped from pair to pair), and the speed-up reported is the median of
    /// the pairs' time ratios, so that the machine's drift (±15% over seconds on shared VMs)
    /// cancels within each pair.
    #[arg(long, default_value_t = 8)]
    pub speed_block: usize,
    /// Skip perplexity (speed only).
    #[arg(long)]
    pub no_ppl: bool,
    /// Compute threads (0: all cores).
    #[arg(short = 't', long, default_value_t = 0)]
    pub threads: usize,
    /// Types of the neuron-major ffn_down copy to measure on their own (forced copy, no
    /// sparsity), separated by ','.
    #[arg(long)]
    pub copy_types: Option<String>,
    /// Type of the neuron-major ffn_down copy the modes use when the sidecar carries none
    /// (default: q8_0).
    #[arg(long)]
    pub down_type: Option<String>,
    /// Print per-layer sparsity for each mode.
    #[arg(long)]
    pub per_layer: bool,
    /// Do not use the exact neuron-major copies of Q4_K/Q6_K downs (only the requantized copy).
    #[arg(long)]
    pub no_exact_down: bool,
    /// How each step picks its kernels: `fastest` (this CPU's measured time curves; what
    /// decode uses) or `bytes` (fewest weight bytes read: the CPU-independent figure that
    /// compares sparsity settings, and what calibration ranks budgets by).
    #[arg(long, default_value = "fastest")]
    pub paths: crate::sparsity::PathPolicy,
    /// Output prefix: writes PREFIX.csv, PREFIX.md, PREFIX.svg.
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
    /// Plot title (default: the model file name).
    #[arg(long)]
    pub title: Option<String>,
}

/// One sweep entry: name, plot family, per-layer plans, the down copies it uses.
type Job = (String, String, Vec<LayerPlan>, Arc<Vec<DownCopy>>);

/// The default grid.
pub fn default_modes(has_budget: bool) -> Vec<String> {
    let mut v: Vec<String> = vec!["dead".into()];
    for t in [0.02, 0.05, 0.1, 0.2] {
        v.push(format!("gate:{t}"));
    }
    for s in [0.1, 0.25, 0.4, 0.5] {
        v.push(format!("target:{s}:act"));
    }
    for s in [0.25, 0.4, 0.5, 0.6, 0.7] {
        v.push(format!("target:{s}:product"));
    }
    for s in [0.25, 0.4, 0.5] {
        v.push(format!("target:{s}:upw"));
    }
    for (a, d) in [(0.1, 0.4), (0.15, 0.5), (0.2, 0.5), (0.2, 0.6), (0.3, 0.65)] {
        v.push(format!("cascade:{a}:{d}"));
    }
    for k in [-0.5, 0.0] {
        v.push(format!("stat:{k}"));
    }
    for s in [0.1, 0.2, 0.3] {
        v.push(format!("input:{s}"));
    }
    for m in [
        "input:0.1,target:0.45:product",
        "input:0.2,target:0.45:product",
        "input:0.1,cascade:0.2:0.45:upw",
        "input:0.15,cascade:0.2:0.45:upw",
    ] {
        v.push(m.into());
    }
    if has_budget {
        for p in [1, 2, 5] {
            v.push(format!("budget:{p}"));
        }
    }
    v
}

fn family(mode: &SparsityMode) -> String {
    let rule = match mode.rule {
        None if mode.input.is_some() => return "input (TEAL)".into(),
        None => "dead".into(),
        Some(Rule::Gate(_)) => "gate (GhostGate)".into(),
        Some(Rule::Target { score, .. }) => match score {
            Score::Act => "target act (CATS)".into(),
            Score::Product => "target product".into(),
            Score::UpWeighted => "target act·mean|up|".into(),
            Score::ActWeighted => "target up·mean|act| (up first)".into(),
            Score::Auto => "target auto (upw or actw per layer)".into(),
        },
        Some(Rule::Cascade {
            first: Score::ActWeighted,
            ..
        }) => "cascade up→product (up first)".into(),
        Some(Rule::Cascade {
            first: Score::Auto, ..
        }) => "cascade auto→product (upw or actw per layer)".into(),
        Some(Rule::Cascade { .. }) => "cascade act→product".into(),
        Some(Rule::Stat(_)) => "stat mean+kσ".into(),
        Some(Rule::Budget(_)) => "budget".into(),
    };
    if mode.input.is_some() {
        format!("input + {rule}")
    } else {
        rule
    }
}

pub fn run(args: Args) -> Result<()> {
    let model = Model::load(
        &args.model,
        &ModelParams {
            skip_tokenizer: args.synthetic,
            ..ModelParams::default()
        },
    )?;
    if args.paths == crate::sparsity::PathPolicy::Fastest {
        super::sparsity_setup::use_measured_path_costs(&model, args.threads, None);
    }
    let n_layer = model.config().n_layer;
    let sidecar = match &args.mask {
        Some(p) => Some(Sidecar::load(p, model.gguf())?),
        None => None,
    };
    let (ids, bos) = if args.synthetic {
        // Random-weight models have no vocabulary: any ids do for speed.
        let n_vocab = model.config().n_vocab as u64;
        let ids: Vec<u32> = (0..args.speed_tokens as u64 + 16)
            .map(|i| ((i * 7919 + 13) % n_vocab) as u32)
            .collect();
        (ids, None)
    } else {
        let file = args.file.as_ref().ok_or_else(|| {
            Error::InvalidArgument("a text file (-f) is needed unless --synthetic".into())
        })?;
        let tok = Tokenizer::from_gguf(model.gguf())?;
        let text = std::fs::read_to_string(file)
            .map_err(|e| Error::InvalidArgument(format!("cannot read {}: {e}", file.display())))?;
        let ids = tok.encode(&text, false, false)?;
        (ids, if tok.add_bos() { tok.bos() } else { None })
    };
    let file_name = args
        .file
        .as_ref()
        .and_then(|f| f.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "synthetic tokens".into());
    let has_budget = sidecar.as_ref().is_some_and(|s| !s.budget.is_empty());
    let modes: Vec<String> = match &args.modes {
        Some(m) => m
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        None => default_modes(has_budget),
    };
    let copies: Arc<Vec<DownCopy>> = match sidecar.as_ref().and_then(|s| s.down_copies.clone()) {
        Some(c) => Arc::new(c),
        None => {
            let ty = match &args.down_type {
                None => None,
                Some(n) => Some(GgmlType::from_name(n).ok_or_else(|| {
                    Error::InvalidArgument(format!("unknown type {n:?} for --down-type"))
                })?),
            };
            Arc::new(build_down_copies(&model, ty)?.0)
        }
    };
    eprintln!(
        "{}: {} tokens of {file_name}, neuron-major down copy {}",
        args.model.display(),
        ids.len(),
        copies[0].ty
    );

    let mut ctx = Context::new(
        model.clone(),
        ContextParams {
            n_ctx: args.ctx,
            n_batch: args.ctx,
            n_threads: args.threads,
            // The decode path's arithmetic (8-bit activations) in batches too, so the
            // dense and sparse runs differ only by the FFN.
            exact_prefill: false,
            ..Default::default()
        },
    )?;
    let pcfg = PplConfig {
        n_ctx: args.ctx,
        max_chunks: args.chunks,
        top_k: 32,
    };
    let mut reference = DenseReference::default();
    let dense = if args.no_ppl || args.synthetic {
        None
    } else {
        // The dense reference runs the decode path's FFN (same kernels as the sparse runs).
        install(&mut ctx, vec![LayerPlan::DENSE; n_layer], None)?;
        ctx.set_decode_ffn_in_batches(true);
        let r = perplexity(
            &mut ctx,
            &ids,
            bos,
            &pcfg,
            None,
            Some(&mut reference),
            &mut |_, _| {},
        )?;
        ctx.set_decode_ffn_in_batches(false);
        uninstall(&mut ctx)?;
        Some(r)
    };
    if let Some(d) = &dense {
        eprintln!("dense: PPL {:.4} over {} tokens", d.ppl, d.n_scored);
    }
    let speed_prompt: Vec<u32> = ids.iter().copied().take(16).collect();
    let speed_tokens: Vec<u32> = ids
        .iter()
        .copied()
        .skip(16)
        .take(args.speed_tokens)
        .collect();

    // Requantized down copies on their own: forced neuron-major path, nothing skipped.
    let mut jobs: Vec<Job> = Vec::new();
    if let Some(types) = &args.copy_types {
        for name in types.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let ty = GgmlType::from_name(name)
                .ok_or_else(|| Error::InvalidArgument(format!("unknown type {name:?}")))?;
            let c = Arc::new(build_down_copies(&model, Some(ty))?.0);
            let mut plan = LayerPlan::new(None, LayerRule::Dense);
            plan.down = DownPath::NeuronMajor;
            jobs.push((
                format!("copy:{name}"),
                "neuron-major down copy".into(),
                vec![plan; n_layer],
                c,
            ));
        }
    }
    for m in &modes {
        let mode: SparsityMode = m.parse()?;
        let plans = resolve_plans(&mode, sidecar.as_ref(), n_layer)?
            .into_iter()
            .map(|p| p.with_paths(args.paths))
            .collect();
        jobs.push((m.clone(), family(&mode), plans, copies.clone()));
    }

    let exact = (!args.no_exact_down).then(|| Arc::new(build_exact_downs(&model)));
    let ffn_share = decode_ffn_share(&model);
    if !speed_tokens.is_empty() {
        eprintln!(
            "FFN weights: {:.1}% of the weight bytes a decode step reads",
            100.0 * ffn_share
        );
    }
    let mut rows = Vec::new();
    for (name, fam, plans, c) in jobs {
        let mut row = SweepRow {
            mode: name.clone(),
            family: fam,
            sparsity: 0.0,
            bytes_skipped: 0.0,
            ppl: 0.0,
            dppl_pct: 0.0,
            dppl_lo_pct: 0.0,
            dppl_hi_pct: 0.0,
            kl: 0.0,
            tok_s: None,
            dense_tok_s: None,
            speedup: None,
            byte_bound: None,
        };
        if dense.is_some() {
            let h = install_with(&mut ctx, plans.clone(), Some(c.clone()), exact.clone())?;
            ctx.set_decode_ffn_in_batches(true);
            let r = perplexity(
                &mut ctx,
                &ids,
                bos,
                &pcfg,
                Some(&reference),
                None,
                &mut |_, _| {},
            )?;
            ctx.set_decode_ffn_in_batches(false);
            uninstall(&mut ctx)?;
            let t = h.tally();
            row.sparsity = t.sparsity();
            row.bytes_skipped = t.bytes_skipped();
            row.ppl = r.ppl;
            row.dppl_pct = 100.0 * r.delta_ppl();
            let (lo, hi) = r.delta_ppl_ci95();
            (row.dppl_lo_pct, row.dppl_hi_pct) = (100.0 * lo, 100.0 * hi);
            row.kl = r.mean_kl;
            if args.per_layer {
                eprintln!("{name}:\n{}", tally_summary(&t));
            }
        }
        if !speed_tokens.is_empty() {
            if args.paths == crate::sparsity::PathPolicy::Fastest {
                // What `ghost tune` turned off for this mode, if it was tuned with it.
                let shape = crate::sparsity::path_costs::measure::FfnShape::of_model(&model);
                crate::sparsity::path_costs::cache::install_cached(
                    &shape,
                    ctx.n_threads(),
                    Some(&name),
                );
            }
            let h = install_with(&mut ctx, plans.clone(), Some(c.clone()), exact.clone())?;
            let sparse_ffns = ctx.decode_ffns().to_vec();
            uninstall(&mut ctx)?;
            let speed = paired_decode_speed(
                &mut ctx,
                &sparse_ffns,
                &speed_prompt,
                &speed_tokens,
                args.reps.max(1),
                args.speed_block.max(1),
                args.cpu_time,
            )?;
            let t = h.tally();
            if dense.is_none() {
                row.sparsity = t.sparsity();
                row.bytes_skipped = t.bytes_skipped();
            }
            // Judged by the bytes the timed decode skipped (the perplexity run may pick
            // other paths).
            row.byte_bound = Some(byte_bound(ffn_share, t.bytes_skipped()));
            row.tok_s = Some(speed.candidate_tok_s);
            row.dense_tok_s = Some(speed.baseline_tok_s);
            row.speedup = Some(speed.speedup);
        }
        eprintln!(
            "{:<24} sparsity {:5.1}%  bytes skipped {:5.1}%  PPL {:8.4} ({:+6.2}%, 95% CI {:+.2}% .. {:+.2}%)  KL {:.4}{}",
            row.mode,
            100.0 * row.sparsity,
            100.0 * row.bytes_skipped,
            row.ppl,
            row.dppl_pct,
            row.dppl_lo_pct,
            row.dppl_hi_pct,
            row.kl,
            match (row.tok_s, row.dense_tok_s) {
                (Some(s), Some(d)) => format!(
                    "  {s:.1} tok/s vs dense {d:.1} ({:.2}×, median of paired blocks; the bytes skipped allow {:.2}×)",
                    row.speedup().unwrap_or(s / d),
                    row.byte_bound.unwrap_or(1.0)
                ),
                _ => String::new(),
            }
        );
        rows.push(row);
    }

    let md = markdown(&rows);
    println!("{md}");
    if let Some(prefix) = &args.output {
        let title = args.title.clone().unwrap_or_else(|| {
            format!(
                "{} on {}",
                args.model
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                file_name
            )
        });
        let with = |ext: &str| {
            let mut p = prefix.clone().into_os_string();
            p.push(ext);
            PathBuf::from(p)
        };
        std::fs::write(with(".csv"), csv(&rows))?;
        let mut md_full = format!("# {title}\n\n");
        if let Some(d) = &dense {
            md_full.push_str(&format!(
                "Dense PPL {:.4} over {} scored tokens (ctx {}).\n\n",
                d.ppl, d.n_scored, args.ctx
            ));
        }
        md_full.push_str(&md);
        std::fs::write(with(".md"), md_full)?;
        std::fs::write(with(".svg"), svg(&rows, &title, 25.0))?;
        eprintln!("wrote {}.{{csv,md,svg}}", prefix.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::GgufFile;

    fn tiny_model() -> Arc<Model> {
        let shape = crate::cli::synth::shape("tiny").unwrap();
        let w = crate::cli::synth::build(&shape, "llama", "q4_k_m", None, 3).unwrap();
        let file = GgufFile::from_bytes(w.to_bytes()).unwrap();
        let params = ModelParams {
            skip_tokenizer: true,
            ..ModelParams::default()
        };
        Model::from_file(file, &params).unwrap()
    }

    #[test]
    fn paired_speed_alternates_blocks_and_restores_dense() {
        let model = tiny_model();
        let n_layer = model.config().n_layer;
        let params = ContextParams {
            n_ctx: 128,
            n_batch: 128,
            n_threads: 1,
            ..Default::default()
        };
        let mut ctx = Context::new(model, params).unwrap();
        let plans = vec![LayerPlan::new(None, LayerRule::Stat(0.0)); n_layer];
        let h = install_with(&mut ctx, plans, None, None).unwrap();
        let sparse = ctx.decode_ffns().to_vec();
        uninstall(&mut ctx).unwrap();
        let prompt = [1u32, 2, 3, 4];
        let tokens: Vec<u32> = (10..30).collect();
        // 20 tokens in pairs of 4-token blocks: two pairs, the last 4 tokens unpaired (a
        // shorter second block still pairs: times are compared per token).
        let s = paired_decode_speed(&mut ctx, &sparse, &prompt, &tokens, 2, 4, false).unwrap();
        assert_eq!(s.pairs, 4);
        for v in [s.baseline_tok_s, s.candidate_tok_s, s.speedup] {
            assert!(v.is_finite() && v > 0.0, "{s:?}");
        }
        // The sparse FFN ran exactly the sparse blocks: 2 reps × 2 pairs × 4 tokens.
        let t = h.tally();
        assert!(t.layers.iter().all(|l| l.steps == 16), "{:?}", t.layers);
        assert!(ctx.decode_ffns().iter().all(Option::is_none), "dense again");
        let e = paired_decode_speed(&mut ctx, &sparse, &prompt, &tokens[..4], 1, 4, false);
        assert!(e.unwrap_err().to_string().contains("no pair"));
    }
}
