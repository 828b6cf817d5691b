//! A naive f64 transcription of the Llama / Qwen2 forward pass (RMSNorm, RoPE in either pair
//! layout, q/k/v biases when present, grouped-query causal attention, SiLU-gated FFN) over
//! weights dequantized with `quant::dequantize_row`: the reference of `forward_reference.rs`
//! (CPU) and `cuda_forward.rs` (GPU), with [`synthetic_model`], the models both run it on.

#![allow(dead_code)]

use std::sync::Arc;

use ghostcore::cli::synth;
use ghostcore::gguf::GgufFile;
use ghostcore::model::{Model, ModelParams, RopeStyle, Weight};

/// A random-weight model of architecture `arch` (`llama`, `qwen2`), synth shape `shape` and
/// weight recipe `ty`, built in memory (no tokenizer).
pub fn synthetic_model(arch: &str, shape: &str, ty: &str, seed: u64) -> Arc<Model> {
    let shape = synth::shape(shape).unwrap();
    let w = synth::build(&shape, arch, ty, None, seed).unwrap();
    let file = GgufFile::from_bytes(w.to_bytes()).unwrap();
    Model::from_file(
        file,
        &ModelParams {
            skip_tokenizer: true,
            ..ModelParams::default()
        },
    )
    .unwrap()
}

fn deq(model: &Model, w: &Weight) -> Vec<f64> {
    let bytes = model.bytes(w);
    let rb = w.row_bytes();
    let mut out = vec![0f32; w.n_cols * w.n_rows];
    for r in 0..w.n_rows {
        ghostcore::quant::dequantize_row(
            w.ty,
            &bytes[r * rb..(r + 1) * rb],
            &mut out[r * w.n_cols..(r + 1) * w.n_cols],
        )
        .unwrap();
    }
    out.into_iter().map(f64::from).collect()
}

fn matvec(w: &[f64], x: &[f64], rows: usize) -> Vec<f64> {
    let n = x.len();
    (0..rows)
        .map(|r| (0..n).map(|i| w[r * n + i] * x[i]).sum())
        .collect()
}

fn rms(x: &[f64], w: &[f64], eps: f64) -> Vec<f64> {
    let s = (x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64 + eps).sqrt();
    x.iter().zip(w).map(|(a, b)| a / s * b).collect()
}

/// Rotates pairs (2i, 2i+1) (`Normal`, Llama GGUFs) or (i, i + d/2) (`Neox`, Qwen2).
fn rope(x: &mut [f64], pos: usize, base: f64, style: RopeStyle) {
    let d = x.len();
    for i in 0..d / 2 {
        let th = pos as f64 * base.powf(-2.0 * i as f64 / d as f64);
        let (ia, ib) = match style {
            RopeStyle::Normal => (2 * i, 2 * i + 1),
            RopeStyle::Neox => (i, i + d / 2),
        };
        let (a, b) = (x[ia], x[ib]);
        x[ia] = a * th.cos() - b * th.sin();
        x[ib] = a * th.sin() + b * th.cos();
    }
}

fn add_bias(x: &mut [f64], bias: Option<Vec<f64>>) {
    if let Some(b) = bias {
        x.iter_mut().zip(&b).for_each(|(v, b)| *v += b);
    }
}

/// Logits of every position, naive f64.
pub fn naive_forward(model: &Model, tokens: &[u32]) -> Vec<Vec<f64>> {
    let c = model.config();
    let w = model.weights();
    let (e, hd) = (c.n_embd, c.head_dim_k);
    let eps = c.rms_eps as f64;
    let emb = deq(model, &w.token_embd);
    let mut xs: Vec<Vec<f64>> = tokens
        .iter()
        .map(|&t| emb[t as usize * e..(t as usize + 1) * e].to_vec())
        .collect();
    for il in 0..c.n_layer {
        let lw = model.layer(il);
        let f32w = |w: &Weight| {
            model
                .f32s(w)
                .iter()
                .map(|&v| v as f64)
                .collect::<Vec<f64>>()
        };
        let (wq, wk, wv, wo) = (
            deq(model, &lw.wq),
            deq(model, &lw.wk),
            deq(model, &lw.wv),
            deq(model, &lw.wo),
        );
        let (wg, wu, wd) = (
            deq(model, &lw.ffn_gate),
            deq(model, &lw.ffn_up),
            deq(model, &lw.ffn_down),
        );
        let (an, fnw) = (f32w(&lw.attn_norm), f32w(&lw.ffn_norm));
        let bias = |b: &Option<Weight>| b.as_ref().map(f32w);
        let mut ks = Vec::new();
        let mut vs = Vec::new();
        let mut qs = Vec::new();
        for (p, x) in xs.iter().enumerate() {
            let xn = rms(x, &an, eps);
            let mut q = matvec(&wq, &xn, c.q_dim());
            let mut k = matvec(&wk, &xn, c.k_dim());
            let mut v = matvec(&wv, &xn, c.v_dim());
            add_bias(&mut q, bias(&lw.bq));
            add_bias(&mut k, bias(&lw.bk));
            add_bias(&mut v, bias(&lw.bv));
            for h in q.chunks_mut(hd) {
                rope(h, p, c.rope_freq_base as f64, c.rope_style);
            }
            for h in k.chunks_mut(hd) {
                rope(h, p, c.rope_freq_base as f64, c.rope_style);
            }
            qs.push(q);
            ks.push(k);
            vs.push(v);
        }
        let group = c.n_head / c.n_head_kv;
        for (p, x) in xs.iter_mut().enumerate() {
            let mut att = vec![0.0; c.q_dim()];
            for h in 0..c.n_head {
                let kvh = h / group;
                let q = &qs[p][h * hd..(h + 1) * hd];
                let s: Vec<f64> = (0..=p)
                    .map(|t| {
                        q.iter()
                            .zip(&ks[t][kvh * hd..(kvh + 1) * hd])
                            .map(|(a, b)| a * b)
                            .sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::MIN, f64::max);
                let z: f64 = s.iter().map(|v| (v - m).exp()).sum();
                for t in 0..=p {
                    let pr = (s[t] - m).exp() / z;
                    for i in 0..hd {
                        att[h * hd + i] += pr * vs[t][kvh * hd + i];
                    }
                }
            }
            let o = matvec(&wo, &att, e);
            x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
            let xn = rms(x, &fnw, eps);
            let g = matvec(&wg, &xn, c.n_ff);
            let u = matvec(&wu, &xn, c.n_ff);
            let hh: Vec<f64> = g
                .iter()
                .zip(&u)
                .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                .collect();
            let d = matvec(&wd, &hh, e);
            x.iter_mut().zip(&d).for_each(|(a, b)| *a += b);
        }
    }
    let on: Vec<f64> = model
        .f32s(&w.output_norm)
        .iter()
        .map(|&v| v as f64)
        .collect();
    let out = deq(model, &w.output);
    xs.iter()
        .map(|x| matvec(&out, &rms(x, &on, eps), c.n_vocab))
        .collect()
}
