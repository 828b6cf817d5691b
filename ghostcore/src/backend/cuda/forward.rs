//! The decode-shaped forward pass on a CUDA device: the model's weights uploaded once, the
//! KV cache and every intermediate on the device, one token at a time through the same
//! layer recipe as the CPU forward pass (`crate::model::forward`), logits copied back once
//! per token that needs them.
//!
//! Prompts run in batches of [`GPU_BATCH`] tokens: every projection is one `gc_matmul_*`
//! launch that reads each weight once per 8 tokens (no tensor-core GEMM yet), attention one
//! launch pair per token.

use std::sync::Arc;

use super::buffers::{
    DecodeStep, DeviceActivations, DeviceMatrix, DeviceVec, FfnCounters, KvCache, KvCacheShape,
    NeuronMajorDown, SparseFfnScratch,
};
use super::device::{CudaBackend, RecordedGraph};
use super::ops::{AttentionWorkspace, GatedActivation, RopeParams, RopeStyle, SparseFfnRule};
use crate::backend::{AcceleratedForward, LayerFfnCounts, LayerFfnSparsity, LogitsFor};
use crate::model::config::{Activation, Config, RopeStyle as ModelRopeStyle};
use crate::model::{Model, Weight};
use crate::{bail, Result};

/// One transformer layer's weights on the device.
struct DeviceLayer {
    attn_norm: DeviceVec,
    wq: DeviceMatrix,
    wk: DeviceMatrix,
    wv: DeviceMatrix,
    wo: DeviceMatrix,
    bq: Option<DeviceVec>,
    bk: Option<DeviceVec>,
    bv: Option<DeviceVec>,
    q_norm: Option<DeviceVec>,
    k_norm: Option<DeviceVec>,
    post_attn_norm: Option<DeviceVec>,
    ffn_norm: DeviceVec,
    ffn_gate: DeviceMatrix,
    ffn_up: DeviceMatrix,
    ffn_down: DeviceMatrix,
    post_ffn_norm: Option<DeviceVec>,
}

/// One layer's sparse decode FFN on the device (see [`LayerFfnSparsity`]).
struct SparseLayer {
    act_threshold: f32,
    scale: Option<DeviceVec>,
    product_threshold: f32,
    /// Neuron-major down copy; `None`: the model's own down over the zero-padded hidden vector.
    down: Option<NeuronMajorDown>,
}

/// The sparse FFN of single-token steps: per-layer rules, scratch and read counters.
struct SparseFfn {
    layers: Vec<Option<SparseLayer>>,
    scratch: SparseFfnScratch,
    counters: FfnCounters,
    /// Single-token steps counted since the last reset.
    tokens: u64,
    enabled: bool,
}

/// Tokens per batch of the device forward pass (prompts are split into such batches).
pub const GPU_BATCH: usize = 64;

/// Intermediates of a batch of up to [`GPU_BATCH`] tokens, allocated once; rows of a batch
/// are contiguous.
struct Scratch {
    /// Residual stream, `n_embd` per token.
    x: DeviceVec,
    /// Normed input of the attention and FFN projections, `n_embd`.
    xn: DeviceActivations,
    q: DeviceVec,
    k: DeviceVec,
    v: DeviceVec,
    /// Attention output (input of `wo`), `n_head * head_dim`.
    att: DeviceActivations,
    /// Gate, then the gated activation (input of `ffn_down`), `n_ff`.
    hidden: DeviceActivations,
    up: DeviceVec,
    /// Output of `wo` / `ffn_down`, `n_embd`.
    tmp: DeviceVec,
    logits: DeviceVec,
    attn: AttentionWorkspace,
}

/// A model resident on a CUDA device with one sequence's KV cache.
pub struct CudaForward {
    gpu: Arc<CudaBackend>,
    cfg: Config,
    token_embd: DeviceMatrix,
    /// `None` when the output head is the (tied) embedding table.
    output: Option<DeviceMatrix>,
    output_norm: DeviceVec,
    layers: Vec<DeviceLayer>,
    kv: KvCache,
    s: Scratch,
    weight_bytes: usize,
    /// Token, position and attention ranges of the next single-token step, on the device.
    step: DecodeStep,
    /// The single-token step recorded once and replayed for every decode token (one launch
    /// instead of ~20 per layer). `None` until the first decode, or when graphs are off.
    graph: Option<RecordedGraph>,
    /// Graphs on (default; `GHOST_CUDA_GRAPHS=0` turns them off, and a failed capture does).
    use_graphs: bool,
    /// The sparse decode FFN, when set.
    sparse: Option<SparseFfn>,
}

impl std::fmt::Debug for CudaForward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaForward")
            .field("device", &self.gpu.info().name)
            .field("n_ctx", &self.kv.shape().max_ctx)
            .field("weight_bytes", &self.weight_bytes)
            .finish_non_exhaustive()
    }
}

fn matrix(gpu: &CudaBackend, model: &Model, w: &Weight, bytes: &mut usize) -> Result<DeviceMatrix> {
    let m = DeviceMatrix::upload(gpu, w.ty, w.n_cols, w.n_rows, model.bytes(w))?;
    *bytes += m.size_bytes();
    Ok(m)
}

fn vector(gpu: &CudaBackend, model: &Model, w: &Weight) -> Result<DeviceVec> {
    DeviceVec::from_host(gpu, model.f32s(w))
}

fn opt_vector(gpu: &CudaBackend, model: &Model, w: &Option<Weight>) -> Result<Option<DeviceVec>> {
    w.as_ref().map(|w| vector(gpu, model, w)).transpose()
}

impl CudaForward {
    /// Uploads `model`'s weights to `gpu` and allocates a KV cache of `n_ctx` positions.
    /// Errors: a weight type without CUDA kernels (`Unsupported`), a shape the kernels cannot
    /// take, or not enough device memory (`OutOfMemory`); nothing stays allocated then.
    pub fn new(gpu: Arc<CudaBackend>, model: &Model, n_ctx: usize) -> Result<CudaForward> {
        let cfg = model.config().clone();
        if cfg.head_dim_k != cfg.head_dim_v {
            bail!(
                Unsupported,
                "CUDA forward: key head size {} differs from value head size {}",
                cfg.head_dim_k,
                cfg.head_dim_v
            );
        }
        let g = &*gpu;
        let w = model.weights();
        let mut weight_bytes = 0;
        let token_embd = matrix(g, model, &w.token_embd, &mut weight_bytes)?;
        let output = if w.tied_embeddings {
            None
        } else {
            Some(matrix(g, model, &w.output, &mut weight_bytes)?)
        };
        let output_norm = vector(g, model, &w.output_norm)?;
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for lw in &w.layers {
            layers.push(DeviceLayer {
                attn_norm: vector(g, model, &lw.attn_norm)?,
                wq: matrix(g, model, &lw.wq, &mut weight_bytes)?,
                wk: matrix(g, model, &lw.wk, &mut weight_bytes)?,
                wv: matrix(g, model, &lw.wv, &mut weight_bytes)?,
                wo: matrix(g, model, &lw.wo, &mut weight_bytes)?,
                bq: opt_vector(g, model, &lw.bq)?,
                bk: opt_vector(g, model, &lw.bk)?,
                bv: opt_vector(g, model, &lw.bv)?,
                q_norm: opt_vector(g, model, &lw.q_norm)?,
                k_norm: opt_vector(g, model, &lw.k_norm)?,
                post_attn_norm: opt_vector(g, model, &lw.post_attn_norm)?,
                ffn_norm: vector(g, model, &lw.ffn_norm)?,
                ffn_gate: matrix(g, model, &lw.ffn_gate, &mut weight_bytes)?,
                ffn_up: matrix(g, model, &lw.ffn_up, &mut weight_bytes)?,
                ffn_down: matrix(g, model, &lw.ffn_down, &mut weight_bytes)?,
                post_ffn_norm: opt_vector(g, model, &lw.post_ffn_norm)?,
            });
        }
        let kv = KvCache::new(
            g,
            KvCacheShape {
                n_layers: cfg.n_layer,
                n_kv_heads: cfg.n_head_kv,
                head_dim: cfg.head_dim_k,
                max_ctx: n_ctx,
            },
        )?;
        let att_dim = cfg.n_head * cfg.head_dim_v;
        let b = GPU_BATCH;
        let s = Scratch {
            x: DeviceVec::zeros(g, b * cfg.n_embd)?,
            xn: DeviceActivations::new(g, b * cfg.n_embd)?,
            q: DeviceVec::zeros(g, b * cfg.q_dim())?,
            k: DeviceVec::zeros(g, b * cfg.k_dim())?,
            v: DeviceVec::zeros(g, b * cfg.v_dim())?,
            att: DeviceActivations::new(g, b * att_dim)?,
            hidden: DeviceActivations::new(g, b * cfg.n_ff)?,
            up: DeviceVec::zeros(g, b * cfg.n_ff)?,
            tmp: DeviceVec::zeros(g, b * cfg.n_embd)?,
            logits: DeviceVec::zeros(g, b * cfg.n_vocab)?,
            attn: AttentionWorkspace::new(g, cfg.n_head, cfg.head_dim_k, n_ctx)?,
        };
        let step = DecodeStep::new(g, n_ctx, cfg.n_vocab)?;
        gpu.synchronize()?;
        let use_graphs = std::env::var("GHOST_CUDA_GRAPHS").map_or(true, |v| v != "0");
        Ok(CudaForward {
            step,
            graph: None,
            use_graphs,
            gpu,
            cfg,
            token_embd,
            output,
            output_norm,
            layers,
            kv,
            s,
            weight_bytes,
            sparse: None,
        })
    }

    /// Bytes of weight matrices on the device.
    pub fn weight_bytes(&self) -> usize {
        self.weight_bytes
    }

    pub fn device_name(&self) -> &str {
        &self.gpu.info().name
    }

    /// Tokens `tokens` (at most [`GPU_BATCH`]) at positions `pos0..` through every layer:
    /// projections as one batched matmul per weight (each weight read once per 8 tokens),
    /// attention one launch pair per token. With `logits`, also the output head for the last
    /// token (`Last`) or every token (`All`), copied into `logits` (`n_vocab` per row).
    fn run_batch(
        &mut self,
        tokens: &[u32],
        pos0: usize,
        logits: Option<(LogitsFor, &mut [f32])>,
    ) -> Result<()> {
        let m = tokens.len();
        let head = logits.as_ref().map(|(which, _)| match which {
            LogitsFor::Last => (m - 1, 1),
            LogitsFor::All => (0, m),
        });
        self.enqueue(Some(tokens), m, pos0, head)?;
        match logits {
            Some((_, out)) => self.read_logits(head.map_or(0, |h| h.1), out),
            None => Ok(()),
        }
    }

    /// One token through the recorded graph (recording it on first use).
    fn decode_one(&mut self, token: u32, pos: usize, logits: &mut [f32]) -> Result<()> {
        if !self.use_graphs {
            return self.run_batch(&[token], pos, Some((LogitsFor::Last, logits)));
        }
        let window = if self.cfg.swa_period > 0 {
            self.cfg.sliding_window
        } else {
            0
        };
        self.step.set(&self.gpu, token, pos, window)?;
        if self.graph.is_none() {
            let gpu = Arc::clone(&self.gpu);
            match gpu.capture_graph(|| self.enqueue(None, 1, 0, Some((0, 1)))) {
                Ok(graph) => self.graph = Some(graph),
                Err(e) => {
                    eprintln!(
                        "ghostcore: CUDA graph capture failed ({e}); decoding without graphs"
                    );
                    self.use_graphs = false;
                    return self.run_batch(&[token], pos, Some((LogitsFor::Last, logits)));
                }
            }
        }
        if let Some(graph) = &self.graph {
            self.gpu.launch_graph(graph)?;
        }
        self.read_logits(1, logits)
    }

    /// Copies `rows` rows of logits to the host (waiting for the stream: the one host
    /// synchronization per batch or token) and applies the final soft-cap.
    fn read_logits(&mut self, rows: usize, logits: &mut [f32]) -> Result<()> {
        let out = &mut logits[..rows * self.cfg.n_vocab];
        self.s.logits.read_prefix(&self.gpu, out)?;
        if let Some(c) = self.cfg.final_logit_softcap {
            out.iter_mut().for_each(|l| *l = (*l / c).tanh() * c);
        }
        Ok(())
    }

    /// Queues the forward pass of `m` tokens at `pos0..` (`tokens: None`: one token whose
    /// id, position and attention ranges are read from `self.step`, the graph-replayable
    /// form), and with `head = Some((first, rows))` the output head of those rows into
    /// `s.logits`.
    fn enqueue(
        &mut self,
        tokens: Option<&[u32]>,
        m: usize,
        pos0: usize,
        head: Option<(usize, usize)>,
    ) -> Result<()> {
        let cfg = &self.cfg;
        let g = &*self.gpu;
        let s = &mut self.s;
        let step = tokens.is_none().then_some(&self.step);
        // Prefill stays dense; single-token steps take the sparse FFN when one is on.
        let mut sparse = self.sparse.as_mut().filter(|sp| sp.enabled && m == 1);
        debug_assert!(m > 0 && m <= GPU_BATCH && (step.is_none() || m == 1));
        let (n_embd, q_dim, k_dim, v_dim) = (cfg.n_embd, cfg.q_dim(), cfg.k_dim(), cfg.v_dim());
        let att_dim = cfg.n_head * cfg.head_dim_v;
        let emb_scale = if cfg.scale_embeddings {
            (n_embd as f32).sqrt()
        } else {
            1.0
        };
        match (tokens, step) {
            (Some(tokens), _) => {
                for (j, &t) in tokens.iter().enumerate() {
                    g.embed_row(&self.token_embd, t, emb_scale, &mut s.x, j)?;
                }
            }
            (None, Some(st)) => g.embed_at_step(&self.token_embd, emb_scale, &mut s.x, st)?,
            (None, None) => unreachable!("a step is present when tokens are not"),
        }
        let style = match cfg.rope_style {
            ModelRopeStyle::Normal => RopeStyle::Normal,
            ModelRopeStyle::Neox => RopeStyle::Neox,
        };
        let act = match cfg.activation {
            Activation::Silu => GatedActivation::Silu,
            Activation::GeluTanh => GatedActivation::GeluTanh,
        };
        for (il, l) in self.layers.iter().enumerate() {
            let swa = cfg.is_swa_layer(il);
            // Attention block.
            g.rms_norm_quantize_rows(&s.x, &l.attn_norm, &mut s.xn, m, cfg.rms_eps)?;
            g.matmul(&l.wq, &s.xn, m, &mut s.q, false)?;
            g.matmul(&l.wk, &s.xn, m, &mut s.k, false)?;
            g.matmul(&l.wv, &s.xn, m, &mut s.v, false)?;
            for (b, out, dim) in [
                (&l.bq, &mut s.q, q_dim),
                (&l.bk, &mut s.k, k_dim),
                (&l.bv, &mut s.v, v_dim),
            ] {
                if let Some(b) = b {
                    for j in 0..m {
                        g.add_rows(out, j * dim, b, 0, dim)?;
                    }
                }
            }
            if let Some(nw) = &l.q_norm {
                g.rms_norm_inplace_rows(&mut s.q, nw, m * cfg.n_head, cfg.rms_eps)?;
            }
            if let Some(nw) = &l.k_norm {
                g.rms_norm_inplace_rows(&mut s.k, nw, m * cfg.n_head_kv, cfg.rms_eps)?;
            }
            let (freq_base, freq_scale) = if swa {
                (cfg.rope_freq_base_swa, 1.0)
            } else {
                (cfg.rope_freq_base, cfg.rope_freq_scale)
            };
            let rope = |n_heads| RopeParams {
                n_heads,
                head_dim: cfg.head_dim_k,
                n_rot: cfg.n_rot,
                pos: pos0,
                freq_base,
                freq_scale,
                style,
            };
            if let Some(st) = step {
                g.rope_at_step(&mut s.q, &rope(cfg.n_head), st)?;
                g.rope_at_step(&mut s.k, &rope(cfg.n_head_kv), st)?;
                g.kv_store_at_step(&mut self.kv, il, &s.k, &s.v, st)?;
                g.attention_at_step(
                    &s.q,
                    &self.kv,
                    il,
                    st,
                    swa && cfg.sliding_window > 0,
                    cfg.attn_scale,
                    cfg.attn_logit_softcap,
                    &mut s.attn,
                    &mut s.att.x,
                )?;
            } else {
                g.rope_rows(&mut s.q, &rope(cfg.n_head), m)?;
                g.rope_rows(&mut s.k, &rope(cfg.n_head_kv), m)?;
                g.kv_store_rows(&mut self.kv, il, pos0, &s.k, &s.v, m)?;
            }
            for j in (0..m).filter(|_| step.is_none()) {
                let pos = pos0 + j;
                let first = if swa && cfg.sliding_window > 0 {
                    (pos + 1).saturating_sub(cfg.sliding_window)
                } else {
                    0
                };
                g.attention_row(
                    &s.q,
                    j,
                    &self.kv,
                    il,
                    first..pos + 1,
                    cfg.attn_scale,
                    cfg.attn_logit_softcap,
                    &mut s.attn,
                    &mut s.att.x,
                )?;
            }
            g.quantize_activations_prefix(&mut s.att, m * att_dim)?;
            add_projection(
                g,
                &l.wo,
                &s.att,
                m,
                l.post_attn_norm.as_ref(),
                cfg.rms_eps,
                &mut s.tmp,
                &mut s.x,
            )?;

            // FFN block.
            g.rms_norm_quantize_rows(&s.x, &l.ffn_norm, &mut s.xn, m, cfg.rms_eps)?;
            let sparse_layer = sparse
                .as_deref_mut()
                .and_then(|sp| match sp.layers.get(il) {
                    Some(Some(layer)) => Some((layer, &mut sp.scratch, &mut sp.counters)),
                    _ => None,
                });
            match sparse_layer {
                Some((sl, scratch, counters)) => {
                    let rule = SparseFfnRule {
                        act_threshold: sl.act_threshold,
                        neuron_scale: sl.scale.as_ref(),
                        product_threshold: sl.product_threshold,
                    };
                    let counts = Some((counters, il));
                    if let Some(down) = &sl.down {
                        // Down over the neuron-major copy: only the rows of kept neurons.
                        g.ffn_gate_up_into(
                            &l.ffn_gate,
                            &l.ffn_up,
                            &s.xn,
                            act,
                            &rule,
                            None,
                            &mut scratch.h,
                            counts,
                        )?;
                        add_to_residual(
                            g,
                            l.post_ffn_norm.as_ref(),
                            1,
                            n_embd,
                            cfg.rms_eps,
                            &mut s.tmp,
                            &mut s.x,
                            |out, accumulate| g.sparse_down(down, scratch, out, accumulate),
                        )?;
                        continue;
                    }
                    // Gate and up rows skipped; the model's own down below reads every row
                    // (skipped neurons are zeros of its input).
                    g.ffn_gate_up_into(
                        &l.ffn_gate,
                        &l.ffn_up,
                        &s.xn,
                        act,
                        &rule,
                        None,
                        &mut s.hidden.x.data,
                        counts,
                    )?;
                }
                // Decode: gate, up and activation in one launch.
                None if m == 1 && CudaBackend::can_fuse_gate_up(&l.ffn_gate, &l.ffn_up) => {
                    g.ffn_gate_up(&l.ffn_gate, &l.ffn_up, &s.xn, act, &mut s.hidden.x)?;
                }
                None => {
                    g.matmul(&l.ffn_gate, &s.xn, m, &mut s.hidden.x, false)?;
                    g.matmul(&l.ffn_up, &s.xn, m, &mut s.up, false)?;
                    g.gated_activation_prefix(&mut s.hidden.x, &s.up, act, m * cfg.n_ff)?;
                }
            }
            g.quantize_activations_prefix(&mut s.hidden, m * cfg.n_ff)?;
            add_projection(
                g,
                &l.ffn_down,
                &s.hidden,
                m,
                l.post_ffn_norm.as_ref(),
                cfg.rms_eps,
                &mut s.tmp,
                &mut s.x,
            )?;
        }
        let Some((first, rows)) = head else {
            return Ok(());
        };
        g.rms_norm_quantize_rows(&s.x, &self.output_norm, &mut s.xn, m, cfg.rms_eps)?;
        let w_out = self.output.as_ref().unwrap_or(&self.token_embd);
        g.matmul_from(w_out, &s.xn, first, rows, &mut s.logits, false)
    }
}

/// `x += W · act` for `m` rows (an attention output or FFN down projection into the residual
/// stream), with Gemma's post-norm applied to the projection first when `post_norm` is set.
#[allow(clippy::too_many_arguments)]
fn add_projection(
    g: &CudaBackend,
    w: &DeviceMatrix,
    act: &DeviceActivations,
    m: usize,
    post_norm: Option<&DeviceVec>,
    eps: f32,
    tmp: &mut DeviceVec,
    x: &mut DeviceVec,
) -> Result<()> {
    add_to_residual(
        g,
        post_norm,
        m,
        w.n_rows(),
        eps,
        tmp,
        x,
        |out, accumulate| g.matmul(w, act, m, out, accumulate),
    )
}

/// `x += P` for `m` rows of width `n`, where `project(out, accumulate)` writes (or with
/// `accumulate` adds) the projection `P` into `out`: with a post-norm, `P` goes through `tmp`
/// and is normed first; without one, the add is fused into the projection.
#[allow(clippy::too_many_arguments)]
fn add_to_residual(
    g: &CudaBackend,
    post_norm: Option<&DeviceVec>,
    m: usize,
    n: usize,
    eps: f32,
    tmp: &mut DeviceVec,
    x: &mut DeviceVec,
    project: impl FnOnce(&mut DeviceVec, bool) -> Result<()>,
) -> Result<()> {
    match post_norm {
        Some(pn) => {
            project(tmp, false)?;
            g.rms_norm_inplace_rows(tmp, pn, m, eps)?;
            g.add_rows(x, 0, tmp, 0, m * n)
        }
        None => project(x, true),
    }
}

impl AcceleratedForward for CudaForward {
    fn describe(&self) -> String {
        let info = self.gpu.info();
        format!(
            "CUDA {} (sm_{}{}), {:.1} MiB of weights",
            info.name,
            info.compute_capability.0,
            info.compute_capability.1,
            self.weight_bytes as f64 / (1 << 20) as f64
        )
    }

    fn n_ctx(&self) -> usize {
        self.kv.shape().max_ctx
    }

    fn forward(
        &mut self,
        tokens: &[u32],
        n_past: usize,
        which: LogitsFor,
        logits: &mut [f32],
    ) -> Result<()> {
        let n_vocab = self.cfg.n_vocab;
        let n_out = match which {
            LogitsFor::Last => 1,
            LogitsFor::All => tokens.len(),
        };
        if tokens.is_empty() || logits.len() < n_out * n_vocab {
            bail!(
                InvalidArgument,
                "CUDA forward: {} tokens with room for {} logits",
                tokens.len(),
                logits.len()
            );
        }
        if n_past + tokens.len() > self.n_ctx() {
            bail!(
                InvalidArgument,
                "CUDA forward: positions {n_past}..{} exceed the cache of {}",
                n_past + tokens.len(),
                self.n_ctx()
            );
        }
        if tokens.len() == 1 {
            if let Some(sp) = self.sparse.as_mut().filter(|sp| sp.enabled) {
                sp.tokens += 1;
            }
            return self.decode_one(tokens[0], n_past, &mut logits[..n_vocab]);
        }
        let n_chunks = tokens.len().div_ceil(GPU_BATCH);
        for (c, chunk) in tokens.chunks(GPU_BATCH).enumerate() {
            let start = c * GPU_BATCH;
            let out = match which {
                LogitsFor::All => Some((
                    LogitsFor::All,
                    &mut logits[start * n_vocab..(start + chunk.len()) * n_vocab],
                )),
                LogitsFor::Last if c + 1 == n_chunks => Some((LogitsFor::Last, &mut logits[..])),
                LogitsFor::Last => None,
            };
            self.run_batch(chunk, n_past + start, out)?;
        }
        Ok(())
    }

    fn kv_size_bytes(&self) -> usize {
        let s = self.kv.shape();
        2 * s.n_layers * s.n_kv_heads * s.head_dim * s.max_ctx * 2
    }

    fn set_ffn_sparsity(&mut self, layers: Option<&[Option<LayerFfnSparsity<'_>>]>) -> Result<()> {
        // The recorded step holds the old FFN launches.
        self.graph = None;
        let Some(layers) = layers else {
            self.sparse = None;
            return Ok(());
        };
        let (n_layer, n_ff, n_embd) = (self.cfg.n_layer, self.cfg.n_ff, self.cfg.n_embd);
        if layers.len() != n_layer {
            bail!(
                InvalidArgument,
                "sparse FFN for {} layers; the model has {n_layer}",
                layers.len()
            );
        }
        let g = &*self.gpu;
        let mut built = Vec::with_capacity(n_layer);
        for (il, spec) in layers.iter().enumerate() {
            let Some(spec) = spec else {
                built.push(None);
                continue;
            };
            let l = &self.layers[il];
            if !CudaBackend::can_fuse_gate_up(&l.ffn_gate, &l.ffn_up) {
                bail!(
                    Unsupported,
                    "sparse FFN on the GPU: layer {il}'s gate/up ({}/{}) have no fused kernel",
                    l.ffn_gate.ty().name(),
                    l.ffn_up.ty().name()
                );
            }
            if spec.neuron_scale.is_some_and(|v| v.len() != n_ff) {
                bail!(
                    InvalidArgument,
                    "sparse FFN layer {il}: neuron scale of {} for {n_ff} neurons",
                    spec.neuron_scale.map_or(0, <[f32]>::len)
                );
            }
            built.push(Some(SparseLayer {
                act_threshold: spec.act_threshold,
                scale: spec
                    .neuron_scale
                    .map(|v| DeviceVec::from_host(g, v))
                    .transpose()?,
                product_threshold: spec.product_threshold,
                down: spec
                    .down_copy
                    .map(|(ty, bytes)| NeuronMajorDown::upload_typed(g, ty, n_ff, n_embd, bytes))
                    .transpose()?,
            }));
        }
        self.sparse = Some(SparseFfn {
            layers: built,
            scratch: SparseFfnScratch::new(g, n_ff, n_embd)?,
            counters: FfnCounters::new(g, n_layer)?,
            tokens: 0,
            enabled: true,
        });
        Ok(())
    }

    fn set_ffn_sparsity_enabled(&mut self, on: bool) -> Result<()> {
        if let Some(sp) = &mut self.sparse {
            if sp.enabled != on {
                sp.enabled = on;
                self.graph = None;
            }
        }
        Ok(())
    }

    fn ffn_sparsity_counts(&self) -> Result<Option<Vec<LayerFfnCounts>>> {
        let Some(sp) = &self.sparse else {
            return Ok(None);
        };
        let n_ff = self.cfg.n_ff as u64;
        let counts = sp.counters.read(&self.gpu)?;
        Ok(Some(
            sp.layers
                .iter()
                .zip(counts)
                .map(|(layer, (up_rows, down_rows))| match layer {
                    None => LayerFfnCounts {
                        tokens: sp.tokens,
                        up_rows: sp.tokens * n_ff,
                        down_rows: sp.tokens * n_ff,
                        down_copy_row_bytes: None,
                    },
                    Some(l) => LayerFfnCounts {
                        tokens: sp.tokens,
                        up_rows,
                        down_rows: if l.down.is_some() {
                            down_rows
                        } else {
                            sp.tokens * n_ff
                        },
                        down_copy_row_bytes: l
                            .down
                            .as_ref()
                            .and_then(|d| d.ty.row_bytes(d.n_embd as u64)),
                    },
                })
                .collect(),
        ))
    }

    fn reset_ffn_sparsity_counts(&mut self) -> Result<()> {
        if let Some(sp) = &mut self.sparse {
            sp.counters.reset(&self.gpu)?;
            sp.tokens = 0;
        }
        Ok(())
    }
}
