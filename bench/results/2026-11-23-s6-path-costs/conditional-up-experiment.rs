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
    let ids = &ids[..384];
    let mut ctx = Context::new(model.clone(), ContextParams { n_ctx: 512, n_batch: 512, n_threads: 2, exact_prefill: false, ..Default::default() })?;
    ctx.set_decode_ffn_in_batches(true);
    let xs = Arc::new(Mutex::new(vec![Vec::new(); n_layer]));
    for l in 0..n_layer { ctx.set_decode_ffn(l, Some(Arc::new(Rec { layer: l, xs: xs.clone() })))?; }
    ctx.decode_all_logits(ids)?;
    let xs = xs.lock().unwrap().clone();

    // first stage: skip up+down for the s1 smallest predicted |h|, then down for the smallest true |h| up to s2
    let s1s = [0.2f32, 0.3, 0.4, 0.45];
    let s2 = 0.45f32;
    let names = ["upw", "cond-lin", "cond-abs", "oracle"];
    let mut errs = vec![vec![0f64; s1s.len()]; names.len()];
    let mut cnt = 0usize;
    let mut rho_hist = vec![0usize; 10];
    for l in (0..n_layer).step_by(3) {
        let w = layer_weights(&model, l, None)?;
        let (n_ff, n_embd) = (w.n_ff(), w.n_embd());
        let deq = |m: &ghostcore::sparsity::QMatrix| { let mut v = vec![0f32; m.n_rows * m.n_cols]; for r in 0..m.n_rows { m.dequantize_row(r, &mut v[r*m.n_cols..(r+1)*m.n_cols]).unwrap(); } v };
        let (g, u, d) = (deq(&w.gate), deq(&w.up), deq(&w.down));
        let toks = &xs[l];
        let gx_all: Vec<Vec<f32>> = toks.iter().map(|x| (0..n_ff).map(|i| (0..n_embd).map(|j| g[i*n_embd+j]*x[j]).sum()).collect()).collect();
        let ux_all: Vec<Vec<f32>> = toks.iter().map(|x| (0..n_ff).map(|i| (0..n_embd).map(|j| u[i*n_embd+j]*x[j]).sum()).collect()).collect();
        let half = toks.len() / 2;
        // fit on first half: mean|u|; u ~ a g + b (residual sd s); |u| ~ c |g| + e
        let mut mean_u = vec![0f64; n_ff];
        let (mut lin, mut abs_) = (vec![(0f64, 0f64, 0f64); n_ff], vec![(0f64, 0f64); n_ff]);
        for i in 0..n_ff {
            let n = half as f64;
            let (mut sg, mut su, mut sgg, mut sgu, mut suu, mut sa, mut sau, mut saa, mut sabs) = (0f64,0f64,0f64,0f64,0f64,0f64,0f64,0f64,0f64);
            for t in 0..half { let (gv, uv) = (gx_all[t][i] as f64, ux_all[t][i] as f64); sg+=gv; su+=uv; sgg+=gv*gv; sgu+=gv*uv; suu+=uv*uv; let ag=gv.abs(); sa+=ag; sau+=ag*uv.abs(); saa+=ag*ag; sabs+=uv.abs(); }
            mean_u[i] = sabs / n;
            let vg = sgg/n - (sg/n).powi(2); let cgu = sgu/n - sg/n*su/n; let vu = suu/n - (su/n).powi(2);
            let a = if vg > 0.0 { cgu / vg } else { 0.0 }; let b = su/n - a*sg/n;
            let res = (vu - a*cgu).max(1e-12).sqrt();
            lin[i] = (a, b, res);
            let rho = cgu / (vg*vu).sqrt().max(1e-12);
            rho_hist[((rho.abs()*10.0) as usize).min(9)] += 1;
            let va = saa/n - (sa/n).powi(2); let c = if va > 0.0 { (sau/n - sa/n*sabs/n) / va } else { 0.0 };
            abs_[i] = (c, sabs/n - c*sa/n);
        }
        let dcols: Vec<Vec<f32>> = (0..n_ff).map(|i| (0..n_embd).map(|o| d[o*n_ff+i]).collect()).collect();
        for t in half..toks.len() {
            let (gx, ux) = (&gx_all[t], &ux_all[t]);
            let a: Vec<f32> = gx.iter().map(|&v| silu(v)).collect();
            let h: Vec<f32> = (0..n_ff).map(|i| a[i]*ux[i]).collect();
            let y = |hh: &[f32]| -> Vec<f64> { let mut y = vec![0f64; n_embd]; for i in 0..n_ff { if hh[i] != 0.0 { for o in 0..n_embd { y[o] += (hh[i]*dcols[i][o]) as f64; } } } y };
            let y0 = y(&h);
            let norm: f64 = y0.iter().map(|v| v*v).sum();
            // E|N(m, s)| = s*sqrt(2/pi)*exp(-m^2/2s^2) + m*(1-2Phi(-m/s))
            let en = |m: f64, s: f64| -> f64 { let z = m / s; s * (2.0/std::f64::consts::PI).sqrt() * (-z*z/2.0).exp() + m * libm_erf(z / 2f64.sqrt()) };
            let scores: Vec<Vec<f32>> = vec![
                (0..n_ff).map(|i| a[i].abs() * mean_u[i] as f32).collect(),
                (0..n_ff).map(|i| { let (aa, b, s) = lin[i]; (a[i].abs() as f64 * en(aa*gx[i] as f64 + b, s)) as f32 }).collect(),
                (0..n_ff).map(|i| { let (c, e) = abs_[i]; a[i].abs() * ((c*gx[i].abs() as f64 + e).max(0.0)) as f32 }).collect(),
                h.iter().map(|v| v.abs()).collect(),
            ];
            for (pi, sc) in scores.iter().enumerate() {
                let mut idx: Vec<usize> = (0..n_ff).collect();
                idx.sort_by(|&p, &q| sc[p].total_cmp(&sc[q]));
                for (si, &s1) in s1s.iter().enumerate() {
                    let n1 = (s1 * n_ff as f32) as usize;
                    let mut hh = h.clone();
                    for &i in &idx[..n1] { hh[i] = 0.0; }
                    let n2 = (s2 * n_ff as f32) as usize;
                    if n2 > n1 { let mut surv: Vec<usize> = idx[n1..].to_vec(); surv.sort_by(|&p, &q| h[p].abs().total_cmp(&h[q].abs())); for &i in &surv[..n2-n1] { hh[i] = 0.0; } }
                    let ys = y(&hh);
                    errs[pi][si] += ys.iter().zip(&y0).map(|(p, q)| (p-q)*(p-q)).sum::<f64>() / norm;
                }
            }
            cnt += 1;
        }
        eprintln!("layer {l} done");
    }
    println!("|rho(g,u)| histogram by tenths: {rho_hist:?}");
    println!("first stage share s1, down share {s2} total; {cnt} held-out samples");
    for (pi, n) in names.iter().enumerate() { print!("{n:<10}"); for si in 0..s1s.len() { print!(" s1={:.2}:{:.5}", s1s[si], errs[pi][si] / cnt as f64); } println!(); }
    Ok(())
}
fn libm_erf(x: f64) -> f64 { // Abramowitz-Stegun 7.1.26
    let s = x.signum(); let x = x.abs(); let t = 1.0/(1.0+0.3275911*x);
    let y = 1.0 - (((((1.061405429*t - 1.453152027)*t) + 1.421413741)*t - 0.284496736)*t + 0.254829592)*t*(-x*x).exp();
    s*y
}
