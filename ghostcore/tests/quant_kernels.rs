//! Dot-product kernels and matrix drivers against independent references:
//! - SIMD kernels against the scalar reference kernels (random and extreme blocks);
//! - `vec_dot` against an f64 dot product of the dequantized weights and activations;
//! - activation quantization round trips;
//! - matvec / matmul / matvec_gather against per-row `vec_dot`, axpy_rows against f64;
//! - the decode matvec (activations prepared once per row for Q4_0 / Q5_0) against per-row
//!   `vec_dot` (bit for bit) and the scalar matvec, on random and extreme blocks.
//!
//! CI runs this file twice: normally and with `GHOST_FORCE_SCALAR=1`.

mod quant_common;

use ghostcore::quant::{
    active_isa, axpy_rows, best_supported_isa, matmul, matvec, matvec_gather, matvec_with_isa,
    quantize_activations, vec_dot, vec_dot_type, vec_dot_with_isa, GgmlType, Isa,
};
use quant_common::*;

fn quantized_acts(rng: &mut Rng, ty: GgmlType, n: usize) -> (Vec<u8>, Vec<f32>) {
    let vdt = vec_dot_type(ty);
    let x: Vec<f32> = (0..n).map(|_| rng.activation()).collect();
    let mut a = vec![0u8; vdt.row_bytes(n as u64).unwrap() as usize];
    quantize_activations(vdt, &x, &mut a).unwrap();
    (a, x)
}

fn n_for(ty: GgmlType, blocks: usize) -> usize {
    ty.block_size().max(32) * blocks
}

/// `Σ |w_i a_i|` with the scale part and the offset/min part of each weight counted
/// separately, so cancellation inside a block does not shrink the error budget below the
/// magnitudes the kernel actually adds.
fn magnitude(ty: GgmlType, row: &[u8], n: usize, act: &[f32]) -> f64 {
    weight_parts(ty, row, n)
        .iter()
        .map(|w| {
            w.iter()
                .zip(act)
                .map(|(w, a)| (*w as f64 * *a as f64).abs())
                .sum::<f64>()
        })
        .sum()
}

/// The dequantized row split into its scale part and its offset/min part (formats with two
/// scale fields), or just the row: their absolute sum bounds the magnitudes a kernel adds.
fn weight_parts(ty: GgmlType, row: &[u8], n: usize) -> Vec<Vec<f32>> {
    let fields = f16_fields(ty);
    if fields.len() != 2 {
        return vec![dequant(ty, row, n)];
    }
    (0..2)
        .map(|keep| {
            let mut r = row.to_vec();
            let zero = fields[1 - keep];
            for blk in r.chunks_exact_mut(ty.type_size()) {
                blk[zero..zero + 2].copy_from_slice(&[0, 0]);
            }
            dequant(ty, &r, n)
        })
        .collect()
}

fn dequant_acts(ty: GgmlType, a: &[u8], n: usize) -> Vec<f32> {
    dequant(vec_dot_type(ty), a, n)
}

/// Relative error budget for float reassociation of per-block partial sums.
const REASSOC_REL: f64 = 1e-5;

fn assert_simd_matches_scalar(ty: GgmlType, n: usize, w: &[u8], a: &[u8], what: &str) {
    let scalar = vec_dot_with_isa(Isa::Scalar, ty, n, w, a);
    let active = vec_dot(ty, n, w, a);
    let best = vec_dot_with_isa(best_supported_isa(), ty, n, w, a);
    let mag = magnitude(ty, w, n, &dequant_acts(ty, a, n));
    let tol = REASSOC_REL * mag;
    for (name, v) in [("active", active), ("best", best)] {
        assert!(
            v.is_finite() == scalar.is_finite() && (v as f64 - scalar as f64).abs() <= tol,
            "{ty} {what}: {name} ISA {v} vs scalar {scalar} (tol {tol:e}, n {n})"
        );
    }
}

#[test]
fn reports_isa() {
    let isa = active_isa();
    eprintln!(
        "active ISA: {isa}, best supported: {}",
        best_supported_isa()
    );
    if std::env::var("GHOST_FORCE_SCALAR").is_ok_and(|v| v == "1") {
        assert_eq!(isa, Isa::Scalar);
    } else {
        assert_eq!(isa, best_supported_isa());
    }
}

#[test]
fn simd_matches_scalar_on_random_blocks() {
    let mut rng = Rng::new(1);
    for ty in DOT_TYPES {
        for blocks in [1, 2, 3, 8, 17] {
            let n = n_for(ty, blocks);
            for _ in 0..20 {
                let w = random_row(&mut rng, ty, n);
                let (a, _) = quantized_acts(&mut rng, ty, n);
                assert_simd_matches_scalar(ty, n, &w, &a, "random");
            }
        }
        // Float rows whose length is not a multiple of the vector width (tail loops).
        if matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
            for n in [1, 7, 9, 33, 71] {
                let w = random_row(&mut rng, ty, n);
                let (a, _) = quantized_acts(&mut rng, ty, n);
                assert_simd_matches_scalar(ty, n, &w, &a, "tail");
            }
        }
    }
}

/// Hand-made activation rows with 8-bit quants at the limits (all -128, all 127,
/// alternating), `d = 1`, with consistent Q8_K block sums and Q8_1 `s`.
fn extreme_acts(ty: GgmlType, n: usize, pattern: usize) -> Vec<u8> {
    let vdt = vec_dot_type(ty);
    let q = |i: usize| -> i8 {
        match pattern {
            0 => -128,
            1 => 127,
            2 => {
                if i % 2 == 0 {
                    127
                } else {
                    -128
                }
            }
            _ => {
                if (i / 3) % 2 == 0 {
                    -127
                } else {
                    100
                }
            }
        }
    };
    let mut out = Vec::new();
    match vdt {
        GgmlType::Q8_0 => {
            for b in 0..n / 32 {
                out.extend(f16_bytes(1.0));
                out.extend((0..32).map(|i| q(32 * b + i) as u8));
            }
        }
        GgmlType::Q8_1 => {
            for b in 0..n / 32 {
                let s: i32 = (0..32).map(|i| q(32 * b + i) as i32).sum();
                out.extend(f16_bytes(1.0));
                out.extend(f16_bytes(s as f32));
                out.extend((0..32).map(|i| q(32 * b + i) as u8));
            }
        }
        GgmlType::Q8_K => {
            for b in 0..n / 256 {
                out.extend(1.0f32.to_le_bytes());
                out.extend((0..256).map(|i| q(256 * b + i) as u8));
                for g in 0..16 {
                    let s: i32 = (0..16).map(|i| q(256 * b + 16 * g + i) as i32).sum();
                    out.extend((s as i16).to_le_bytes());
                }
            }
        }
        GgmlType::F32 => out.extend((0..n).flat_map(|i| (q(i) as f32 * 500.0).to_le_bytes())),
        GgmlType::F16 => out.extend((0..n).flat_map(|i| f16_bytes(q(i) as f32 * 500.0))),
        GgmlType::BF16 => out.extend(
            (0..n).flat_map(|i| (((q(i) as f32 * 500.0).to_bits() >> 16) as u16).to_le_bytes()),
        ),
        other => panic!("no extreme activations for {other}"),
    }
    out
}

#[test]
fn simd_matches_scalar_on_extreme_blocks() {
    let mut rng = Rng::new(2);
    let scales = [0.0f32, 65504.0, -65504.0, -1.0, 6.1035156e-5, 5.96e-8];
    let fills = [0x00u8, 0xff, 0x88, 0x77, 0xf0, 0x0f];
    for ty in DOT_TYPES {
        let n = n_for(ty, 3);
        let rb = ty.row_bytes(n as u64).unwrap() as usize;
        let mut weights: Vec<Vec<u8>> = Vec::new();
        match ty {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {
                for v in [65504.0f32, -65504.0, 0.0, -1.5] {
                    let vals: Vec<f32> = (0..n).map(|i| if i % 3 == 0 { v } else { -v }).collect();
                    weights.push(match ty {
                        GgmlType::F32 => vals.iter().flat_map(|v| v.to_le_bytes()).collect(),
                        GgmlType::F16 => vals.iter().flat_map(|v| f16_bytes(*v)).collect(),
                        _ => vals
                            .iter()
                            .flat_map(|v| ((v.to_bits() >> 16) as u16).to_le_bytes())
                            .collect(),
                    });
                }
            }
            _ => {
                for &fill in &fills {
                    for &s in &scales {
                        let mut row = vec![fill; rb];
                        set_scales(ty, &mut row, |_, k| if k == 0 { s } else { -s * 0.5 });
                        weights.push(row);
                        // Random quants under the extreme scale too.
                        let mut row = rng.bytes(rb);
                        set_scales(ty, &mut row, |_, _| s);
                        weights.push(row);
                    }
                }
            }
        }
        for w in &weights {
            for pattern in 0..4 {
                let a = extreme_acts(ty, n, pattern);
                assert_simd_matches_scalar(ty, n, w, &a, &format!("extreme act {pattern}"));
            }
            let (a, _) = quantized_acts(&mut rng, ty, n);
            assert_simd_matches_scalar(ty, n, w, &a, "extreme weights");
        }
    }
}

#[test]
fn vec_dot_matches_f64_dot_of_dequantized_rows() {
    let mut rng = Rng::new(3);
    for ty in DOT_TYPES {
        for blocks in [1, 4, 9] {
            let n = n_for(ty, blocks);
            for _ in 0..20 {
                let w = random_row(&mut rng, ty, n);
                let (a, _) = quantized_acts(&mut rng, ty, n);
                let wd = dequant(ty, &w, n);
                let ad = dequant_acts(ty, &a, n);
                let want: f64 = wd.iter().zip(&ad).map(|(x, y)| *x as f64 * *y as f64).sum();
                let mag = magnitude(ty, &w, n, &ad);
                // f32 rounding of per-block products, sums and of the dequantized reference.
                let mut tol = 64.0 * f32::EPSILON as f64 * mag;
                if vec_dot_type(ty) == GgmlType::Q8_1 {
                    // Q8_1's `s` is f16(d_f32 * Σq), not Σ f16(d) * q: allow its rounding.
                    for (wb, ab) in w.chunks_exact(ty.type_size()).zip(a.chunks_exact(36)) {
                        let m = half::f16::from_le_bytes([wb[2], wb[3]]).to_f32() as f64;
                        let d = half::f16::from_le_bytes([ab[0], ab[1]]).to_f32() as f64;
                        let qabs: f64 = ab[4..].iter().map(|&q| (q as i8 as f64).abs()).sum();
                        tol += m.abs() * d.abs() * qabs * 2f64.powi(-10);
                    }
                }
                for isa in [Isa::Scalar, best_supported_isa()] {
                    let got = vec_dot_with_isa(isa, ty, n, &w, &a) as f64;
                    assert!(
                        (got - want).abs() <= tol,
                        "{ty} n={n} {isa}: vec_dot {got} vs f64 {want} (tol {tol:e})"
                    );
                }
            }
        }
    }
}

#[test]
fn q8_activation_quantization_round_trips() {
    let mut rng = Rng::new(4);
    for vdt in [GgmlType::Q8_0, GgmlType::Q8_1, GgmlType::Q8_K] {
        let bs = vdt.block_size();
        let n = 4 * bs;
        let mut x: Vec<f32> = (0..n).map(|_| rng.activation()).collect();
        // One all-zero block and one with a single huge negative value.
        x[..bs].iter_mut().for_each(|v| *v = 0.0);
        x[bs + 5] = -1000.0;
        let mut q = vec![0u8; vdt.row_bytes(n as u64).unwrap() as usize];
        quantize_activations(vdt, &x, &mut q).unwrap();
        let back = dequant(vdt, &q, n);
        let ts = vdt.type_size();
        for b in 0..n / bs {
            let blk = &q[b * ts..(b + 1) * ts];
            let xs = &x[b * bs..(b + 1) * bs];
            let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
            let (d, qs): (f32, Vec<i8>) = match vdt {
                GgmlType::Q8_K => (
                    f32::from_le_bytes(blk[..4].try_into().unwrap()),
                    blk[4..260].iter().map(|&v| v as i8).collect(),
                ),
                GgmlType::Q8_1 => (
                    half::f16::from_le_bytes([blk[0], blk[1]]).to_f32(),
                    blk[4..].iter().map(|&v| v as i8).collect(),
                ),
                _ => (
                    half::f16::from_le_bytes([blk[0], blk[1]]).to_f32(),
                    blk[2..].iter().map(|&v| v as i8).collect(),
                ),
            };
            if amax == 0.0 {
                assert_eq!(d, 0.0, "{vdt} zero block scale");
                assert!(qs.iter().all(|&v| v == 0));
                continue;
            }
            let exact_d = amax / 127.0;
            // Scale: amax/127 (Q8_K keeps the sign of the largest element and f32 precision;
            // Q8_0/Q8_1 store it as f16).
            let rel = if vdt == GgmlType::Q8_K {
                1e-6
            } else {
                2f32.powi(-11)
            };
            assert!(
                ((d.abs() - exact_d) / exact_d).abs() <= rel * 1.01,
                "{vdt} d {d} amax {amax}"
            );
            assert!(
                qs.iter().all(|&v| v >= -127),
                "{vdt}: -128 must not be produced"
            );
            assert!(qs.iter().map(|v| v.unsigned_abs()).max() == Some(127));
            for (i, (&xv, &bv)) in xs.iter().zip(&back[b * bs..]).enumerate() {
                // Rounding to nearest: half a step, plus the f16 error of d times |q| <= 127.
                let bound = 0.5 * exact_d * 1.0001 + 127.0 * (d.abs() - exact_d).abs() + 1e-6;
                assert!(
                    (xv - bv).abs() <= bound,
                    "{vdt} block {b} elem {i}: {xv} -> {bv}"
                );
            }
            if vdt == GgmlType::Q8_K {
                for g in 0..16 {
                    let s: i32 = qs[16 * g..16 * g + 16].iter().map(|&v| v as i32).sum();
                    let stored = i16::from_le_bytes([blk[260 + 2 * g], blk[261 + 2 * g]]);
                    assert_eq!(stored as i32, s, "Q8_K bsums[{g}]");
                }
            }
            if vdt == GgmlType::Q8_1 {
                let s = half::f16::from_le_bytes([blk[2], blk[3]]).to_f32() as f64;
                let sum_q: i32 = qs.iter().map(|&v| v as i32).sum();
                let want = exact_d as f64 * sum_q as f64;
                let qabs: f64 = qs.iter().map(|&v| (v as f64).abs()).sum();
                assert!((s - want).abs() <= exact_d as f64 * qabs * 2f64.powi(-10) + 1e-9);
            }
        }
    }
}

#[test]
fn quantization_rounds_ties_to_even_like_ggml() {
    // With amax = 127 the Q8_0 scale is exactly 1, so quants are x rounded half to even
    // (llama.cpp's x86 quantize_row_q8_0 uses _mm256_round_ps(_MM_ROUND_NEAREST)).
    let mut x = vec![0f32; 32];
    x[0] = 127.0;
    let ties = [0.5f32, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5];
    x[1..8].copy_from_slice(&ties);
    let mut q = vec![0u8; 34];
    quantize_activations(GgmlType::Q8_0, &x, &mut q).unwrap();
    let got: Vec<i8> = q[3..10].iter().map(|&v| v as i8).collect();
    assert_eq!(got, vec![0, 2, 2, 0, -2, -2, 126]);
    // Q8_K: the largest element 127 (positive) gives iscale = -1: quants are -x, ties to even.
    let mut x = vec![0f32; 256];
    x[0] = 127.0;
    x[1..8].copy_from_slice(&ties);
    let mut q = vec![0u8; 292];
    quantize_activations(GgmlType::Q8_K, &x, &mut q).unwrap();
    let got: Vec<i8> = q[5..12].iter().map(|&v| v as i8).collect();
    assert_eq!(got, vec![0, -2, -2, 0, 2, 2, -126]);
    assert_eq!(f32::from_le_bytes(q[..4].try_into().unwrap()), -1.0);
}

const DRIVER_TYPES: [GgmlType; 11] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

fn random_matrix(rng: &mut Rng, ty: GgmlType, rows: usize, n: usize) -> Vec<u8> {
    (0..rows).flat_map(|_| random_row(rng, ty, n)).collect()
}

#[test]
fn matvec_matmul_gather_equal_per_row_vec_dot() {
    let mut rng = Rng::new(5);
    let n_rows = 37;
    for ty in DRIVER_TYPES {
        let n = n_for(ty, 2);
        let rb = ty.row_bytes(n as u64).unwrap() as usize;
        let w = random_matrix(&mut rng, ty, n_rows, n);
        let row = |r: usize| &w[r * rb..(r + 1) * rb];
        let (a, _) = quantized_acts(&mut rng, ty, n);

        let rows = 3..30;
        let mut out = vec![0f32; rows.len()];
        matvec(ty, n, &w, rows.clone(), &a, &mut out).unwrap();
        for (i, r) in rows.clone().enumerate() {
            assert_eq!(
                out[i].to_bits(),
                vec_dot(ty, n, row(r), &a).to_bits(),
                "{ty} matvec {r}"
            );
        }

        let m = 70; // more than one activation tile
        let acts: Vec<u8> = (0..m)
            .flat_map(|_| quantized_acts(&mut rng, ty, n).0)
            .collect();
        let ab = acts.len() / m;
        let stride = rows.len() + 3;
        let mut out = vec![f32::NAN; (m - 1) * stride + rows.len()];
        matmul(ty, n, &w, rows.clone(), &acts, m, &mut out, stride).unwrap();
        for j in 0..m {
            for (i, r) in rows.clone().enumerate() {
                let want = vec_dot(ty, n, row(r), &acts[j * ab..(j + 1) * ab]);
                assert_eq!(
                    out[j * stride + i].to_bits(),
                    want.to_bits(),
                    "{ty} matmul {j},{r}"
                );
            }
            for pad in rows.len()..stride {
                if j + 1 < m {
                    assert!(
                        out[j * stride + pad].is_nan(),
                        "{ty} matmul wrote outside its rows"
                    );
                }
            }
        }

        let ids = [5u32, 0, 36, 5, 17];
        let mut out = vec![0f32; ids.len()];
        matvec_gather(ty, n, &w, &ids, &a, &mut out).unwrap();
        for (k, &r) in ids.iter().enumerate() {
            assert_eq!(
                out[k].to_bits(),
                vec_dot(ty, n, row(r as usize), &a).to_bits()
            );
        }
    }
}

/// The matvec and gather drivers share work on the activation row across weight rows for some
/// types (Q4_0 / Q5_0 under AVX2): the result must equal the per-row kernel bit for bit and
/// the scalar reference within reassociation error, for extreme weights and activations and
/// for odd and even block counts (the kernels pair blocks).
#[test]
fn matvec_matches_per_row_and_scalar_on_extreme_blocks() {
    let mut rng = Rng::new(7);
    let scales = [0.0f32, 65504.0, -65504.0, -1.0, 6.1035156e-5, 5.96e-8];
    let fills = [0x00u8, 0xff, 0x88, 0x77, 0xf0, 0x0f];
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q5_0,
        GgmlType::Q8_0,
        GgmlType::Q6_K,
    ] {
        for blocks in [1, 2, 3, 18] {
            let n = n_for(ty, blocks);
            let rb = ty.row_bytes(n as u64).unwrap() as usize;
            let mut w = Vec::new();
            for &fill in &fills {
                for &sc in &scales {
                    let mut row = vec![fill; rb];
                    set_scales(ty, &mut row, |_, k| if k == 0 { sc } else { -sc * 0.5 });
                    w.extend(row);
                    let mut row = rng.bytes(rb);
                    set_scales(ty, &mut row, |_, _| sc);
                    w.extend(row);
                }
            }
            w.extend(random_matrix(&mut rng, ty, 7, n));
            let n_rows = w.len() / rb;
            let mut acts: Vec<Vec<u8>> = (0..4).map(|p| extreme_acts(ty, n, p)).collect();
            acts.push(quantized_acts(&mut rng, ty, n).0);
            for a in &acts {
                let mut out = vec![0f32; n_rows];
                matvec(ty, n, &w, 0..n_rows, a, &mut out).unwrap();
                let mut scalar = vec![0f32; n_rows];
                matvec_with_isa(Isa::Scalar, ty, n, &w, 0..n_rows, a, &mut scalar).unwrap();
                let ids: Vec<u32> = (0..n_rows as u32).rev().step_by(3).collect();
                let mut gathered = vec![0f32; ids.len()];
                matvec_gather(ty, n, &w, &ids, a, &mut gathered).unwrap();
                let ad = dequant_acts(ty, a, n);
                for r in 0..n_rows {
                    let row = &w[r * rb..(r + 1) * rb];
                    let per_row = vec_dot(ty, n, row, a);
                    let same = |v: f32| {
                        v.to_bits() == per_row.to_bits() || (v.is_nan() && per_row.is_nan())
                    };
                    assert!(
                        same(out[r]),
                        "{ty} blocks {blocks} row {r}: matvec {} vs vec_dot {per_row}",
                        out[r]
                    );
                    let tol = REASSOC_REL * magnitude(ty, row, n, &ad);
                    let s = scalar[r];
                    assert!(
                        out[r].is_finite() == s.is_finite()
                            && (out[r] as f64 - s as f64).abs() <= tol,
                        "{ty} blocks {blocks} row {r}: matvec {} vs scalar {s} (tol {tol:e})",
                        out[r]
                    );
                }
                for (k, &r) in ids.iter().enumerate() {
                    let v = gathered[k];
                    assert!(
                        v.to_bits() == out[r as usize].to_bits()
                            || (v.is_nan() && out[r as usize].is_nan()),
                        "{ty} blocks {blocks} gathered row {r}"
                    );
                }
            }
        }
    }
}

#[test]
fn axpy_rows_matches_f64_accumulation() {
    let mut rng = Rng::new(6);
    for ty in [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q5_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
    ] {
        let n = n_for(ty, 2) + if ty.block_size() == 1 { 5 } else { 0 };
        let n_rows = 20;
        let rb = ty.row_bytes(n as u64).unwrap() as usize;
        let w = random_matrix(&mut rng, ty, n_rows, n);
        let ids = [3u32, 19, 0, 3, 7];
        let coefs: Vec<f32> = ids.iter().map(|_| rng.activation()).collect();
        let init: Vec<f32> = (0..n).map(|_| rng.signed()).collect();
        let mut out = init.clone();
        axpy_rows(ty, n, &w, &ids, &coefs, &mut out).unwrap();
        let mut want: Vec<f64> = init.iter().map(|&v| v as f64).collect();
        let mut mag: Vec<f64> = init.iter().map(|&v| (v as f64).abs()).collect();
        for (&r, &c) in ids.iter().zip(&coefs) {
            let r = r as usize;
            let row = &w[r * rb..(r + 1) * rb];
            let d = dequant(ty, row, n);
            for i in 0..n {
                want[i] += c as f64 * d[i] as f64;
            }
            for part in weight_parts(ty, row, n) {
                for i in 0..n {
                    mag[i] += (c as f64 * part[i] as f64).abs();
                }
            }
        }
        for i in 0..n {
            let tol = 8.0 * f32::EPSILON as f64 * mag[i];
            assert!((out[i] as f64 - want[i]).abs() <= tol, "{ty} axpy elem {i}");
        }
    }
}

#[test]
fn drivers_reject_bad_arguments() {
    let ty = GgmlType::Q4_K;
    let n = 256;
    let w = vec![0u8; 4 * 144];
    let a = vec![0u8; 292];
    let mut out = vec![0f32; 4];
    assert!(matvec(ty, n, &w, 0..4, &a, &mut out).is_ok());
    assert!(
        matvec(ty, n, &w, 0..5, &a, &mut [0f32; 5]).is_err(),
        "row past the end"
    );
    assert!(
        matvec(ty, n, &w, 0..4, &a[..291], &mut out).is_err(),
        "short activation"
    );
    assert!(
        matvec(ty, n, &w, 0..4, &a, &mut out[..3]).is_err(),
        "short output"
    );
    assert!(
        matvec(ty, 255, &w, 0..4, &a, &mut out).is_err(),
        "partial block"
    );
    assert!(
        matvec(ty, n, &w[..500], 0..3, &a, &mut out[..3]).is_err(),
        "ragged matrix"
    );
    assert!(matvec(GgmlType::IQ2_XXS, n, &w, 0..1, &a, &mut out[..1]).is_err());
    assert!(
        matvec_gather(ty, n, &w, &[4], &a, &mut out[..1]).is_err(),
        "id past the end"
    );
    let acts = vec![0u8; 2 * 292];
    assert!(matmul(ty, n, &w, 0..4, &acts, 2, &mut [0f32; 8], 4).is_ok());
    assert!(
        matmul(ty, n, &w, 0..4, &acts, 2, &mut [0f32; 7], 4).is_err(),
        "short output"
    );
    assert!(
        matmul(ty, n, &w, 0..4, &acts, 2, &mut [0f32; 8], 3).is_err(),
        "stride < rows"
    );
    assert!(
        matmul(ty, n, &w, 0..4, &acts, 3, &mut [0f32; 12], 4).is_err(),
        "few activations"
    );
    let mut o = vec![0f32; n];
    assert!(
        axpy_rows(ty, n, &w, &[1, 2], &[1.0], &mut o).is_err(),
        "coefs/ids mismatch"
    );
    assert!(
        axpy_rows(ty, n, &w, &[9], &[1.0], &mut o).is_err(),
        "id past the end"
    );
    assert!(
        axpy_rows(ty, n, &w, &[1], &[1.0], &mut o[..10]).is_err(),
        "short output"
    );
}

#[test]
fn kernels_match_references_on_real_model_rows() {
    use ghostcore::gguf::GgufFile;
    use ghostcore::test_models::{find_model, GEMMA3_Q4_K_M, SMOLLM2_Q4_1, SMOLLM2_Q4_K_M};
    let mut rng = Rng::new(7);
    for model in [SMOLLM2_Q4_1, SMOLLM2_Q4_K_M, GEMMA3_Q4_K_M] {
        let Some(path) = find_model(model) else {
            continue;
        };
        let file = GgufFile::open(&path).unwrap();
        for info in file.tensors() {
            let n = info.row_len() as usize;
            let n_rows = info.n_rows() as usize;
            if n_rows < 2 {
                continue; // norms and biases: not matrices
            }
            let rb = info.ty.row_bytes(n as u64).unwrap() as usize;
            let data = file.tensor_data(info);
            let (a, _) = quantized_acts(&mut rng, info.ty, n);
            let ad = dequant_acts(info.ty, &a, n);
            for r in [0, n_rows / 3, n_rows - 1] {
                let w = &data[r * rb..(r + 1) * rb];
                assert_simd_matches_scalar(info.ty, n, w, &a, &format!("{model} {}", info.name));
                let wd = dequant(info.ty, w, n);
                let want: f64 = wd.iter().zip(&ad).map(|(x, y)| *x as f64 * *y as f64).sum();
                let got = vec_dot(info.ty, n, w, &a) as f64;
                let mut tol = 64.0 * f32::EPSILON as f64 * magnitude(info.ty, w, n, &ad);
                if vec_dot_type(info.ty) == GgmlType::Q8_1 {
                    tol += 2f64.powi(-9) * magnitude(info.ty, w, n, &ad);
                }
                assert!(
                    (got - want).abs() <= tol,
                    "{model} {} row {r}: vec_dot {got} vs f64 {want} (tol {tol:e})",
                    info.name
                );
            }
        }
    }
}
