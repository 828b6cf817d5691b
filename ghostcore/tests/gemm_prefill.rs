//! The prefill GEMM (`backend::cpu::gemm`) against a naive f64 reference: every weight row
//! dequantized by `dequantize_row` (itself checked bit-exact against gguf-py elsewhere) and
//! dotted with each activation row in f64. Every computable weight type (this covers all
//! types in the SmolLM2 and Gemma3 Q4_K_M files: Q4_K, Q5_0, Q6_K, Q8_0, plus Q4_1 of the
//! PyPI SmolLM2 and F16/F32), every kernel this CPU runs, 1 and 2 threads, ragged shapes
//! (rows not a multiple of the 12-row panel, activation rows not a multiple of the 32-row
//! block, a strided output), activations packed on the same pool.
//!
//! The tolerance is the classic bound for a sum of `k` rounded products in f32,
//! `γ_(k+1) · Σ|w·x|` with `γ_n = n·u / (1 − n·u)`, `u = 2⁻²⁴`: any f32 evaluation order
//! (with or without fused multiply-add) stays within it.

mod quant_common;

use ghostcore::backend::cpu::gemm::{gemm_with_isa, GemmIsa, PackedActs};
use ghostcore::quant::GgmlType;
use ghostcore::threadpool::ThreadPool;
use quant_common::*;

fn gamma(n: usize) -> f64 {
    let nu = n as f64 * f64::powi(2.0, -24);
    nu / (1.0 - nu)
}

struct Case {
    ty: GgmlType,
    n_rows: usize,
    k: usize,
    m: usize,
    ldo: usize,
}

fn check_case(rng: &mut Rng, pools: &[ThreadPool], c: &Case) {
    let row_bytes = c.ty.row_bytes(c.k as u64).unwrap() as usize;
    let mut w = Vec::with_capacity(c.n_rows * row_bytes);
    let mut wf = Vec::with_capacity(c.n_rows);
    for _ in 0..c.n_rows {
        let row = random_row(rng, c.ty, c.k);
        wf.push(dequant(c.ty, &row, c.k));
        w.extend_from_slice(&row);
    }
    let x: Vec<f32> = (0..c.m * c.k).map(|_| rng.activation()).collect();
    let out_len = (c.m - 1) * c.ldo + c.n_rows;
    for isa in [GemmIsa::Scalar, GemmIsa::Avx2, GemmIsa::Avx512] {
        if !isa.is_supported() {
            continue;
        }
        for pool in pools {
            let mut packed = PackedActs::default();
            packed.pack_parallel(pool, &x, c.m, c.k).unwrap();
            let mut out = vec![f32::NAN; out_len];
            gemm_with_isa(pool, isa, c.ty, &w, c.n_rows, &packed, &mut out, c.ldo).unwrap();
            for j in 0..c.m {
                let xj = &x[j * c.k..(j + 1) * c.k];
                for (r, wr) in wf.iter().enumerate() {
                    let exact: f64 = wr.iter().zip(xj).map(|(&a, &b)| a as f64 * b as f64).sum();
                    let mag: f64 = wr
                        .iter()
                        .zip(xj)
                        .map(|(&a, &b)| (a as f64 * b as f64).abs())
                        .sum();
                    let got = out[j * c.ldo + r];
                    let tol = gamma(c.k + 1) * mag;
                    assert!(
                        (got as f64 - exact).abs() <= tol,
                        "{} {isa:?} {} threads, {} rows x {} cols x {} acts: out[{j}][{r}] = {got}, \
                         exact {exact}, tol {tol:e}",
                        c.ty,
                        pool.n_threads(),
                        c.n_rows,
                        c.k,
                        c.m
                    );
                }
                // The stride gap between output rows is left alone.
                if j + 1 < c.m {
                    assert!(out[j * c.ldo + c.n_rows..(j + 1) * c.ldo]
                        .iter()
                        .all(|v| v.is_nan()));
                }
            }
        }
    }
}

#[test]
fn gemm_matches_f64_reference_for_every_weight_type() {
    let pools = [ThreadPool::new(1).unwrap(), ThreadPool::new(2).unwrap()];
    let mut rng = Rng::new(0x6e6d);
    for ty in DOT_TYPES {
        // Columns: one and several blocks (576 = SmolLM2's width for 32-blocks).
        let ks: &[usize] = if ty.block_size() == 256 {
            &[256, 768]
        } else {
            &[32, 576]
        };
        for &k in ks {
            for &(n_rows, m) in &[(1, 1), (12, 32), (13, 33), (25, 70), (7, 16)] {
                let ldo = if m % 2 == 0 { n_rows } else { n_rows + 3 };
                check_case(
                    &mut rng,
                    &pools,
                    &Case {
                        ty,
                        n_rows,
                        k,
                        m,
                        ldo,
                    },
                );
            }
        }
    }
}

#[test]
fn gemm_rejects_bad_shapes_without_panicking() {
    let pool = ThreadPool::new(1).unwrap();
    let x = vec![0.5f32; 2 * 64];
    let mut packed = PackedActs::default();
    packed.pack(&x, 2, 64).unwrap();
    let w = vec![0u8; GgmlType::Q8_0.row_bytes(64).unwrap() as usize * 3];
    let mut out = vec![0f32; 6];
    // Weight bytes that are not whole rows.
    assert!(gemm_with_isa(
        &pool,
        GemmIsa::Scalar,
        GgmlType::Q8_0,
        &w[..w.len() - 1],
        3,
        &packed,
        &mut out,
        3
    )
    .is_err());
    // Output too short, and a stride below the row count.
    assert!(gemm_with_isa(
        &pool,
        GemmIsa::active(),
        GgmlType::Q8_0,
        &w,
        3,
        &packed,
        &mut out[..5],
        3
    )
    .is_err());
    assert!(gemm_with_isa(
        &pool,
        GemmIsa::active(),
        GgmlType::Q8_0,
        &w,
        3,
        &packed,
        &mut out,
        2
    )
    .is_err());
    // Columns that are not whole blocks of a k-quant.
    assert!(gemm_with_isa(
        &pool,
        GemmIsa::active(),
        GgmlType::Q4_K,
        &w,
        3,
        &packed,
        &mut out,
        3
    )
    .is_err());
    // Too few activations to pack.
    assert!(packed.pack(&x[..100], 2, 64).is_err());
}
