//! Models: configuration from GGUF metadata, validated zero-copy weights, the FFN (with
//! hooks for the sparsity engine) and the dense forward pass.
//!
//! A [`Model`] is immutable once loaded and is shared (`Arc<Model>`) by any number of
//! [`crate::context::Context`]s on any threads.

pub mod config;
pub mod ffn;
pub mod forward;
pub mod weights;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use config::{Activation, Architecture, Config, RopeStyle, SUPPORTED_ARCHITECTURES};
pub use weights::{LayerWeights, Weight, Weights};

use crate::gguf::{GgufFile, Placement, WeightResidency};
use crate::tokenizer::Tokenizer;
use crate::Result;

/// Options for [`Model::load`].
#[derive(Debug, Clone, Default)]
pub struct ModelParams {
    /// Skip building the tokenizer (for pure-compute uses such as synthetic benchmarks).
    pub skip_tokenizer: bool,
    /// Where the weights are kept: a huge-page copy (default; faster CPU decode, one more copy
    /// of the file in memory) or the file's memory map.
    pub placement: Placement,
}

/// Summary of a loaded model.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub architecture: String,
    /// `general.name`, or the file stem.
    pub name: String,
    pub n_params: u64,
    pub n_ctx_train: usize,
    pub n_vocab: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub n_ff: usize,
    /// Size of the GGUF file in bytes.
    pub file_size: u64,
    /// Bytes of tensor data.
    pub tensor_bytes: u64,
    /// Most common matrix type (e.g. "Q4_K").
    pub dominant_type: String,
    pub load_time: Duration,
}

/// With `GHOST_DEBUG=1`, says on stderr where the weights live and how much of them the
/// kernel backs with huge pages (`AnonHugePages` of `/proc/self/smaps`).
fn log_residency(file: &GgufFile) {
    if !std::env::var("GHOST_DEBUG").is_ok_and(|v| v == "1") {
        return;
    }
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let len = file.bytes().len() as u64;
    match file.residency() {
        WeightResidency::HugePageCopy => {
            let huge = crate::gguf::anon_huge_page_bytes(file.bytes().as_ptr());
            let huge = huge.map_or("unknown".to_string(), |b| format!("{:.1} MiB", mib(b)));
            eprintln!(
                "ghostcore: weights copied to anonymous memory ({:.1} MiB), in huge pages: {huge}",
                mib(len)
            );
        }
        WeightResidency::MappedFallback(why) => eprintln!(
            "ghostcore: weights read from the file map ({:.1} MiB): huge-page copy failed: {why}",
            mib(len)
        ),
        WeightResidency::Mapped | WeightResidency::Buffer => {
            eprintln!(
                "ghostcore: weights read from the file map ({:.1} MiB)",
                mib(len)
            )
        }
    }
}

/// A loaded model: configuration, weight views into the mapped file.
pub struct Model {
    file: Arc<GgufFile>,
    config: Config,
    weights: Weights,
    info: ModelInfo,
    tokenizer: Option<Tokenizer>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("info", &self.info).finish()
    }
}

impl Model {
    /// Maps `path`, reads the configuration and validates every tensor (presence, shape,
    /// type). Errors: `Gguf`/`Io` for unreadable files, `Unsupported` for other
    /// architectures or tensor types, `Format` for missing or mis-shaped tensors.
    pub fn load(path: impl AsRef<Path>, params: &ModelParams) -> Result<Arc<Model>> {
        let t0 = Instant::now();
        let file = GgufFile::open_placed(path.as_ref(), params.placement)?;
        log_residency(&file);
        Self::from_gguf(file, params, t0)
    }

    /// Builds a model from an already opened GGUF file.
    pub fn from_file(file: Arc<GgufFile>, params: &ModelParams) -> Result<Arc<Model>> {
        Self::from_gguf(file, params, Instant::now())
    }

    fn from_gguf(file: Arc<GgufFile>, params: &ModelParams, t0: Instant) -> Result<Arc<Model>> {
        let config = Config::from_gguf(&file)?;
        let weights = Weights::load(&file, &config)?;
        let tokenizer = if params.skip_tokenizer {
            None
        } else {
            let t = Tokenizer::from_gguf(&file)?;
            if t.n_vocab() > config.n_vocab {
                crate::bail!(
                    Format,
                    "tokenizer has {} tokens but the model's embedding has only {}",
                    t.n_vocab(),
                    config.n_vocab
                );
            }
            Some(t)
        };
        let n_params: u64 = file.tensors().iter().map(|t| t.n_elements()).sum();
        let tensor_bytes: u64 = file.tensors().iter().map(|t| t.size).sum();
        let mut by_type: std::collections::BTreeMap<&'static str, u64> = Default::default();
        for t in file.tensors() {
            if t.dims.len() >= 2 {
                *by_type.entry(t.ty.name()).or_default() += t.size;
            }
        }
        let dominant_type = by_type
            .iter()
            .max_by_key(|(_, &b)| b)
            .map(|(n, _)| n.to_string())
            .unwrap_or_default();
        let name = file
            .get_str("general.name")
            .map(str::to_string)
            .or_else(|| {
                file.path()
                    .and_then(|p| p.file_stem())
                    .map(|s| s.to_string_lossy().into_owned())
            })
            .unwrap_or_default();
        let info = ModelInfo {
            architecture: config.arch.name().to_string(),
            name,
            n_params,
            n_ctx_train: config.n_ctx_train,
            n_vocab: config.n_vocab,
            n_embd: config.n_embd,
            n_layer: config.n_layer,
            n_head: config.n_head,
            n_head_kv: config.n_head_kv,
            n_ff: config.n_ff,
            file_size: file.bytes().len() as u64,
            tensor_bytes,
            dominant_type,
            load_time: t0.elapsed(),
        };
        Ok(Arc::new(Model {
            file,
            config,
            weights,
            info,
            tokenizer,
        }))
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The model's tokenizer (`InvalidArgument` if it was skipped at load).
    pub fn tokenizer(&self) -> Result<&Tokenizer> {
        match &self.tokenizer {
            Some(t) => Ok(t),
            None => crate::bail!(InvalidArgument, "model was loaded without its tokenizer"),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    pub fn layer(&self, il: usize) -> &LayerWeights {
        &self.weights.layers[il]
    }

    /// The GGUF file the weights live in.
    pub fn gguf(&self) -> &Arc<GgufFile> {
        &self.file
    }

    /// The raw bytes of a weight.
    pub fn bytes(&self, w: &Weight) -> &[u8] {
        &self.file.bytes()[w.offset..w.offset + w.len]
    }

    /// An F32 vector weight (norms, biases) as floats.
    pub fn f32s(&self, w: &Weight) -> &[f32] {
        let b = self.bytes(w);
        // SAFETY: GGUF tensor data is aligned to at least 32 bytes (validated by the reader),
        // F32 weights are checked at load to be `n_cols * n_rows` floats, and every bit
        // pattern is a valid f32.
        let (pre, floats, _) = unsafe { b.align_to::<f32>() };
        assert!(pre.is_empty(), "F32 tensor data is not 4-byte aligned");
        floats
    }
}
