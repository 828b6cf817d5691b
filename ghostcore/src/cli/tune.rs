//! `ghost tune -m MODEL`: measure this CPU's sparse path costs at the model's FFN shape (the
//! time curves decode chooses its sparse kernels by, see `sparsity::path_costs`), print them
//! beside the built-in ones and cache them; `ghost run/chat/bench/sweep/perplexity` and the C
//! ABI then use them on this machine (`GHOST_PATH_COSTS=builtin` not to). `--force`
//! measures again (on a quiet machine: other cores' memory traffic moves the curves).
//!
//! Kernels timed in isolation are not decode: on an AVX2 VM the measured curves chose the
//! dense down at the 8B shape's 50% setting and decoded 0.03–0.13 slower than the built-in
//! ones (`bench/results/2026-12-06-s7-path-tuning.md`). So `ghost tune` then decodes with
//! the sparsity mode users run (`--sparsity`, default `budget:2`, with the model's sidecar)
//! in paired blocks, built-in and measured curves alternating, then tries each class of
//! sparse paths decode took never taken (input-major copy, gathered rows, exact downs), and
//! records the verdicts in the cache file: curves that decoded slower are kept on file but
//! not used, classes that decoded faster off are turned off. Last it decodes with the sparse
//! FFN so tuned against the dense FFN; where dense is significantly faster, `ghost run`
//! decodes dense with that mode and thread count (`--force-sparse` not to). Everything is
//! per thread count (`-t`, default 1): the kernels do not scale alike, so a front end
//! decoding with N threads uses what `ghost tune -t N` found.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::context::{Context, ContextParams};
use crate::model::{Model, ModelParams};
use crate::sparsity::engine::{attach, PoolSplitter};
use crate::sparsity::path_costs::cache::{self, load_or_measure, Source, Verdicts};
use crate::sparsity::path_costs::check::{
    describe, record_and_install, tune_in_decode, CheckOptions, PROMPT_TOKENS,
};
use crate::sparsity::path_costs::measure::{FfnShape, MeasureOptions};
use crate::sparsity::path_costs::{PathCosts, TimeCurve};
use crate::sparsity::{PathPolicy, SparsityMode};
use crate::threadpool::ThreadPool;
use crate::Result;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model file (default: the built-in SmolLM2-135M Q4_K_M).
    #[arg(short = 'm', long)]
    pub model: Option<PathBuf>,
    /// Measure even when this CPU's curves for the shape are cached.
    #[arg(long)]
    pub force: bool,
    /// Alternated (dense, sparse) pairs per point.
    #[arg(long, default_value_t = MeasureOptions::default().reps)]
    pub reps: usize,
    /// Sparsity mode of the decode check.
    #[arg(long, default_value = "budget:2")]
    pub sparsity: String,
    /// Calibration sidecar for the decode check (default: MODEL.ghost beside the model, or
    /// the one a first `ghost run --sparsity budget:2` cached).
    #[arg(long)]
    pub mask: Option<PathBuf>,
    /// Do not check the curves in decode (they are then used unchecked).
    #[arg(long)]
    pub no_check: bool,
    /// Tokens the decode check decodes per repetition (after a short prompt).
    #[arg(long, default_value_t = CheckOptions::default().n_tokens)]
    pub check_tokens: usize,
    /// Repetitions of the decode check.
    #[arg(long, default_value_t = CheckOptions::default().reps)]
    pub check_reps: usize,
    /// Tokens per block of the decode check (built-in and measured blocks alternate).
    #[arg(long, default_value_t = CheckOptions::default().block)]
    pub check_block: usize,
    /// Threads to tune for: the curves are measured and the decode check run with this many
    /// (1: timed in CPU seconds of the process, which other processes on the machine do not
    /// inflate); decode with N threads uses what `-t N` found.
    #[arg(short = 't', long, default_value_t = 1)]
    pub threads: usize,
}

pub fn run(args: Args) -> Result<()> {
    let path = super::run::resolve_model(args.model.as_deref())?;
    // Only the FFN's shape and types are needed: models without a vocabulary do too.
    let params = ModelParams {
        skip_tokenizer: true,
        ..ModelParams::default()
    };
    let model: Arc<Model> = Model::load(&path, &params)?;
    let mask = args
        .mask
        .clone()
        .or_else(|| super::sparsity_setup::existing_sidecar(&model, &path));
    let threads = args.threads.max(1);
    let plan = TunePlan {
        mode: &args.sparsity,
        mask: mask.as_deref(),
        threads,
        measure: MeasureOptions {
            reps: args.reps.max(1),
            ..MeasureOptions::default()
        },
        check: (!args.no_check).then_some(CheckOptions {
            n_tokens: args.check_tokens,
            reps: args.check_reps,
            block: args.check_block,
        }),
        force: args.force,
    };
    let tuned = tune_paths(&model, &plan)?;
    let shape = &tuned.shape;
    println!(
        "FFN {}×{}, rows {}, exact downs {:?}, {threads} thread{}",
        shape.n_ff,
        shape.n_embd,
        shape.rows_type,
        shape.exact_down_types,
        plural(threads)
    );
    match &tuned.source {
        Source::Cached(p) => println!("cached: {}", p.display()),
        Source::Measured(p) => println!(
            "measured in {:.1} s{}",
            tuned.measuring.as_secs_f64(),
            p.as_ref()
                .map(|p| format!(", saved to {}", p.display()))
                .unwrap_or_default()
        ),
        Source::Builtin(why) => println!("built-in curves: {why}"),
    }
    print_curves(shape, threads, &tuned.costs);
    match &tuned.decode {
        DecodeTuning::NoFile => {}
        DecodeTuning::NotRun(why) => {
            println!("decode check: not run ({why}); the measured curves will be used unchecked")
        }
        DecodeTuning::Done(verdicts) => {
            let check = verdicts.checks.first();
            println!(
                "decode check ({}, {} × {} tokens, {threads} thread{}): measured curves at {:.3}× the built-in ones' speed (median of {} paired blocks)",
                check.map_or(args.sparsity.as_str(), |c| c.mode.as_str()),
                args.check_reps.max(1),
                args.check_tokens,
                plural(threads),
                check.map_or(1.0, |c| c.speedup),
                check.map_or(0, |c| c.pairs),
            );
            for p in &verdicts.paths {
                println!(
                    "path check: {} never taken: {:.3}× the speed (median of {} paired blocks, faster in {}): {}",
                    p.class.name(),
                    p.speedup,
                    p.pairs,
                    p.wins,
                    if p.turns_off() { "turned off" } else { "kept" }
                );
            }
            for c in &verdicts.sparse {
                println!(
                    "sparse check: the sparse FFN at {:.3}× the dense speed (median of {} paired blocks, faster in {}): {}",
                    c.speedup,
                    c.pairs,
                    c.wins,
                    if c.decodes_dense() {
                        format!(
                            "dense decodes faster; `ghost run --sparsity {}` at {threads} thread{} decodes dense",
                            c.mode,
                            plural(threads)
                        )
                    } else {
                        "sparse kept".to_string()
                    }
                );
            }
            println!(
                "used from now on at {threads} thread{}: {}",
                plural(threads),
                describe(verdicts)
            );
        }
    }
    Ok(())
}

/// The plural ending of "thread" (and such) for `n`.
pub(super) fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// What to tune, and how long to measure.
#[derive(Clone, Debug)]
pub struct TunePlan<'a> {
    /// The sparsity mode of the decode check (its verdicts are kept for this mode).
    pub mode: &'a str,
    /// The calibration sidecar the mode uses, if it needs one.
    pub mask: Option<&'a Path>,
    /// Worker threads to tune for (at least 1).
    pub threads: usize,
    pub measure: MeasureOptions,
    /// How long the decode check runs; `None` not to check the curves in decode.
    pub check: Option<CheckOptions>,
    /// Measure the curves even when a cache file holds them.
    pub force: bool,
}

/// What happened to the decode check of a tune.
#[derive(Clone, Debug)]
pub enum DecodeTuning {
    /// The built-in curves serve (no cache file to record verdicts in).
    NoFile,
    /// Not run, for this reason: the measured curves are recorded unchecked.
    NotRun(String),
    /// Run: these verdicts are recorded and installed.
    Done(Verdicts),
}

/// What a tune found.
#[derive(Clone, Debug)]
pub struct Tuned {
    pub shape: FfnShape,
    /// The measured (or cached, or built-in) curves.
    pub costs: PathCosts,
    pub source: Source,
    /// Time spent reading or measuring the curves.
    pub measuring: std::time::Duration,
    pub decode: DecodeTuning,
}

/// Tune the sparse paths of `model` on this CPU as `plan` says: the curves measured at the
/// model's FFN shape with `plan.threads` workers (or read from the cache), then checked in
/// decode with `plan.mode` against the built-in ones, each path class decode took tried
/// off; the verdicts recorded in the cache file (one per thread count) and installed in
/// this process. `ghost tune`, and `ghost run`'s first sparse run at a thread count.
pub fn tune_paths(model: &Arc<Model>, plan: &TunePlan) -> Result<Tuned> {
    let shape = FfnShape::of_model(model);
    let threads = plan.threads.max(1);
    let t = std::time::Instant::now();
    let (costs, source) = {
        let pool = ThreadPool::new(threads)?;
        load_or_measure(
            &shape,
            &plan.measure,
            &PoolSplitter(&pool),
            plan.force,
            &mut |what| eprintln!("ghost: measuring {what}"),
        )?
    };
    let measuring = t.elapsed();
    let decode = match (source.file(), &plan.check) {
        (None, _) => DecodeTuning::NoFile,
        (Some(file), None) => {
            cache::write(file, &shape, threads, &costs, &Verdicts::default())?;
            DecodeTuning::NotRun("--no-check".into())
        }
        (Some(file), Some(opts)) => {
            let mode: SparsityMode = plan.mode.parse()?;
            if mode.is_dense() || (mode.needs_sidecar() && plan.mask.is_none()) {
                cache::write(file, &shape, threads, &costs, &Verdicts::default())?;
                DecodeTuning::NotRun(if mode.is_dense() {
                    "a dense mode has no sparse paths".to_string()
                } else {
                    format!(
                        "{} needs a calibration sidecar: pass --mask, or run `ghost run --sparsity {}` once",
                        plan.mode, plan.mode
                    )
                })
            } else {
                let verdicts = tune_in_a_context(model, plan, &costs, opts)?;
                record_and_install(file, &shape, threads, &costs, &verdicts)?;
                DecodeTuning::Done(verdicts)
            }
        }
    };
    Ok(Tuned {
        shape,
        costs,
        source,
        measuring,
        decode,
    })
}

/// The tuning in decode ([`tune_in_decode`]) in a fresh context with `plan`'s sparsity mode
/// and sidecar.
fn tune_in_a_context(
    model: &Arc<Model>,
    plan: &TunePlan,
    costs: &PathCosts,
    opts: &CheckOptions,
) -> Result<Verdicts> {
    let mut ctx = Context::new(
        model.clone(),
        ContextParams {
            n_ctx: (PROMPT_TOKENS + opts.n_tokens).next_multiple_of(64),
            n_batch: 512,
            n_threads: plan.threads.max(1),
            exact_prefill: false,
            ..Default::default()
        },
    )?;
    eprintln!(
        "ghost: decode check: {} with {}, built-in and measured curves alternating, then each sparse path class off",
        plan.mode,
        plan.mask
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "no sidecar".into())
    );
    let sparse = attach(&mut ctx, plan.mask, plan.mode, PathPolicy::Fastest)?;
    let Some(sparse) = sparse else {
        crate::bail!(InvalidArgument, "the decode check needs a sparse mode");
    };
    tune_in_decode(&mut ctx, &sparse, costs, plan.mode, opts)
}

fn print_curves(shape: &FfnShape, threads: usize, costs: &PathCosts) {
    let builtin = PathCosts::builtin(shape.n_embd, threads);
    println!("(share of the dense bytes read → time relative to the dense kernel)");
    let print = |name: &str, c: &TimeCurve, b: &TimeCurve| {
        let pts: Vec<String> = c.points()[1..]
            .iter()
            .map(|(x, y)| format!("{x:.2}→{y:.2} (built-in {:.2})", b.at(*x)))
            .collect();
        println!("{name:<16} {}", pts.join("  "));
    };
    print(
        "gathered rows",
        &costs.gathered_rows,
        &builtin.gathered_rows,
    );
    if shape.has_input_major() {
        print("input-major rows", &costs.input_major, &builtin.input_major);
    }
    for &ty in &shape.exact_down_types {
        if let (Some(c), Some(b)) = (costs.exact_down_curve(ty), builtin.exact_down_curve(ty)) {
            print(&format!("exact {} down", ty.name().to_uppercase()), c, b);
        }
    }
}
