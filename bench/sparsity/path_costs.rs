//! Measures the time curves the sparse FFN chooses its paths by (`sparsity/path_costs.rs`):
//! the time of each sparse path relative to the dense kernel over the whole matrix, against
//! the share of the matrix's bytes the path reads, from memory.
//!
//! `cargo bench -p ghostcore --bench path_costs [-- --quick]`
//!
//! - *gathered rows*: `matvec_rows` over a random sorted share of a Q5_0 matrix's rows against
//!   all rows in order (rows of 396, 1,408 and 2,816 bytes: widths 576, 2048, 4096);
//! - *exact down*: the exact neuron-major Q4_K / Q6_K copy over a random share of active
//!   neurons against the dense down matvec of the same layer (576 × 1536 and 4096 × 14336).
//!
//! Each figure is the median over reps of (sparse time / dense time), the two alternated rep
//! by rep on matrices cycled through more memory than the last-level cache, so that both read
//! from memory. Run it on an idle machine with one thread; the printed points are the
//! `(share of bytes, relative time)` pairs of the curves.

use std::time::Instant;

use ghostcore::cli::synth::random_tensor;
use ghostcore::quant::GgmlType;
use ghostcore::sampling::Rng;
use ghostcore::sparsity::exact_down::{ExactDown, ExactDownScratch};
use ghostcore::sparsity::rows::{matvec_rows, quantize_input};
use ghostcore::sparsity::{QMatrix, Serial};

/// Bytes of weights each measurement cycles through (well past a 32 MiB L3).
const CYCLE_BYTES: usize = 160 << 20;

/// Sorted ids of a random `share` of `n` (fixed seed).
fn random_ids(n: usize, share: f64, seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    (0..n as u32).filter(|_| rng.next_f64() < share).collect()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Random Q5_0 rows (every quant byte random, scales 2^-7).
fn q5_0_matrix(n_rows: usize, n_cols: usize, rng: &mut Rng) -> Vec<u8> {
    let rb = GgmlType::Q5_0.row_bytes(n_cols as u64).unwrap() as usize;
    let mut v: Vec<u8> = (0..n_rows * rb).map(|_| rng.next_u64() as u8).collect();
    for b in v.chunks_exact_mut(GgmlType::Q5_0.type_size()) {
        b[..2].copy_from_slice(&half::f16::from_f32(1.0 / 128.0).to_bits().to_le_bytes());
    }
    v
}

fn gathered_rows(n_rows: usize, n_cols: usize, reps: usize) {
    let ty = GgmlType::Q5_0;
    let rb = ty.row_bytes(n_cols as u64).unwrap() as usize;
    let n_mat = (CYCLE_BYTES / (n_rows * rb)).max(2);
    let mut rng = Rng::new(3);
    let mats: Vec<Vec<u8>> = (0..n_mat)
        .map(|_| q5_0_matrix(n_rows, n_cols, &mut rng))
        .collect();
    let x: Vec<f32> = (0..n_cols).map(|_| rng.next_f64() as f32 - 0.5).collect();
    let shares = [0.9, 0.8, 0.6, 0.4, 0.2];
    let ids: Vec<Vec<u32>> = shares.iter().map(|&s| random_ids(n_rows, s, 11)).collect();
    let (mut xq, mut out) = (Vec::new(), vec![0f32; n_rows]);
    let mut next = 0usize;
    let mut time = |rows: Option<&[u32]>| {
        let t = Instant::now();
        for _ in 0..8 {
            let m = QMatrix::new(ty, n_rows, n_cols, &mats[next % n_mat]).unwrap();
            next += 1;
            quantize_input(&m, &x, &mut xq).unwrap();
            let n = rows.map_or(n_rows, <[u32]>::len);
            matvec_rows(&m, rows, &xq, &mut out[..n], &Serial).unwrap();
        }
        t.elapsed().as_secs_f64()
    };
    let mut ratios = vec![Vec::new(); shares.len()];
    for _ in 0..reps {
        for (k, ids) in ids.iter().enumerate() {
            let dense = time(None);
            ratios[k].push(time(Some(ids)) / dense);
        }
    }
    print!("gathered rows, Q5_0 {n_rows}×{n_cols} ({rb} B/row):");
    for (k, ids) in ids.iter().enumerate() {
        let share = ids.len() as f64 / n_rows as f64;
        print!(" ({share:.2}, {:.2})", median(&mut ratios[k]));
    }
    println!();
}

fn exact_down(ty: GgmlType, n_embd: usize, n_ff: usize, reps: usize) {
    let bytes = ty.row_bytes(n_ff as u64).unwrap() as usize * n_embd;
    let n_mat = (CYCLE_BYTES / bytes).max(2);
    let mut rng = Rng::new(5);
    let mats: Vec<Vec<u8>> = (0..n_mat)
        .map(|_| random_tensor(ty, n_embd * n_ff, &mut rng).unwrap())
        .collect();
    let copies: Vec<ExactDown> = mats
        .iter()
        .map(|m| ExactDown::from_down(ty, n_embd, n_ff, m).unwrap())
        .collect();
    let h: Vec<f32> = (0..n_ff).map(|_| rng.next_f64() as f32 - 0.5).collect();
    let shares = [0.8, 0.6, 0.4, 0.2, 0.1];
    let ids: Vec<Vec<u32>> = shares.iter().map(|&s| random_ids(n_ff, s, 13)).collect();
    let (mut xq, mut out, mut scratch) =
        (Vec::new(), vec![0f32; n_embd], ExactDownScratch::default());
    let mut next = 0usize;
    let mut ratios = vec![Vec::new(); shares.len()];
    for _ in 0..reps {
        for (k, ids) in ids.iter().enumerate() {
            let coefs: Vec<f32> = ids.iter().map(|&j| h[j as usize]).collect();
            let t = Instant::now();
            for _ in 0..4 {
                let m = QMatrix::new(ty, n_embd, n_ff, &mats[next % n_mat]).unwrap();
                next += 1;
                quantize_input(&m, &h, &mut xq).unwrap();
                matvec_rows(&m, None, &xq, &mut out, &Serial).unwrap();
            }
            let dense = t.elapsed().as_secs_f64();
            let t = Instant::now();
            for _ in 0..4 {
                out.fill(0.0);
                copies[next % n_mat]
                    .accumulate(ids, &coefs, &mut out, &mut scratch)
                    .unwrap();
                next += 1;
            }
            ratios[k].push(t.elapsed().as_secs_f64() / dense);
        }
    }
    print!("exact {ty} down {n_embd}×{n_ff}:");
    for (k, ids) in ids.iter().enumerate() {
        let share = copies[0].bytes_for(ids) as f64 / bytes as f64;
        print!(" ({share:.2}, {:.2})", median(&mut ratios[k]));
    }
    println!();
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let reps = if quick { 15 } else { 101 };
    println!("(share of the dense bytes read, time relative to the dense kernel); medians of {reps} reps");
    gathered_rows(1536, 576, reps);
    if !quick {
        gathered_rows(1536, 2048, reps);
        gathered_rows(2048, 4096, reps);
    }
    for ty in [GgmlType::Q4_K, GgmlType::Q6_K] {
        exact_down(ty, 576, 1536, reps);
        if !quick {
            exact_down(ty, 4096, 14336, reps.min(15));
        }
    }
}
