// Experiment: do weight-informed scores (WINA: |x_j|·‖W[:,j]‖ for input sparsity, |h_i|·‖d_i‖
// for the down stage) beat the plain magnitudes at the same share skipped?
// Relative squared FFN output error on captured FFN inputs of SmolLM2-135M Q4_K_M, per-token
// top-k masks (the engine uses calibrated per-layer thresholds; same ordering per token).
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

    // scheme: (name, input share, input weighting, s1, first-stage d-weighting, s2 total down, down weighting)
    // input weighting: 0 none (TEAL), 1 gate+up column norms, 2 gate column norm only
    let mut schemes: Vec<(String, f32, u8, f32, bool, f32, bool)> = Vec::new();
    for s in [0.1f32, 0.2, 0.3] {
        for wi in [0u8, 1, 2] {
            schemes.push((format!("input:{s} w{wi}"), s, wi, 0.0, false, 0.0, false));
        }
    }
    for s2 in [0.3f32, 0.45, 0.55] {
        for dw in [false, true] {
            schemes.push((format!("product:{s2} dw={dw}"), 0.0, 0, 0.0, false, s2, dw));
        }
    }
    for (s1, s2) in [(0.2f32, 0.4f32), (0.3, 0.5)] {
        for (fw, dw) in [(false, false), (false, true), (true, true)] {
            schemes.push((format!("cascade:{s1}:{s2} fw={fw} dw={dw}"), 0.0, 0, s1, fw, s2, dw));
        }
    }
    for (si, s1, s2) in [(0.1f32, 0.2f32, 0.4f32), (0.2, 0.2, 0.45)] {
        for (wi, fw, dw) in [(0u8, false, false), (1, false, true), (2, false, true), (1, true, true)] {
            schemes.push((format!("input:{si}+cascade:{s1}:{s2} w{wi} fw={fw} dw={dw}"), si, wi, s1, fw, s2, dw));
        }
    }
    let mut err = vec![0f64; schemes.len()];
    let mut bytes = vec![0f64; schemes.len()];
    let mut cnt = 0usize;
    let mut dnorm_cv = Vec::new();
    let mut cnorm_cv = Vec::new();
    let cv = |v: &[f32]| {
        let n = v.len() as f64;
        let m = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        (v.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / n).sqrt() / m
    };
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
        let (gb, ub, db) = (w.gate.total_bytes() as f64, w.up.total_bytes() as f64, w.down.total_bytes() as f64);
        let dense_b = gb + ub + db;
        let dcols: Vec<Vec<f32>> = (0..n_ff).map(|i| (0..n_embd).map(|o| d[o * n_ff + i]).collect()).collect();
        let dnorm: Vec<f32> = dcols.iter().map(|c| c.iter().map(|v| v * v).sum::<f32>().sqrt()).collect();
        let gcol: Vec<f32> = (0..n_embd).map(|j| (0..n_ff).map(|i| g[i * n_embd + j].powi(2)).sum::<f32>()).collect();
        let ucol: Vec<f32> = (0..n_embd).map(|j| (0..n_ff).map(|i| u[i * n_embd + j].powi(2)).sum::<f32>()).collect();
        let cw1: Vec<f32> = (0..n_embd).map(|j| (gcol[j] + ucol[j]).sqrt()).collect();
        let cw2: Vec<f32> = gcol.iter().map(|v| v.sqrt()).collect();
        dnorm_cv.push(cv(&dnorm));
        cnorm_cv.push(cv(&cw1));
        let toks = &xs[l];
        let mv = |m: &[f32], x: &[f32]| -> Vec<f32> {
            (0..n_ff).map(|i| m[i * n_embd..(i + 1) * n_embd].iter().zip(x).map(|(a, b)| a * b).sum()).collect()
        };
        // calibrated mean |up·x| per neuron over all tokens (upw)
        let mut mean_u = vec![0f32; n_ff];
        let ux_all: Vec<Vec<f32>> = toks.iter().map(|x| mv(&u, x)).collect();
        for ux in &ux_all {
            for i in 0..n_ff {
                mean_u[i] += ux[i].abs() / toks.len() as f32;
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
        for (t, x) in toks.iter().enumerate() {
            let gx = mv(&g, x);
            let h: Vec<f32> = (0..n_ff).map(|i| act(gx[i], gelu) * ux_all[t][i]).collect();
            let y0 = y_of(&h);
            let norm: f64 = y0.iter().map(|v| v * v).sum();
            for (k, &(_, si, wi, s1, fw, s2, dw)) in schemes.iter().enumerate() {
                let mut xm = x.clone();
                if si > 0.0 {
                    let sc: Vec<f32> = (0..n_embd)
                        .map(|j| x[j].abs() * match wi { 0 => 1.0, 1 => cw1[j], _ => cw2[j] })
                        .collect();
                    for j in smallest(&sc, si) {
                        xm[j] = 0.0;
                    }
                }
                let (gm, um) = if si > 0.0 { (mv(&g, &xm), mv(&u, &xm)) } else { (gx.clone(), ux_all[t].clone()) };
                let a: Vec<f32> = gm.iter().map(|&v| act(v, gelu)).collect();
                let mut hh: Vec<f32> = (0..n_ff).map(|i| a[i] * um[i]).collect();
                let mut skip_all = vec![false; n_ff];
                if s1 > 0.0 {
                    let sc: Vec<f32> = (0..n_ff).map(|i| a[i].abs() * mean_u[i] * if fw { dnorm[i] } else { 1.0 }).collect();
                    for i in smallest(&sc, s1) {
                        skip_all[i] = true;
                        hh[i] = 0.0;
                    }
                }
                let n_down_skip = (s2 * n_ff as f32) as usize;
                let n1 = skip_all.iter().filter(|&&b| b).count();
                if n_down_skip > n1 {
                    let mut surv: Vec<usize> = (0..n_ff).filter(|&i| !skip_all[i]).collect();
                    let sc = |i: usize| hh[i].abs() * if dw { dnorm[i] } else { 1.0 };
                    surv.sort_by(|&p, &q| sc(p).total_cmp(&sc(q)));
                    for &i in &surv[..n_down_skip - n1] {
                        hh[i] = 0.0;
                    }
                }
                let ys = y_of(&hh);
                err[k] += ys.iter().zip(&y0).map(|(p, q)| (p - q) * (p - q)).sum::<f64>() / norm;
                let saved = (gb + ub) * si as f64
                    + ub * (1.0 - si as f64) * (n1 as f64 / n_ff as f64)
                    + db * (n1.max(n_down_skip) as f64 / n_ff as f64);
                bytes[k] += saved / dense_b;
            }
            cnt += 1;
        }
        eprintln!("layer {l} done");
    }
    println!("# {path}, {n_tok} tokens of the calibration corpus, every 2nd layer, {cnt} samples");
    println!("# CV of down-column norms per layer: {:?}", dnorm_cv.iter().map(|v| (v * 100.0).round() / 100.0).collect::<Vec<_>>());
    println!("# CV of gate+up input-column norms per layer: {:?}", cnorm_cv.iter().map(|v| (v * 100.0).round() / 100.0).collect::<Vec<_>>());
    println!("{:<50} {:>10} {:>12}", "scheme", "bytes", "rel.sq.err");
    for (k, s) in schemes.iter().enumerate() {
        println!("{:<50} {:>9.1}% {:>12.5}", s.0, 100.0 * bytes[k] / cnt as f64, err[k] / cnt as f64);
    }
    Ok(())
}
