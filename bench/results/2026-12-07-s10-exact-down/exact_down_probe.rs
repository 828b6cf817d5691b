// Probe used in session 10 (not built by the workspace): copy to ghostcore/examples/ and run
// `cargo run --release -p ghostcore --example exact_down_probe` (GC_TY=q4k for the Q4_K copy).
// Absolute times of the dense down and the exact copy of one 576x1536 down, in cache and from memory.
use ghostcore::quant::random::random_tensor;
use ghostcore::quant::GgmlType;
use ghostcore::sampling::Rng;
use ghostcore::sparsity::exact_down::{ExactDown, ExactDownScratch};
use ghostcore::sparsity::rows::{matvec_rows, quantize_input, QMatrix};
use ghostcore::sparsity::Serial;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let ty = if std::env::var("GC_TY").is_ok_and(|v| v == "q4k") { GgmlType::Q4_K } else { GgmlType::Q6_K };
    let (n_embd, n_ff) = (576usize, 1536usize);
    let mut rng = Rng::new(5);
    let ncopies = 64;
    let mats: Vec<Vec<u8>> = (0..ncopies).map(|_| random_tensor(ty, n_embd * n_ff, &mut rng).unwrap()).collect();
    let copies: Vec<ExactDown> = mats.iter().map(|m| ExactDown::from_down(ty, n_embd, n_ff, m).unwrap()).collect();
    let h: Vec<f32> = (0..n_ff).map(|_| rng.next_f64() as f32 - 0.5).collect();
    let mut out = vec![0f32; n_embd];
    let mut xq = Vec::new();
    let mut scratch = ExactDownScratch::default();
    for &share in &[0.2f64, 0.4, 0.6, 0.8, 1.0] {
        let ids: Vec<u32> = (0..n_ff as u32).filter(|_| rng.next_f64() < share).collect();
        let coefs: Vec<f32> = ids.iter().map(|&j| h[j as usize]).collect();
        for (label, cyc) in [("hot", 1usize), ("cold", ncopies)] {
            let reps = 2000;
            let t = Instant::now();
            for r in 0..reps {
                let m = QMatrix::new(ty, n_embd, n_ff, &mats[r % cyc]).unwrap();
                quantize_input(&m, &h, &mut xq).unwrap();
                matvec_rows(&m, None, &xq, &mut out, &Serial).unwrap();
            }
            let dense = t.elapsed().as_secs_f64() / reps as f64;
            let t = Instant::now();
            for r in 0..reps {
                copies[r % cyc].accumulate(&ids, &coefs, &mut out, &mut scratch).unwrap();
            }
            let sp = t.elapsed().as_secs_f64() / reps as f64;
            println!("{ty:?} share {share:.1} {label}: dense {:.1} us, exact {:.1} us, ratio {:.2}", dense * 1e6, sp * 1e6, sp / dense);
        }
    }
}
