// Experiment: dense Q6_K/Q4_K down matvec vs the exact neuron-major copy at several active
// shares, 8B shape, matrices cycled so they come from DRAM. Not part of the repo.
use ghostcore::cli::synth::random_tensor;
use ghostcore::quant::GgmlType;
use ghostcore::sampling::Rng;
use ghostcore::sparsity::exact_down::{ExactDown, ExactDownScratch};
use ghostcore::sparsity::rows::{matvec_rows, quantize_input, Serial};
use ghostcore::sparsity::QMatrix;
use std::time::Instant;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let ty = match a.get(1).map(|s| s.as_str()) { Some("q4_k") => GgmlType::Q4_K, _ => GgmlType::Q6_K };
    let n_embd: usize = a.get(2).map(|s| s.parse().unwrap()).unwrap_or(4096);
    let n_ff: usize = a.get(3).map(|s| s.parse().unwrap()).unwrap_or(14336);
    let n_mat: usize = a.get(4).map(|s| s.parse().unwrap()).unwrap_or(4);
    let mut rng = Rng::new(3);
    let mats: Vec<Vec<u8>> = (0..n_mat).map(|_| random_tensor(ty, n_embd * n_ff, &mut rng).unwrap()).collect();
    let copies: Vec<ExactDown> = mats.iter().map(|m| ExactDown::from_down(ty, n_embd, n_ff, m).unwrap()).collect();
    let h: Vec<f32> = (0..n_ff).map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0).collect();
    let mut out = vec![0f32; n_embd];
    let mut xq = Vec::new();
    let mut sc = ExactDownScratch::default();
    let reps = (40 * 4096 * 14336 / (n_embd * n_ff)).min(4000);
    let q8: Vec<Vec<u8>> = mats.iter().map(|m| ghostcore::sparsity::repack::neuron_major_down(&QMatrix::new(ty, n_embd, n_ff, m).unwrap(), GgmlType::Q8_0).unwrap().0).collect();
    let mut partials = Vec::new();
    // dense
    let t0 = Instant::now();
    for r in 0..reps {
        let m = QMatrix::new(ty, n_embd, n_ff, &mats[r % n_mat]).unwrap();
        quantize_input(&m, &h, &mut xq).unwrap();
        matvec_rows(&m, None, &xq, &mut out, &Serial).unwrap();
    }
    let dense = t0.elapsed().as_secs_f64() / reps as f64;
    let bytes = mats[0].len() as f64;
    println!("{ty} dense down: {:.3} ms ({:.1} GB/s)", dense * 1e3, bytes / dense / 1e9);
    for active in [0.75f64, 0.5, 0.25, 0.1] {
        // random active set with this share
        let mut ids = Vec::new();
        let mut st = 12345u64;
        for j in 0..n_ff as u32 { st = st.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); if ((st >> 33) as f64 / (1u64 << 31) as f64) < active { ids.push(j); } }
        let coefs: Vec<f32> = ids.iter().map(|&j| h[j as usize]).collect();
        let t0 = Instant::now();
        for r in 0..reps {
            out.fill(0.0);
            copies[r % n_mat].accumulate(&ids, &coefs, &mut out, &mut sc).unwrap();
        }
        let t = t0.elapsed().as_secs_f64() / reps as f64;
        let b = copies[0].bytes_for(&ids) as f64;
        let t1 = Instant::now();
        for r in 0..reps {
            out.fill(0.0);
            let m = QMatrix::new(GgmlType::Q8_0, n_ff, n_embd, &q8[r % n_mat]).unwrap();
            ghostcore::sparsity::rows::axpy_rows(&m, &ids, &coefs, &mut out, &Serial, &mut partials).unwrap();
        }
        let tq = t1.elapsed().as_secs_f64() / reps as f64;
        println!("  q8_0 copy {:.0}% active: {:.3} ms = {:.2}x dense time", active * 100.0, tq * 1e3, tq / dense);
        println!("  exact {:.0}% active: {:.3} ms = {:.2}x dense time, bytes {:.2}x dense, {:.1} GB/s", active * 100.0, t * 1e3, t / dense, b / bytes, b / t / 1e9);
    }
}
