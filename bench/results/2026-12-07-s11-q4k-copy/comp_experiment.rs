// Experiment (s11, 2026-12-07): compensate each skipped neuron by its calibrated conditional
// mean h (folded into a constant vector, so no extra bytes: y = C + sum over active of
// (h_i - c_i) d_i), against the plain cascade. Means from the first half of the tokens, errors
// on the second. Run as an example of ghostcore: `comp_experiment MODEL 256`.
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
fn order(score: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..score.len()).collect();
    idx.sort_by(|&p, &q| score[p].total_cmp(&score[q]));
    idx
}
/// Quantize-dequantize per 32 weights: bits 1 = sign·mean|w|; else asymmetric RTN.
fn sketch(w: &[f32], bits: u32) -> Vec<f32> {
    let mut out = vec![0f32; w.len()];
    for (b, o) in w.chunks(32).zip(out.chunks_mut(32)) {
        if bits == 1 {
            let a = b.iter().map(|v| v.abs()).sum::<f32>() / b.len() as f32;
            for (v, o) in b.iter().zip(o) {
                *o = if *v >= 0.0 { a } else { -a };
            }
        } else {
            let lv = ((1u32 << bits) - 1) as f32;
            let mn = b.iter().cloned().fold(f32::MAX, f32::min);
            let mx = b.iter().cloned().fold(f32::MIN, f32::max);
            let s = ((mx - mn) / lv).max(1e-12);
            for (v, o) in b.iter().zip(o) {
                *o = mn + ((v - mn) / s).round().clamp(0.0, lv) * s;
            }
        }
    }
    out
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

    // configurations: (name, kind, bits, s3, s1, s2)
    // kind 0 cascade(upw): skip up+down for s1 smallest |a|*mean|u|, down to s2 by true |h|
    // kind 3 lowdown: cascade s1:s2, then survivors up to s3 (by |h|) read a `bits`-bit down column
    let mut cfgs: Vec<(String, u8, u32, f32, f32, f32)> = Vec::new();
    for s1 in [0.1f32, 0.15, 0.2, 0.25, 0.3] {
        for s2 in [0.3f32, 0.35, 0.4, 0.45, 0.5, 0.55] {
            if s2 > s1 {
                cfgs.push((format!("cascade {s1}:{s2}"), 0, 0, 0.0, s1, s2));
            }
        }
    }
    let nc = cfgs.len();
    let mut err = vec![0f64; nc];
    let mut err_comp = vec![0f64; nc];
    let mut saved = vec![0f64; nc];
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
        let up_bpw = ub * 8.0 / n_embd as f64;
        let (g, u, d) = (deq(&w.gate), deq(&w.up), deq(&w.down));
        let sk: Vec<Vec<f32>> = (1..=3).map(|b| sketch(&u, b)).collect();
        let _ = &sk;
        let dcols: Vec<Vec<f32>> = (0..n_ff).map(|i| (0..n_embd).map(|o| d[o * n_ff + i]).collect()).collect();
        let dlow: Vec<Vec<Vec<f32>>> = (0..=3).map(|b| if b < 2 { Vec::new() } else { dcols.iter().map(|c| sketch(c, b)).collect() }).collect();
        let down_bpw = db * 8.0 / n_embd as f64;
        let toks = &xs[l];
        let mv = |m: &[f32], x: &[f32]| -> Vec<f32> {
            (0..n_ff).map(|i| m[i * n_embd..(i + 1) * n_embd].iter().zip(x).map(|(a, b)| a * b).sum()).collect()
        };
        let half = toks.len() / 2;
        let mut mean_u = vec![0f32; n_ff];
        for x in &toks[..half] {
            let ux = mv(&u, x);
            for i in 0..n_ff {
                mean_u[i] += ux[i].abs() / half as f32;
            }
        }
        // per config, per neuron: sum of h where skipped, count
        let mut csum = vec![vec![0f64; n_ff]; nc];
        let mut ccnt = vec![vec![0u32; n_ff]; nc];
        let skip_set = |h: &[f32], upw_order: &[usize], s1: f32, s2: f32| -> Vec<bool> {
            let n1 = (s1 * n_ff as f32) as usize;
            let n2 = (s2 * n_ff as f32) as usize;
            let mut dead = vec![false; n_ff];
            for &i in &upw_order[..n1] {
                dead[i] = true;
            }
            let mut surv: Vec<usize> = (0..n_ff).filter(|&i| !dead[i]).collect();
            surv.sort_by(|&p, &q| h[p].abs().total_cmp(&h[q].abs()));
            for &i in &surv[..n2 - n1] {
                dead[i] = true;
            }
            dead
        };
        for x in &toks[..half] {
            let a: Vec<f32> = mv(&g, x).iter().map(|&v| act(v, gelu)).collect();
            let ux = mv(&u, x);
            let h: Vec<f32> = (0..n_ff).map(|i| a[i] * ux[i]).collect();
            let upw: Vec<f32> = (0..n_ff).map(|i| a[i].abs() * mean_u[i]).collect();
            let upw_order = order(&upw);
            for (k, c) in cfgs.iter().enumerate() {
                let dead = skip_set(&h, &upw_order, c.4, c.5);
                for i in 0..n_ff {
                    if dead[i] {
                        csum[k][i] += h[i] as f64;
                        ccnt[k][i] += 1;
                    }
                }
            }
        }
        for x in &toks[half..] {
            let a: Vec<f32> = mv(&g, x).iter().map(|&v| act(v, gelu)).collect();
            let ux = mv(&u, x);
            let uh: Vec<Vec<f32>> = sk.iter().map(|m| mv(m, x)).collect();
            let h: Vec<f32> = (0..n_ff).map(|i| a[i] * ux[i]).collect();
            let mut y0 = vec![0f32; n_embd];
            for i in 0..n_ff {
                for o in 0..n_embd {
                    y0[o] += h[i] * dcols[i][o];
                }
            }
            let norm: f64 = y0.iter().map(|v| (*v as f64) * (*v as f64)).sum();
            let upw: Vec<f32> = (0..n_ff).map(|i| a[i].abs() * mean_u[i]).collect();
            let upw_order = order(&upw);
            for (k, (_, kind, bits, c, s1, s2)) in cfgs.iter().enumerate() {
                let mut low: Vec<usize> = Vec::new();
                let n1 = (s1 * n_ff as f32) as usize;
                let n2 = (s2 * n_ff as f32) as usize;
                let nc_ = (c * n_ff as f32) as usize;
                let mut hh = h.clone();
                let mut dead = vec![false; n_ff];
                let mut sv;
                match kind {
                    _ => {
                        for &i in &upw_order[..n1] {
                            dead[i] = true;
                        }
                        sv = n1 as f64 * (ub + db) + (n2 - n1) as f64 * db;
                    }
                }
                let _ = (&uh, up_bpw, nc_);
                for i in 0..n_ff {
                    if dead[i] {
                        hh[i] = 0.0;
                    }
                }
                let already = dead.iter().filter(|&&v| v).count();
                let mut surv: Vec<usize> = (0..n_ff).filter(|&i| !dead[i]).collect();
                surv.sort_by(|&p, &q| hh[p].abs().total_cmp(&hh[q].abs()));
                for &i in &surv[..n2 - already] {
                    hh[i] = 0.0;
                }
                if *kind == 3 {
                    let n3 = ((c * n_ff as f32) as usize).min(n_ff);
                    low.extend_from_slice(&surv[n2 - already..n3 - already]);
                    let r = (*bits as f64 + 1.0) / down_bpw;
                    sv += low.len() as f64 * db * (1.0 - r);
                }
                let mut e = vec![0f32; n_embd];
                for i in 0..n_ff {
                    let dlt = hh[i] - h[i];
                    if dlt != 0.0 {
                        for o in 0..n_embd {
                            e[o] += dlt * dcols[i][o];
                        }
                    }
                }
                for &i in &low {
                    let q = &dlow[*bits as usize][i];
                    for o in 0..n_embd {
                        e[o] += h[i] * (q[o] - dcols[i][o]);
                    }
                }
                err[k] += e.iter().map(|v| (*v as f64) * (*v as f64)).sum::<f64>() / norm;
                let dead2 = skip_set(&h, &upw_order, *s1, *s2);
                let mut ec = vec![0f32; n_embd];
                for i in 0..n_ff {
                    if dead2[i] {
                        let ci = if ccnt[k][i] > 0 { (csum[k][i] / ccnt[k][i] as f64) as f32 } else { 0.0 };
                        for o in 0..n_embd {
                            ec[o] += (ci - h[i]) * dcols[i][o];
                        }
                    }
                }
                err_comp[k] += ec.iter().map(|v| (*v as f64) * (*v as f64)).sum::<f64>() / norm;
                saved[k] += sv / (n_ff as f64 * tb);
            }
            cnt += 1;
        }
        eprintln!("layer {l} done (gate {gb:.0} up {ub:.0} down {db:.0} B/neuron)");
    }
    println!("# {path}, {n_tok} tokens, every 2nd layer; mean|up| from the first half, errors on the second ({cnt} samples)");
    println!("# config, FFN bytes saved (share), relative squared FFN output error");
    for (k, c) in cfgs.iter().enumerate() {
        println!("{:<28} {:.4} {:.5} {:.5}", c.0, saved[k] / cnt as f64, err[k] / cnt as f64, err_comp[k] / cnt as f64);
    }
    Ok(())
}
