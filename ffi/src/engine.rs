//! The one place where the C ABI meets the Rust engine. Everything above this module
//! speaks C types; everything here speaks `ghostcore` types (model, context, tokenizer,
//! generation loop, sparsity engine).

use std::ffi::CString;
use std::path::Path;
use std::sync::Arc;

use ghostcore::context::{Context as EngineContext, ContextParams};
use ghostcore::generate::{generate_tokens, GenerateParams, StopReason as EngineStop};
use ghostcore::model::{Model as EngineModel, ModelParams};
use ghostcore::sampling::SamplerParams;
use ghostcore::sparsity::accelerated::current_tally;
use ghostcore::sparsity::calibrate::{calibrate, CalibrateOptions as EngineCalibrateOptions};
use ghostcore::sparsity::engine::{self as sparsity_engine, SparseHandle};
use ghostcore::sparsity::path_costs::measure::FfnShape;
use ghostcore::sparsity::{resolve_plans, DownCopy, Rule, Sidecar, SparsityMode};
use ghostcore::tokenizer::Tokenizer;

use crate::status::{invalid_arg, unsupported, FfiResult};

/// What gc_model_get_info reports, read once at load.
pub(crate) struct ModelFacts {
    pub architecture: CString,
    pub name: CString,
    pub n_params: u64,
    pub n_ctx_train: u32,
    pub n_vocab: u32,
    pub n_layer: u32,
    pub n_embd: u32,
}

/// Model load options after validation (from gc_model_params).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ModelOptions {
    pub use_gpu: bool,
    pub gpu_device: u32,
}

/// A loaded model: immutable, shared by every context made from it.
pub(crate) struct Model {
    inner: Arc<EngineModel>,
    options: ModelOptions,
    pub facts: ModelFacts,
}

impl Model {
    pub fn load(path: &Path, options: ModelOptions) -> FfiResult<Model> {
        if options.use_gpu && !cfg!(feature = "cuda") {
            return unsupported(format!(
                "GPU device {} requested, but this build has no CUDA backend (build with the `cuda` feature)",
                options.gpu_device
            ));
        }
        if options.use_gpu && options.gpu_device != 0 {
            return unsupported(format!(
                "GPU device {} requested; this version runs on device 0 only",
                options.gpu_device
            ));
        }
        let inner = EngineModel::load(path, &ModelParams::default())?;
        let info = inner.info();
        let c = |s: &str| CString::new(s.replace('\0', "")).unwrap_or_default();
        let small = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        let facts = ModelFacts {
            architecture: c(&info.architecture),
            name: c(&info.name),
            n_params: info.n_params,
            n_ctx_train: small(info.n_ctx_train),
            n_vocab: small(info.n_vocab),
            n_layer: small(info.n_layer),
            n_embd: small(info.n_embd),
        };
        Ok(Model {
            inner,
            options,
            facts,
        })
    }

    fn tokenizer(&self) -> FfiResult<&Tokenizer> {
        Ok(self.inner.tokenizer()?)
    }

    pub fn tokenize(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> FfiResult<Vec<u32>> {
        Ok(self.tokenizer()?.encode(text, add_special, parse_special)?)
    }

    pub fn token_to_piece(&self, token: u32, special: bool) -> FfiResult<Vec<u8>> {
        self.check_token(token)?;
        Ok(self.tokenizer()?.token_to_piece(token, special)?)
    }

    pub fn detokenize(&self, tokens: &[u32], remove_special: bool) -> FfiResult<Vec<u8>> {
        for &t in tokens {
            self.check_token(t)?;
        }
        Ok(self.tokenizer()?.decode_bytes(tokens, remove_special)?)
    }

    pub fn check_token(&self, token: u32) -> FfiResult<()> {
        if token >= self.facts.n_vocab {
            return invalid_arg(format!(
                "token {token} is out of range (vocabulary has {} tokens)",
                self.facts.n_vocab
            ));
        }
        Ok(())
    }
}

/// Context options after validation (from gc_ctx_params).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ContextOptions {
    pub n_ctx: u32,
    pub n_threads: u32,
    pub n_batch: u32,
}

/// Sampling and stopping options after validation (from gc_generate_params).
#[derive(Clone, Copy, Debug)]
pub(crate) struct GenerateOptions {
    pub max_tokens: u32,
    pub temperature: f32,
    pub top_k: u32,
    pub top_p: f32,
    pub min_p: f32,
    pub repeat_penalty: f32,
    pub repeat_last_n: u32,
    pub seed: u64,
    pub add_special: bool,
    pub parse_special: bool,
    pub stop_at_eog: bool,
}

/// Why generation stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StopReason {
    MaxTokens,
    EndOfGeneration,
    Callback,
    ContextFull,
}

/// Figures of one gc_generate call.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct GenerateFigures {
    pub n_prompt_tokens: u32,
    pub n_generated_tokens: u32,
    pub prompt_seconds: f64,
    pub generate_seconds: f64,
    pub sparsity: f32,
}

/// Calibration options after validation (from gc_calibrate_params).
#[derive(Clone, Copy, Debug)]
pub(crate) struct CalibrateOptions {
    pub n_ctx: u32,
    pub n_threads: u32,
    pub eps: f32,
    pub measure_budgets: bool,
    pub store_down_copy: bool,
}

/// A calibrated sparsity mask: the sidecar (thresholds, dead neurons, budget table) for
/// one model, and its neuron-major `ffn_down` copies when it carries them. Immutable.
pub(crate) struct Mask {
    /// The model it was made or loaded for (kept alive; compared by identity).
    model: Arc<EngineModel>,
    sidecar: Sidecar,
    copies: Option<Arc<Vec<DownCopy>>>,
}

impl Mask {
    fn new(model: &Model, mut sidecar: Sidecar) -> Mask {
        let copies = sidecar.down_copies.take().map(Arc::new);
        Mask {
            model: Arc::clone(&model.inner),
            sidecar,
            copies,
        }
    }

    /// Runs the dense model over `texts` (joined) and derives the mask
    /// (`ghostcore::sparsity::calibrate`).
    pub fn calibrate(
        model: &Arc<Model>,
        texts: &[&str],
        options: CalibrateOptions,
    ) -> FfiResult<Mask> {
        let tok = model.tokenizer()?;
        let mut ids = Vec::new();
        for t in texts {
            ids.extend(tok.encode(t, false, false)?);
        }
        let n_ctx = options.n_ctx as usize;
        if ids.len() < n_ctx {
            return invalid_arg(format!(
                "the texts hold {} tokens, fewer than one calibration chunk (n_ctx = {n_ctx}): \
                 give more text or a smaller n_ctx",
                ids.len()
            ));
        }
        let bos = if tok.add_bos() { tok.bos() } else { None };
        let defaults = EngineCalibrateOptions::default();
        let opts = EngineCalibrateOptions {
            eps: options.eps,
            n_ctx,
            n_threads: options.n_threads as usize,
            heldout_share: if options.measure_budgets {
                defaults.heldout_share
            } else {
                0.0
            },
            budgets: if options.measure_budgets {
                defaults.budgets.clone()
            } else {
                Vec::new()
            },
            store_down_copy: options.store_down_copy,
            ..defaults
        };
        let sidecar = calibrate(
            Arc::clone(&model.inner),
            &ids,
            bos,
            "texts given to gc_mask_calibrate",
            &opts,
            &mut |_| {},
        )?;
        Ok(Mask::new(model, sidecar))
    }

    /// Reads a sidecar file and checks it belongs to `model`.
    pub fn load(model: &Arc<Model>, path: &Path) -> FfiResult<Mask> {
        let sidecar = Sidecar::load(path, model.inner.gguf())?;
        Ok(Mask::new(model, sidecar))
    }

    pub fn save(&self, path: &Path) -> FfiResult<()> {
        let whole = Sidecar {
            down_copies: self.copies.as_ref().map(|c| c.as_ref().clone()),
            ..self.sidecar.clone()
        };
        Ok(whole.write_file(path)?)
    }

    /// The mode a context switches to when this mask is set on it while dense: the best
    /// setting within a 1% perplexity increase if calibration measured budgets, otherwise
    /// only the dead neurons.
    fn default_mode(&self) -> SparsityMode {
        if self.sidecar.budget_for(1.0).is_some() {
            SparsityMode {
                dead: false,
                input: None,
                coarse: None,
                rule: Some(Rule::Budget(1.0)),
            }
        } else {
            SparsityMode {
                dead: true,
                input: None,
                coarse: None,
                rule: None,
            }
        }
    }
}

/// One inference context: KV cache, logits, sampler state. Used by one thread at a time.
pub(crate) struct Context {
    model: Arc<Model>,
    inner: EngineContext,
    mask: Option<Arc<Mask>>,
    mode: SparsityMode,
    /// The installed sparse FFN (None while dense): its tally gives the sparsity achieved.
    sparse: Option<SparseHandle>,
    /// Whether the logits belong to a decoded token (false after creation and reset).
    has_logits: bool,
}

impl Context {
    pub fn new(model: Arc<Model>, options: ContextOptions) -> FfiResult<Context> {
        let inner = EngineContext::new(
            Arc::clone(&model.inner),
            ContextParams {
                n_ctx: options.n_ctx as usize,
                n_batch: options.n_batch as usize,
                n_threads: options.n_threads as usize,
                device: if model.options.use_gpu {
                    ghostcore::backend::Device::Gpu
                } else {
                    ghostcore::backend::Device::Cpu
                },
                ..ContextParams::default()
            },
        )?;
        Ok(Context {
            model,
            inner,
            mask: None,
            mode: SparsityMode::DENSE,
            sparse: None,
            has_logits: false,
        })
    }

    pub fn reset(&mut self) {
        self.inner.reset();
        self.has_logits = false;
    }

    pub fn decode(&mut self, tokens: &[u32]) -> FfiResult<()> {
        for &t in tokens {
            self.model.check_token(t)?;
        }
        self.check_room(tokens.len())?;
        self.inner.decode(tokens)?;
        self.has_logits = true;
        Ok(())
    }

    pub fn logits(&self) -> FfiResult<&[f32]> {
        if !self.has_logits {
            return invalid_arg("no logits yet: decode a token first (gc_decode or gc_generate)");
        }
        Ok(self.inner.logits())
    }

    /// Switches the FFN of every layer to `mode` (resolved against the context's mask).
    /// On error the previous settings stay in force.
    pub fn set_sparsity(&mut self, mode: SparsityMode) -> FfiResult<()> {
        let mask = self.mask.clone();
        self.install(mode, mask)
    }

    /// Sets (or, with None, removes) the mask. Removing it returns to dense decoding;
    /// setting it while dense switches to the mask's default mode.
    pub fn set_mask(&mut self, mask: Option<Arc<Mask>>) -> FfiResult<()> {
        let Some(mask) = mask else {
            return self.install(SparsityMode::DENSE, None);
        };
        if !Arc::ptr_eq(&mask.model, &self.model.inner) {
            // Another handle on (perhaps) the same file: compare the FFN checksum.
            mask.sidecar.check_model(self.model.inner.gguf())?;
        }
        let mode = if self.mode.is_dense() {
            mask.default_mode()
        } else {
            self.mode
        };
        self.install(mode, Some(mask))
    }

    fn install(&mut self, mode: SparsityMode, mask: Option<Arc<Mask>>) -> FfiResult<()> {
        let n_layer = self.model.facts.n_layer as usize;
        if mode.is_dense() {
            sparsity_engine::uninstall(&mut self.inner)?;
            self.sparse = None;
        } else {
            if mode.needs_sidecar() && mask.is_none() {
                return invalid_arg(
                    "this sparsity mode uses calibration data: set a mask with gc_ctx_set_mask \
                     first (gc_mask_calibrate or gc_mask_load)",
                );
            }
            let plans = resolve_plans(&mode, mask.as_ref().map(|m| &m.sidecar), n_layer)?;
            // This CPU's measured path costs, where `ghost tune` cached them and did not find
            // them slower in decode (never measured here: that takes seconds); else the
            // built-in curves.
            let shape = FfnShape::of_model(&self.model.inner);
            ghostcore::sparsity::path_costs::cache::install_cached(
                &shape,
                self.inner.n_threads(),
                Some(&mode.to_string()),
            );
            let copies = mask.as_ref().and_then(|m| m.copies.clone());
            self.sparse = Some(sparsity_engine::install(&mut self.inner, plans, copies)?);
        }
        self.mode = mode;
        self.mask = mask;
        Ok(())
    }

    /// Measures this CPU's sparse path costs at the model's FFN shape (or reads the cached
    /// ones unless `force`), checks them in decode against the built-in ones with the
    /// context's sparsity setting, keeps them if they were not slower, then turns off the
    /// sparse path classes that decode faster without ([`tune_in_decode`]); the verdicts are
    /// cached, all for the context's thread count. Returns the measured curves' decode speed
    /// relative to the built-in ones. The context's token history is cleared.
    pub fn tune_path_costs(&mut self, force: bool) -> FfiResult<f64> {
        use ghostcore::sparsity::engine::PoolSplitter;
        use ghostcore::sparsity::path_costs::cache::{load_or_measure, Source};
        use ghostcore::sparsity::path_costs::check::{
            record_and_install, tune_in_decode, CheckOptions,
        };
        use ghostcore::sparsity::path_costs::measure::MeasureOptions;
        use ghostcore::threadpool::ThreadPool;
        if self.inner.is_accelerated() {
            return invalid_arg(
                "path costs steer the CPU's sparse kernels: this context runs on the GPU",
            );
        }
        if self.mode.is_dense() {
            return invalid_arg(
                "this context is dense, and the path-cost check decodes with its sparsity: set a sparse \
                 mode first (gc_ctx_set_sparsity or gc_ctx_set_mask)",
            );
        }
        let Some(sparse) = &self.sparse else {
            return invalid_arg("this context has no sparse FFN installed");
        };
        let shape = FfnShape::of_model(&self.model.inner);
        let n_threads = self.inner.n_threads();
        let (costs, source) = {
            // Measured with the context's worker count, on a pool of its own (the context's
            // stays idle meanwhile).
            let pool = ThreadPool::new(n_threads)?;
            let exec = PoolSplitter(&pool);
            load_or_measure(
                &shape,
                &MeasureOptions::default(),
                &exec,
                force,
                &mut |_| {},
            )?
        };
        let file = match source {
            Source::Cached(p) | Source::Measured(Some(p)) => p,
            Source::Measured(None) => {
                return unsupported("no cache directory to keep measured path costs in")
            }
            Source::Builtin(why) => return unsupported(format!("built-in path costs: {why}")),
        };
        let mode = self.mode.to_string();
        let tuned = tune_in_decode(
            &mut self.inner,
            sparse,
            &costs,
            &mode,
            &CheckOptions::default(),
        );
        self.reset();
        let verdicts = tuned?;
        record_and_install(&file, &shape, n_threads, &costs, &verdicts)?;
        Ok(verdicts.checks.first().map_or(1.0, |c| c.speedup))
    }

    /// What this CPU's tune (gc_ctx_tune_path_costs or `ghost tune`) found when it decoded
    /// the context's sparsity mode, at its thread count, with the sparse FFN against the
    /// dense one: `None` where it was never tuned with that mode (or on the GPU, where the
    /// CPU's tune does not apply).
    pub fn sparse_check(
        &self,
    ) -> FfiResult<Option<ghostcore::sparsity::path_costs::cache::SparseCheck>> {
        use ghostcore::sparsity::path_costs::cache;
        if self.mode.is_dense() {
            return invalid_arg(
                "this context is dense: set a sparse mode first (gc_ctx_set_sparsity or \
                 gc_ctx_set_mask)",
            );
        }
        if self.inner.is_accelerated() {
            return Ok(None);
        }
        let shape = FfnShape::of_model(&self.model.inner);
        let n_threads = self.inner.n_threads();
        let Some(file) = cache::cache_path(&shape, n_threads) else {
            return Ok(None);
        };
        let cached = cache::read(&file, &shape, n_threads)?;
        Ok(cached.and_then(|c| c.verdicts.sparse_check_for(&self.mode.to_string()).cloned()))
    }

    /// Fails with a clear message when `n` more tokens do not fit.
    fn check_room(&self, n: usize) -> FfiResult<()> {
        let (past, cap) = (self.inner.n_past(), self.inner.n_ctx());
        if past + n > cap {
            return invalid_arg(format!(
                "context full: {past} tokens held + {n} new > n_ctx {cap} (gc_ctx_reset, or a \
                 larger n_ctx)"
            ));
        }
        Ok(())
    }

    /// Tokenizes `prompt` (BOS only when the context is empty and `add_special`), decodes
    /// it, then samples; `on_piece(bytes, token)` gets each generated token's text and
    /// returns false to stop.
    pub fn generate(
        &mut self,
        prompt: &str,
        options: GenerateOptions,
        on_piece: &mut dyn FnMut(&[u8], u32) -> bool,
    ) -> FfiResult<(StopReason, GenerateFigures)> {
        let model = Arc::clone(&self.model);
        let tok = model.tokenizer()?;
        let add_special = options.add_special && self.inner.n_past() == 0;
        let ids = tok.encode(prompt, add_special, options.parse_special)?;
        if ids.is_empty() && self.inner.n_past() == 0 {
            return invalid_arg("the prompt is empty (no tokens) and the context holds none");
        }
        self.check_room(ids.len())?;
        if let Some(h) = &self.sparse {
            h.reset();
            self.inner.reset_accelerated_ffn_counts()?;
        }
        let params = GenerateParams {
            max_tokens: options.max_tokens as usize,
            sampling: SamplerParams {
                temperature: options.temperature,
                top_k: options.top_k as usize,
                top_p: options.top_p,
                min_p: options.min_p,
                repeat_penalty: options.repeat_penalty,
                repeat_last_n: options.repeat_last_n as usize,
                seed: options.seed,
                ..SamplerParams::default()
            },
            ignore_eog: !options.stop_at_eog,
        };
        let stats = generate_tokens(
            &mut self.inner,
            &ids,
            &params,
            |t| tok.is_eog(t),
            |t| {
                let piece = tok.token_to_piece(t, true)?;
                Ok(on_piece(&piece, t))
            },
        )?;
        self.has_logits = true;
        let sparsity = match &self.sparse {
            // On a GPU context the device counters hold the tally.
            Some(h) => current_tally(&self.inner, h.tally())?.sparsity() as f32,
            None => 0.0,
        };
        let small = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        let reason = match stats.stop {
            EngineStop::Length => StopReason::MaxTokens,
            EngineStop::EndOfGeneration => StopReason::EndOfGeneration,
            EngineStop::Callback => StopReason::Callback,
            EngineStop::ContextFull => StopReason::ContextFull,
        };
        let figures = GenerateFigures {
            n_prompt_tokens: small(stats.prompt_tokens),
            n_generated_tokens: small(stats.generated_tokens),
            prompt_seconds: stats.prompt_time.as_secs_f64(),
            generate_seconds: stats.generation_time.as_secs_f64(),
            sparsity,
        };
        Ok((reason, figures))
    }
}
