//! Experiment (session 14): decode with the fused gate/up pass on and off, alternating 8-token
//! blocks in one process; prints the median ratio of block times (fused / unfused speed).
use ghostcore::context::{Context, ContextParams};
use ghostcore::model::{Model, ModelParams};
use std::sync::atomic::Ordering;
use std::time::Instant;
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let t: usize = a[2].parse().unwrap();
    let pairs: usize = a[3].parse().unwrap();
    let model = Model::load(&a[1], &ModelParams { skip_tokenizer: true, ..Default::default() }).unwrap();
    let mut ctx = Context::new(model, ContextParams { n_ctx: 512, n_batch: 64, n_threads: t, ..Default::default() }).unwrap();
    let mut ratios = Vec::new();
    let mut tok = 1u32;
    for p in 0..pairs {
        let mut times = [0f64; 2];
        let order = if p % 2 == 0 { [true, false] } else { [false, true] };
        for fuse in order {
            ghostcore::model::ffn::EXP_FUSE.store(fuse, Ordering::Relaxed);
            if ctx.n_past() + 8 > 500 { ctx.reset(); }
            let s = Instant::now();
            for _ in 0..8 {
                ctx.decode(&[tok]).unwrap();
                tok = (tok * 7 + 13) % 1000 + 1;
            }
            times[usize::from(!fuse)] = s.elapsed().as_secs_f64();
        }
        ratios.push(times[1] / times[0]);
    }
    ratios.sort_by(|a, b| a.total_cmp(b));
    let faster = ratios.iter().filter(|&&r| r > 1.0).count();
    println!("t={t}: fused speed / unfused = {:.4} (median of {pairs} pairs; fused faster in {faster})", ratios[pairs / 2]);
}
