//! The whole forward pass against a naive f64 transcription of the Llama architecture
//! (RMSNorm, RoPE, grouped-query causal attention, SiLU-gated FFN), on a small synthetic
//! model whose weights are dequantized with `quant::dequantize_row`.

use std::sync::Arc;

use ghostcore::cli::synth;
use ghostcore::context::{Context, ContextParams};
use ghostcore::gguf::GgufFile;
use ghostcore::model::{Model, ModelParams, Weight};

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

fn rope(x: &mut [f64], pos: usize, base: f64) {
    let d = x.len();
    for i in 0..d / 2 {
        let th = pos as f64 * base.powf(-2.0 * i as f64 / d as f64);
        let (a, b) = (x[2 * i], x[2 * i + 1]);
        x[2 * i] = a * th.cos() - b * th.sin();
        x[2 * i + 1] = a * th.sin() + b * th.cos();
    }
}

/// Logits of every position, naive f64.
fn naive_forward(model: &Model, tokens: &[u32]) -> Vec<Vec<f64>> {
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
        let mut ks = Vec::new();
        let mut vs = Vec::new();
        let mut qs = Vec::new();
        for (p, x) in xs.iter().enumerate() {
            let xn = rms(x, &an, eps);
            let mut q = matvec(&wq, &xn, c.q_dim());
            let mut k = matvec(&wk, &xn, c.k_dim());
            for h in q.chunks_mut(hd) {
                rope(h, p, c.rope_freq_base as f64);
            }
            for h in k.chunks_mut(hd) {
                rope(h, p, c.rope_freq_base as f64);
            }
            qs.push(q);
            ks.push(k);
            vs.push(matvec(&wv, &xn, c.v_dim()));
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

fn tiny_model() -> Arc<Model> {
    let shape = synth::shape("tiny").unwrap();
    let w = synth::build(&shape, "q4_k_m", None, 7).unwrap();
    let file = GgufFile::from_bytes(w.to_bytes()).unwrap();
    Model::from_file(
        file,
        &ModelParams {
            skip_tokenizer: true,
        },
    )
    .unwrap()
}

#[test]
fn forward_matches_naive_f64_reference() {
    let model = tiny_model();
    let n_vocab = model.config().n_vocab;
    let tokens: Vec<u32> = (0..40u32).map(|i| (i * 37 + 11) % n_vocab as u32).collect();
    let reference = naive_forward(&model, &tokens);
    for exact in [true, false] {
        let params = ContextParams {
            n_ctx: 64,
            n_threads: 2,
            exact_prefill: exact,
            ..Default::default()
        };
        let mut ctx = Context::new(Arc::clone(&model), params).unwrap();
        let ours = ctx.decode_all_logits(&tokens).unwrap().to_vec();
        let mut worst = 0.0f64;
        let scale = reference
            .iter()
            .flatten()
            .map(|v| v.abs())
            .fold(0.0, f64::max);
        for (p, r) in reference.iter().enumerate() {
            for (i, &v) in r.iter().enumerate() {
                worst = worst.max((ours[p * n_vocab + i] as f64 - v).abs());
            }
        }
        eprintln!("exact_prefill={exact}: max |Δlogit| {worst:.5} (logit scale {scale:.3})");
        // Exact math differs only by f16 KV rounding; 8-bit activations add ~1% noise.
        let tol = if exact { 0.01 } else { 0.05 } * scale.max(1.0);
        assert!(worst < tol, "max |Δlogit| {worst} > {tol}");
    }
}
