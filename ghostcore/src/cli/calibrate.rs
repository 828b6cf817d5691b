//! `ghost calibrate -m MODEL --corpus FILE [--tokens N] -o MODEL.ghost`: run the dense model
//! over a corpus, record per-neuron FFN statistics, derive thresholds, measure the budget
//! frontier on a held-out slice, and write the sparsity sidecar.

use std::path::PathBuf;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use crate::model::{Model, ModelParams};
use crate::quant::GgmlType;
use crate::sparsity::allocate::Sensitivity;
use crate::sparsity::calibrate::{
    calibrate, refine_frontier, AllocateOptions, CalibrateOptions, Progress,
};
use crate::sparsity::Sidecar;
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model GGUF file.
    #[arg(short = 'm', long)]
    pub model: PathBuf,
    /// Calibration corpus (UTF-8 text).
    #[arg(long)]
    pub corpus: PathBuf,
    /// Use at most this many corpus tokens.
    #[arg(long)]
    pub tokens: Option<usize>,
    /// Output sidecar path (default: MODEL with extension `.ghost`).
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
    /// Firing threshold ε (frequencies, dead mask).
    #[arg(long, default_value_t = 0.01)]
    pub eps: f32,
    /// Tokens per context window.
    #[arg(long, default_value_t = 512)]
    pub ctx: usize,
    /// Compute threads (0: all cores).
    #[arg(short = 't', long, default_value_t = 0)]
    pub threads: usize,
    /// Share of the corpus held out to measure the perplexity-budget frontier.
    #[arg(long, default_value_t = 0.15)]
    pub heldout: f64,
    /// Skip the budget frontier (faster; `budget:P` modes then have nothing to choose from).
    #[arg(long)]
    pub no_budget: bool,
    /// Do not store the requantized neuron-major ffn_down copy (it is rebuilt at load then).
    /// Only layers without an exact copy need it (Q4_K and Q6_K downs have exact copies).
    #[arg(long)]
    pub no_down_copy: bool,
    /// Candidate settings measured for the budget table, separated by `;` (default: a
    /// built-in list of cascade and product settings).
    #[arg(long)]
    pub candidates: Option<String>,
    /// Type of the neuron-major ffn_down copy (default: the model's down type when rows fit
    /// its blocks, else q5_0).
    #[arg(long)]
    pub down_type: Option<String>,
    /// Also allocate the byte budget layer by layer: measure each layer's KL alone at a
    /// ladder of cascade levels, then add per-layer candidates for these shares of FFN bytes
    /// saved (comma-separated, e.g. `0.2,0.25,0.3`).
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    pub allocate: Option<Vec<f64>>,
    /// Keep the statistics of this existing sidecar and only re-measure the budget frontier
    /// (same corpus and split as the run that made it).
    #[arg(long)]
    pub from: Option<PathBuf>,
    /// With --allocate: the cascade levels measured per layer, `FIRST:DOWN` pairs separated
    /// by `,` (default 0.1:0.3,0.2:0.45,0.3:0.55,0.4:0.65).
    #[arg(long)]
    pub allocate_ladder: Option<String>,
    /// With --allocate: chunks and chunk size of the held-out slice the per-layer KL is
    /// measured on (each layer and level costs one run over them).
    #[arg(long, default_value_t = 1)]
    pub allocate_chunks: usize,
    #[arg(long, default_value_t = 256)]
    pub allocate_ctx: usize,
    /// With --allocate: the ladder level (1-based; 0 = dense) every other layer holds while
    /// one layer is measured: marginal costs around that uniform setting.
    #[arg(long, default_value_t = 0)]
    pub allocate_base: usize,
    /// With --allocate: the lowest ladder level (1-based; 0 = dense) any layer may get.
    #[arg(long, default_value_t = 1)]
    pub allocate_floor: usize,
    /// With --allocate: write the per-layer sensitivity (layer, shares, KL, bytes saved) as CSV.
    #[arg(long)]
    pub sensitivity_csv: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let t0 = Instant::now();
    let model = Model::load(&args.model, &ModelParams::default())?;
    let tok = Tokenizer::from_gguf(model.gguf())?;
    let text = std::fs::read_to_string(&args.corpus).map_err(|e| {
        Error::InvalidArgument(format!("cannot read corpus {}: {e}", args.corpus.display()))
    })?;
    let mut ids = tok.encode(&text, false, false)?;
    if let Some(n) = args.tokens {
        ids.truncate(n);
    }
    let bos = if tok.add_bos() { tok.bos() } else { None };
    let down_copy_type = match &args.down_type {
        None => None,
        Some(s) => Some(GgmlType::from_name(s).ok_or_else(|| {
            Error::InvalidArgument(format!("unknown tensor type {s:?} for --down-type"))
        })?),
    };
    let opts = CalibrateOptions {
        eps: args.eps,
        n_ctx: args.ctx,
        n_threads: args.threads,
        heldout_share: if args.no_budget { 0.0 } else { args.heldout },
        budgets: if args.no_budget {
            Vec::new()
        } else {
            CalibrateOptions::default().budgets
        },
        store_down_copy: !args.no_down_copy,
        down_copy_type,
        candidates: match &args.candidates {
            None => crate::sparsity::calibrate::default_candidates(),
            Some(list) => {
                let c: Vec<String> = list
                    .split(';')
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .map(String::from)
                    .collect();
                for m in &c {
                    m.parse::<crate::sparsity::SparsityMode>()?;
                }
                c
            }
        },
        allocate: match &args.allocate {
            None => None,
            Some(targets) => {
                if let Some(t) = targets.iter().find(|t| !(0.0..1.0).contains(*t)) {
                    return Err(Error::InvalidArgument(format!(
                        "--allocate share {t} must lie in [0, 1)"
                    )));
                }
                Some(AllocateOptions {
                    byte_targets: targets.clone(),
                    n_ctx: args.allocate_ctx,
                    chunks: args.allocate_chunks,
                    base: args.allocate_base,
                    floor: args.allocate_floor,
                    ladder: match &args.allocate_ladder {
                        None => AllocateOptions::default().ladder,
                        Some(text) => parse_ladder(text)?,
                    },
                    ..AllocateOptions::default()
                })
            }
        },
    };
    eprintln!(
        "calibrating {} on {} ({} tokens, ε = {})",
        args.model.display(),
        args.corpus.display(),
        ids.len(),
        args.eps
    );
    let bar = calibration_bar();
    let corpus_name = args
        .corpus
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut csv_result: Result<()> = Ok(());
    let mut on_progress = |p: Progress<'_>| {
        match p {
        Progress::Curves(sens) => {
            if let Some(path) = &args.sensitivity_csv {
                csv_result = std::fs::write(path, sensitivity_csv(sens)).map_err(Error::from);
            }
        }
        Progress::Stats(done, total) => {
            bar.set_message("statistics");
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        }
        Progress::Candidate(done, total, mode, dppl, (lo, hi), skipped) => {
            bar.set_message("frontier");
            bar.set_length(total as u64);
            bar.set_position(done as u64);
            bar.suspend(|| {
                eprintln!(
                    "  {mode:<22} ΔPPL {dppl:+6.2}% (95% CI {lo:+.2}% .. {hi:+.2}%)  FFN bytes skipped {:5.1}%",
                    100.0 * skipped
                )
            });
        }
        Progress::Sensitivity(done, total) => {
            bar.set_message("per layer");
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        }
        Progress::Allocated(target, mode, kl, share, dppl, skipped) => bar.suspend(|| {
            eprintln!(
                "  per-layer for {:.0}% bytes ({mode}): predicted ΣKL {kl:.4}, {:.1}% bytes; measured ΔPPL {dppl:+6.2}%  FFN bytes skipped {:5.1}%",
                100.0 * target,
                100.0 * share,
                100.0 * skipped
            )
        }),
    }
    };
    let sidecar = match &args.from {
        None => calibrate(
            model.clone(),
            &ids,
            bos,
            &corpus_name,
            &opts,
            &mut on_progress,
        )?,
        Some(path) => {
            let mut s = Sidecar::load(path, model.gguf())?;
            refine_frontier(model.clone(), &ids, bos, &mut s, &opts, &mut on_progress)?;
            s
        }
    };
    bar.finish_and_clear();
    csv_result?;
    let out = args
        .output
        .unwrap_or_else(|| args.model.with_extension("ghost"));
    sidecar.write_file(&out)?;
    println!(
        "calibrated on {} tokens: dead neurons {:.2}% ({} of {})",
        sidecar.calib_tokens,
        100.0 * sidecar.dead_fraction(),
        sidecar.layers.iter().map(|l| l.n_dead()).sum::<usize>(),
        sidecar.n_layer * sidecar.n_ff
    );
    for b in &sidecar.budget {
        let ci = b
            .measured_ppl_ci95_pct
            .map(|(lo, hi)| format!(", 95% CI {lo:+.2}% .. {hi:+.2}%"))
            .unwrap_or_default();
        println!(
            "budget {:>4}%: {:<22} (held-out ΔPPL {:+.2}%{ci}, FFN bytes skipped {:.1}%)",
            b.max_ppl_increase_pct,
            b.describe(),
            b.measured_ppl_increase_pct,
            100.0 * b.bytes_skipped
        );
        if let Some(levels) = &b.layer_levels {
            let text: Vec<String> = levels
                .iter()
                .map(|(a, d)| format!("{a:.1}/{d:.2}"))
                .collect();
            println!("    per-layer shares (first/down): {}", text.join(" "));
        }
    }
    if let Some(c) = &sidecar.down_copies {
        println!("neuron-major ffn_down copy: {}", c[0].ty);
    }
    println!(
        "wrote {} in {:.1}s",
        out.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `FIRST:DOWN,...` cascade share pairs, each a valid `cascade:FIRST:DOWN`.
fn parse_ladder(text: &str) -> Result<Vec<(f32, f32)>> {
    text.split(',')
        .map(|pair| {
            let mode: crate::sparsity::SparsityMode = format!("cascade:{}", pair.trim()).parse()?;
            match mode.rule {
                Some(crate::sparsity::Rule::Cascade {
                    skip_all,
                    skip_down,
                    ..
                }) => Ok((skip_all, skip_down)),
                _ => Err(Error::InvalidArgument(format!(
                    "--allocate-ladder entry {pair:?} is not FIRST:DOWN"
                ))),
            }
        })
        .collect()
}

/// `layer,skip_all,skip_down,kl,bytes_saved_per_token,share_of_ffn_bytes` rows, dense level
/// included.
fn sensitivity_csv(s: &Sensitivity) -> String {
    let mut out =
        String::from("layer,skip_all,skip_down,kl,bytes_saved_per_token,share_of_ffn_bytes\n");
    for (il, c) in s.curves.iter().enumerate() {
        for k in 0..c.kl.len() {
            let (a, d) = s.levels(&[k])[0];
            out += &format!(
                "{il},{a},{d},{:.6},{:.0},{:.5}\n",
                c.kl[k],
                c.saved[k],
                c.saved[k] / s.dense_bytes.max(1.0)
            );
        }
    }
    out
}

/// The progress bar calibration front ends show (statistics pass, then the budget frontier).
pub(crate) fn calibration_bar() -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}
