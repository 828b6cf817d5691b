//! An inference context: one sequence's KV cache, scratch memory, thread pool and logits,
//! over a shared read-only [`Model`].
//!
//! Positions are implicit: [`Context::decode`] appends its tokens at [`Context::n_past`].
//! Appending past `n_ctx` fails with `Error::InvalidArgument` and leaves the context
//! unchanged (nothing of the rejected batch is stored); call [`Context::reset`] or
//! [`Context::truncate`] to make room.

use std::sync::Arc;

use crate::backend::cpu::linear::ActMath;
use crate::backend::{AcceleratedForward, Device, LayerFfnCounts, LayerFfnSparsity};
use crate::model::ffn::{DecodeFfn, FfnObserver};
use crate::model::forward::{self, FfnHooks, KvCache, LogitsFor, Scratch};
use crate::model::Model;
use crate::threadpool::ThreadPool;
use crate::{bail, Result};

/// Options for [`Context::new`].
#[derive(Debug, Clone)]
pub struct ContextParams {
    /// KV-cache capacity in tokens; 0 means `min(n_ctx_train, 4096)`.
    pub n_ctx: usize,
    /// Largest micro-batch run through the model at once; longer inputs are split.
    pub n_batch: usize,
    /// Compute threads (including the caller); 0 means one per available core.
    pub n_threads: usize,
    /// Batches of at least [`crate::model::forward::EXACT_MIN_BATCH`] tokens use f32
    /// activations against dequantized weights, which reproduces llama.cpp's batched logits
    /// closely; `false` quantizes activations to 8 bits as single tokens and small batches
    /// always do (faster prefill, logits further from llama.cpp's).
    pub exact_prefill: bool,
    /// Where the forward pass runs. [`Device::Gpu`] falls back to the CPU (with a one-time
    /// note on stderr) where this build or machine has no usable GPU.
    pub device: Device,
}

impl Default for ContextParams {
    fn default() -> Self {
        ContextParams {
            n_ctx: 0,
            n_batch: 512,
            n_threads: 0,
            exact_prefill: true,
            device: Device::Cpu,
        }
    }
}

pub struct Context {
    model: Arc<Model>,
    pool: ThreadPool,
    n_ctx: usize,
    /// The device forward pass when the context runs on a GPU (its KV cache lives there and
    /// `kv` is empty).
    accel: Option<Box<dyn AcceleratedForward>>,
    kv: KvCache,
    scratch: Scratch,
    n_past: usize,
    /// Logits of the last decode: `n_vocab` floats, or `n_tokens * n_vocab` after
    /// [`Context::decode_all_logits`].
    logits: Vec<f32>,
    n_logit_rows: usize,
    all_logits: Vec<f32>,
    decode_ffn: Vec<Option<Arc<dyn DecodeFfn>>>,
    decode_ffn_in_batches: bool,
    observer: Option<Box<dyn FfnObserver>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("n_ctx", &self.n_ctx)
            .field("device", &self.accel.as_ref().map(|a| a.describe()))
            .field("n_past", &self.n_past)
            .field("n_threads", &self.pool.n_threads())
            .finish()
    }
}

impl Context {
    pub fn new(model: Arc<Model>, params: ContextParams) -> Result<Context> {
        let n_ctx = if params.n_ctx == 0 {
            model.config().n_ctx_train.min(4096)
        } else {
            params.n_ctx
        };
        if n_ctx > (1 << 24) {
            bail!(InvalidArgument, "n_ctx {n_ctx} is too large");
        }
        if params.n_batch == 0 {
            bail!(InvalidArgument, "n_batch must be positive");
        }
        let n_batch = params.n_batch.min(n_ctx);
        let pool = ThreadPool::new(params.n_threads)?;
        let accel = match params.device {
            Device::Cpu => None,
            Device::Gpu => match crate::backend::open_accelerated(&model, n_ctx)? {
                Ok(a) => Some(a),
                Err(why) => {
                    note_cpu_fallback(&why);
                    None
                }
            },
        };
        // A GPU context keeps its cache on the device.
        let kv = KvCache::new(&model, if accel.is_some() { 0 } else { n_ctx })?;
        let mut scratch = Scratch::new(&model, n_batch);
        if !params.exact_prefill {
            scratch.prefill_math = ActMath::Quantized;
            scratch.output_math = ActMath::Quantized;
        }
        let n_layer = model.config().n_layer;
        let n_vocab = model.config().n_vocab;
        Ok(Context {
            model,
            pool,
            n_ctx,
            accel,
            kv,
            scratch,
            n_past: 0,
            logits: vec![0.0; n_vocab],
            n_logit_rows: 0,
            all_logits: Vec::new(),
            decode_ffn: vec![None; n_layer],
            decode_ffn_in_batches: false,
            observer: None,
        })
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// The accelerator this context runs on (`None`: the CPU).
    pub fn device_description(&self) -> Option<String> {
        self.accel.as_ref().map(|a| a.describe())
    }

    pub fn n_batch(&self) -> usize {
        self.scratch.n_batch
    }

    /// Tokens currently in the KV cache (the position of the next token).
    pub fn n_past(&self) -> usize {
        self.n_past
    }

    pub fn n_threads(&self) -> usize {
        self.pool.n_threads()
    }

    /// Replaces the thread pool (0 = one thread per core).
    pub fn set_n_threads(&mut self, n_threads: usize) -> Result<()> {
        if n_threads != self.pool.n_threads() || n_threads == 0 {
            self.pool = ThreadPool::new(n_threads)?;
        }
        Ok(())
    }

    /// The thread pool (for FFN overrides and tools that run their own parallel work).
    pub fn pool(&self) -> &ThreadPool {
        &self.pool
    }

    /// Seconds spent per forward-pass phase since the last reset (all zero unless the
    /// environment variable `GHOST_PROFILE=1` was set when the context was created).
    pub fn profile(&self) -> Vec<(&'static str, f64)> {
        self.scratch.prof.report()
    }

    pub fn reset_profile(&mut self) {
        self.scratch.prof.reset();
    }

    /// Bytes held by the KV cache.
    pub fn kv_size_bytes(&self) -> usize {
        match &self.accel {
            Some(a) => a.kv_size_bytes(),
            None => self.kv.size_bytes(),
        }
    }

    /// Forgets every token.
    pub fn reset(&mut self) {
        self.n_past = 0;
        self.n_logit_rows = 0;
    }

    /// Keeps only the first `n_past` tokens (no-op if already shorter).
    pub fn truncate(&mut self, n_past: usize) {
        self.n_past = self.n_past.min(n_past);
        self.n_logit_rows = 0;
    }

    /// Uses `ffn` instead of the dense FFN of `layer` for single-token steps (`None` restores
    /// the dense FFN).
    pub fn set_decode_ffn(&mut self, layer: usize, ffn: Option<Arc<dyn DecodeFfn>>) -> Result<()> {
        if ffn.is_some() {
            self.require_cpu("CPU FFN overrides (sparse decode)")?;
        }
        match self.decode_ffn.get_mut(layer) {
            Some(slot) => *slot = ffn,
            None => bail!(
                InvalidArgument,
                "layer {layer} out of range (model has {})",
                self.decode_ffn.len()
            ),
        }
        Ok(())
    }

    /// The FFN overrides installed per layer (`None`: the dense FFN), e.g. to reinstall the
    /// same ones later with [`Context::set_decode_ffn`].
    pub fn decode_ffns(&self) -> &[Option<Arc<dyn DecodeFfn>>] {
        &self.decode_ffn
    }

    /// Whether this context runs on an accelerator (the GPU) rather than the CPU.
    pub fn is_accelerated(&self) -> bool {
        self.accel.is_some()
    }

    /// On an accelerated context: runs single-token steps with the sparse FFN described per
    /// layer (see [`LayerFfnSparsity`]); `None` restores the dense FFN. On the CPU the sparse
    /// FFN is installed with [`Context::set_decode_ffn`] instead (`Unsupported` here).
    pub fn set_accelerated_ffn_sparsity(
        &mut self,
        layers: Option<&[Option<LayerFfnSparsity<'_>>]>,
    ) -> Result<()> {
        match &mut self.accel {
            Some(a) => a.set_ffn_sparsity(layers),
            None => bail!(
                Unsupported,
                "the CPU context takes its sparse FFN through set_decode_ffn"
            ),
        }
    }

    /// On an accelerated context: switches its sparse FFN off and on again (no-op on the CPU
    /// or without one).
    pub fn set_accelerated_ffn_sparsity_enabled(&mut self, on: bool) -> Result<()> {
        match &mut self.accel {
            Some(a) => a.set_ffn_sparsity_enabled(on),
            None => Ok(()),
        }
    }

    /// On an accelerated context with a sparse FFN: per layer, what it read since the last
    /// reset. `None` otherwise.
    pub fn accelerated_ffn_counts(&self) -> Result<Option<Vec<LayerFfnCounts>>> {
        match &self.accel {
            Some(a) => a.ffn_sparsity_counts(),
            None => Ok(None),
        }
    }

    pub fn reset_accelerated_ffn_counts(&mut self) -> Result<()> {
        match &mut self.accel {
            Some(a) => a.reset_ffn_sparsity_counts(),
            None => Ok(()),
        }
    }

    /// Measurement switch: when on, the [`DecodeFfn`] overrides also run (row by row) for
    /// multi-token batches, so a batched perplexity run sees the sparse FFN at every position.
    /// Off by default: prefill stays dense.
    pub fn set_decode_ffn_in_batches(&mut self, on: bool) {
        self.decode_ffn_in_batches = on;
    }

    /// Installs (or removes) an observer of dense-FFN activations.
    pub fn set_ffn_observer(
        &mut self,
        observer: Option<Box<dyn FfnObserver>>,
    ) -> Result<Option<Box<dyn FfnObserver>>> {
        if observer.is_some() {
            self.require_cpu("FFN observers (calibration)")?;
        }
        Ok(std::mem::replace(&mut self.observer, observer))
    }

    fn require_cpu(&self, what: &str) -> Result<()> {
        if let Some(a) = &self.accel {
            bail!(
                Unsupported,
                "{what} run on the CPU forward pass; this context runs on {}",
                a.describe()
            );
        }
        Ok(())
    }

    fn validate(&self, tokens: &[u32]) -> Result<()> {
        if tokens.is_empty() {
            bail!(InvalidArgument, "decode called with no tokens");
        }
        let n_vocab = self.model.config().n_vocab;
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= n_vocab) {
            bail!(
                InvalidArgument,
                "token id {bad} out of range (vocabulary size {n_vocab})"
            );
        }
        if self.n_past + tokens.len() > self.n_ctx {
            bail!(
                InvalidArgument,
                "context full: {} tokens in cache + {} new > n_ctx {}",
                self.n_past,
                tokens.len(),
                self.n_ctx
            );
        }
        Ok(())
    }

    fn run(&mut self, tokens: &[u32], which: LogitsFor) -> Result<()> {
        self.validate(tokens)?;
        let n_vocab = self.model.config().n_vocab;
        let nb = self.scratch.n_batch;
        if which == LogitsFor::All {
            let need = tokens.len() * n_vocab;
            if self.all_logits.len() < need {
                self.all_logits
                    .try_reserve(need - self.all_logits.len())
                    .map_err(|_| {
                        crate::Error::OutOfMemory(format!("logits for {} tokens", tokens.len()))
                    })?;
                self.all_logits.resize(need, 0.0);
            }
        }
        if let Some(accel) = &mut self.accel {
            let res = match which {
                LogitsFor::Last => accel.forward(tokens, self.n_past, which, &mut self.logits),
                LogitsFor::All => accel.forward(tokens, self.n_past, which, &mut self.all_logits),
            };
            if let Err(e) = res {
                self.n_logit_rows = 0;
                return Err(e);
            }
            self.n_past += tokens.len();
            self.finish_logits(which, tokens.len());
            return Ok(());
        }
        let start = self.n_past;
        let mut done = 0;
        while done < tokens.len() {
            let chunk = &tokens[done..(done + nb).min(tokens.len())];
            let mut hooks = FfnHooks {
                decode_overrides: &self.decode_ffn,
                overrides_in_batches: self.decode_ffn_in_batches,
                observer: self
                    .observer
                    .as_deref_mut()
                    .map(|o| o as &mut (dyn FfnObserver + 'static)),
            };
            let res = match which {
                LogitsFor::Last => forward::forward(
                    &self.model,
                    &self.pool,
                    &mut self.kv,
                    &mut self.scratch,
                    chunk,
                    self.n_past,
                    LogitsFor::Last,
                    &mut hooks,
                    &mut self.logits,
                ),
                LogitsFor::All => {
                    let mut rows = std::mem::take(&mut self.logits);
                    let r = forward::forward(
                        &self.model,
                        &self.pool,
                        &mut self.kv,
                        &mut self.scratch,
                        chunk,
                        self.n_past,
                        LogitsFor::All,
                        &mut hooks,
                        &mut rows,
                    );
                    let n = chunk.len() * n_vocab;
                    if r.is_ok() {
                        self.all_logits[done * n_vocab..done * n_vocab + n]
                            .copy_from_slice(&rows[..n]);
                    }
                    self.logits = rows;
                    r
                }
            };
            if let Err(e) = res {
                self.n_past = start;
                self.n_logit_rows = 0;
                return Err(e);
            }
            self.n_past += chunk.len();
            done += chunk.len();
        }
        self.finish_logits(which, tokens.len());
        Ok(())
    }

    /// Records how many logit rows the last run produced; after `All`, keeps the last row
    /// available through [`Context::logits`] too.
    fn finish_logits(&mut self, which: LogitsFor, n_tokens: usize) {
        match which {
            LogitsFor::Last => self.n_logit_rows = 1,
            LogitsFor::All => {
                let n_vocab = self.model.config().n_vocab;
                let last = (n_tokens - 1) * n_vocab;
                self.logits[..n_vocab].copy_from_slice(&self.all_logits[last..last + n_vocab]);
                self.n_logit_rows = n_tokens;
            }
        }
    }

    /// Appends `tokens` at the current position and computes the logits of the last one
    /// (read them with [`Context::logits`]). Errors (`InvalidArgument`): empty input, a token
    /// id outside the vocabulary, or not enough room in the cache; the context is unchanged.
    pub fn decode(&mut self, tokens: &[u32]) -> Result<()> {
        self.run(tokens, LogitsFor::Last)
    }

    /// As [`Context::decode`], but returns the logits of every input position
    /// (`tokens.len() * n_vocab`, row-major).
    pub fn decode_all_logits(&mut self, tokens: &[u32]) -> Result<&[f32]> {
        self.run(tokens, LogitsFor::All)?;
        Ok(&self.all_logits[..tokens.len() * self.model.config().n_vocab])
    }

    /// Logits of the last decoded token (`n_vocab` floats). All zeros before the first decode.
    pub fn logits(&self) -> &[f32] {
        &self.logits[..self.model.config().n_vocab]
    }
}

fn note_cpu_fallback(why: &str) {
    static NOTE: std::sync::Once = std::sync::Once::new();
    NOTE.call_once(|| eprintln!("ghostcore: GPU requested but {why}: running on the CPU"));
}
