//! Row quantizers against independent oracles:
//! - llama.cpp's test-quantize-fns accuracy check (same data, same metric, same limits);
//! - gguf-py: it dequantizes our bytes for every type (relative RMSE bounds per type), and
//!   for the types it can quantize itself (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, all written as
//!   "bit-exact with ggml-quants.c") its bytes must equal ours;
//! - error paths.

use std::path::{Path, PathBuf};
use std::process::Command;

use ghostcore::quant::quantize::{can_quantize_to, quantize_row, QUANTIZE_TARGETS};
use ghostcore::quant::GgmlType;
use ghostcore::test_models::python_oracle;
use ghostcore::Error;

/// The block-quantized types among the quantizer's targets (F32/F16/BF16 left out).
fn quantized_types() -> impl Iterator<Item = GgmlType> {
    QUANTIZE_TARGETS.into_iter().filter(|t| t.block_size() > 1)
}

fn quantize(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; ty.row_bytes(x.len() as u64).unwrap() as usize];
    quantize_row(ty, x, &mut out).unwrap();
    out
}

/// Deterministic pseudo-random data (xorshift64*), roughly Gaussian (sum of 4 uniforms)
/// with occasional 8x outliers, as weights have.
fn weight_like(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut uniform = move || {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32
    };
    (0..n)
        .map(|_| {
            let g = (uniform() + uniform() + uniform() + uniform() - 2.0) * 1.732;
            let outlier = if uniform() < 0.01 { 8.0 } else { 1.0 };
            0.02 * g * outlier
        })
        .collect()
}

fn scratch_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ghost-quantize-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write_f32(path: &Path, x: &[f32]) {
    let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap();
}

fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// llama.cpp tests/test-quantize-fns.cpp: data `0.1 + 2 cos(i)`, 4096 values, error
/// `sqrt(Σ diff²) / n` after quantize → dequantize, limits 0.002 (0.0075 for 2-bit, 0.004
/// for 3-bit types). Dequantization by gguf-py.
#[test]
fn test_quantize_fns_accuracy() {
    let Some(python) = python_oracle() else {
        return;
    };
    let n = 4096;
    let x: Vec<f32> = (0..n).map(|i| 0.1 + 2.0 * (i as f32).cos()).collect();
    let dir = scratch_dir("fns");
    write_f32(&dir.join("x.f32"), &x);
    for ty in quantized_types() {
        std::fs::write(dir.join(format!("{}.q", ty.name())), quantize(ty, &x)).unwrap();
    }
    run_python(&python, &dir, DEQUANTIZE_ALL);
    for ty in quantized_types() {
        let y = read_f32(&dir.join(format!("{}.deq", ty.name())));
        assert_eq!(y.len(), n);
        let sum: f64 = x
            .iter()
            .zip(&y)
            .map(|(a, b)| {
                let d = (*a - *b) as f64;
                d * d
            })
            .sum();
        let err = sum.sqrt() as f32 / n as f32;
        let limit = match ty {
            GgmlType::Q2_K => 0.0075,
            GgmlType::Q3_K => 0.0040,
            _ => 0.002,
        };
        eprintln!("{ty}: test-quantize-fns error {err:.6} (limit {limit})");
        assert!(
            err < limit,
            "{ty}: error {err} over llama.cpp's limit {limit}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

const DEQUANTIZE_ALL: &str = r#"
import sys, pathlib, numpy as np
from gguf.quants import dequantize, quantize
from gguf.constants import GGMLQuantizationType as T
d = pathlib.Path(sys.argv[1])
names = {"q4_0": T.Q4_0, "q4_1": T.Q4_1, "q5_0": T.Q5_0, "q5_1": T.Q5_1, "q8_0": T.Q8_0,
         "q2_K": T.Q2_K, "q3_K": T.Q3_K, "q4_K": T.Q4_K, "q5_K": T.Q5_K, "q6_K": T.Q6_K}
x = np.fromfile(d / "x.f32", dtype=np.float32)
for name, t in names.items():
    p = d / f"{name}.q"
    if not p.exists():
        continue
    q = np.fromfile(p, dtype=np.uint8)
    dequantize(q, t).astype(np.float32).tofile(d / f"{name}.deq")
    if name in ("q4_0", "q4_1", "q5_0", "q5_1", "q8_0"):
        quantize(x.reshape(-1, 256) if x.size % 256 == 0 else x, t).tofile(d / f"{name}.py")
"#;

fn run_python(python: &Path, dir: &Path, script: &str) {
    let out = Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(dir)
        .output()
        .expect("running the Python oracle");
    assert!(
        out.status.success(),
        "gguf-py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Relative RMSE (RMSE / RMS of the data) on weight-like data, dequantized by gguf-py,
/// and byte equality with gguf-py's own quantizers where it has one.
#[test]
fn round_trip_error_and_gguf_py_bytes() {
    let Some(python) = python_oracle() else {
        return;
    };
    // 64 rows of 1024, plus blocks that stress the edge cases: all zero, constant,
    // a single spike, all negative, tiny magnitudes.
    let mut x = weight_like(64 * 1024, 7);
    let special: Vec<f32> = (0..1024)
        .map(|i| match i / 256 {
            0 => 0.0,
            1 => {
                if i % 2 == 0 {
                    0.5
                } else if i == 257 {
                    -3.0
                } else {
                    0.5
                }
            }
            2 => -0.01 - (i % 7) as f32 * 1e-3,
            _ => (i as f32 * 0.37).sin() * 1e-6,
        })
        .collect();
    x.extend_from_slice(&special);
    let dir = scratch_dir("rt");
    write_f32(&dir.join("x.f32"), &x);
    for ty in quantized_types() {
        std::fs::write(dir.join(format!("{}.q", ty.name())), quantize(ty, &x)).unwrap();
    }
    run_python(&python, &dir, DEQUANTIZE_ALL);
    let rms = |v: &[f32]| (v.iter().map(|a| (a * a) as f64).sum::<f64>() / v.len() as f64).sqrt();
    let main = &x[..64 * 1024];
    for ty in quantized_types() {
        let y = read_f32(&dir.join(format!("{}.deq", ty.name())));
        let diff: Vec<f32> = main.iter().zip(&y).map(|(a, b)| a - b).collect();
        let rel = rms(&diff) / rms(main);
        // Oracle: uniform quantization noise, step²/12 per weight, with the step each
        // format's group of weights allows (range / levels over the group that shares a
        // scale). The real quantizers may beat it (k-quants search their scales) and lose
        // a little to the 6- or 8-bit quantized sub-block scales; allow 25% (50% for
        // Q2_K, whose 4-bit scales and mins are coarse).
        let predicted = uniform_noise_rms(ty, main) / rms(main);
        let slack = if ty == GgmlType::Q2_K { 1.5 } else { 1.25 };
        eprintln!(
            "{ty}: relative RMSE {rel:.5}, uniform-noise model {predicted:.5} (ratio {:.3})",
            rel / predicted
        );
        assert!(
            rel < slack * predicted,
            "{ty}: relative RMSE {rel} over {slack} x the uniform-noise model {predicted}"
        );
        // The special blocks: all-zero input stays exactly zero; everything finite.
        let tail = &y[64 * 1024..];
        assert!(
            tail.iter().all(|v| v.is_finite()),
            "{ty}: non-finite output"
        );
        assert!(
            tail[..256].iter().all(|&v| v == 0.0),
            "{ty}: zeros not kept"
        );

        let py = dir.join(format!("{}.py", ty.name()));
        if py.exists() {
            let theirs = std::fs::read(&py).unwrap();
            let ours = quantize(ty, &x);
            let block = ty.type_size();
            let differing = ours
                .chunks(block)
                .zip(theirs.chunks(block))
                .filter(|(a, b)| a != b)
                .count();
            eprintln!(
                "{ty}: {differing} of {} blocks differ from gguf-py's quantizer",
                ours.len() / block
            );
            assert_eq!(ours.len(), theirs.len());
            assert_eq!(differing, 0, "{ty}: bytes differ from gguf-py");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// RMS error of an ideal uniform quantizer: per group of weights sharing a scale, step =
/// range / (levels − 1) for the min/max formats, 2·absmax / levels for the symmetric ones,
/// noise step²/12.
fn uniform_noise_rms(ty: GgmlType, x: &[f32]) -> f64 {
    let (group, levels, symmetric) = match ty {
        GgmlType::Q4_0 => (32, 16, true),
        GgmlType::Q5_0 => (32, 32, true),
        GgmlType::Q8_0 => (32, 255, true),
        GgmlType::Q4_1 | GgmlType::Q4_K => (32, 16, false),
        GgmlType::Q5_1 | GgmlType::Q5_K => (32, 32, false),
        GgmlType::Q2_K => (16, 4, false),
        GgmlType::Q3_K => (16, 8, true),
        GgmlType::Q6_K => (16, 64, true),
        _ => unreachable!(),
    };
    let mut sum = 0.0f64;
    for g in x.chunks(group) {
        let step = if symmetric {
            let amax = g.iter().fold(0.0f32, |m, v| m.max(v.abs())) as f64;
            2.0 * amax / levels as f64
        } else {
            let max = g.iter().fold(f32::MIN, |m, &v| m.max(v)) as f64;
            // The k-quants' and Q4_1's min is clamped at 0 from above.
            let min = g.iter().fold(f32::MAX, |m, &v| m.min(v)) as f64;
            (max - min) / (levels - 1) as f64
        };
        sum += step * step / 12.0 * g.len() as f64;
    }
    (sum / x.len() as f64).sqrt()
}

#[test]
fn rejects_bad_input() {
    let x = vec![0.5f32; 256];
    let mut out = vec![0u8; 1024];
    // Types that cannot be produced.
    for ty in [
        GgmlType::IQ2_XXS,
        GgmlType::Q8_K,
        GgmlType::I32,
        GgmlType::MXFP4,
    ] {
        assert!(!can_quantize_to(ty));
        assert!(matches!(
            quantize_row(ty, &x, &mut out),
            Err(Error::Unsupported(_))
        ));
    }
    for ty in QUANTIZE_TARGETS {
        let need = ty.row_bytes(256).unwrap() as usize;
        // Length not a whole number of blocks (every block is 1, 32 or 256 values).
        if ty.block_size() > 1 {
            let mut o = vec![0u8; need];
            assert!(matches!(
                quantize_row(ty, &x[..ty.block_size() - 1], &mut o),
                Err(Error::InvalidArgument(_))
            ));
        }
        // Wrong destination size.
        let mut o = vec![0u8; need + 1];
        assert!(matches!(
            quantize_row(ty, &x, &mut o),
            Err(Error::InvalidArgument(_))
        ));
        let mut o = vec![0u8; need - 1];
        assert!(matches!(
            quantize_row(ty, &x, &mut o),
            Err(Error::InvalidArgument(_))
        ));
        // Non-finite input.
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut y = x.clone();
            y[100] = bad;
            let mut o = vec![0u8; need];
            assert!(matches!(
                quantize_row(ty, &y, &mut o),
                Err(Error::InvalidArgument(_))
            ));
        }
        // Empty input is a valid, empty row.
        assert!(quantize_row(ty, &[], &mut []).is_ok());
    }
}

#[test]
fn extreme_but_finite_values_do_not_panic() {
    let mut x = weight_like(1024, 3);
    x[5] = f32::MAX;
    x[300] = -f32::MAX;
    x[600] = f32::MIN_POSITIVE;
    x[700] = 1e-40; // subnormal
    for ty in QUANTIZE_TARGETS {
        let _ = quantize(ty, &x);
    }
}
