// Experiment: how well does a partial up·x over the largest |x| entries predict the product
// act·up, against |act| and |act|·mean|up|, measured as FFN output error at equal first-stage
// shares. Not part of the repo.
use ghostcore::context::{Context, ContextParams};
use ghostcore::model::ffn::{DecodeFfn, FfnCall};
use ghostcore::model::{Model, ModelParams};
use ghostcore::sparsity::engine::layer_weights;
use ghostcore::sparsity::{sparse_ffn, FfnScratch, LayerPlan};
use std::sync::{Arc, Mutex};

struct Rec { layer: usize, xs: Arc<Mutex<Vec<Vec<Vec<f32>>>>> }
impl DecodeFfn for Rec {
    fn forward(&self, call: &FfnCall<'_>, x: &[f32], out: &mut [f32]) -> ghostcore::Result<()> {
        let w = layer_weights(call.model, self.layer, None)?;
        let mut s = FfnScratch::default();
        sparse_ffn(&w, &LayerPlan::DENSE, x, &mut s, &ghostcore::sparsity::Serial, out)?;
        self.xs.lock().unwrap()[self.layer].push(x.to_vec());
        Ok(())
    }
}

fn silu(x: f32) -> f32 { x / (1.0 + (-x).exp()) }

fn main() -> ghostcore::Result<()> {
    let path = "/work/shared/models/smollm2-135m-q4_k_m.gguf";
    let model: Arc<Model> = Model::load(path, &ModelParams::default())?;
    let n_layer = model.config().n_layer;
    let text = std::fs::read_to_string("/work/main/tests/data/sparsity/calibration-corpus.txt").unwrap();
    let ids = model.tokenizer()?.encode(&text, false, false)?;
    let ids = &ids[..256];
    let mut ctx = Context::new(model.clone(), ContextParams { n_ctx: 512, n_batch: 512, n_threads: 1, exact_prefill: false, ..Default::default() })?;
    ctx.set_decode_ffn_in_batches(true);
    let xs = Arc::new(Mutex::new(vec![Vec::new(); n_layer]));
    for l in 0..n_layer { ctx.set_decode_ffn(l, Some(Arc::new(Rec { layer: l, xs: xs.clone() })))?; }
    ctx.decode_all_logits(ids)?;
    let xs = xs.lock().unwrap().clone();
    let ks = [0.05f32, 0.1, 0.15, 0.2];
    let s1s = [0.2f32, 0.3, 0.4];
    let s2 = 0.45f32; // total share of down rows dropped
    // errors[predictor][s1]
    let names: Vec<String> = ["act", "upw", "oracle-product"].iter().map(|s| s.to_string())
        .chain(ks.iter().map(|k| format!("partial{k}"))).collect();
    let mut err = vec![vec![0f64; s1s.len()]; names.len()];
    let mut cnt = 0usize;
    for l in (0..n_layer).step_by(3) {
        let w = layer_weights(&model, l, None)?;
        let (n_ff, n_embd) = (w.n_ff(), w.n_embd());
        let deq = |m: &ghostcore::sparsity::QMatrix| { let mut v = vec![0f32; m.n_rows * m.n_cols]; for r in 0..m.n_rows { m.dequantize_row(r, &mut v[r*m.n_cols..(r+1)*m.n_cols]).unwrap(); } v };
        let (g, u, d) = (deq(&w.gate), deq(&w.up), deq(&w.down));
        let toks = &xs[l];
        // mean |up·x| per neuron
        let mut mean_u = vec![0f64; n_ff];
        let mut per_tok = Vec::new();
        for x in toks.iter() {
            let gx: Vec<f32> = (0..n_ff).map(|i| (0..n_embd).map(|j| g[i*n_embd+j]*x[j]).sum()).collect();
            let ux: Vec<f32> = (0..n_ff).map(|i| (0..n_embd).map(|j| u[i*n_embd+j]*x[j]).sum()).collect();
            for i in 0..n_ff { mean_u[i] += ux[i].abs() as f64; }
            per_tok.push((gx, ux));
        }
        for m in mean_u.iter_mut() { *m /= toks.len() as f64; }
        for (x, (gx, ux)) in toks.iter().zip(&per_tok) {
            let a: Vec<f32> = gx.iter().map(|&v| silu(v)).collect();
            let h: Vec<f32> = (0..n_ff).map(|i| a[i]*ux[i]).collect();
            let y = |hh: &[f32]| -> Vec<f64> { (0..n_embd).map(|o| (0..n_ff).map(|i| d[o*n_ff+i] as f64 * hh[i] as f64).sum()).collect() };
            let y0 = y(&h);
            let norm: f64 = y0.iter().map(|v| v*v).sum();
            // order of |x|
            let mut order: Vec<usize> = (0..n_embd).collect();
            order.sort_by(|&p, &q| x[q].abs().total_cmp(&x[p].abs()));
            let mut scores: Vec<Vec<f32>> = vec![
                a.iter().map(|v| v.abs()).collect(),
                (0..n_ff).map(|i| a[i].abs() * mean_u[i] as f32).collect(),
                h.iter().map(|v| v.abs()).collect(),
            ];
            for &k in &ks {
                let kk = ((k * n_embd as f32) as usize).max(1);
                let cols = &order[..kk];
                scores.push((0..n_ff).map(|i| { let p: f32 = cols.iter().map(|&j| u[i*n_embd+j]*x[j]).sum(); (a[i]*p).abs() }).collect());
            }
            for (pi, sc) in scores.iter().enumerate() {
                let mut idx: Vec<usize> = (0..n_ff).collect();
                idx.sort_by(|&p, &q| sc[p].total_cmp(&sc[q]));
                for (si, &s1) in s1s.iter().enumerate() {
                    let n1 = (s1 * n_ff as f32) as usize;
                    let mut hh = h.clone();
                    for &i in &idx[..n1] { hh[i] = 0.0; }
                    // second stage: drop smallest |h| among survivors to total s2
                    let n2 = (s2 * n_ff as f32) as usize;
                    if n2 > n1 {
                        let mut surv: Vec<usize> = idx[n1..].to_vec();
                        surv.sort_by(|&p, &q| h[p].abs().total_cmp(&h[q].abs()));
                        for &i in &surv[..n2 - n1] { hh[i] = 0.0; }
                    }
                    let ys = y(&hh);
                    let e: f64 = ys.iter().zip(&y0).map(|(p, q)| (p-q)*(p-q)).sum();
                    err[pi][si] += e / norm;
                }
            }
            cnt += 1;
        }
        eprintln!("layer {l} done");
    }
    println!("mean relative squared FFN output error, first stage share s1 (up+down skipped), down share {s2} total; {cnt} (layer,token) samples");
    print!("{:<16}", "predictor"); for s in s1s { print!(" s1={s:<8}"); } println!();
    for (pi, n) in names.iter().enumerate() {
        print!("{n:<16}"); for si in 0..s1s.len() { print!(" {:<11.5}", err[pi][si] / cnt as f64); } println!();
    }
    Ok(())
}
