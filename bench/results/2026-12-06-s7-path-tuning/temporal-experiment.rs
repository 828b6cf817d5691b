// Experiment: can the previous tokens' |up·x| of a neuron (the last value computed, or an
// exponential moving average) predict this token's better than the calibrated mean |up·x|
// (`upw`) in the cascade's first stage? Relative squared FFN output error on captured FFN
// inputs of SmolLM2-135M Q4_K_M (built as a ghostcore example, 2026-12-06 s7).
use ghostcore::context::{Context, ContextParams};
use ghostcore::model::ffn::{DecodeFfn, FfnCall};
use ghostcore::model::{Model, ModelParams};
use ghostcore::sparsity::engine::layer_weights;
use ghostcore::sparsity::{sparse_ffn, FfnScratch, LayerPlan};
use std::sync::{Arc, Mutex};

struct Rec {
    layer: usize,
    xs: Arc<Mutex<Vec<Vec<Vec<f32>>>>>,
}
impl DecodeFfn for Rec {
    fn forward(&self, call: &FfnCall<'_>, x: &[f32], out: &mut [f32]) -> ghostcore::Result<()> {
        let w = layer_weights(call.model, self.layer, None)?;
        let mut s = FfnScratch::default();
        sparse_ffn(&w, &LayerPlan::DENSE, x, &mut s, &ghostcore::sparsity::Serial, out)?;
        self.xs.lock().unwrap()[self.layer].push(x.to_vec());
        Ok(())
    }
}
fn act(x: f32, gelu: bool) -> f32 {
    if gelu {
        0.5 * x * (1.0 + (0.797_884_6 * (x + 0.044715 * x * x * x)).tanh())
    } else {
        x / (1.0 + (-x).exp())
    }
}
/// Indices of the `share` smallest entries of `score`.
fn smallest(score: &[f32], share: f32) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..score.len()).collect();
    idx.sort_by(|&p, &q| score[p].total_cmp(&score[q]));
    idx.truncate((share * score.len() as f32) as usize);
    idx
}
fn main() -> ghostcore::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).cloned().unwrap_or("/work/shared/models/smollm2-135m-q4_k_m.gguf".into());
    let n_tok: usize = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(384);
    let gelu = path.contains("gemma");
    let model: Arc<Model> = Model::load(&path, &ModelParams::default())?;
    let n_layer = model.config().n_layer;
    let text = std::fs::read_to_string("/work/main/tests/data/sparsity/calibration-corpus.txt").unwrap();
    let ids = model.tokenizer()?.encode(&text, false, false)?;
    let ids = &ids[..n_tok];
    let mut ctx = Context::new(
        model.clone(),
        ContextParams { n_ctx: 512, n_batch: 512, n_threads: 2, exact_prefill: false, ..Default::default() },
    )?;
    ctx.set_decode_ffn_in_batches(true);
    let xs = Arc::new(Mutex::new(vec![Vec::new(); n_layer]));
    for l in 0..n_layer {
        ctx.set_decode_ffn(l, Some(Arc::new(Rec { layer: l, xs: xs.clone() })))?;
    }
    ctx.decode_all_logits(ids)?;
    let xs = xs.lock().unwrap().clone();


    // First-stage predictors of |up·x| for the cascade (skip up+down for the s1 smallest
    // |act|·pred, then down for the smallest true |h| up to s2 in total):
    //   upw: calibrated mean |up·x|; prev: the last |up·x| computed for this neuron (stale when
    //   stage 1 skipped it); ema: exponential moving average of computed |up·x| (α 0.3);
    //   geo: sqrt(upw·ema); oracle: the true |up·x|.
    let names = ["upw", "prev", "ema", "geo", "oracle"];
    let s1s = [0.2f32, 0.3, 0.4];
    let s2 = 0.45f32;
    let mut err = vec![vec![0f64; s1s.len()]; names.len()];
    let mut cnt = 0usize;
    for l in (0..n_layer).step_by(2) {
        let w = layer_weights(&model, l, None)?;
        let (n_ff, n_embd) = (w.n_ff(), w.n_embd());
        let deq = |m: &ghostcore::sparsity::QMatrix| {
            let mut v = vec![0f32; m.n_rows * m.n_cols];
            for r in 0..m.n_rows {
                m.dequantize_row(r, &mut v[r * m.n_cols..(r + 1) * m.n_cols]).unwrap();
            }
            v
        };
        let (g, u, d) = (deq(&w.gate), deq(&w.up), deq(&w.down));
        let dcols: Vec<Vec<f32>> = (0..n_ff).map(|i| (0..n_embd).map(|o| d[o * n_ff + i]).collect()).collect();
        let toks = &xs[l];
        let mv = |m: &[f32], x: &[f32]| -> Vec<f32> {
            (0..n_ff).map(|i| m[i * n_embd..(i + 1) * n_embd].iter().zip(x).map(|(a, b)| a * b).sum()).collect()
        };
        let ux_all: Vec<Vec<f32>> = toks.iter().map(|x| mv(&u, x)).collect();
        let gx_all: Vec<Vec<f32>> = toks.iter().map(|x| mv(&g, x)).collect();
        let half = toks.len() / 2;
        let mut mean_u = vec![0f32; n_ff];
        for ux in &ux_all[..half] {
            for i in 0..n_ff {
                mean_u[i] += ux[i].abs() / half as f32;
            }
        }
        let y_of = |hh: &[f32]| -> Vec<f64> {
            let mut y = vec![0f64; n_embd];
            for i in 0..n_ff {
                if hh[i] != 0.0 {
                    for o in 0..n_embd {
                        y[o] += (hh[i] * dcols[i][o]) as f64;
                    }
                }
            }
            y
        };
        // per predictor and s1: the state (last computed |u|, ema) evolves with its own skips
        let mut last = vec![vec![mean_u.clone(); s1s.len()]; names.len()];
        let mut ema = vec![vec![mean_u.clone(); s1s.len()]; names.len()];
        for t in 0..toks.len() {
            let a: Vec<f32> = gx_all[t].iter().map(|&v| act(v, gelu)).collect();
            let ux = &ux_all[t];
            let h: Vec<f32> = (0..n_ff).map(|i| a[i] * ux[i]).collect();
            let y0 = y_of(&h);
            let norm: f64 = y0.iter().map(|v| v * v).sum();
            for p in 0..names.len() {
                for (si, &s1) in s1s.iter().enumerate() {
                    let pred: Vec<f32> = (0..n_ff)
                        .map(|i| match p {
                            0 => mean_u[i],
                            1 => last[p][si][i],
                            2 => ema[p][si][i],
                            3 => (mean_u[i] * ema[p][si][i]).sqrt(),
                            _ => ux[i].abs(),
                        })
                        .collect();
                    let sc: Vec<f32> = (0..n_ff).map(|i| a[i].abs() * pred[i]).collect();
                    let mut hh = h.clone();
                    let mut skipped = vec![false; n_ff];
                    for i in smallest(&sc, s1) {
                        skipped[i] = true;
                        hh[i] = 0.0;
                    }
                    for i in 0..n_ff {
                        if !skipped[i] {
                            last[p][si][i] = ux[i].abs();
                            ema[p][si][i] = 0.7 * ema[p][si][i] + 0.3 * ux[i].abs();
                        }
                    }
                    let n1 = (s1 * n_ff as f32) as usize;
                    let n2 = (s2 * n_ff as f32) as usize;
                    let mut surv: Vec<usize> = (0..n_ff).filter(|&i| !skipped[i]).collect();
                    surv.sort_by(|&p, &q| h[p].abs().total_cmp(&h[q].abs()));
                    for &i in &surv[..n2 - n1] {
                        hh[i] = 0.0;
                    }
                    if t >= half {
                        let ys = y_of(&hh);
                        err[p][si] += ys.iter().zip(&y0).map(|(p, q)| (p - q) * (p - q)).sum::<f64>() / norm;
                    }
                }
            }
            if t >= half {
                cnt += 1;
            }
        }
        eprintln!("layer {l} done");
    }
    println!("# {path}, {n_tok} tokens, every 2nd layer; mean|up| from the first half, errors on the second ({cnt} samples)");
    println!("# cascade: s1 skip up+down by |act|·pred, down to {s2} by true |h|; relative squared FFN output error");
    for (p, n) in names.iter().enumerate() {
        print!("{n:<8}");
        for (si, s1) in s1s.iter().enumerate() {
            print!(" s1={s1:.2}:{:.5}", err[p][si] / cnt as f64);
        }
        println!();
    }
    Ok(())
}
