// Experiment (s8, 2026-12-07): does scaling the cascade's thresholds per token by the residual
// stream's RMS (skip more where the FFN output is small against the stream it is added to)
// beat fixed thresholds at equal FFN bytes? Error measured against the residual stream.
use ghostcore::context::{Context, ContextParams};
use ghostcore::model::ffn::{DecodeFfn, FfnCall};
use ghostcore::model::{Model, ModelParams};
use ghostcore::sparsity::engine::layer_weights;
use ghostcore::sparsity::{sparse_ffn, FfnScratch, LayerPlan};
use std::sync::{Arc, Mutex};

type Cap = Arc<Mutex<Vec<Vec<(Vec<f32>, f32)>>>>;
struct Rec {
    layer: usize,
    xs: Cap,
}
impl DecodeFfn for Rec {
    fn forward(&self, call: &FfnCall<'_>, x: &[f32], out: &mut [f32]) -> ghostcore::Result<()> {
        let w = layer_weights(call.model, self.layer, None)?;
        let mut s = FfnScratch::default();
        sparse_ffn(&w, &LayerPlan::DENSE, x, &mut s, &ghostcore::sparsity::Serial, out)?;
        let r = call.residual;
        let rms = (r.iter().map(|v| v * v).sum::<f32>() / r.len() as f32).sqrt();
        self.xs.lock().unwrap()[self.layer].push((x.to_vec(), rms));
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
fn quantile(v: &[f32], q: f32) -> f32 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[((s.len() - 1) as f32 * q) as usize]
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
    let xs: Cap = Arc::new(Mutex::new(vec![Vec::new(); n_layer]));
    for l in 0..n_layer {
        ctx.set_decode_ffn(l, Some(Arc::new(Rec { layer: l, xs: xs.clone() })))?;
    }
    ctx.decode_all_logits(ids)?;
    let xs = xs.lock().unwrap().clone();

    let s1s = [0.1f32, 0.15, 0.2, 0.25, 0.3];
    let s2s = [0.3f32, 0.35, 0.4, 0.45, 0.5, 0.55];
    // exponent of the residual scaling: 0 = fixed thresholds; 0.5, 1 = scaled by (rms/median)^p
    let pows = [0.0f32, 0.5, 1.0];
    let mut res = vec![vec![vec![(0f64, 0f64); s2s.len()]; s1s.len()]; pows.len()];
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
        let gb = w.gate.total_bytes() as f64 / n_ff as f64;
        let ub = w.up.total_bytes() as f64 / n_ff as f64;
        let db = w.down.total_bytes() as f64 / n_ff as f64;
        let tb = gb + ub + db;
        let (g, u, d) = (deq(&w.gate), deq(&w.up), deq(&w.down));
        let dcols: Vec<Vec<f32>> = (0..n_ff).map(|i| (0..n_embd).map(|o| d[o * n_ff + i]).collect()).collect();
        let toks = &xs[l];
        let mv = |m: &[f32], x: &[f32]| -> Vec<f32> {
            (0..n_ff).map(|i| m[i * n_embd..(i + 1) * n_embd].iter().zip(x).map(|(a, b)| a * b).sum()).collect()
        };
        let half = toks.len() / 2;
        let rms: Vec<f32> = toks.iter().map(|t| t.1).collect();
        let med = quantile(&rms[..half], 0.5);
        println!(
            "layer {l}: residual rms p10 {:.2} p50 {:.2} p90 {:.2} max {:.2}",
            quantile(&rms, 0.1), quantile(&rms, 0.5), quantile(&rms, 0.9), quantile(&rms, 1.0)
        );
        // calibration half: mean |u|, and the scores to set thresholds from
        let mut mean_u = vec![0f32; n_ff];
        let mut a_h = Vec::new();
        for (x, _) in &toks[..half] {
            let ux = mv(&u, x);
            let a: Vec<f32> = mv(&g, x).iter().map(|&v| act(v, gelu)).collect();
            for i in 0..n_ff {
                mean_u[i] += ux[i].abs() / half as f32;
            }
            a_h.push((a, ux));
        }
        // thresholds per power: quantiles of the scaled scores over the calibration half
        let mut th = vec![(vec![0f32; s1s.len()], vec![0f32; s2s.len()]); pows.len()];
        for (pi, &p) in pows.iter().enumerate() {
            let mut sc1 = Vec::new();
            let mut sc2 = Vec::new();
            for (t, (a, ux)) in a_h.iter().enumerate() {
                let k = (rms[t] / med).powf(p);
                for i in 0..n_ff {
                    sc1.push(a[i].abs() * mean_u[i] / k);
                    sc2.push((a[i] * ux[i]).abs() / k);
                }
            }
            for (j, &s) in s1s.iter().enumerate() {
                th[pi].0[j] = quantile(&sc1, s);
            }
            for (j, &s) in s2s.iter().enumerate() {
                th[pi].1[j] = quantile(&sc2, s);
            }
        }
        for (x, r) in &toks[half..] {
            let a: Vec<f32> = mv(&g, x).iter().map(|&v| act(v, gelu)).collect();
            let ux = mv(&u, x);
            let h: Vec<f32> = (0..n_ff).map(|i| a[i] * ux[i]).collect();
            for (pi, &p) in pows.iter().enumerate() {
                let k = (r / med).powf(p);
                for (i1, _) in s1s.iter().enumerate() {
                    for (i2, _) in s2s.iter().enumerate() {
                        let (t1, t2) = (th[pi].0[i1] * k, th[pi].1[i2] * k);
                        let mut e = vec![0f32; n_embd];
                        let mut sv = 0f64;
                        for i in 0..n_ff {
                            let skip_ud = a[i].abs() * mean_u[i] < t1;
                            if skip_ud {
                                sv += ub + db;
                            } else if h[i].abs() < t2 {
                                sv += db;
                            } else {
                                continue;
                            }
                            for o in 0..n_embd {
                                e[o] += h[i] * dcols[i][o];
                            }
                        }
                        let err = e.iter().map(|v| (*v as f64) * (*v as f64)).sum::<f64>() / (n_embd as f64 * (*r as f64).powi(2));
                        res[pi][i1][i2].0 += sv / (n_ff as f64 * tb);
                        res[pi][i1][i2].1 += err;
                    }
                }
            }
            cnt += 1;
        }
        eprintln!("layer {l} done");
    }
    println!("# {path}, {n_tok} tokens, every 2nd layer; thresholds from the first half, errors on the second ({cnt} samples)");
    println!("# pow s1 s2 bytes_saved resid_rel_err(x1e6)");
    for (pi, p) in pows.iter().enumerate() {
        for (i1, s1) in s1s.iter().enumerate() {
            for (i2, s2) in s2s.iter().enumerate() {
                let (b, e) = res[pi][i1][i2];
                println!("{p} {s1} {s2} {:.4} {:.3}", b / cnt as f64, e / cnt as f64 * 1e6);
            }
        }
    }
    Ok(())
}
