//! The one place where the C ABI meets the Rust engine. Everything above this module
//! speaks C types; everything here speaks `ghostcore` types. While parts of the engine are
//! still being written, the calls that need them return `GC_ERR_UNSUPPORTED` from here,
//! with a message saying what is missing, so the ABI above stays stable.

// Option structs and stop reasons are filled in by the layers above and read by the engine
// calls that are still placeholders; they go live as the engine lands.
#![allow(dead_code)]

use std::ffi::CString;
use std::path::Path;
use std::sync::Arc;

use ghostcore::context::{Context as EngineContext, ContextParams};
use ghostcore::generate::{generate_tokens, GenerateParams, StopReason as EngineStop};
use ghostcore::model::{Model as EngineModel, ModelParams};
use ghostcore::sampling::SamplerParams;
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
    pub facts: ModelFacts,
}

impl Model {
    pub fn load(path: &Path, options: ModelOptions) -> FfiResult<Model> {
        if options.use_gpu {
            return unsupported(format!(
                "GPU device {} requested, but this build has no CUDA backend",
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
        Ok(Model { inner, facts })
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

/// FFN sparsity settings of a context (from gc_sparsity_params / gc_ctx_set_mask).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Sparsity {
    Dense,
    Threshold(f32),
    Target(f32),
}

/// A calibrated sparsity mask (sidecar). The sparsity engine does not exist yet, so no
/// value of this type can be made; the ABI functions that would make one report
/// GC_ERR_UNSUPPORTED.
pub(crate) enum Mask {}

pub(crate) const SPARSITY_MISSING: &str =
    "the sparsity engine (calibration, masks) is not in this build yet";

/// Calibration options after validation (from gc_calibrate_params).
#[derive(Clone, Copy, Debug)]
pub(crate) struct CalibrateOptions {
    pub target_sparsity: f32,
    pub max_tokens_per_text: u32,
    pub n_threads: u32,
}

impl Mask {
    pub fn calibrate(
        _model: &Arc<Model>,
        _texts: &[&str],
        _options: CalibrateOptions,
    ) -> FfiResult<Mask> {
        unsupported(SPARSITY_MISSING)
    }

    pub fn load(_model: &Arc<Model>, _path: &Path) -> FfiResult<Mask> {
        unsupported(SPARSITY_MISSING)
    }

    pub fn save(&self, _path: &Path) -> FfiResult<()> {
        match *self {}
    }
}

/// One inference context: KV cache, logits, sampler state. Used by one thread at a time.
pub(crate) struct Context {
    model: Arc<Model>,
    inner: EngineContext,
    sparsity: Sparsity,
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
            },
        )?;
        Ok(Context {
            model,
            inner,
            sparsity: Sparsity::Dense,
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

    pub fn set_sparsity(&mut self, sparsity: Sparsity) -> FfiResult<()> {
        match sparsity {
            Sparsity::Dense => {
                self.sparsity = sparsity;
                Ok(())
            }
            _ => unsupported(SPARSITY_MISSING),
        }
    }

    pub fn set_mask(&mut self, mask: Option<&Mask>) -> FfiResult<()> {
        match mask {
            None => self.set_sparsity(Sparsity::Dense),
            Some(m) => match *m {},
        }
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
            // Only dense decoding exists until the sparsity engine lands.
            sparsity: 0.0,
        };
        Ok((reason, figures))
    }
}
