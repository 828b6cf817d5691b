//! The feed-forward block, structured for activation sparsity.
//!
//! `ffn_gate` and `ffn_up` are neuron-major (row `i` is neuron `i`), `ffn_down` is
//! output-major. The dense FFN computes `down · (act(gate · x) ⊙ (up · x))`.
//!
//! Two extension points serve the sparsity engine without touching the forward pass:
//! - [`FfnObserver`]: sees, per token and layer, `act(gate·x)` and `up·x` (calibration);
//! - [`DecodeFfn`]: replaces the dense FFN of a layer for single-token decode steps
//!   (a [`crate::context::Context`] holds one optional override per layer). Prefill
//!   (batches of more than one token) always runs dense.

use super::Model;
use crate::backend::cpu::linear::{self, ActMath, QuantizedActs};
use crate::backend::cpu::ops;
use crate::model::config::Activation;
use crate::threadpool::ThreadPool;
use crate::Result;

/// Receives FFN activations of every token the context processes (dense path only).
pub trait FfnObserver: Send {
    /// `layer`: layer index; `pos`: the token's position; `act_gate`: `act(gate·x)` and
    /// `up`: `up·x`, both `n_ff` long.
    fn observe(&mut self, layer: usize, pos: usize, act_gate: &[f32], up: &[f32]);
}

/// What a [`DecodeFfn`] gets to work with.
pub struct FfnCall<'a> {
    pub model: &'a Model,
    pub layer: usize,
    /// Position of the token being decoded.
    pub pos: usize,
    pub pool: &'a ThreadPool,
}

/// A replacement FFN for one layer, used for single-token decode steps.
pub trait DecodeFfn: Send + Sync {
    /// `x`: the FFN input after `ffn_norm` (`n_embd`); write the FFN output (`n_embd`,
    /// before any post-FFN norm and the residual add) into `out`.
    fn forward(&self, call: &FfnCall<'_>, x: &[f32], out: &mut [f32]) -> Result<()>;
}

/// Scratch for the dense FFN, sized for a batch of `n_batch` tokens.
#[derive(Debug, Default)]
pub struct FfnScratch {
    pub gate: Vec<f32>,
    pub up: Vec<f32>,
    pub acts: QuantizedActs,
}

impl FfnScratch {
    pub fn new(n_batch: usize, n_ff: usize) -> Self {
        FfnScratch {
            gate: vec![0.0; n_batch * n_ff],
            up: vec![0.0; n_batch * n_ff],
            acts: QuantizedActs::default(),
        }
    }
}

/// Applies the gate activation in place: `gate[i] = act(gate[i])`.
pub fn activate(act: Activation, gate: &mut [f32]) {
    match act {
        Activation::Silu => gate.iter_mut().for_each(|g| *g = ops::silu(*g)),
        Activation::GeluTanh => gate.iter_mut().for_each(|g| *g = ops::gelu_tanh(*g)),
    }
}

/// The dense FFN of layer `il` over `m` rows of `x` (`m * n_embd`), writing `out`
/// (`m * n_embd`). `x_acts` may already hold `x` quantized for the gate's vec-dot type.
#[allow(clippy::too_many_arguments)]
pub fn dense_ffn(
    model: &Model,
    il: usize,
    pool: &ThreadPool,
    x: &[f32],
    m: usize,
    first_pos: usize,
    scratch: &mut FfnScratch,
    observer: Option<&mut (dyn FfnObserver + '_)>,
    math: ActMath,
    out: &mut [f32],
) -> Result<()> {
    let cfg = model.config();
    let lw = model.layer(il);
    let (n_embd, n_ff) = (cfg.n_embd, cfg.n_ff);
    let gate = &mut scratch.gate[..m * n_ff];
    let up = &mut scratch.up[..m * n_ff];
    let xs = &x[..m * n_embd];
    let acts = &mut scratch.acts;
    linear::project(
        pool,
        math,
        &lw.ffn_gate,
        model.bytes(&lw.ffn_gate),
        xs,
        m,
        acts,
        false,
        gate,
    )?;
    linear::project(
        pool,
        math,
        &lw.ffn_up,
        model.bytes(&lw.ffn_up),
        xs,
        m,
        acts,
        true,
        up,
    )?;
    match math {
        // Prefill batches: vectorized (within a few ulps of the scalar functions), rows split
        // over the pool.
        ActMath::Exact => ops::for_each_row_mut(pool, gate, n_ff, 8, |_, g| {
            crate::backend::cpu::vmath::activate_slice(cfg.activation, g)
        }),
        // Token-by-token math stays bit-identical to the sparse FFN's.
        ActMath::Quantized => activate(cfg.activation, gate),
    }
    if let Some(obs) = observer {
        for j in 0..m {
            obs.observe(
                il,
                first_pos + j,
                &gate[j * n_ff..(j + 1) * n_ff],
                &up[j * n_ff..(j + 1) * n_ff],
            );
        }
    }
    let up = &*up;
    ops::for_each_row_mut(pool, gate, n_ff, 8, |j, g| {
        for (g, &u) in g.iter_mut().zip(&up[j * n_ff..(j + 1) * n_ff]) {
            *g *= u;
        }
    });
    let down = &lw.ffn_down;
    let out = &mut out[..m * n_embd];
    linear::project(
        pool,
        math,
        down,
        model.bytes(down),
        gate,
        m,
        &mut scratch.acts,
        false,
        out,
    )?;
    Ok(())
}
