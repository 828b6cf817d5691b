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

use ghostcore::gguf::{GgufFile, Value};
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
    #[allow(dead_code)] // read by the forward pass once it lands
    gguf: Arc<GgufFile>,
    tokenizer: Tokenizer,
    pub facts: ModelFacts,
}

const FORWARD_MISSING: &str =
    "the forward pass is not in this build yet (branch `forward` of GhostCore)";

impl Model {
    pub fn load(path: &Path, options: ModelOptions) -> FfiResult<Model> {
        if options.use_gpu {
            return unsupported(format!(
                "GPU device {} requested, but this build has no CUDA backend",
                options.gpu_device
            ));
        }
        let gguf = GgufFile::open(path)?;
        let facts = read_facts(&gguf)?;
        let tokenizer = Tokenizer::from_gguf(&gguf)?;
        Ok(Model {
            gguf,
            tokenizer,
            facts,
        })
    }

    pub fn tokenize(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> FfiResult<Vec<u32>> {
        Ok(self.tokenizer.encode(text, add_special, parse_special)?)
    }

    pub fn token_to_piece(&self, token: u32, special: bool) -> FfiResult<Vec<u8>> {
        self.check_token(token)?;
        Ok(self.tokenizer.token_to_piece(token, special)?)
    }

    pub fn detokenize(&self, tokens: &[u32], remove_special: bool) -> FfiResult<Vec<u8>> {
        for &t in tokens {
            self.check_token(t)?;
        }
        Ok(self.tokenizer.decode_bytes(tokens, remove_special)?)
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
#[allow(dead_code)] // constructed once the forward pass lands
pub(crate) struct Context {
    model: Arc<Model>,
    options: ContextOptions,
    sparsity: Sparsity,
}

impl Context {
    pub fn new(model: Arc<Model>, options: ContextOptions) -> FfiResult<Context> {
        let _ = (&model.gguf, options);
        unsupported(format!("cannot create a context: {FORWARD_MISSING}"))
    }

    pub fn reset(&mut self) {}

    pub fn decode(&mut self, tokens: &[u32]) -> FfiResult<()> {
        for &t in tokens {
            self.model.check_token(t)?;
        }
        unsupported(FORWARD_MISSING)
    }

    pub fn logits(&self) -> FfiResult<&[f32]> {
        unsupported(FORWARD_MISSING)
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

    pub fn generate(
        &mut self,
        prompt: &str,
        options: GenerateOptions,
        _on_piece: &mut dyn FnMut(&[u8], u32) -> bool,
    ) -> FfiResult<(StopReason, GenerateFigures)> {
        let _ = self
            .model
            .tokenize(prompt, options.add_special, options.parse_special)?;
        unsupported(FORWARD_MISSING)
    }
}

/// Reads the model facts from GGUF metadata: `general.architecture`,
/// `<arch>.context_length`, `<arch>.block_count`, `<arch>.embedding_length`, the length of
/// `tokenizer.ggml.tokens`, and the element count of all tensors.
fn read_facts(gguf: &GgufFile) -> FfiResult<ModelFacts> {
    let format_err =
        |what: String| crate::status::FfiError::new(crate::status::gc_status::GC_ERR_FORMAT, what);
    let arch = gguf
        .architecture()
        .ok_or_else(|| format_err("GGUF has no general.architecture".into()))?
        .to_string();
    let arch_u32 = |key: &str| -> FfiResult<u32> {
        let full = format!("{arch}.{key}");
        let v = gguf
            .get_u64(&full)
            .ok_or_else(|| format_err(format!("GGUF has no integer {full}")))?;
        u32::try_from(v).map_err(|_| format_err(format!("{full} = {v} is out of range")))
    };
    let n_vocab = match gguf.get("tokenizer.ggml.tokens") {
        Some(Value::Array(a)) => u32::try_from(a.len())
            .map_err(|_| format_err("tokenizer.ggml.tokens is too long".into()))?,
        _ => return Err(format_err("GGUF has no tokenizer.ggml.tokens array".into())),
    };
    let n_params = gguf
        .tensors()
        .iter()
        .fold(0u64, |acc, t| acc.saturating_add(t.n_elements()));
    let c = |s: &str| CString::new(s.replace('\0', "")).unwrap_or_default();
    Ok(ModelFacts {
        architecture: c(&arch),
        name: c(gguf.get_str("general.name").unwrap_or("")),
        n_params,
        n_ctx_train: arch_u32("context_length")?,
        n_vocab,
        n_layer: arch_u32("block_count")?,
        n_embd: arch_u32("embedding_length")?,
    })
}
