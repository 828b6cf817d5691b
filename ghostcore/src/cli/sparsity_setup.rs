//! `--mask` / `--sparsity` for the generating front ends (`ghost run`): find or build the
//! calibration sidecar a mode needs, and install the sparse FFN in a context.
//!
//! A mode that needs calibration data (`target:`, `budget:`, `dead`, ...) uses, in order:
//! the sidecar given with `--mask`; `MODEL.ghost` beside the model; a sidecar cached under
//! the user's cache directory; and failing all three, a calibration run over the corpus built
//! into the binary, whose sidecar is then cached (the model file is never touched).
//!
//! On a CPU, the sparse paths decode takes are steered by time curves tuned per CPU and
//! thread count (`sparsity::path_costs`, `ghost tune`). The first sparse run of a model of at
//! most [`AUTO_TUNE_MAX_BYTES`] with a mode and thread count never tuned on this machine
//! tunes them (about 25 s on SmolLM2, once: the verdicts are cached), since the built-in
//! curves can decode slower than dense on some CPUs (0.75–0.89× at 2 threads on a Zen 3 VM,
//! `bench/results/2026-12-07-s9-thread-tuning.md`); larger models get a hint to run
//! `ghost tune` instead, as their tune takes minutes.
//!
//! The tune ends by decoding with the tuned sparse FFN against the dense one. Where dense
//! was significantly faster with the mode at the thread count (SmolLM2's `budget:2` at 2
//! threads on a Zen 3 VM), sparsity does not pay on this CPU: the front ends decode densely
//! and say so, unless `--force-sparse` asks for the sparse FFN anyway (to measure it, or to
//! spare memory bandwidth for other work).

use std::path::{Path, PathBuf};

use crate::context::Context;
use crate::model::Model;
use crate::sparsity::calibrate::{calibrate, CalibrateOptions, Progress};
use crate::sparsity::engine::{attach, SparseHandle};
use crate::sparsity::path_costs::cache::SparseCheck;
use crate::sparsity::path_costs::check::describe_sparse_check;
use crate::sparsity::{model_checksum, PathPolicy, SparsityMode};
use crate::tokenizer::Tokenizer;
use crate::Result;

use crate::sparsity::calibrate::{BUILTIN_CORPUS, BUILTIN_CORPUS_NAME};

/// Parse `mode`, find (or build) the sidecar it needs, and install the sparse FFN in `ctx`.
/// `Ok(None)` for the dense mode, and where this CPU's tune found the mode's sparse FFN
/// slower than dense at `ctx`'s thread count (unless `force_sparse`).
pub fn setup(
    ctx: &mut Context,
    model_path: &Path,
    mask: Option<&Path>,
    mode: &str,
    n_threads: usize,
    auto_tune: bool,
    force_sparse: bool,
) -> Result<Option<SparseHandle>> {
    let parsed: SparsityMode = mode.parse()?;
    if parsed.is_dense() {
        return Ok(None);
    }
    let sidecar = match mask {
        Some(p) => Some(p.to_path_buf()),
        None if parsed.needs_sidecar() => {
            Some(find_or_calibrate(ctx.model(), model_path, n_threads)?)
        }
        None => None,
    };
    if let Some(p) = &sidecar {
        eprintln!("ghost: sparsity {mode} with sidecar {}", p.display());
    } else {
        eprintln!("ghost: sparsity {mode}");
    }
    if !ctx.is_accelerated() {
        if auto_tune {
            tune_if_never_tuned(ctx.model(), mode, sidecar.as_deref(), ctx.n_threads());
        }
        let check = use_measured_path_costs(ctx.model(), ctx.n_threads(), Some(mode));
        if let Some(c) = check.filter(|c| c.decodes_dense() && !force_sparse) {
            // The sidecar is still checked against the model: a wrong one is an error even
            // when this run does not read it.
            if let Some(p) = &sidecar {
                crate::sparsity::Sidecar::load(p, ctx.model().gguf())?;
            }
            let n = ctx.n_threads();
            eprintln!(
                "ghost: decoding dense: on this CPU the sparse FFN decoded {mode} at {:.2}× the \
                 dense speed with {n} thread{} (dense faster in {} of {} pairs, `ghost tune`); \
                 --force-sparse decodes with it anyway",
                c.speedup,
                super::tune::plural(n),
                c.pairs - c.wins,
                c.pairs
            );
            return Ok(None);
        }
    }
    attach(ctx, sidecar.as_deref(), mode, PathPolicy::Fastest)
}

/// Use what `ghost tune` found on this CPU for `model`'s FFN shape at `n_threads` (0: one
/// per core) when it cached it (see `sparsity::path_costs`): the measured curves unless
/// they decoded slower than the built-in ones, without the path classes that decoded faster
/// off with sparsity `mode`; saying which. Else the built-in curves serve. Nothing is measured here: that is
/// `ghost tune`'s step, which checks in decode, since kernels timed in isolation are not
/// decode (`bench/results/2026-12-06-s7-path-tuning.md`: +2 points on SmolLM2, worse at the
/// 8B shape's 50% setting). For the front ends that decode with the fastest paths. Returns
/// the tune's check of `mode`'s sparse FFN against the dense one, if it made one.
pub fn use_measured_path_costs(
    model: &Model,
    n_threads: usize,
    mode: Option<&str>,
) -> Option<SparseCheck> {
    use crate::sparsity::path_costs::cache::{install_cached, CachedUse};
    use crate::sparsity::path_costs::measure::FfnShape;
    let n_threads = if n_threads == 0 {
        crate::threadpool::default_threads()
    } else {
        n_threads
    };
    match install_cached(&FfnShape::of_model(model), n_threads, mode) {
        CachedUse::None => None,
        CachedUse::Installed {
            path,
            measured,
            check,
            off,
            sparse,
        } => {
            let curves = match (measured, check) {
                (true, _) => "curves measured on this CPU".to_string(),
                (false, Some(c)) => format!(
                    "built-in curves (this CPU's measured ones decoded {} at {:.2}× their speed)",
                    c.mode, c.speedup
                ),
                (false, None) => "built-in curves".to_string(),
            };
            let off: Vec<&str> = off.iter().map(|c| c.name()).collect();
            eprintln!(
                "ghost: sparse paths tuned for {n_threads} thread{} ({}): {curves}{}{}",
                super::tune::plural(n_threads),
                path.display(),
                if off.is_empty() {
                    String::new()
                } else {
                    format!(", never {}", off.join(" or "))
                },
                sparse
                    .as_ref()
                    .map(|c| format!("; {}", describe_sparse_check(c)))
                    .unwrap_or_default()
            );
            sparse
        }
    }
}

/// Models with up to this many bytes of tensor data are tuned on their first sparse run; the tune decodes
/// a few thousand tokens, which takes minutes for larger ones.
pub const AUTO_TUNE_MAX_BYTES: u64 = 512 << 20;

/// Tune the sparse paths for `model` at `n_threads` with `mode` (and its `sidecar`) if this
/// machine's cache holds no verdict for them yet, saying so; a failed tune is reported and
/// leaves whatever was installed. Nothing is done with `GHOST_PATH_COSTS` set (`builtin`
/// keeps the built-in curves, `retune` is `ghost tune --force`'s) or without a cache
/// directory. Larger models than [`AUTO_TUNE_MAX_BYTES`] get the command that would tune
/// them.
fn tune_if_never_tuned(
    model: &std::sync::Arc<Model>,
    mode: &str,
    sidecar: Option<&Path>,
    n_threads: usize,
) {
    use crate::sparsity::path_costs::cache::{self, mode_word, ENV};
    use crate::sparsity::path_costs::check::{describe, CheckOptions};
    use crate::sparsity::path_costs::measure::{FfnShape, MeasureOptions};
    if std::env::var_os(ENV).is_some() {
        return;
    }
    let shape = FfnShape::of_model(model);
    let Some(file) = cache::cache_path(&shape, n_threads) else {
        return;
    };
    let word = mode_word(mode);
    let tuned = matches!(cache::read(&file, &shape, n_threads),
        Ok(Some(c)) if c.verdicts.checks.iter().any(|c| c.mode == word));
    if tuned {
        return;
    }
    let threads = format!("{n_threads} thread{}", super::tune::plural(n_threads));
    let size = model.info().tensor_bytes;
    if size > AUTO_TUNE_MAX_BYTES {
        eprintln!(
            "ghost: the sparse paths were never tuned on this CPU for {mode} at {threads}: \
             `ghost tune -m MODEL -t {n_threads} --sparsity {mode}` tunes them once (it decodes \
             a few thousand tokens); until then the built-in curves serve"
        );
        return;
    }
    eprintln!(
        "ghost: tuning the sparse paths for this CPU, {mode} at {threads} (once; cached; \
         --no-tune skips it)"
    );
    let t = std::time::Instant::now();
    let plan = super::tune::TunePlan {
        mode,
        mask: sidecar,
        threads: n_threads,
        measure: MeasureOptions::default(),
        check: Some(CheckOptions::default()),
        force: false,
    };
    match super::tune::tune_paths(model, &plan) {
        Ok(tuned) => {
            if let super::tune::DecodeTuning::Done(v) = &tuned.decode {
                eprintln!(
                    "ghost: tuned in {:.0} s: {}",
                    t.elapsed().as_secs_f64(),
                    describe(v)
                );
            }
        }
        Err(e) => {
            eprintln!("ghost: tuning the sparse paths failed ({e}); the built-in curves serve")
        }
    }
}

/// Where a model's cached sidecar lives:
/// `<cache>/ghostcore/sidecars/<stem>-<model checksum>-<recipe>.ghost`, the recipe being a
/// digest of the default budget candidates and the frontier revision, so that a release with
/// a better candidate list or other sparse kernels calibrates again instead of keeping the
/// older budget table.
fn cached_sidecar_path(model: &Model, model_path: &Path) -> Option<PathBuf> {
    use sha2::{Digest, Sha256};
    let stem = model_path.file_stem()?.to_string_lossy().into_owned();
    let sum = model_checksum(model.gguf());
    use crate::sparsity::calibrate::{default_candidates, FRONTIER_REVISION};
    let recipe = Sha256::digest(format!(
        "{};revision {FRONTIER_REVISION}",
        default_candidates().join(";")
    ));
    let recipe: String = recipe[..4].iter().map(|b| format!("{b:02x}")).collect();
    let dir = dirs::cache_dir()?.join("ghostcore").join("sidecars");
    Some(dir.join(format!("{stem}-{}-{recipe}.ghost", &sum[..16])))
}

/// Where a mode needing calibration data looks for its sidecar without `--mask`:
/// `MODEL.ghost` beside the model when it exists, else the path a first-use calibration
/// caches it at (which may not exist yet; `None` without a cache directory).
fn sidecar_location(model: &Model, model_path: &Path) -> Option<PathBuf> {
    let beside = model_path.with_extension("ghost");
    if beside.is_file() {
        return Some(beside);
    }
    cached_sidecar_path(model, model_path)
}

/// The sidecar a mode needing calibration data would use without `--mask`, if there is one
/// already.
pub fn existing_sidecar(model: &Model, model_path: &Path) -> Option<PathBuf> {
    sidecar_location(model, model_path).filter(|p| p.is_file())
}

fn find_or_calibrate(
    model: &std::sync::Arc<Model>,
    model_path: &Path,
    n_threads: usize,
) -> Result<PathBuf> {
    let cached = sidecar_location(model, model_path).ok_or_else(|| {
        crate::Error::InvalidArgument(
            "this sparsity mode needs a calibration sidecar: pass --mask FILE (made by `ghost calibrate`)"
                .into(),
        )
    })?;
    if cached.is_file() {
        return Ok(cached);
    }
    eprintln!(
        "ghost: no calibration sidecar for {}: calibrating on the built-in corpus (once; cached at {})",
        model_path.display(),
        cached.display()
    );
    let tok = Tokenizer::from_gguf(model.gguf())?;
    let ids = tok.encode(BUILTIN_CORPUS, false, false)?;
    let bos = if tok.add_bos() { tok.bos() } else { None };
    let opts = CalibrateOptions {
        n_threads,
        ..CalibrateOptions::default()
    };
    let bar = super::calibrate::calibration_bar();
    let sidecar = calibrate(
        model.clone(),
        &ids,
        bos,
        BUILTIN_CORPUS_NAME,
        &opts,
        &mut |p| match p {
            Progress::Stats(done, total) => {
                bar.set_message("statistics");
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            }
            Progress::Candidate(i, n, ..) => {
                bar.set_message("frontier");
                bar.set_length(n as u64);
                bar.set_position(i as u64 + 1);
            }
            Progress::Sensitivity(i, n) => {
                bar.set_message("per layer");
                bar.set_length(n as u64);
                bar.set_position(i as u64);
            }
            Progress::Allocated(..) | Progress::Curves(_) => {}
        },
    )?;
    bar.finish_and_clear();
    if let Some(dir) = cached.parent() {
        std::fs::create_dir_all(dir)?;
    }
    sidecar.write_file(&cached)?;
    Ok(cached)
}
