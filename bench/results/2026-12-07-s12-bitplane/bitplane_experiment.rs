// Experiment (s12, 2026-12-07): bit-plane split of Q5_0 gate/up rows. The high bits (with the
// block scale) are read for every neuron and give a coarse gate / up; the low bits are read
// only for neurons the coarse values do not skip, so survivors stay exact. Against the plain
// cascade at equal FFN bytes; relative squared FFN output error on captured FFN inputs.
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


    // kind 0 cascade s1:s2 (upw first stage, true |h| second)
    // kind 1 bit-plane gate only: skip-all by coarse |act(g_c)|*mean|u|, band by true |h|
    // kind 2 bit-plane gate + up: band by |a * u_c| (coarse up), skipping up's low plane too
    let mut cfgs: Vec<(String, u8, u32, f32, f32)> = Vec::new();
    for s1 in [0.1f32, 0.15, 0.2, 0.25, 0.3, 0.35] {
        for s2 in [0.3f32, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6] {
            if s2 > s1 {
                cfgs.push((format!("cascade {s1}:{s2}"), 0, 0, s1, s2));
                for hb in [3u32, 2] {
                    cfgs.push((format!("bpgate{hb} {s1}:{s2}"), 1, hb, s1, s2));
                    cfgs.push((format!("bpboth{hb} {s1}:{s2}"), 2, hb, s1, s2));
                }
            }
        }
    }
    let nc = cfgs.len();
    let mut err = vec![0f64; nc];
    let mut saved = vec![0f64; nc];
    let mut cnt = 0usize;
    for l in (0..n_layer).step_by(2) {
        let w = layer_weights(&model, l, None)?;
        let (n_ff, n_embd) = (w.n_ff(), w.n_embd());
        assert_eq!(format!("{}", w.gate.ty), "q5_0", "gate type");
        assert_eq!(format!("{}", w.up.ty), "q5_0", "up type");
        let deq = |m: &ghostcore::sparsity::QMatrix| {
            let mut v = vec![0f32; m.n_rows * m.n_cols];
            for r in 0..m.n_rows {
                m.dequantize_row(r, &mut v[r * m.n_cols..(r + 1) * m.n_cols]).unwrap();
            }
            v
        };
        // coarse copy keeping the hb high bits of each 5-bit quant, low bits at their midpoint
        let coarse = |m: &ghostcore::sparsity::QMatrix, w: &[f32], hb: u32| -> Vec<f32> {
            let lb = 5 - hb;
            let mut out = vec![0f32; w.len()];
            for (bi, (b, o)) in w.chunks(32).zip(out.chunks_mut(32)).enumerate() {
                let raw = &m.data[bi * 22..bi * 22 + 2];
                let d = half::f16::from_le_bytes([raw[0], raw[1]]).to_f32();
                for (v, o) in b.iter().zip(o) {
                    if d == 0.0 {
                        *o = 0.0;
                        continue;
                    }
                    let q = (v / d).round() as i32 + 16;
                    assert!((0..32).contains(&q), "q {q}");
                    let qc = ((q >> lb) << lb) as f32 + ((1 << lb) as f32 - 1.0) / 2.0;
                    *o = d * (qc - 16.0);
                }
            }
            out
        };
        let gb = w.gate.total_bytes() as f64 / n_ff as f64;
        let ub = w.up.total_bytes() as f64 / n_ff as f64;
        let db = w.down.total_bytes() as f64 / n_ff as f64;
        let tb = gb + ub + db;
        let lo_frac = |hb: u32| ((5 - hb) * 4) as f64 / 22.0;
        let (g, u, d) = (deq(&w.gate), deq(&w.up), deq(&w.down));
        let gc: Vec<Vec<f32>> = [3u32, 2].iter().map(|&hb| coarse(&w.gate, &g, hb)).collect();
        let uc: Vec<Vec<f32>> = [3u32, 2].iter().map(|&hb| coarse(&w.up, &u, hb)).collect();
        let dcols: Vec<Vec<f32>> = (0..n_ff).map(|i| (0..n_embd).map(|o| d[o * n_ff + i]).collect()).collect();
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
        for x in &toks[half..] {
            let a: Vec<f32> = mv(&g, x).iter().map(|&v| act(v, gelu)).collect();
            let ac: Vec<Vec<f32>> = gc.iter().map(|m| mv(m, x).iter().map(|&v| act(v, gelu)).collect()).collect();
            let ux = mv(&u, x);
            let ucx: Vec<Vec<f32>> = uc.iter().map(|m| mv(m, x)).collect();
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
            let upwc_order: Vec<Vec<usize>> = ac
                .iter()
                .map(|acx| order(&(0..n_ff).map(|i| acx[i].abs() * mean_u[i]).collect::<Vec<_>>()))
                .collect();
            for (k, (_, kind, hb, s1, s2)) in cfgs.iter().enumerate() {
                let n1 = (s1 * n_ff as f32) as usize;
                let n2 = (s2 * n_ff as f32) as usize;
                let hi = if *hb == 3 { 0 } else { 1 };
                let mut hh = h.clone();
                let mut dead = vec![false; n_ff];
                let first = if *kind == 0 { &upw_order } else { &upwc_order[hi] };
                for &i in &first[..n1] {
                    dead[i] = true;
                    hh[i] = 0.0;
                }
                let mut surv: Vec<usize> = (0..n_ff).filter(|&i| !dead[i]).collect();
                if *kind == 2 {
                    let ucx = &ucx[hi];
                    surv.sort_by(|&p, &q| (a[p] * ucx[p]).abs().total_cmp(&(a[q] * ucx[q]).abs()));
                } else {
                    surv.sort_by(|&p, &q| hh[p].abs().total_cmp(&hh[q].abs()));
                }
                for &i in &surv[..n2 - n1] {
                    hh[i] = 0.0;
                }
                let sv = match kind {
                    0 => n1 as f64 * (ub + db) + (n2 - n1) as f64 * db,
                    1 => n1 as f64 * (ub + db + gb * lo_frac(*hb)) + (n2 - n1) as f64 * db,
                    _ => n1 as f64 * (ub + db + gb * lo_frac(*hb)) + (n2 - n1) as f64 * (db + ub * lo_frac(*hb)),
                };
                let mut e = vec![0f32; n_embd];
                for i in 0..n_ff {
                    let dlt = hh[i] - h[i];
                    if dlt != 0.0 {
                        for o in 0..n_embd {
                            e[o] += dlt * dcols[i][o];
                        }
                    }
                }
                err[k] += e.iter().map(|v| (*v as f64) * (*v as f64)).sum::<f64>() / norm;
                saved[k] += sv / (n_ff as f64 * tb);
            }
            cnt += 1;
        }
        eprintln!("layer {l} done (gate {gb:.0} up {ub:.0} down {db:.0} B/neuron)");
    }
    println!("# {path}, {n_tok} tokens, every 2nd layer; mean|up| from the first half, errors on the second ({cnt} samples)");
    println!("# config, FFN bytes saved (share), relative squared FFN output error");
    for (k, c) in cfgs.iter().enumerate() {
        println!("{:<28} {:.4} {:.5}", c.0, saved[k] / cnt as f64, err[k] / cnt as f64);
    }
    Ok(())
}
