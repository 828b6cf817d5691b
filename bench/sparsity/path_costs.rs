//! Measures the time curves the sparse FFN chooses its paths by (`sparsity/path_costs/`) at
//! fixed shapes, to compare CPUs and kernels (`ghost tune -m MODEL` measures them at a
//! model's own shape and installs them):
//!
//! `cargo bench -p ghostcore --bench path_costs [-- --quick] [--hot]`
//!
//! - *gathered rows*: `matvec_rows` over a random sorted share of a Q5_0 matrix's rows against
//!   all rows in order (rows of 396, 1,408 and 2,816 bytes: widths 576, 2048, 4096);
//! - *exact down*: the exact neuron-major Q4_K / Q6_K copy over a random share of active
//!   neurons against the dense down matvec of the same layer (576 × 1536 and 4096 × 14336).
//!
//! Each figure is the median over reps of (sparse time / dense time), the two alternated rep
//! by rep on matrices cycled through more memory than the last-level cache, so that both read
//! from memory (`sparsity::path_costs::measure`); `--hot` cycles through two copies only,
//! which the last-level cache holds, so that the kernels' compute shows without the memory
//! (SmolLM2's shape). Run it on an idle machine; the printed points are the `(share of
//! bytes, relative time)` pairs of the curves.

use ghostcore::quant::GgmlType;
use ghostcore::sparsity::path_costs::measure::{exact_down, gathered_rows, MeasureOptions};
use ghostcore::sparsity::Serial;

fn print(what: String, points: &[(f64, f64)]) {
    print!("{what}:");
    for (x, y) in points {
        print!(" ({x:.2}, {y:.2})");
    }
    println!();
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let hot = std::env::args().any(|a| a == "--hot");
    let mut opts = MeasureOptions {
        reps: if quick { 15 } else { 101 },
        ..MeasureOptions::default()
    };
    if hot {
        opts.cycle_bytes = 0;
    }
    println!(
        "(share of the dense bytes read, time relative to the dense kernel); medians of up to {} reps",
        opts.reps
    );
    let widths: &[(usize, usize)] = if quick {
        &[(1536, 576)]
    } else {
        &[(1536, 576), (1536, 2048), (2048, 4096)]
    };
    for &(n_rows, n_cols) in widths {
        let rb = GgmlType::Q5_0.row_bytes(n_cols as u64).unwrap();
        let p = gathered_rows(GgmlType::Q5_0, n_rows, n_cols, &opts, &Serial).unwrap();
        print(
            format!("gathered rows, Q5_0 {n_rows}×{n_cols} ({rb} B/row)"),
            &p,
        );
    }
    for ty in [GgmlType::Q4_K, GgmlType::Q6_K] {
        let shapes: &[(usize, usize)] = if quick {
            &[(576, 1536)]
        } else {
            &[(576, 1536), (4096, 14336)]
        };
        for &(n_embd, n_ff) in shapes {
            let p = exact_down(ty, n_embd, n_ff, &opts, &Serial).unwrap();
            print(format!("exact {ty} down {n_embd}×{n_ff}"), &p);
        }
    }
}
