// Experiment: would a low-bit copy of down (and up) for a middle band of neurons beat skipping?
// Relative squared FFN output error vs down/up bytes saved, oracle-ordered by |product|.
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
// RTN asymmetric b-bit quantization in groups of 32 (scale+min f16 ~ 1 bit/weight overhead)
fn rtn(v: &[f32], bits: u32) -> Vec<f32> {
    let levels = ((1u32 << bits) - 1) as f32;
    let mut o = vec![0f32; v.len()];
    for (c, oc) in v.chunks(32).zip(o.chunks_mut(32)) {
        let mn = c.iter().cloned().fold(f32::INFINITY, f32::min);
        let mx = c.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let s = (mx - mn) / levels;
        for (x, y) in c.iter().zip(oc.iter_mut()) { *y = if s > 0.0 { mn + ((x - mn) / s).round() * s } else { *x }; }
    }
    o
}
fn main() -> ghostcore::Result<()> {
    let path = "/work/shared/models/smollm2-135m-q4_k_m.gguf";
    let model: Arc<Model> = Model::load(path, &ModelParams::default())?;
    let n_layer = model.config().n_layer;
    let text = std::fs::read_to_string("/work/main/tests/data/sparsity/calibration-corpus.txt").unwrap();
    let ids = model.tokenizer()?.encode(&text, false, false)?;
    let ids = &ids[..128];
    let mut ctx = Context::new(model.clone(), ContextParams { n_ctx: 512, n_batch: 512, n_threads: 2, exact_prefill: false, ..Default::default() })?;
    ctx.set_decode_ffn_in_batches(true);
    let xs = Arc::new(Mutex::new(vec![Vec::new(); n_layer]));
    for l in 0..n_layer { ctx.set_decode_ffn(l, Some(Arc::new(Rec { layer: l, xs: xs.clone() })))?; }
    ctx.decode_all_logits(ids)?;
    let xs = xs.lock().unwrap().clone();
    let grid: Vec<f32> = (0..=18).map(|i| i as f32 * 0.05).collect();
    // E[k] oracle skip error; B2[k], B3[k]: error if all of the first k neurons use 2/3-bit down instead
    let mut e_skip = vec![0f64; grid.len()];
    let mut e_b2 = vec![0f64; grid.len()];
    let mut e_b3 = vec![0f64; grid.len()];
    let mut e_skip_dn = vec![0f64; grid.len()];
    let mut cnt = 0usize;
    for l in (0..n_layer).step_by(3) {
        let w = layer_weights(&model, l, None)?;
        let (n_ff, n_embd) = (w.n_ff(), w.n_embd());
        let deq = |m: &ghostcore::sparsity::QMatrix| { let mut v = vec![0f32; m.n_rows * m.n_cols]; for r in 0..m.n_rows { m.dequantize_row(r, &mut v[r*m.n_cols..(r+1)*m.n_cols]).unwrap(); } v };
        let (g, u, d) = (deq(&w.gate), deq(&w.up), deq(&w.down));
        // neuron-major down columns and their low-bit versions
        let cols: Vec<Vec<f32>> = (0..n_ff).map(|i| (0..n_embd).map(|o| d[o*n_ff+i]).collect()).collect();
        let c2: Vec<Vec<f32>> = cols.iter().map(|c| rtn(c, 2)).collect();
        let c3: Vec<Vec<f32>> = cols.iter().map(|c| rtn(c, 3)).collect();
        let dn: Vec<f32> = cols.iter().map(|c| c.iter().map(|v| v*v).sum::<f32>().sqrt()).collect();
        for x in xs[l].iter() {
            let gx: Vec<f32> = (0..n_ff).map(|i| (0..n_embd).map(|j| g[i*n_embd+j]*x[j]).sum()).collect();
            let ux: Vec<f32> = (0..n_ff).map(|i| (0..n_embd).map(|j| u[i*n_embd+j]*x[j]).sum()).collect();
            let h: Vec<f32> = (0..n_ff).map(|i| silu(gx[i])*ux[i]).collect();
            let mut y0 = vec![0f64; n_embd];
            for i in 0..n_ff { for o in 0..n_embd { y0[o] += (h[i]*cols[i][o]) as f64; } }
            let norm: f64 = y0.iter().map(|v| v*v).sum();
            for (ordk, acc) in [(0, &mut e_skip), (1, &mut e_skip_dn)] {
                let mut idx: Vec<usize> = (0..n_ff).collect();
                if ordk == 0 { idx.sort_by(|&p, &q| h[p].abs().total_cmp(&h[q].abs())); }
                else { idx.sort_by(|&p, &q| (h[p].abs()*dn[p]).total_cmp(&(h[q].abs()*dn[q]))); }
                let mut err = vec![0f64; n_embd];
                let mut k0 = 0;
                for (gi, &s) in grid.iter().enumerate() {
                    let k = (s * n_ff as f32) as usize;
                    for &i in &idx[k0..k] { for o in 0..n_embd { err[o] += (h[i]*cols[i][o]) as f64; } }
                    k0 = k;
                    acc[gi] += err.iter().map(|v| v*v).sum::<f64>() / norm;
                }
            }
            let mut idx: Vec<usize> = (0..n_ff).collect();
            idx.sort_by(|&p, &q| h[p].abs().total_cmp(&h[q].abs()));
            for (cq, acc) in [(&c2, &mut e_b2), (&c3, &mut e_b3)] {
                let mut err = vec![0f64; n_embd];
                let mut k0 = 0;
                for (gi, &s) in grid.iter().enumerate() {
                    let k = (s * n_ff as f32) as usize;
                    for &i in &idx[k0..k] { for o in 0..n_embd { err[o] += (h[i]*(cols[i][o]-cq[i][o])) as f64; } }
                    k0 = k;
                    acc[gi] += err.iter().map(|v| v*v).sum::<f64>() / norm;
                }
            }
            cnt += 1;
        }
        eprintln!("layer {l} done");
    }
    println!("share  skip(|h|)  skip(|h|*|d|)  2bit-first-k  3bit-first-k   ({cnt} samples)");
    for (gi, s) in grid.iter().enumerate() {
        let c = cnt as f64;
        println!("{s:.2}   {:.5}    {:.5}        {:.5}       {:.5}", e_skip[gi]/c, e_skip_dn[gi]/c, e_b2[gi]/c, e_b3[gi]/c);
    }
    Ok(())
}
