//! The dense forward pass over one micro-batch, with the KV cache and all scratch memory.

use std::sync::Arc;

use half::f16;
use half::slice::HalfFloatSliceExt;

use super::ffn::{self, DecodeFfn, FfnCall, FfnObserver, FfnScratch};
use super::Model;
use crate::backend::cpu::linear::{self, ActMath, QuantizedActs};
use crate::backend::cpu::ops;
use crate::model::config::RopeStyle;
use crate::threadpool::{DisjointSlice, ThreadPool};
use crate::Result;

/// Keys and values of every layer, f32, `n_ctx` positions.
#[derive(Debug)]
pub struct KvCache {
    pub n_ctx: usize,
    k: Vec<Vec<f16>>,
    v: Vec<Vec<f16>>,
}

impl KvCache {
    pub fn new(model: &Model, n_ctx: usize) -> Result<KvCache> {
        let cfg = model.config();
        let per_layer_k = n_ctx.checked_mul(cfg.k_dim());
        let per_layer_v = n_ctx.checked_mul(cfg.v_dim());
        let (Some(pk), Some(pv)) = (per_layer_k, per_layer_v) else {
            crate::bail!(OutOfMemory, "KV cache for n_ctx {n_ctx} overflows");
        };
        let mut k = Vec::with_capacity(cfg.n_layer);
        let mut v = Vec::with_capacity(cfg.n_layer);
        for _ in 0..cfg.n_layer {
            k.push(try_zeroed(pk)?);
            v.push(try_zeroed(pv)?);
        }
        Ok(KvCache { n_ctx, k, v })
    }

    /// Bytes held by the cache.
    pub fn size_bytes(&self) -> usize {
        self.k.iter().chain(&self.v).map(|b| b.len() * 2).sum()
    }
}

fn try_zeroed(n: usize) -> Result<Vec<f16>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|_| crate::Error::OutOfMemory(format!("cannot allocate {} MiB", (n * 2) >> 20)))?;
    v.resize(n, f16::ZERO);
    Ok(v)
}

/// Rows per work item of the per-row ops (norms, RoPE) of a batch; smaller batches run on
/// the calling thread.
const ROW_CHUNK: usize = 8;

/// Smallest batch computed with exact (f32) activations when exact prefill is on.
pub const EXACT_MIN_BATCH: usize = 32;

/// Scratch buffers for a micro-batch of up to `n_batch` tokens (allocated once).
#[derive(Debug)]
pub struct Scratch {
    pub n_batch: usize,
    x: Vec<f32>,
    xn: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    tmp: Vec<f32>,
    rope_cos: Vec<f32>,
    rope_sin: Vec<f32>,
    rope_cos_swa: Vec<f32>,
    rope_sin_swa: Vec<f32>,
    acts: QuantizedActs,
    ffn: FfnScratch,
    row: Vec<f32>,
    /// Activation math of batched (prefill) projections; single tokens always quantize.
    pub prefill_math: ActMath,
    /// Activation math of the output head in batches.
    pub output_math: ActMath,
    /// Per-phase timers (enabled with `GHOST_PROFILE=1`).
    pub prof: Profile,
}

/// Phases of the forward pass timed by [`Profile`].
#[derive(Debug, Clone, Copy)]
pub enum Phase {
    Qkv,
    Attention,
    AttnOutput,
    Ffn,
    Output,
    Other,
}

/// Wall time per [`Phase`], accumulated when enabled (`GHOST_PROFILE=1`); a no-op otherwise.
#[derive(Debug)]
pub struct Profile {
    enabled: bool,
    last: Option<std::time::Instant>,
    pub totals: [std::time::Duration; 6],
}

impl Profile {
    pub fn from_env() -> Profile {
        let enabled = std::env::var("GHOST_PROFILE").is_ok_and(|v| v == "1");
        Profile {
            enabled,
            last: None,
            totals: Default::default(),
        }
    }

    /// Charges the time since the previous lap to `phase`.
    pub fn lap(&mut self, phase: Phase) {
        if !self.enabled {
            return;
        }
        let now = std::time::Instant::now();
        if let Some(t) = self.last {
            self.totals[phase as usize] += now - t;
        }
        self.last = Some(now);
    }

    /// Ends a forward pass (the next lap starts fresh).
    pub fn stop(&mut self) {
        self.last = None;
    }

    /// `(phase name, seconds)` pairs.
    pub fn report(&self) -> Vec<(&'static str, f64)> {
        let names = ["qkv", "attention", "attn_output", "ffn", "output", "other"];
        names
            .iter()
            .zip(&self.totals)
            .map(|(n, d)| (*n, d.as_secs_f64()))
            .collect()
    }

    pub fn reset(&mut self) {
        self.totals = Default::default();
    }
}

impl Scratch {
    pub fn new(model: &Model, n_batch: usize) -> Scratch {
        let c = model.config();
        let half = c.n_rot / 2;
        Scratch {
            n_batch,
            x: vec![0.0; n_batch * c.n_embd],
            xn: vec![0.0; n_batch * c.n_embd],
            q: vec![0.0; n_batch * c.q_dim()],
            k: vec![0.0; n_batch * c.k_dim()],
            v: vec![0.0; n_batch * c.v_dim()],
            att: vec![0.0; n_batch * c.n_head * c.head_dim_v],
            tmp: vec![0.0; n_batch * c.n_embd],
            rope_cos: vec![0.0; n_batch * half],
            rope_sin: vec![0.0; n_batch * half],
            rope_cos_swa: vec![0.0; n_batch * half],
            rope_sin_swa: vec![0.0; n_batch * half],
            acts: QuantizedActs::default(),
            ffn: FfnScratch::new(n_batch, c.n_ff),
            row: vec![0.0; c.n_embd],
            prefill_math: ActMath::Exact,
            output_math: ActMath::Exact,
            prof: Profile::from_env(),
        }
    }

    /// Activation math for a batch of `m` rows: like llama.cpp's CPU backend, whose logits
    /// are those of exact f32 activations for large batches but of 8-bit activations for
    /// single tokens and small batches (measured against the reference data).
    pub fn math(&self, m: usize) -> ActMath {
        if m >= EXACT_MIN_BATCH {
            self.prefill_math
        } else {
            ActMath::Quantized
        }
    }
}

thread_local! {
    static ATT_SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Per-layer hooks of the FFN.
pub struct FfnHooks<'a> {
    pub decode_overrides: &'a [Option<Arc<dyn DecodeFfn>>],
    /// Also apply the overrides to every row of a multi-token batch (measurement: sparse
    /// perplexity); otherwise batches run dense.
    pub overrides_in_batches: bool,
    pub observer: Option<&'a mut (dyn FfnObserver + 'static)>,
}

/// Which rows' logits to compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitsFor {
    Last,
    All,
}

/// Runs `tokens` (at most `scratch.n_batch`, ids already validated, positions
/// `n_past..n_past + len` within the cache) through the model, appending to the KV cache,
/// and writes logits (`n_vocab` per requested row) into `logits`.
#[allow(clippy::too_many_arguments)]
pub fn forward(
    model: &Model,
    pool: &ThreadPool,
    kv: &mut KvCache,
    s: &mut Scratch,
    tokens: &[u32],
    n_past: usize,
    which: LogitsFor,
    hooks: &mut FfnHooks<'_>,
    logits: &mut Vec<f32>,
) -> Result<()> {
    let cfg = model.config();
    let w = model.weights();
    let m = tokens.len();
    debug_assert!(m > 0 && m <= s.n_batch && n_past + m <= kv.n_ctx);
    let (n_embd, q_dim, k_dim, v_dim) = (cfg.n_embd, cfg.q_dim(), cfg.k_dim(), cfg.v_dim());
    let (hd, hdv) = (cfg.head_dim_k, cfg.head_dim_v);
    let half = cfg.n_rot / 2;
    let neox = cfg.rope_style == RopeStyle::Neox;

    // Embeddings.
    let emb = model.bytes(&w.token_embd);
    let emb_row = w.token_embd.row_bytes();
    let emb_scale = if cfg.scale_embeddings {
        (n_embd as f32).sqrt()
    } else {
        1.0
    };
    for (j, &t) in tokens.iter().enumerate() {
        let t = t as usize;
        let dst = &mut s.x[j * n_embd..(j + 1) * n_embd];
        crate::quant::dequantize_row(w.token_embd.ty, &emb[t * emb_row..(t + 1) * emb_row], dst)?;
        if emb_scale != 1.0 {
            dst.iter_mut().for_each(|v| *v *= emb_scale);
        }
    }

    // RoPE tables for this batch's positions.
    let has_swa = cfg.swa_period > 0;
    for j in 0..m {
        let r = j * half..(j + 1) * half;
        ops::rope_table(
            n_past + j,
            cfg.n_rot,
            cfg.rope_freq_base,
            cfg.rope_freq_scale,
            &mut s.rope_cos[r.clone()],
            &mut s.rope_sin[r.clone()],
        );
        if has_swa {
            ops::rope_table(
                n_past + j,
                cfg.n_rot,
                cfg.rope_freq_base_swa,
                1.0,
                &mut s.rope_cos_swa[r.clone()],
                &mut s.rope_sin_swa[r],
            );
        }
    }

    s.prof.lap(Phase::Other);
    for il in 0..cfg.n_layer {
        let lw = model.layer(il);
        let swa = cfg.is_swa_layer(il);
        // Attention block.
        let norm_w = model.f32s(&lw.attn_norm);
        let x = &s.x;
        ops::for_each_row_mut(pool, &mut s.xn[..m * n_embd], n_embd, ROW_CHUNK, |j, xn| {
            ops::rms_norm(&x[j * n_embd..(j + 1) * n_embd], norm_w, cfg.rms_eps, xn)
        });
        let math = s.math(m);
        for (i, (wt, out, dim)) in [
            (&lw.wq, &mut s.q, q_dim),
            (&lw.wk, &mut s.k, k_dim),
            (&lw.wv, &mut s.v, v_dim),
        ]
        .into_iter()
        .enumerate()
        {
            let x = &s.xn[..m * n_embd];
            linear::project(
                pool,
                math,
                wt,
                model.bytes(wt),
                x,
                m,
                &mut s.acts,
                i > 0,
                &mut out[..m * dim],
            )?;
        }
        for (b, out, dim) in [
            (&lw.bq, &mut s.q, q_dim),
            (&lw.bk, &mut s.k, k_dim),
            (&lw.bv, &mut s.v, v_dim),
        ] {
            if let Some(b) = b {
                let b = model.f32s(b);
                for row in out[..m * dim].chunks_exact_mut(dim) {
                    row.iter_mut().zip(b).for_each(|(o, &bb)| *o += bb);
                }
            }
        }
        let (cos, sin) = if swa {
            (&s.rope_cos_swa, &s.rope_sin_swa)
        } else {
            (&s.rope_cos, &s.rope_sin)
        };
        let q_norm = lw.q_norm.as_ref().map(|w| model.f32s(w));
        let k_norm = lw.k_norm.as_ref().map(|w| model.f32s(w));
        let rope = |j: usize| {
            (
                &cos[j * half..(j + 1) * half],
                &sin[j * half..(j + 1) * half],
            )
        };
        ops::for_each_row_mut(pool, &mut s.q[..m * q_dim], q_dim, ROW_CHUNK, |j, row| {
            let (c, sn) = rope(j);
            for head in row.chunks_exact_mut(hd) {
                if let Some(nw) = q_norm {
                    ops::rms_norm_inplace(head, nw, cfg.rms_eps);
                }
                ops::rope_apply(&mut head[..cfg.n_rot], c, sn, neox);
                head.iter_mut().for_each(|v| *v *= cfg.attn_scale);
            }
        });
        ops::for_each_row_mut(pool, &mut s.k[..m * k_dim], k_dim, ROW_CHUNK, |j, row| {
            let (c, sn) = rope(j);
            for head in row.chunks_exact_mut(hd) {
                if let Some(nw) = k_norm {
                    ops::rms_norm_inplace(head, nw, cfg.rms_eps);
                }
                ops::rope_apply(&mut head[..cfg.n_rot], c, sn, neox);
            }
        });
        s.prof.lap(Phase::Qkv);
        // Append to the cache.
        let kc = &mut kv.k[il];
        let vc = &mut kv.v[il];
        kc[n_past * k_dim..(n_past + m) * k_dim].convert_from_f32_slice(&s.k[..m * k_dim]);
        vc[n_past * v_dim..(n_past + m) * v_dim].convert_from_f32_slice(&s.v[..m * v_dim]);

        // Attention, one (token, head) pair per work item.
        let n_head = cfg.n_head;
        let group = cfg.n_head / cfg.n_head_kv;
        let window = cfg.sliding_window;
        let att_out = DisjointSlice::new(&mut s.att[..m * n_head * hdv]);
        let (kc, vc, q) = (&kv.k[il], &kv.v[il], &s.q);
        let softcap = cfg.attn_logit_softcap;
        pool.for_each_chunk(m * n_head, 1, |_, items| {
            ATT_SCRATCH.with(|sc| {
                let mut sc = sc.borrow_mut();
                let width = hd.max(hdv);
                if sc.len() < 3 * width {
                    sc.resize(3 * width, 0.0);
                }
                let (qb, rest) = sc.split_at_mut(width);
                let (kb, vb) = rest.split_at_mut(width);
                for item in items {
                    let (j, h) = (item / n_head, item % n_head);
                    let pos = n_past + j;
                    let n_kv = pos + 1;
                    let first = if swa && window > 0 {
                        (pos + 1).saturating_sub(window)
                    } else {
                        0
                    };
                    let kvh = h / group;
                    // SAFETY: each (token, head) output slice is written by one item only.
                    let out = unsafe { att_out.range_mut(item * hdv..(item + 1) * hdv) };
                    ops::attend_head_f16(
                        &q[j * q_dim + h * hd..j * q_dim + (h + 1) * hd],
                        kc,
                        k_dim,
                        kvh * hd,
                        vc,
                        v_dim,
                        kvh * hdv,
                        first,
                        n_kv,
                        softcap,
                        qb,
                        kb,
                        vb,
                        out,
                    );
                }
            })
        });
        s.prof.lap(Phase::Attention);
        let att_dim = n_head * hdv;
        let math = s.math(m);
        linear::project(
            pool,
            math,
            &lw.wo,
            model.bytes(&lw.wo),
            &s.att[..m * att_dim],
            m,
            &mut s.acts,
            false,
            &mut s.tmp[..m * n_embd],
        )?;
        if let Some(pn) = &lw.post_attn_norm {
            let pn = model.f32s(pn);
            for row in s.tmp[..m * n_embd].chunks_exact_mut(n_embd) {
                ops::rms_norm_inplace(row, pn, cfg.rms_eps);
            }
        }
        s.x[..m * n_embd]
            .iter_mut()
            .zip(&s.tmp[..m * n_embd])
            .for_each(|(x, &t)| *x += t);

        s.prof.lap(Phase::AttnOutput);
        // FFN block.
        let norm_w = model.f32s(&lw.ffn_norm);
        let x = &s.x;
        ops::for_each_row_mut(pool, &mut s.xn[..m * n_embd], n_embd, ROW_CHUNK, |j, xn| {
            ops::rms_norm(&x[j * n_embd..(j + 1) * n_embd], norm_w, cfg.rms_eps, xn)
        });
        let override_ffn = if m == 1 || hooks.overrides_in_batches {
            hooks.decode_overrides.get(il).and_then(|o| o.as_ref())
        } else {
            None
        };
        match override_ffn {
            Some(f) => {
                for j in 0..m {
                    let call = FfnCall {
                        model,
                        layer: il,
                        pos: n_past + j,
                        pool,
                    };
                    let r = j * n_embd..(j + 1) * n_embd;
                    f.forward(&call, &s.xn[r.clone()], &mut s.tmp[r])?;
                }
            }
            None => {
                let obs = hooks
                    .observer
                    .as_mut()
                    .map(|o| &mut **o as &mut dyn FfnObserver);
                let math = s.math(m);
                ffn::dense_ffn(
                    model, il, pool, &s.xn, m, n_past, &mut s.ffn, obs, math, &mut s.tmp,
                )?;
            }
        }
        s.prof.lap(Phase::Ffn);
        if let Some(pn) = &lw.post_ffn_norm {
            let pn = model.f32s(pn);
            for row in s.tmp[..m * n_embd].chunks_exact_mut(n_embd) {
                ops::rms_norm_inplace(row, pn, cfg.rms_eps);
            }
        }
        s.x[..m * n_embd]
            .iter_mut()
            .zip(&s.tmp[..m * n_embd])
            .for_each(|(x, &t)| *x += t);
    }

    s.prof.lap(Phase::Other);
    // Output head.
    let rows: std::ops::Range<usize> = match which {
        LogitsFor::Last => m - 1..m,
        LogitsFor::All => 0..m,
    };
    let n_out = rows.len();
    let on = model.f32s(&w.output_norm);
    for (k, j) in rows.clone().enumerate() {
        let (src, dst) = (j * n_embd..(j + 1) * n_embd, k * n_embd..(k + 1) * n_embd);
        s.row.copy_from_slice(&s.x[src]);
        ops::rms_norm(&s.row, on, cfg.rms_eps, &mut s.xn[dst]);
    }
    let n_vocab = cfg.n_vocab;
    if logits.len() < n_out * n_vocab {
        logits.resize(n_out * n_vocab, 0.0);
    }
    // The math follows the rows the head actually computes (as llama.cpp's output matmul
    // has only the requested rows): the last row alone is a single-token product.
    let math = if n_out >= EXACT_MIN_BATCH {
        s.output_math
    } else {
        ActMath::Quantized
    };
    linear::project(
        pool,
        math,
        &w.output,
        model.bytes(&w.output),
        &s.xn[..n_out * n_embd],
        n_out,
        &mut s.acts,
        false,
        &mut logits[..n_out * n_vocab],
    )?;
    if let Some(c) = cfg.final_logit_softcap {
        logits[..n_out * n_vocab]
            .iter_mut()
            .for_each(|l| *l = (*l / c).tanh() * c);
    }
    s.prof.lap(Phase::Output);
    s.prof.stop();
    Ok(())
}
