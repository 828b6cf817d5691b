//! Micro-benchmark: the input-major Q5_0 matvec (`sparsity::input_major`) against the dense
//! row-major Q5_0 matvec of the decode path (`quant::matvec`), on the same weights, in one
//! process, the two alternated call by call.
//!
//! `cargo bench -p ghostcore --bench input_major [-- --quick] [--cold-only] [--shape RxC]`
//! (`--quick`: the 1536×576 shape only, fewer calls).
//!
//! Shapes: SmolLM2's gate/up (1536×576), its transpose (576×1536) and Llama-3-8B's gate/up
//! (14336×4096). Inputs: random, with the given share of the smallest-magnitude entries
//! zeroed (as `input:S` does), quantized to Q8_0. Hot: the same matrix every call (it stays
//! in cache where it fits). Cold: calls cycle over copies of the matrix totalling at least
//! 256 MiB per kernel, so each call reads its weights from memory. Reported: median ns per
//! call, the GB/s of bytes read (the rows: the whole matrix; the input-major copy: the bytes
//! `bytes_for` counts), and the input-major time over the rows' time.
//!
//! Environment: `GHOST_NO_VNNI=1` makes the rows use the AVX2 kernels (the input-major
//! kernels are chosen per call here, every one this CPU runs).

use std::hint::black_box;
use std::time::Instant;

use ghostcore::quant::quantize::quantize_row;
use ghostcore::quant::{matvec, matvec_gather, quantize_activations, GgmlType};
use ghostcore::sparsity::input_major::{InputMajorKernel, InputMajorQ5_0, InputMajorScratch};
use ghostcore::sparsity::Serial;

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

fn q5_0_matrix(n_rows: usize, n_cols: usize, seed: u64) -> Vec<u8> {
    let mut rng = Lcg(seed);
    let rb = GgmlType::Q5_0.row_bytes(n_cols as u64).unwrap() as usize;
    let mut data = vec![0u8; n_rows * rb];
    let mut row = vec![0f32; n_cols];
    for r in data.chunks_exact_mut(rb) {
        row.iter_mut().for_each(|v| *v = rng.next() * 0.1);
        quantize_row(GgmlType::Q5_0, &row, r).unwrap();
    }
    data
}

/// Q8_0 input of `n` entries with the `drop` share of the smallest magnitudes zeroed.
fn input(n: usize, drop: f64, seed: u64) -> Vec<u8> {
    let mut rng = Lcg(seed);
    // About normal (a sum of four uniforms), as normed FFN inputs are.
    let mut x: Vec<f32> = (0..n)
        .map(|_| (0..4).map(|_| rng.next()).sum::<f32>())
        .collect();
    let mut mags: Vec<f32> = x.iter().map(|v| v.abs()).collect();
    mags.sort_by(f32::total_cmp);
    let k = (drop * n as f64).round() as usize;
    if k > 0 {
        let t = mags[k - 1];
        x.iter_mut().filter(|v| v.abs() <= t).for_each(|v| *v = 0.0);
    }
    let mut xq = vec![0u8; GgmlType::Q8_0.row_bytes(n as u64).unwrap() as usize];
    quantize_activations(GgmlType::Q8_0, &x, &mut xq).unwrap();
    xq
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let cold_only = args.iter().any(|a| a == "--cold-only");
    let kernels: Vec<InputMajorKernel> = [InputMajorKernel::Avx2, InputMajorKernel::Vnni]
        .into_iter()
        .filter(|k| k.is_supported())
        .collect();
    println!(
        "load: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    println!("input-major kernels: {kernels:?}; rows: quant::matvec (active ISA)");
    println!(
        "| shape | cache | dropped | rows ns | rows GB/s | kernel | im bytes | im ns | im GB/s | im / rows |"
    );
    println!("|---|---|---:|---:|---:|---|---:|---:|---:|---:|");
    let shapes: Vec<(usize, usize)> = match args.iter().position(|a| a == "--shape") {
        Some(i) => {
            let v = args.get(i + 1).map(String::as_str).unwrap_or("");
            let (r, c) = v.split_once('x').expect("--shape ROWSxCOLS");
            vec![(r.parse().expect("rows"), c.parse().expect("cols"))]
        }
        None if quick => vec![(1536, 576)],
        None => vec![(1536, 576), (576, 1536), (14336, 4096)],
    };
    let mut gathered = Vec::new();
    for &(n_rows, n_cols) in &shapes {
        let w = q5_0_matrix(n_rows, n_cols, 7);
        let copy = InputMajorQ5_0::from_q5_0(GgmlType::Q5_0, n_rows, n_cols, &w).unwrap();
        for cold in [false, true] {
            if cold_only && !cold {
                continue;
            }
            let n_copies = if cold {
                (256usize << 20).div_ceil(w.len()).max(2)
            } else {
                1
            };
            let ws: Vec<Vec<u8>> = (0..n_copies).map(|_| w.clone()).collect();
            let copies: Vec<InputMajorQ5_0> = (0..n_copies).map(|_| copy.clone()).collect();
            // Warm-up: every copy read once (page faults and first touches out of the way).
            {
                let xq = input(n_cols, 0.0, 11);
                let mut out = vec![0f32; n_rows];
                let mut sc = InputMajorScratch::default();
                for (wi, ci) in ws.iter().zip(&copies) {
                    matvec(GgmlType::Q5_0, n_cols, wi, 0..n_rows, &xq, &mut out).unwrap();
                    ci.matvec(&xq, &mut out, &mut sc, &Serial).unwrap();
                }
            }
            for drop in [0.0, 0.1, 0.2, 0.5] {
                let xq = input(n_cols, drop, 11);
                let im_bytes = copy.bytes_for(&xq).unwrap();
                let mut out = vec![0f32; n_rows];
                let mut sc = InputMajorScratch::default();
                let calls = if quick {
                    40
                } else {
                    (400_000_000 / (n_rows * n_cols)).clamp(20, 2000)
                };
                let mut t_rows = Vec::new();
                let mut t_im: Vec<Vec<f64>> = vec![Vec::new(); kernels.len()];
                // Every call reads the next copy in turn (cold: not touched for 256 MiB).
                let mut next = 0usize;
                let mut take = || {
                    next += 1;
                    next % n_copies
                };
                for _ in 0..calls {
                    let i = take();
                    let t = Instant::now();
                    matvec(GgmlType::Q5_0, n_cols, &ws[i], 0..n_rows, &xq, &mut out).unwrap();
                    black_box(&out);
                    t_rows.push(t.elapsed().as_secs_f64());
                    for (k, &kern) in kernels.iter().enumerate() {
                        let i = take();
                        let t = Instant::now();
                        copies[i]
                            .matvec_with_kernel(kern, &xq, &mut out, &mut sc, &Serial)
                            .unwrap();
                        black_box(&out);
                        t_im[k].push(t.elapsed().as_secs_f64());
                    }
                }
                let rows = median(&mut t_rows);
                // The rows path of a sparse step: the kept share of rows, gathered.
                if drop > 0.0 {
                    let keep = 1.0 - drop;
                    let mut rng = Lcg(13);
                    let ids: Vec<u32> = (0..n_rows as u32)
                        .filter(|_| f64::from(rng.next()) * 0.5 + 0.5 < keep)
                        .collect();
                    let mut t_g = Vec::new();
                    let mut o = vec![0f32; ids.len()];
                    for _ in 0..calls {
                        let i = take();
                        let t = Instant::now();
                        matvec_gather(GgmlType::Q5_0, n_cols, &ws[i], &ids, &xq, &mut o).unwrap();
                        black_box(&o);
                        t_g.push(t.elapsed().as_secs_f64());
                    }
                    let g = median(&mut t_g);
                    let bytes = ids.len() * (w.len() / n_rows);
                    gathered.push(format!(
                        "| {n_rows}×{n_cols} | {} | {:.0}% | {:.0} | {:.1} | {bytes} | {:.0} | {:.1} | {:.2} |",
                        if cold { "cold" } else { "hot" },
                        ids.len() as f64 / n_rows as f64 * 100.0,
                        rows * 1e9,
                        w.len() as f64 / rows / 1e9,
                        g * 1e9,
                        bytes as f64 / g / 1e9,
                        g / rows
                    ));
                }
                for (k, kern) in kernels.iter().enumerate() {
                    let im = median(&mut t_im[k]);
                    println!(
                        "| {n_rows}×{n_cols} | {} | {:.0}% | {:.0} | {:.1} | {kern:?} | {im_bytes} | {:.0} | {:.1} | {:.2} |",
                        if cold { "cold" } else { "hot" },
                        drop * 100.0,
                        rows * 1e9,
                        w.len() as f64 / rows / 1e9,
                        im * 1e9,
                        im_bytes as f64 / im / 1e9,
                        im / rows
                    );
                }
            }
        }
    }
    println!();
    println!("Rows gathered (`quant::matvec_gather`, a random kept share of rows) vs all rows:");
    println!("| shape | cache | rows kept | all rows ns | all GB/s | gathered bytes | gathered ns | gathered GB/s | gathered / all |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for l in gathered {
        println!("{l}");
    }
}
