//! `ghost bench`: prefill and decode speed, printed like llama-bench.
//!
//! Per repetition of `ppN`: clear the context and decode `N` random tokens as one batch.
//! Per repetition of `tgN`: clear the context and decode `N` random tokens one at a time.
//! One untimed warm-up run precedes each test. Reported: mean ± sample standard deviation
//! of tokens per second over the repetitions.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::context::{Context, ContextParams};
use crate::gguf::Placement;
use crate::model::{Model, ModelParams};
use crate::paired_speed::PairedSpeed;
use crate::sampling::Rng;
use crate::{bail, Result};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model file (default: the built-in SmolLM2-135M Q4_K_M).
    #[arg(short = 'm', long)]
    pub model: Option<PathBuf>,
    /// Prompt lengths to test (comma-separated); 0 skips.
    #[arg(
        short = 'p',
        long = "n-prompt",
        value_delimiter = ',',
        default_value = "128"
    )]
    pub n_prompt: Vec<usize>,
    /// Generation lengths to test (comma-separated); 0 skips.
    #[arg(
        short = 'n',
        long = "n-gen",
        value_delimiter = ',',
        default_value = "64"
    )]
    pub n_gen: Vec<usize>,
    /// Thread counts to test (comma-separated).
    #[arg(short = 't', long, value_delimiter = ',', default_value = "1")]
    pub threads: Vec<usize>,
    /// Repetitions per test.
    #[arg(short = 'r', long, default_value_t = 5)]
    pub reps: usize,
    /// Quantize prefill activations to 8 bits like single tokens (instead of the default
    /// exact f32 math for batches, which follows llama.cpp's batched logits).
    #[arg(long = "quantized-prefill")]
    pub quantized_prefill: bool,
    /// Read the weights from the file's memory map instead of a huge-page copy.
    #[arg(long)]
    pub no_hugepages: bool,
    /// Output format.
    #[arg(short = 'o', long, default_value = "md", value_parser = ["md", "json"])]
    pub output: String,
    /// Sparsity sidecar made by `ghost calibrate` (for `--sparsity`; default: MODEL.ghost
    /// beside the model, or the one a first `ghost run --sparsity budget:2` cached).
    #[arg(long)]
    pub mask: Option<PathBuf>,
    /// Also time decode with this sparsity mode, interleaved rep by rep with the dense
    /// decode in the same process (rows `tgN` and `tgN MODE`).
    #[arg(long)]
    pub sparsity: Option<String>,
    #[command(flatten)]
    pub device: super::DeviceArgs,
}

struct Row {
    backend: String,
    threads: usize,
    test: String,
    n_tokens: usize,
    samples: Vec<f64>,
    /// For a sparse decode row: its speed-up over dense in paired blocks.
    paired: Option<PairedSpeed>,
    /// For a sparse decode row: the speed-up its FFN bytes skipped allow, and the FFN's share
    /// of the weight bytes a decode step reads.
    bound: Option<ByteBound>,
}

#[derive(Clone, Copy, Debug)]
struct ByteBound {
    speedup: f64,
    ffn_share: f64,
    ffn_bytes_skipped: f64,
}

/// What [`time_generation_side_by_side`] measured.
struct SideBySide {
    dense: Vec<f64>,
    sparse: Vec<f64>,
    paired: Option<PairedSpeed>,
    bound: Option<ByteBound>,
}

/// Tokens per block of the paired dense/sparse comparison.
const PAIR_BLOCK: usize = 8;

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let sd = if v.len() > 1 {
        (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    (mean, sd)
}

fn random_tokens(rng: &mut Rng, n: usize, n_vocab: usize) -> Vec<u32> {
    (0..n)
        .map(|_| (rng.next_u64() % n_vocab as u64) as u32)
        .collect()
}

fn time_prefill(ctx: &mut Context, tokens: &[u32]) -> Result<f64> {
    ctx.reset();
    let t = Instant::now();
    ctx.decode(tokens)?;
    Ok(tokens.len() as f64 / t.elapsed().as_secs_f64())
}

fn time_generation(ctx: &mut Context, tokens: &[u32]) -> Result<f64> {
    ctx.reset();
    let t = Instant::now();
    for &tok in tokens {
        ctx.decode(&[tok])?;
    }
    Ok(tokens.len() as f64 / t.elapsed().as_secs_f64())
}

pub fn run(mut args: Args) -> Result<()> {
    if args.reps == 0 {
        bail!(InvalidArgument, "--reps must be at least 1");
    }
    let path = super::run::resolve_model(args.model.as_deref())?;
    let model = Model::load(
        &path,
        &ModelParams {
            skip_tokenizer: true,
            placement: if args.no_hugepages {
                Placement::Mapped
            } else {
                Placement::HugePages
            },
        },
    )?;
    if args.sparsity.is_some() && args.mask.is_none() {
        args.mask = super::sparsity_setup::existing_sidecar(&model, &path);
    }
    let info = model.info().clone();
    let n_ctx = args
        .n_prompt
        .iter()
        .chain(&args.n_gen)
        .copied()
        .max()
        .unwrap_or(1)
        .max(1);
    let mut rng = Rng::new(1234);
    let mut rows = Vec::new();
    for &threads in &args.threads {
        let params = ContextParams {
            n_ctx,
            n_batch: n_ctx,
            n_threads: threads,
            exact_prefill: !args.quantized_prefill,
            device: args.device.device(),
        };
        let mut ctx = Context::new(Arc::clone(&model), params)?;
        for &n in args.n_prompt.iter().filter(|&&n| n > 0) {
            let toks = random_tokens(&mut rng, n, info.n_vocab);
            time_prefill(&mut ctx, &toks)?;
            ctx.reset_profile();
            let samples = (0..args.reps)
                .map(|_| time_prefill(&mut ctx, &toks))
                .collect::<Result<Vec<_>>>()?;
            print_profile(&ctx, &format!("pp{n}"));
            rows.push(Row {
                backend: backend_label(&ctx),
                threads: ctx.n_threads(),
                test: format!("pp{n}"),
                n_tokens: n,
                samples,
                paired: None,
                bound: None,
            });
        }
        for &n in args.n_gen.iter().filter(|&&n| n > 0) {
            let toks = random_tokens(&mut rng, n, info.n_vocab);
            match &args.sparsity {
                None => {
                    time_generation(&mut ctx, &toks)?;
                    ctx.reset_profile();
                    let samples = (0..args.reps)
                        .map(|_| time_generation(&mut ctx, &toks))
                        .collect::<Result<Vec<_>>>()?;
                    print_profile(&ctx, &format!("tg{n}"));
                    rows.push(Row {
                        backend: backend_label(&ctx),
                        threads: ctx.n_threads(),
                        test: format!("tg{n}"),
                        n_tokens: n,
                        samples,
                        paired: None,
                        bound: None,
                    });
                }
                Some(mode) => {
                    let m = time_generation_side_by_side(&mut ctx, &toks, args.reps, &args, mode)?;
                    for (test, samples, paired, bound) in [
                        (format!("tg{n}"), m.dense, None, None),
                        (format!("tg{n} {mode}"), m.sparse, m.paired, m.bound),
                    ] {
                        rows.push(Row {
                            backend: backend_label(&ctx),
                            threads: ctx.n_threads(),
                            test,
                            n_tokens: n,
                            samples,
                            paired,
                            bound,
                        });
                    }
                }
            }
        }
    }
    let model_desc = format!(
        "{} {} {}",
        info.architecture,
        size_label(info.n_params),
        file_type_label(&model).unwrap_or_else(|| info.dominant_type.clone())
    );
    let size_mib = info.tensor_bytes as f64 / (1024.0 * 1024.0);
    let params_m = info.n_params as f64 / 1e6;
    let isa = crate::quant::active_isa().to_string();
    if args.output == "json" {
        let arr: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                let (m, s) = mean_sd(&r.samples);
                serde_json::json!({
                    "model": model_desc, "model_path": path.display().to_string(),
                    "size_bytes": info.tensor_bytes, "n_params": info.n_params,
                    "backend": r.backend, "isa": isa, "threads": r.threads, "test": r.test,
                    "n_tokens": r.n_tokens, "avg_ts": m, "stddev_ts": s, "samples_ts": r.samples,
                    "paired_speedup": r.paired.map(|p| p.speedup),
                    "paired_blocks": r.paired.map(|p| p.pairs),
                    "ffn_bytes_skipped": r.bound.map(|b| b.ffn_bytes_skipped),
                    "ffn_share_of_decode_bytes": r.bound.map(|b| b.ffn_share),
                    "byte_bound_speedup": r.bound.map(|b| b.speedup),
                    "share_of_allowed_gain": r
                        .paired
                        .as_ref()
                        .zip(r.bound.as_ref())
                        .and_then(|(p, b)| gain_share(p.speedup, b.speedup)),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&arr).unwrap_or_default());
    } else {
        println!("| model | size | params | backend | threads | test | t/s |");
        println!("| --- | ---: | ---: | --- | ---: | ---: | ---: |");
        for r in &rows {
            let (m, s) = mean_sd(&r.samples);
            println!(
                "| {model_desc} | {size_mib:.2} MiB | {params_m:.2} M | {} | {} | {} | {m:.2} ± {s:.2} |",
                r.backend, r.threads, r.test
            );
        }
        for r in &rows {
            if let Some(p) = &r.paired {
                println!(
                    "\n{}: {:.3}× the dense decode speed (median of {} paired {PAIR_BLOCK}-token blocks, dense and sparse alternating)",
                    r.test, p.speedup, p.pairs
                );
                if let Some(b) = &r.bound {
                    println!(
                        "byte bound: skipping {:.1}% of the FFN bytes, {:.1}% of the weight bytes a step reads, allows {:.3}×: {:.2} of it reached, {} of the gain it allows",
                        100.0 * b.ffn_bytes_skipped,
                        100.0 * b.ffn_share * b.ffn_bytes_skipped,
                        b.speedup,
                        p.speedup / b.speedup,
                        gain_share(p.speedup, b.speedup)
                            .map_or_else(|| "none".to_string(), |g| format!("{g:.2}"))
                    );
                }
            }
        }
    }
    Ok(())
}

/// The share of the gain the byte bound allows that a speed-up reached, `(s − 1) / (b − 1)`
/// (negative where the sparse decode was slower than dense); `None` where the bound allows no
/// gain. The bare ratio `s / b` flatters small bounds: at a bound of 1.10×, a decode 6%
/// slower than dense still reaches 0.85 of it.
fn gain_share(speedup: f64, bound: f64) -> Option<f64> {
    (bound > 1.0).then(|| (speedup - 1.0) / (bound - 1.0))
}

/// "CPU (avx2+fma+f16c)" or the accelerator's description.
fn backend_label(ctx: &Context) -> String {
    ctx.device_description()
        .unwrap_or_else(|| format!("CPU ({})", crate::quant::active_isa()))
}

/// Dense and sparse (`mode`) decode timed alternately, `reps` times each after one warm-up
/// of each; the sparse FFN, built once, is installed before and removed after every sparse
/// repetition. Then the speed-up finely: `reps` decodes of `tokens` in paired blocks of
/// [`PAIR_BLOCK`] tokens, dense and sparse alternating (whole runs one after the other see
/// the machine's drift; paired blocks agree within ±0.03 where whole runs spread ±0.15).
/// With `GHOST_PROFILE=1`, prints both per-phase splits in ms per token.
fn time_generation_side_by_side(
    ctx: &mut Context,
    tokens: &[u32],
    reps: usize,
    args: &Args,
    mode: &str,
) -> Result<SideBySide> {
    use crate::sparsity::engine::{attach, tally_summary, uninstall};
    let n = tokens.len();
    let mut dense_profile = [0.0; 6];
    let mut sparse_profile = [0.0; 6];
    let (mut dense, mut sparse) = (Vec::new(), Vec::new());
    // Sidecar read, plans resolved and down copies built once; the same sparse FFNs are
    // reinstalled for every sparse repetition (their tally covers all of them).
    if !ctx.is_accelerated() {
        super::sparsity_setup::use_measured_path_costs(ctx.model(), ctx.n_threads(), Some(mode));
    }
    let handle = attach(
        ctx,
        args.mask.as_deref(),
        mode,
        crate::sparsity::PathPolicy::Fastest,
    )?;
    let sparse_ffns = ctx.decode_ffns().to_vec();
    uninstall(ctx)?;
    for rep in 0..=reps {
        ctx.reset_profile();
        let d = time_generation(ctx, tokens)?;
        accumulate(&mut dense_profile, &ctx.profile(), rep > 0);
        crate::paired_speed::install_decode_ffns(ctx, &sparse_ffns)?;
        ctx.reset_profile();
        let s = time_generation(ctx, tokens)?;
        accumulate(&mut sparse_profile, &ctx.profile(), rep > 0);
        uninstall(ctx)?;
        if rep > 0 {
            dense.push(d);
            sparse.push(s);
        }
    }
    // The first token is the prompt; a model too small for one pair gets no paired figure.
    let paired = match tokens.split_first() {
        Some((first, rest)) if rest.len() >= 2 * PAIR_BLOCK => {
            let cpu_time = ctx.n_threads() == 1 && !ctx.is_accelerated();
            Some(crate::paired_speed::paired_decode_speed(
                ctx,
                &sparse_ffns,
                std::slice::from_ref(first),
                rest,
                reps,
                PAIR_BLOCK,
                cpu_time,
            )?)
        }
        _ => None,
    };
    let per_token_ms = |v: &[f64]| -> String {
        let names = ["qkv", "attention", "attn_output", "ffn", "output", "other"];
        names
            .iter()
            .zip(v)
            .map(|(name, t)| format!("{name} {:.3}", 1e3 * t / (reps * n) as f64))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if dense_profile.iter().sum::<f64>() > 0.0 {
        eprintln!(
            "profile tg{n} dense (ms/token): {}",
            per_token_ms(&dense_profile)
        );
        eprintln!(
            "profile tg{n} {mode} (ms/token): {}",
            per_token_ms(&sparse_profile)
        );
    }
    let mut bound = None;
    if let Some(h) = handle {
        let tally = crate::sparsity::accelerated::current_tally(ctx, h.tally())?;
        eprintln!("{}", tally_summary(&tally));
        let ffn_share = crate::sparsity::report::decode_ffn_share(ctx.model());
        bound = Some(ByteBound {
            speedup: crate::sparsity::report::byte_bound(ffn_share, tally.bytes_skipped()),
            ffn_share,
            ffn_bytes_skipped: tally.bytes_skipped(),
        });
    }
    Ok(SideBySide {
        dense,
        sparse,
        paired,
        bound,
    })
}

fn accumulate(acc: &mut [f64], prof: &[(&'static str, f64)], keep: bool) {
    if keep {
        for (a, (_, t)) in acc.iter_mut().zip(prof) {
            *a += t;
        }
    }
}

/// Prints the per-phase time split to stderr when profiling is on.
fn print_profile(ctx: &Context, test: &str) {
    let prof = ctx.profile();
    let total: f64 = prof.iter().map(|p| p.1).sum();
    if total > 0.0 {
        let parts: Vec<String> = prof
            .iter()
            .map(|(n, t)| format!("{n} {:.1}%", 100.0 * t / total))
            .collect();
        eprintln!(
            "profile {test} ({} threads): {}",
            ctx.n_threads(),
            parts.join(", ")
        );
    }
}

/// The `general.file_type` recipe name (e.g. "Q4_K_M"), as llama-bench shows it.
fn file_type_label(model: &Model) -> Option<String> {
    use crate::quant::recipe::Ftype;
    let id = model.gguf().get_u64("general.file_type")? as u32;
    Ftype::ALL
        .iter()
        .find(|f| f.file_type_id() == id)
        .map(|f| f.name().to_uppercase())
}

fn size_label(n_params: u64) -> String {
    if n_params >= 1_000_000_000 {
        format!("{:.1}B", n_params as f64 / 1e9)
    } else {
        format!("{}M", (n_params as f64 / 1e6).round() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::gain_share;

    #[test]
    fn gain_share_is_the_realized_part_of_the_allowed_gain() {
        let close = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 1e-12);
        assert!(close(gain_share(1.05, 1.10), 0.5));
        assert!(close(gain_share(1.10, 1.10), 1.0));
        // Slower than dense: a negative share, where the bare ratio 0.94 / 1.10 would read 0.85.
        assert!(close(gain_share(0.94, 1.10), -0.6));
        assert_eq!(gain_share(1.02, 1.0), None);
    }
}
