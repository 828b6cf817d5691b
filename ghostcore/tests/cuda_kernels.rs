//! CUDA kernels against scalar CPU references (built only with `--features cuda`).
//!
//! Oracles:
//! - weights: random blocks of each ggml type, dequantized by the scalar reference below,
//!   which is itself checked against gguf-py's `gguf.quants.dequantize` (that test needs no GPU);
//! - activations: the ggml `quantize_row_q8_1_ref` rule (d = max|x|/127, round half away);
//! - everything else: f64 formulas (softmax attention, RMSNorm, RoPE, SiLU/GELU).
//!
//! Every GPU test skips, with a printed reason, when `CudaBackend::try_new()` gives `None`.
#![cfg(feature = "cuda")]

use std::process::Command;

use ghostcore::backend::cpu::ops as cpu_ops;
use ghostcore::backend::cuda::{
    AttentionWorkspace, CudaBackend, DeviceActivations, DeviceMatrix, DeviceVec, GatedActivation,
    KvCache, KvCacheShape, NeuronMajorDown, RopeParams, RopeStyle, SparseFfnRule, SparseFfnScratch,
};
use ghostcore::gguf::GgufFile;
use ghostcore::quant::GgmlType;
use ghostcore::test_models::{find_model, python_oracle, SMOLLM2_Q4_K_M};
use half::f16;

// ------------------------------------------------------------------ test infrastructure

fn backend() -> Option<CudaBackend> {
    match CudaBackend::try_new() {
        Ok(Some(b)) => Some(b),
        Ok(None) => {
            eprintln!("SKIPPED: no CUDA driver or device on this machine");
            None
        }
        Err(e) => panic!("CUDA device present but unusable: {e}"),
    }
}

/// splitmix64: deterministic test data without a dependency.
struct Rng(u64);
impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }
    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.unit() * scale).collect()
    }
}

fn push_f16(out: &mut Vec<u8>, v: f32) {
    out.extend_from_slice(&f16::from_f32(v).to_le_bytes());
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

const TYPES: [GgmlType; 8] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
    GgmlType::Q6_K,
];

/// `n_rows` rows of `n_cols` random weights of type `ty` (random quants, modest scales).
fn random_rows(rng: &mut Rng, ty: GgmlType, n_rows: usize, n_cols: usize) -> Vec<u8> {
    let n_blocks = n_rows * n_cols / ty.block_size();
    let mut out = Vec::with_capacity(n_blocks * ty.type_size());
    for _ in 0..n_blocks {
        match ty {
            GgmlType::F32 => out.extend_from_slice(&rng.unit().to_le_bytes()),
            GgmlType::F16 => push_f16(&mut out, rng.unit()),
            GgmlType::Q4_0 | GgmlType::Q8_0 => {
                push_f16(&mut out, rng.unit() * 0.05);
                let n = if ty == GgmlType::Q4_0 { 16 } else { 32 };
                (0..n).for_each(|_| out.push(rng.byte()));
            }
            GgmlType::Q4_1 => {
                push_f16(&mut out, rng.unit() * 0.05);
                push_f16(&mut out, rng.unit() * 0.2);
                (0..16).for_each(|_| out.push(rng.byte()));
            }
            GgmlType::Q5_0 => {
                push_f16(&mut out, rng.unit() * 0.05);
                (0..20).for_each(|_| out.push(rng.byte()));
            }
            GgmlType::Q4_K => {
                push_f16(&mut out, rng.unit().abs() * 0.01);
                push_f16(&mut out, rng.unit().abs() * 0.01);
                (0..140).for_each(|_| out.push(rng.byte()));
            }
            GgmlType::Q6_K => {
                (0..192).for_each(|_| out.push(rng.byte()));
                (0..16).for_each(|_| out.push(rng.byte())); // int8 scales, either sign
                push_f16(&mut out, rng.unit() * 0.005);
            }
            other => panic!("no generator for {other:?}"),
        }
    }
    out
}

/// Scalar reference dequantization of one row (ggml `dequantize_row_*`).
fn ref_dequant_row(ty: GgmlType, row: &[u8], n: usize) -> Vec<f32> {
    let mut y = Vec::with_capacity(n);
    let bs = ty.type_size();
    match ty {
        GgmlType::F32 => row[..4 * n]
            .chunks_exact(4)
            .for_each(|c| y.push(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
        GgmlType::F16 => (0..n).for_each(|i| y.push(f16_at(row, 2 * i))),
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q8_0 => {
            for b in row[..n / 32 * bs].chunks_exact(bs) {
                let d = f16_at(b, 0);
                let mut w = [0f32; 32];
                match ty {
                    GgmlType::Q4_0 => (0..16).for_each(|j| {
                        w[j] = d * ((b[2 + j] & 15) as i32 - 8) as f32;
                        w[j + 16] = d * ((b[2 + j] >> 4) as i32 - 8) as f32;
                    }),
                    GgmlType::Q4_1 => {
                        let m = f16_at(b, 2);
                        (0..16).for_each(|j| {
                            w[j] = d * (b[4 + j] & 15) as f32 + m;
                            w[j + 16] = d * (b[4 + j] >> 4) as f32 + m;
                        })
                    }
                    GgmlType::Q5_0 => {
                        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
                        (0..16).for_each(|j| {
                            let h0 = (((qh >> j) << 4) & 0x10) as i32;
                            let h1 = ((qh >> (j + 12)) & 0x10) as i32;
                            w[j] = d * (((b[6 + j] & 15) as i32 | h0) - 16) as f32;
                            w[j + 16] = d * (((b[6 + j] >> 4) as i32 | h1) - 16) as f32;
                        })
                    }
                    _ => (0..32).for_each(|j| w[j] = d * (b[2 + j] as i8) as f32),
                }
                y.extend_from_slice(&w);
            }
        }
        GgmlType::Q4_K => {
            for b in row[..n / 256 * bs].chunks_exact(bs) {
                let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
                let s = &b[4..16];
                let qs = &b[16..144];
                let scale_min = |j: usize| -> (f32, f32) {
                    if j < 4 {
                        ((s[j] & 63) as f32, (s[j + 4] & 63) as f32)
                    } else {
                        (
                            ((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4)) as f32,
                            ((s[j + 4] >> 4) | ((s[j] >> 6) << 4)) as f32,
                        )
                    }
                };
                for c in 0..4 {
                    let (sa, ma) = scale_min(2 * c);
                    let (sb, mb) = scale_min(2 * c + 1);
                    let (d1, m1, d2, m2) = (d * sa, dmin * ma, d * sb, dmin * mb);
                    (0..32).for_each(|l| y.push(d1 * (qs[32 * c + l] & 15) as f32 - m1));
                    (0..32).for_each(|l| y.push(d2 * (qs[32 * c + l] >> 4) as f32 - m2));
                }
            }
        }
        GgmlType::Q6_K => {
            for b in row[..n / 256 * bs].chunks_exact(bs) {
                let d = f16_at(b, 208);
                let mut out = [0f32; 256];
                for half in 0..2 {
                    let ql = &b[64 * half..];
                    let qh = &b[128 + 32 * half..];
                    let sc = |i: usize| b[192 + 8 * half + i] as i8 as f32;
                    for l in 0..32 {
                        let is = l / 16;
                        let q1 = ((ql[l] & 15) | ((qh[l] & 3) << 4)) as i32 - 32;
                        let q2 = ((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                        let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                        let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                        let o = &mut out[128 * half..];
                        o[l] = d * sc(is) * q1 as f32;
                        o[l + 32] = d * sc(is + 2) * q2 as f32;
                        o[l + 64] = d * sc(is + 4) * q3 as f32;
                        o[l + 96] = d * sc(is + 6) * q4 as f32;
                    }
                }
                y.extend_from_slice(&out);
            }
        }
        other => panic!("no reference for {other:?}"),
    }
    y
}

/// ggml `quantize_row_q8_1_ref`, returning the dequantized values d * q and the (q, d) parts.
fn ref_quantize_q8_1(x: &[f32]) -> (Vec<f32>, Vec<i8>, Vec<f32>) {
    let mut deq = Vec::with_capacity(x.len());
    let mut qs = Vec::with_capacity(x.len());
    let mut ds = Vec::new();
    for blk in x.chunks_exact(32) {
        let amax = blk.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        for &v in blk {
            let q = (v * id).round() as i8;
            qs.push(q);
            deq.push(d * q as f32);
        }
        ds.push(d);
    }
    (deq, qs, ds)
}

fn dot64(a: &[f32], b: &[f32]) -> (f64, f64) {
    a.iter().zip(b).fold((0.0, 0.0), |(s, m), (&x, &y)| {
        (s + x as f64 * y as f64, m + (x as f64 * y as f64).abs())
    })
}

fn assert_close(what: &str, got: &[f32], want: &[f64], tol: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = (0.0f64, 0usize);
    for i in 0..got.len() {
        let err = (got[i] as f64 - want[i]).abs();
        assert!(
            err <= tol[i],
            "{what}[{i}]: got {} want {} (err {err:e} > tol {:e})",
            got[i],
            want[i],
            tol[i]
        );
        if tol[i] > 0.0 && err / tol[i] > worst.0 {
            worst = (err / tol[i], i);
        }
    }
    eprintln!(
        "{what}: {} values, worst error {:.3} of tolerance (at {})",
        got.len(),
        worst.0,
        worst.1
    );
}

// ------------------------------------------------------------------ oracle check (no GPU)

/// The scalar reference dequantizer above agrees with gguf-py on random blocks of each type.
#[test]
fn cuda_reference_dequant_matches_gguf_py() {
    let Some(python) = python_oracle() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("gc-cuda-oracle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut rng = Rng(7);
    for ty in TYPES {
        let (n_rows, n_cols) = (3, 512);
        let bytes = random_rows(&mut rng, ty, n_rows, n_cols);
        let src = dir.join(format!("{}.bin", ty.name()));
        let dst = dir.join(format!("{}.f32", ty.name()));
        std::fs::write(&src, &bytes).unwrap();
        let script = format!(
            "import numpy as np, gguf\n\
             raw = np.fromfile(r'{}', dtype=np.uint8).reshape({n_rows}, -1)\n\
             out = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType({}))\n\
             np.asarray(out, dtype=np.float32).tofile(r'{}')\n",
            src.display(),
            ty.id(),
            dst.display()
        );
        let status = Command::new(&python)
            .arg("-c")
            .arg(&script)
            .status()
            .expect("run python");
        assert!(
            status.success(),
            "gguf-py dequantize failed for {}",
            ty.name()
        );
        let theirs: Vec<f32> = std::fs::read(&dst)
            .unwrap()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let row_bytes = bytes.len() / n_rows;
        let ours: Vec<f32> = bytes
            .chunks_exact(row_bytes)
            .flat_map(|r| ref_dequant_row(ty, r, n_cols))
            .collect();
        assert_eq!(ours.len(), theirs.len(), "{}", ty.name());
        // The engine's CPU dequantizer (ghostcore::quant) agrees bit for bit.
        for (r, row) in bytes.chunks_exact(row_bytes).enumerate() {
            let mut cpu = vec![0f32; n_cols];
            ghostcore::quant::dequantize_row(ty, row, &mut cpu).unwrap();
            assert_eq!(
                cpu,
                ours[r * n_cols..(r + 1) * n_cols],
                "{} row {r}: quant::dequantize_row",
                ty.name()
            );
        }
        for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            assert!(
                (a - b).abs() <= 1e-6 * b.abs().max(1e-3),
                "{} [{i}]: ours {a} gguf-py {b}",
                ty.name()
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// nvcc as build.rs finds it (`NVCC`, `CUDA_PATH`/`CUDA_HOME`, `PATH`, `.cuda/` of
/// scripts/install-nvcc.sh). `None` means skip (printed); under CI its absence fails.
fn find_nvcc() -> Option<std::path::PathBuf> {
    use std::path::PathBuf;
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("NVCC") {
        candidates.push(PathBuf::from(p));
    }
    for var in ["CUDA_PATH", "CUDA_HOME"] {
        if let Some(r) = std::env::var_os(var) {
            candidates.push(PathBuf::from(r).join("bin/nvcc"));
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("nvcc")));
    }
    candidates.push(ghostcore::test_models::workspace_root().join(".cuda/nvidia/cu13/bin/nvcc"));
    let found = candidates.into_iter().find(|p| p.is_file());
    if found.is_none() {
        let msg = "nvcc not found; run scripts/install-nvcc.sh";
        assert!(
            !ghostcore::test_models::running_in_ci(),
            "CI=true and {msg}"
        );
        eprintln!("SKIPPED: {msg}");
    }
    found
}

fn write_f32s(path: &std::path::Path, v: &[f32]) {
    std::fs::write(
        path,
        v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>(),
    )
    .unwrap();
}

fn read_f32s(path: &std::path::Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// The per-type math the kernels run (`QuantTraits<T>::dot` with dp4a, `::dequant` in
/// kernels/quant_blocks.cuh), compiled for the host by nvcc (kernels/check/) and run here
/// without a GPU, against the scalar reference: dots per 32-weight unit against
/// sum(w * d * q) of the reference-quantized activations, dequantized weights against
/// `ref_dequant_row`. Covers bit layouts and scale maths, not launches or warp reductions.
#[test]
fn cuda_device_math_on_host_matches_reference() {
    let Some(nvcc) = find_nvcc() else { return };
    let dir = std::env::temp_dir().join(format!("gc-cuda-hostcheck-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("quant_blocks_check");
    let src = ghostcore::test_models::workspace_root().join("kernels/check/quant_blocks_check.cu");
    if !src.is_file() {
        // A staged test binary on a machine without the source tree (gpu-stage/).
        eprintln!("SKIPPED: {} not found", src.display());
        return;
    }
    let out = Command::new(&nvcc)
        .arg("-O2")
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .output()
        .expect("run nvcc");
    assert!(
        out.status.success(),
        "nvcc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut rng = Rng(12);
    for ty in TYPES {
        for rep in 0..4 {
            let n_cols = 1024;
            let row = random_rows(&mut rng, ty, 1, n_cols);
            let x = rng.vec(n_cols, if rep == 0 { 0.01 } else { 2.0 });
            let (x_deq, qs, ds) = ref_quantize_q8_1(&x);
            let pairs: Vec<f32> = ds
                .iter()
                .enumerate()
                .flat_map(|(b, &d)| {
                    [
                        d,
                        d * qs[32 * b..32 * b + 32]
                            .iter()
                            .map(|&q| q as i32)
                            .sum::<i32>() as f32,
                    ]
                })
                .collect();
            let (p_row, p_xq, p_xds) =
                (dir.join("row.bin"), dir.join("xq.bin"), dir.join("xds.bin"));
            let (p_dots, p_deq) = (dir.join("dots.out"), dir.join("deq.out"));
            std::fs::write(&p_row, &row).unwrap();
            std::fs::write(&p_xq, qs.iter().map(|&q| q as u8).collect::<Vec<u8>>()).unwrap();
            write_f32s(&p_xds, &pairs);
            let status = Command::new(&exe)
                .arg(ty.id().to_string())
                .arg(n_cols.to_string())
                .args([&p_row, &p_xq, &p_xds, &p_dots, &p_deq])
                .status()
                .unwrap();
            assert!(status.success(), "host check failed for {}", ty.name());
            let w = ref_dequant_row(ty, &row, n_cols);
            let deq = read_f32s(&p_deq);
            let want: Vec<f64> = w.iter().map(|&v| v as f64).collect();
            let tol: Vec<f64> = want.iter().map(|v| 1e-6 * v.abs() + 1e-7).collect();
            assert_close(&format!("host dequant {}", ty.name()), &deq, &want, &tol);
            if matches!(ty, GgmlType::F32 | GgmlType::F16) {
                continue;
            }
            let dots = read_f32s(&p_dots);
            let (want, tol): (Vec<f64>, Vec<f64>) = (0..n_cols / 32)
                .map(|u| {
                    let (s, m) = dot64(&w[32 * u..32 * u + 32], &x_deq[32 * u..32 * u + 32]);
                    (s, 1e-5 * m + 1e-7)
                })
                .unzip();
            assert_close(&format!("host dot {}", ty.name()), &dots, &want, &tol);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

// ------------------------------------------------------------------ GPU tests

#[test]
fn cuda_quantize_q8_1_matches_reference() {
    let Some(gpu) = backend() else { return };
    let mut rng = Rng(1);
    let mut x = rng.vec(4096, 3.0);
    x[32..64].iter_mut().for_each(|v| *v = 0.0); // an all-zero block: d = 0
    let mut act = DeviceActivations::new(&gpu, x.len()).unwrap();
    act.x.write(&gpu, &x).unwrap();
    gpu.quantize_activations(&mut act).unwrap();
    let (qs, ds) = act.read_q8_1(&gpu).unwrap();
    let (_, ref_qs, ref_d) = ref_quantize_q8_1(&x);
    assert_eq!(qs, ref_qs, "int8 values differ from quantize_row_q8_1_ref");
    for (b, (pair, d)) in ds.iter().zip(&ref_d).enumerate() {
        assert_eq!(pair[0], *d, "block {b}: d");
        let s: i32 = ref_qs[32 * b..32 * b + 32].iter().map(|&q| q as i32).sum();
        assert!(
            (pair[1] - d * s as f32).abs() <= 1e-6 * (d * s as f32).abs().max(1e-6),
            "block {b}: d * sum"
        );
    }
}

/// Integer (Q8_1) and dequantizing matvecs for every type, including `accumulate`.
#[test]
fn cuda_matvec_matches_reference_for_every_type() {
    let Some(gpu) = backend() else { return };
    let mut rng = Rng(2);
    for ty in TYPES {
        for &(n_rows, n_cols) in &[(37usize, 256usize), (300, 1536), (8, 4096)] {
            let w = random_rows(&mut rng, ty, n_rows, n_cols);
            let x = rng.vec(n_cols, 1.0);
            let row_bytes = w.len() / n_rows;
            let w_deq: Vec<Vec<f32>> = w
                .chunks_exact(row_bytes)
                .map(|r| ref_dequant_row(ty, r, n_cols))
                .collect();
            let (x_q8, _, _) = ref_quantize_q8_1(&x);

            let dm = DeviceMatrix::upload(&gpu, ty, n_cols, n_rows, &w).unwrap();
            let mut act = DeviceActivations::new(&gpu, n_cols).unwrap();
            act.x.write(&gpu, &x).unwrap();
            gpu.quantize_activations(&mut act).unwrap();
            let mut out = DeviceVec::zeros(&gpu, n_rows).unwrap();

            // Primary path: integer kernel for quantized types (against Q8_1-rounded x), f32 otherwise.
            let integer = !matches!(ty, GgmlType::F32 | GgmlType::F16);
            gpu.matvec(&dm, &act, &mut out, false).unwrap();
            let got = out.to_vec(&gpu).unwrap();
            let x_ref = if integer { &x_q8 } else { &x };
            let (want, tol): (Vec<f64>, Vec<f64>) = w_deq
                .iter()
                .map(|r| {
                    let (s, m) = dot64(r, x_ref);
                    (s, 1e-5 * m + 1e-6)
                })
                .unzip();
            assert_close(
                &format!("matvec {} {n_rows}x{n_cols}", ty.name()),
                &got,
                &want,
                &tol,
            );

            // The Q8_1 result also stays near the exact f32 dot (activation rounding ~0.4 %).
            let exact: Vec<(f64, f64)> = w_deq.iter().map(|r| dot64(r, &x)).collect();
            let (want_x, tol_x): (Vec<f64>, Vec<f64>) =
                exact.iter().map(|&(s, m)| (s, 2e-2 * m + 1e-5)).unzip();
            assert_close(
                &format!("matvec {} vs exact x", ty.name()),
                &got,
                &want_x,
                &tol_x,
            );

            // The CPU engine's matvec (its own activation quantization: Q8_0/Q8_1/Q8_K by type).
            let vdt = ghostcore::quant::vec_dot_type(ty);
            let mut act_bytes = vec![0u8; vdt.row_bytes(n_cols as u64).unwrap() as usize];
            ghostcore::quant::quantize_activations(vdt, &x, &mut act_bytes).unwrap();
            let mut cpu = vec![0f32; n_rows];
            ghostcore::quant::matvec(ty, n_cols, &w, 0..n_rows, &act_bytes, &mut cpu).unwrap();
            let cpu64: Vec<f64> = cpu.iter().map(|&v| v as f64).collect();
            assert_close(
                &format!("matvec {} vs CPU engine", ty.name()),
                &got,
                &cpu64,
                &tol_x,
            );

            // Dequantizing variant against the exact f32 activations.
            gpu.matvec_dequant(&dm, &act.x, &mut out, false).unwrap();
            let got = out.to_vec(&gpu).unwrap();
            let (want, tol): (Vec<f64>, Vec<f64>) =
                exact.iter().map(|&(s, m)| (s, 1e-5 * m + 1e-6)).unzip();
            assert_close(
                &format!("matvec_dequant {} {n_rows}x{n_cols}", ty.name()),
                &got,
                &want,
                &tol,
            );

            // A sub-range of rows, as the CPU quant::matvec(.., rows, ..) takes.
            let sub = n_rows / 3..n_rows - 1;
            let mut part = DeviceVec::zeros(&gpu, sub.len()).unwrap();
            gpu.matvec_rows(&dm, sub.clone(), &act, &mut part, false)
                .unwrap();
            let whole_int = {
                gpu.matvec(&dm, &act, &mut out, false).unwrap();
                out.to_vec(&gpu).unwrap()
            };
            assert_eq!(
                part.to_vec(&gpu).unwrap(),
                whole_int[sub.clone()],
                "matvec_rows {}",
                ty.name()
            );

            // accumulate: out += W x on top of the previous result.
            gpu.matvec_dequant(&dm, &act.x, &mut out, false).unwrap();
            gpu.matvec_dequant(&dm, &act.x, &mut out, true).unwrap();
            let got = out.to_vec(&gpu).unwrap();
            let (want, tol): (Vec<f64>, Vec<f64>) = exact
                .iter()
                .map(|&(s, m)| (2.0 * s, 2e-5 * m + 1e-6))
                .unzip();
            assert_close(
                &format!("matvec_dequant accumulate {}", ty.name()),
                &got,
                &want,
                &tol,
            );
        }
    }
}

#[test]
fn cuda_bad_shapes_are_errors_not_faults() {
    let Some(gpu) = backend() else { return };
    let mut rng = Rng(3);
    let w = random_rows(&mut rng, GgmlType::Q4_K, 4, 256);
    assert!(
        DeviceMatrix::upload(&gpu, GgmlType::Q4_K, 256, 5, &w).is_err(),
        "short data accepted"
    );
    assert!(
        DeviceMatrix::upload(&gpu, GgmlType::Q4_K, 100, 4, &w).is_err(),
        "n_cols 100 accepted"
    );
    assert!(
        DeviceMatrix::upload(&gpu, GgmlType::Q5_1, 256, 4, &[0u8; 4 * 8 * 24]).is_err(),
        "Q5_1 accepted"
    );
    let dm = DeviceMatrix::upload(&gpu, GgmlType::Q4_K, 256, 4, &w).unwrap();
    let act = DeviceActivations::new(&gpu, 512).unwrap();
    let mut out = DeviceVec::zeros(&gpu, 4).unwrap();
    assert!(
        gpu.matvec(&dm, &act, &mut out, false).is_err(),
        "x of the wrong length accepted"
    );
    assert!(
        gpu.embed(&dm, 4, 1.0, &mut DeviceVec::zeros(&gpu, 256).unwrap())
            .is_err(),
        "token out of range"
    );
    gpu.synchronize().unwrap();
}

#[test]
fn cuda_embedding_dequantizes_the_row() {
    let Some(gpu) = backend() else { return };
    let mut rng = Rng(4);
    for ty in TYPES {
        let (vocab, n_embd) = (50, 512);
        let table = random_rows(&mut rng, ty, vocab, n_embd);
        let dm = DeviceMatrix::upload(&gpu, ty, n_embd, vocab, &table).unwrap();
        let mut out = DeviceVec::zeros(&gpu, n_embd).unwrap();
        let row_bytes = table.len() / vocab;
        for token in [0u32, 17, 49] {
            gpu.embed(&dm, token, 1.5, &mut out).unwrap();
            let got = out.to_vec(&gpu).unwrap();
            let r = token as usize * row_bytes;
            let want: Vec<f64> = ref_dequant_row(ty, &table[r..r + row_bytes], n_embd)
                .iter()
                .map(|&v| v as f64 * 1.5)
                .collect();
            let tol: Vec<f64> = want.iter().map(|w| 1e-6 * w.abs() + 1e-6).collect();
            assert_close(
                &format!("embed {} token {token}", ty.name()),
                &got,
                &want,
                &tol,
            );
        }
    }
}

#[test]
fn cuda_rms_norm_matches_reference() {
    let Some(gpu) = backend() else { return };
    let mut rng = Rng(5);
    for &(rows, n) in &[(1usize, 576usize), (1, 640), (9, 64), (4, 256)] {
        let x = rng.vec(rows * n, 2.0);
        let w = rng.vec(n, 1.5);
        let eps = 1e-6f32;
        let dx = DeviceVec::from_host(&gpu, &x).unwrap();
        let dw = DeviceVec::from_host(&gpu, &w).unwrap();
        let mut out = DeviceVec::zeros(&gpu, rows * n).unwrap();
        gpu.rms_norm(&dx, &dw, &mut out, eps).unwrap();
        let got = out.to_vec(&gpu).unwrap();
        let mut want = Vec::new();
        for r in x.chunks_exact(n) {
            let ms = r.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / n as f64;
            let s = 1.0 / (ms + eps as f64).sqrt();
            want.extend(r.iter().zip(&w).map(|(&v, &g)| v as f64 * s * g as f64));
        }
        let tol: Vec<f64> = want.iter().map(|w| 2e-6 * w.abs() + 1e-6).collect();
        assert_close(&format!("rms_norm {rows}x{n}"), &got, &want, &tol);
        let mut cpu = vec![0f32; rows * n];
        for (xr, yr) in x.chunks_exact(n).zip(cpu.chunks_exact_mut(n)) {
            cpu_ops::rms_norm(xr, &w, eps, yr);
        }
        let cpu64: Vec<f64> = cpu.iter().map(|&v| v as f64).collect();
        assert_close(
            &format!("rms_norm {rows}x{n} vs CPU backend"),
            &got,
            &cpu64,
            &tol,
        );
        let mut inplace = DeviceVec::from_host(&gpu, &x).unwrap();
        gpu.rms_norm_inplace(&mut inplace, &dw, eps).unwrap();
        assert_eq!(
            inplace.to_vec(&gpu).unwrap(),
            got,
            "in-place and out-of-place differ"
        );
    }
}

#[test]
fn cuda_rope_matches_reference() {
    let Some(gpu) = backend() else { return };
    let mut rng = Rng(6);
    for style in [RopeStyle::Normal, RopeStyle::Neox] {
        for &(n_heads, head_dim, n_rot) in
            &[(9usize, 64usize, 64usize), (4, 256, 256), (2, 128, 64)]
        {
            for &(pos, tol_abs) in &[
                (0usize, 1e-6),
                (1, 1e-5),
                (37, 1e-5),
                (1000, 2e-4),
                (4000, 1e-3),
            ] {
                let x = rng.vec(n_heads * head_dim, 1.0);
                let p = RopeParams {
                    n_heads,
                    head_dim,
                    n_rot,
                    pos,
                    freq_base: 10000.0,
                    freq_scale: 1.0,
                    style,
                };
                let mut dx = DeviceVec::from_host(&gpu, &x).unwrap();
                gpu.rope(&mut dx, &p).unwrap();
                let got = dx.to_vec(&gpu).unwrap();
                let mut want: Vec<f64> = x.iter().map(|&v| v as f64).collect();
                for h in 0..n_heads {
                    for i in 0..n_rot / 2 {
                        let theta = pos as f64 * 10000f64.powf(-2.0 * i as f64 / n_rot as f64);
                        let (a, b) = match style {
                            RopeStyle::Normal => (2 * i, 2 * i + 1),
                            RopeStyle::Neox => (i, i + n_rot / 2),
                        };
                        let (x0, x1) = (x[h * head_dim + a] as f64, x[h * head_dim + b] as f64);
                        want[h * head_dim + a] = x0 * theta.cos() - x1 * theta.sin();
                        want[h * head_dim + b] = x0 * theta.sin() + x1 * theta.cos();
                    }
                }
                let tol = vec![tol_abs; want.len()];
                assert_close(
                    &format!("rope {style:?} {n_heads}x{head_dim}/{n_rot} pos {pos}"),
                    &got,
                    &want,
                    &tol,
                );
                // The CPU backend's rope (ggml's f32 angle recurrence).
                let (mut cos, mut sin) = (vec![0f32; n_rot / 2], vec![0f32; n_rot / 2]);
                cpu_ops::rope_table(pos, n_rot, 10000.0, 1.0, &mut cos, &mut sin);
                let mut cpu = x.clone();
                for h in cpu.chunks_exact_mut(head_dim) {
                    cpu_ops::rope_apply(h, &cos, &sin, style == RopeStyle::Neox);
                }
                let cpu64: Vec<f64> = cpu.iter().map(|&v| v as f64).collect();
                assert_close(
                    &format!("rope {style:?} pos {pos} vs CPU backend"),
                    &got,
                    &cpu64,
                    &tol,
                );
            }
        }
    }
}

#[test]
fn cuda_gated_activation_and_add() {
    let Some(gpu) = backend() else { return };
    let mut rng = Rng(8);
    let n = 1536;
    let gate = rng.vec(n, 6.0);
    let up = rng.vec(n, 2.0);
    for act in [GatedActivation::Silu, GatedActivation::GeluTanh] {
        let mut dg = DeviceVec::from_host(&gpu, &gate).unwrap();
        let du = DeviceVec::from_host(&gpu, &up).unwrap();
        gpu.gated_activation(&mut dg, &du, act).unwrap();
        let got = dg.to_vec(&gpu).unwrap();
        let want: Vec<f64> = gate
            .iter()
            .zip(&up)
            .map(|(&g, &u)| ref_act(act, g as f64) * u as f64)
            .collect();
        let tol: Vec<f64> = want.iter().map(|w| 1e-5 * w.abs() + 1e-6).collect();
        assert_close(&format!("gated {act:?}"), &got, &want, &tol);
    }
    let mut dx = DeviceVec::from_host(&gpu, &gate).unwrap();
    gpu.add_inplace(&mut dx, &DeviceVec::from_host(&gpu, &up).unwrap())
        .unwrap();
    let want: Vec<f32> = gate.iter().zip(&up).map(|(a, b)| a + b).collect();
    assert_eq!(dx.to_vec(&gpu).unwrap(), want);
}

fn ref_act(act: GatedActivation, g: f64) -> f64 {
    match act {
        GatedActivation::Silu => g / (1.0 + (-g).exp()),
        GatedActivation::GeluTanh => {
            0.5 * g
                * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (g + 0.044715 * g * g * g)).tanh())
        }
    }
}

#[test]
fn cuda_attention_matches_softmax_reference() {
    let Some(gpu) = backend() else { return };
    let mut rng = Rng(9);
    // (n_heads, n_kv_heads, head_dim, tokens stored, attended range, softcap)
    let cases = [
        (9usize, 3usize, 64usize, 5usize, 0..5usize, None),
        (9, 3, 64, 700, 0..700, None),
        (4, 1, 256, 300, 100..300, None),
        (8, 8, 128, 40, 0..40, Some(0.5f32)),
    ];
    for (n_heads, n_kv, hd, n_tok, range, softcap) in cases {
        let shape = KvCacheShape {
            n_layers: 2,
            n_kv_heads: n_kv,
            head_dim: hd,
            max_ctx: 1024,
        };
        let mut cache = KvCache::new(&gpu, shape).unwrap();
        let layer = 1;
        let mut ks = Vec::new();
        let mut vs = Vec::new();
        let mut dk = DeviceVec::zeros(&gpu, n_kv * hd).unwrap();
        let mut dv = DeviceVec::zeros(&gpu, n_kv * hd).unwrap();
        for pos in 0..n_tok {
            let k = rng.vec(n_kv * hd, 1.0);
            let v = rng.vec(n_kv * hd, 1.0);
            dk.write(&gpu, &k).unwrap();
            dv.write(&gpu, &v).unwrap();
            gpu.kv_store(&mut cache, layer, pos, &dk, &dv).unwrap();
            ks.push(k.iter().map(|&x| f16::from_f32(x)).collect::<Vec<_>>());
            vs.push(v.iter().map(|&x| f16::from_f32(x)).collect::<Vec<_>>());
        }
        // The cache holds exactly the f16-rounded rows, in [head][pos][dim] order.
        let (kc, _) = cache.read_layer(&gpu, layer).unwrap();
        for pos in [0, n_tok - 1] {
            for h in 0..n_kv {
                for d in 0..hd {
                    assert_eq!(
                        kc[(h * 1024 + pos) * hd + d],
                        ks[pos][h * hd + d].to_bits(),
                        "k cache pos {pos} head {h}"
                    );
                }
            }
        }
        let q = rng.vec(n_heads * hd, 1.0);
        let scale = 1.0 / (hd as f32).sqrt();
        let dq = DeviceVec::from_host(&gpu, &q).unwrap();
        let mut ws = AttentionWorkspace::new(&gpu, n_heads, hd, 1024).unwrap();
        let mut out = DeviceVec::zeros(&gpu, n_heads * hd).unwrap();
        gpu.attention(
            &dq,
            &cache,
            layer,
            range.clone(),
            scale,
            softcap,
            &mut ws,
            &mut out,
        )
        .unwrap();
        let got = out.to_vec(&gpu).unwrap();

        let mut want = vec![0f64; n_heads * hd];
        for h in 0..n_heads {
            let kvh = h / (n_heads / n_kv);
            let scores: Vec<f64> = range
                .clone()
                .map(|p| {
                    let s = (0..hd)
                        .map(|d| q[h * hd + d] as f64 * ks[p][kvh * hd + d].to_f64())
                        .sum::<f64>()
                        * scale as f64;
                    softcap.map_or(s, |c| c as f64 * (s / c as f64).tanh())
                })
                .collect();
            let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
            let l: f64 = e.iter().sum();
            for (j, p) in range.clone().enumerate() {
                for d in 0..hd {
                    want[h * hd + d] += e[j] / l * vs[p][kvh * hd + d].to_f64();
                }
            }
        }
        let tol = vec![1e-4; want.len()];
        assert_close(
            &format!("attention {n_heads}/{n_kv} heads x {hd}, range {range:?}"),
            &got,
            &want,
            &tol,
        );
    }
}

/// ggml `quantize_row_q8_0_ref`.
fn ref_quantize_q8_0(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::new();
    for blk in x.chunks_exact(32) {
        let amax = blk.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        push_f16(&mut out, d);
        out.extend(blk.iter().map(|&v| (v * id).round() as i8 as u8));
    }
    out
}

/// A threshold near the `pct` percentile of `mags` with a clear gap to every value, so the
/// f64 reference and the GPU agree on which side each value falls.
fn gap_threshold(mags: &[f64], pct: usize) -> f64 {
    let mut m = mags.to_vec();
    m.sort_by(|p, q| p.partial_cmp(q).unwrap());
    let n = m.len();
    let lo = (pct * n / 100).min(n - 2);
    let k = (lo..(lo + n / 10).min(n - 1))
        .max_by(|&i, &j| (m[i + 1] - m[i]).partial_cmp(&(m[j + 1] - m[j])).unwrap())
        .unwrap();
    assert!(
        m[k + 1] - m[k] > 1e-4 * m[k + 1],
        "no clear gap near {pct}%"
    );
    (m[k] + m[k + 1]) / 2.0
}

/// The sparse FFN (gate test by |act| or by |act| times a per-neuron scale, optional product
/// stage) against an f64 reference that masks the dense FFN with the same decisions: the kept
/// sets equal, the output within the f32 accumulation error; run twice, bit-identical.
#[test]
fn cuda_sparse_ffn_matches_masked_dense_reference() {
    let Some(gpu) = backend() else { return };
    let mut rng = Rng(10);
    // n_embd 576: a last down tile that is only partly filled (SmolLM2's width).
    for (ty, act, down_ty, n_embd, n_ff) in [
        (
            GgmlType::Q4_K,
            GatedActivation::Silu,
            GgmlType::Q8_0,
            512usize,
            1536usize,
        ),
        (
            GgmlType::Q8_0,
            GatedActivation::GeluTanh,
            GgmlType::Q8_0,
            576,
            1536,
        ),
        (
            GgmlType::Q6_K,
            GatedActivation::Silu,
            GgmlType::Q8_0,
            512,
            1536,
        ),
        (
            GgmlType::Q4_K,
            GatedActivation::Silu,
            GgmlType::Q4_0,
            512,
            2560,
        ),
        (
            GgmlType::Q5_0,
            GatedActivation::Silu,
            GgmlType::Q4_0,
            576,
            1536,
        ),
    ] {
        let gate = random_rows(&mut rng, ty, n_ff, n_embd);
        let up = random_rows(&mut rng, ty, n_ff, n_embd);
        // ffn_down as the forward pass sees it: [n_embd rows][n_ff]; its neuron-major copy.
        let down: Vec<Vec<f32>> = (0..n_embd).map(|_| rng.vec(n_ff, 0.05)).collect();
        let down_nm: Vec<f32> = (0..n_ff)
            .flat_map(|i| down.iter().map(move |r| r[i]))
            .collect();
        let down_nm_q = if down_ty == GgmlType::Q8_0 {
            ref_quantize_q8_0(&down_nm)
        } else {
            let mut q = vec![0u8; down_ty.row_bytes((n_ff * n_embd) as u64).unwrap() as usize];
            ghostcore::quant::quantize::quantize_row(down_ty, &down_nm, &mut q).unwrap();
            q
        };
        let down_nm_deq = ref_dequant_row(down_ty, &down_nm_q, n_ff * n_embd);
        let x = rng.vec(n_embd, 1.0);
        let (x_q8, _, _) = ref_quantize_q8_1(&x);

        let rb = gate.len() / n_ff;
        let a: Vec<f64> = gate
            .chunks_exact(rb)
            .map(|r| ref_act(act, dot64(&ref_dequant_row(ty, r, n_embd), &x_q8).0))
            .collect();
        let u: Vec<f64> = up
            .chunks_exact(rb)
            .map(|r| dot64(&ref_dequant_row(ty, r, n_embd), &x_q8).0)
            .collect();
        let scale: Vec<f32> = (0..n_ff).map(|_| 0.5 + rng.unit().abs()).collect();

        let dg = DeviceMatrix::upload(&gpu, ty, n_embd, n_ff, &gate).unwrap();
        let du = DeviceMatrix::upload(&gpu, ty, n_embd, n_ff, &up).unwrap();
        let dd = NeuronMajorDown::upload_typed(&gpu, down_ty, n_ff, n_embd, &down_nm_q).unwrap();
        let dscale = DeviceVec::from_host(&gpu, &scale).unwrap();
        let mut dx = DeviceActivations::new(&gpu, n_embd).unwrap();
        dx.x.write(&gpu, &x).unwrap();
        gpu.quantize_activations(&mut dx).unwrap();
        let mut scratch = SparseFfnScratch::new(&gpu, n_ff, n_embd).unwrap();
        let residual = rng.vec(n_embd, 1.0);

        for (label, scaled, product_pct) in [
            ("act", false, None),
            ("act+product", false, Some(40)),
            ("upw+product", true, Some(30)),
        ] {
            let score: Vec<f64> = (0..n_ff)
                .map(|i| a[i].abs() * if scaled { scale[i] as f64 } else { 1.0 })
                .collect();
            let t_act = gap_threshold(&score, 70);
            let kept: Vec<usize> = (0..n_ff).filter(|&i| score[i] > t_act).collect();
            let prod: Vec<f64> = kept.iter().map(|&i| (a[i] * u[i]).abs()).collect();
            let t_prod = product_pct.map_or(-1.0, |p| gap_threshold(&prod, p));
            let read: Vec<usize> = kept
                .iter()
                .copied()
                .filter(|&i| (a[i] * u[i]).abs() > t_prod)
                .collect();
            let rule = SparseFfnRule {
                act_threshold: t_act as f32,
                neuron_scale: scaled.then_some(&dscale),
                product_threshold: t_prod as f32,
            };
            let what = format!(
                "sparse_ffn {} {act:?} down {} {label} ({} kept, {} read of {n_ff})",
                ty.name(),
                down_ty.name(),
                kept.len(),
                read.len()
            );
            let mut runs = Vec::new();
            for _ in 0..2 {
                let mut out = DeviceVec::from_host(&gpu, &residual).unwrap();
                gpu.sparse_ffn(&dg, &du, &dd, &dx, act, &rule, &mut scratch, &mut out, true)
                    .unwrap();
                runs.push(out.to_vec(&gpu).unwrap());
            }
            assert!(
                runs[0]
                    .iter()
                    .zip(&runs[1])
                    .all(|(p, q)| p.to_bits() == q.to_bits()),
                "{what}: two runs differ"
            );

            let listed = scratch.read_active(&gpu).unwrap();
            let ids: Vec<usize> = listed.iter().map(|&(i, _)| i as usize).collect();
            assert_eq!(ids, kept, "{what}: kept set differs (threshold {t_act})");
            for &(i, v) in &listed {
                let i = i as usize;
                assert!(
                    (v as f64 - a[i]).abs() <= 1e-4 * a[i].abs() + 1e-5,
                    "{what}: activated gate {i}: {v} vs {}",
                    a[i]
                );
            }
            let hidden = scratch.read_hidden(&gpu).unwrap();
            let hid: Vec<usize> = hidden.iter().map(|&(i, _)| i as usize).collect();
            assert_eq!(
                hid, read,
                "{what}: set of down rows read differs (threshold {t_prod})"
            );

            let mut want: Vec<f64> = residual.iter().map(|&r| r as f64).collect();
            let mut mag = vec![0f64; n_embd];
            for &i in &read {
                let h = a[i] * u[i];
                for e in 0..n_embd {
                    let t = h * down_nm_deq[i * n_embd + e] as f64;
                    want[e] += t;
                    mag[e] += t.abs();
                }
            }
            let tol: Vec<f64> = mag
                .iter()
                .zip(&want)
                .map(|(m, w)| 1e-4 * m + 1e-6 * w.abs() + 1e-6)
                .collect();
            assert_close(&what, &runs[0], &want, &tol);
        }

        // Nothing active: out = 0 without accumulate.
        let mut out = DeviceVec::from_host(&gpu, &residual).unwrap();
        gpu.sparse_ffn(
            &dg,
            &du,
            &dd,
            &dx,
            act,
            &SparseFfnRule::act(f32::INFINITY),
            &mut scratch,
            &mut out,
            false,
        )
        .unwrap();
        assert!(scratch.read_active(&gpu).unwrap().is_empty());
        assert!(out.to_vec(&gpu).unwrap().iter().all(|&v| v == 0.0));
        // Mismatched scratch or scale: typed errors, nothing launched.
        let mut small = SparseFfnScratch::new(&gpu, n_ff / 2, n_embd).unwrap();
        assert!(gpu
            .sparse_ffn(
                &dg,
                &du,
                &dd,
                &dx,
                act,
                &SparseFfnRule::act(0.0),
                &mut small,
                &mut out,
                false
            )
            .is_err());
        let short = DeviceVec::zeros(&gpu, n_ff - 1).unwrap();
        let bad = SparseFfnRule {
            neuron_scale: Some(&short),
            ..SparseFfnRule::act(0.0)
        };
        assert!(gpu
            .sparse_ffn(&dg, &du, &dd, &dx, act, &bad, &mut scratch, &mut out, false)
            .is_err());
    }
}

/// Real tensors of the llama.cpp Q4_K_M SmolLM2 file (Q4_K, Q5_0, Q6_K, Q8_0 rows as
/// llama.cpp's quantizer wrote them) through the GPU matvec and embedding.
#[test]
fn cuda_real_model_tensors_match_reference() {
    let Some(gpu) = backend() else { return };
    let Some(path) = find_model(SMOLLM2_Q4_K_M) else {
        return;
    };
    let file = GgufFile::open(&path).unwrap();
    let mut rng = Rng(11);
    let mut seen = std::collections::BTreeSet::new();
    for info in file.tensors() {
        if info.dims.len() != 2
            || seen.contains(&info.ty)
            || !TYPES.contains(&info.ty)
            || info.ty == GgmlType::F32
        {
            continue;
        }
        seen.insert(info.ty);
        let (n_cols, n_rows) = (info.dims[0] as usize, (info.dims[1] as usize).min(512));
        let (_, data) = file.tensor(&info.name).unwrap();
        let row_bytes = data.len() / info.dims[1] as usize;
        let w = &data[..row_bytes * n_rows];
        let x = rng.vec(n_cols, 1.0);
        let (x_q8, _, _) = ref_quantize_q8_1(&x);
        let dm = DeviceMatrix::upload(&gpu, info.ty, n_cols, n_rows, w).unwrap();
        let whole = DeviceMatrix::upload_tensor(&gpu, &file, &info.name).unwrap();
        assert_eq!(
            (whole.n_cols(), whole.n_rows()),
            (n_cols, info.dims[1] as usize)
        );
        let mut act = DeviceActivations::new(&gpu, n_cols).unwrap();
        act.x.write(&gpu, &x).unwrap();
        gpu.quantize_activations(&mut act).unwrap();
        let mut out = DeviceVec::zeros(&gpu, n_rows).unwrap();
        gpu.matvec(&dm, &act, &mut out, false).unwrap();
        let got = out.to_vec(&gpu).unwrap();
        let x_ref = if info.ty == GgmlType::F16 { &x } else { &x_q8 };
        let (want, tol): (Vec<f64>, Vec<f64>) = w
            .chunks_exact(row_bytes)
            .map(|r| {
                let (s, m) = dot64(&ref_dequant_row(info.ty, r, n_cols), x_ref);
                (s, 1e-5 * m + 1e-6)
            })
            .unzip();
        assert_close(
            &format!("{} ({})", info.name, info.ty.name()),
            &got,
            &want,
            &tol,
        );
    }
    eprintln!("real tensor types checked: {seen:?}");
}

/// The GPU sparse FFN with every neuron active against the CPU engine's FFN
/// (`sparsity::ffn`, neuron-major down path) on layer 0 of the Q4_K_M SmolLM2 file, with the
/// neuron-major Q8_0 copy built by the CPU repacker (`sparsity::repack`), so the two backends
/// share the copy's layout.
#[test]
fn cuda_real_model_ffn_matches_cpu_engine() {
    use ghostcore::sparsity::ffn::{
        sparse_ffn, Activation, DownPath, FfnScratch, FfnWeights, LayerPlan, LayerRule,
    };
    use ghostcore::sparsity::repack::neuron_major_down;
    use ghostcore::sparsity::{QMatrix, Serial};

    let Some(gpu) = backend() else { return };
    let Some(path) = find_model(SMOLLM2_Q4_K_M) else {
        return;
    };
    let file = GgufFile::open(&path).unwrap();
    let load = |name: &str| {
        let (info, data) = file.tensor(name).unwrap();
        QMatrix::new(info.ty, info.dims[1] as usize, info.dims[0] as usize, data).unwrap()
    };
    let (gate, up, down) = (
        load("blk.0.ffn_gate.weight"),
        load("blk.0.ffn_up.weight"),
        load("blk.0.ffn_down.weight"),
    );
    let (n_ff, n_embd) = (gate.n_rows, gate.n_cols);
    let (down_t_bytes, _) = neuron_major_down(&down, GgmlType::Q8_0).unwrap();
    let down_t = QMatrix::new(GgmlType::Q8_0, n_ff, n_embd, &down_t_bytes).unwrap();
    let weights = FfnWeights::new(gate, up, down, Some(down_t), Activation::Silu).unwrap();
    let plan = LayerPlan {
        live: None,
        input: None,
        coarse: None,
        rule: LayerRule::Dense,
        down: DownPath::NeuronMajor,
        paths: Default::default(),
    };

    let mut rng = Rng(13);
    let x = rng.vec(n_embd, 1.0);
    let mut cpu = vec![0f32; n_embd];
    sparse_ffn(
        &weights,
        &plan,
        &x,
        &mut FfnScratch::default(),
        &Serial,
        &mut cpu,
    )
    .unwrap();

    let dg = DeviceMatrix::upload(&gpu, gate.ty, n_embd, n_ff, gate.data).unwrap();
    let du = DeviceMatrix::upload(&gpu, up.ty, n_embd, n_ff, up.data).unwrap();
    let dd = NeuronMajorDown::upload(&gpu, n_ff, n_embd, &down_t_bytes).unwrap();
    let mut dx = DeviceActivations::new(&gpu, n_embd).unwrap();
    dx.x.write(&gpu, &x).unwrap();
    gpu.quantize_activations(&mut dx).unwrap();
    let mut scratch = SparseFfnScratch::new(&gpu, n_ff, n_embd).unwrap();
    let mut out = DeviceVec::zeros(&gpu, n_embd).unwrap();
    gpu.sparse_ffn(
        &dg,
        &du,
        &dd,
        &dx,
        GatedActivation::Silu,
        &SparseFfnRule::act(-1.0),
        &mut scratch,
        &mut out,
        false,
    )
    .unwrap();
    // (No activation of this input is exactly 0, so every neuron is listed.)
    assert_eq!(
        scratch.read_active(&gpu).unwrap().len(),
        n_ff,
        "threshold -1 must keep every neuron"
    );
    let got = out.to_vec(&gpu).unwrap();

    // Different activation quantization (GPU Q8_1 everywhere; CPU per type) is the only
    // difference left: compare relative L2 error.
    let num: f64 = got
        .iter()
        .zip(&cpu)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum();
    let den: f64 = cpu.iter().map(|&b| (b as f64).powi(2)).sum();
    let rel = (num / den).sqrt();
    eprintln!(
        "real FFN layer 0 ({} gate/up): GPU vs CPU relative L2 error {rel:.2e}",
        gate.ty.name()
    );
    assert!(
        rel < 2e-2,
        "GPU FFN differs from the CPU engine: relative L2 error {rel}"
    );
}

/// The batched (prefill) matmul gives, for every token, exactly the matvec of that token:
/// same kernels' arithmetic, same summation order. Also through `matmul_from` (a window of
/// rows) and with `accumulate`.
#[test]
fn cuda_matmul_equals_matvec_per_token() {
    let Some(gpu) = backend() else { return };
    let mut rng = Rng(21);
    for ty in TYPES {
        let (n_rows, n_cols) = (67usize, 512usize);
        let w = random_rows(&mut rng, ty, n_rows, n_cols);
        let dm = DeviceMatrix::upload(&gpu, ty, n_cols, n_rows, &w).unwrap();
        for n_tok in [1usize, 3, 8, 13, 64] {
            let x = rng.vec(n_tok * n_cols, 1.0);
            let mut batch = DeviceActivations::new(&gpu, 64 * n_cols).unwrap();
            let mut padded = x.clone();
            padded.resize(64 * n_cols, 0.0);
            batch.x.write(&gpu, &padded).unwrap();
            gpu.quantize_activations_prefix(&mut batch, n_tok * n_cols)
                .unwrap();
            let mut out = DeviceVec::zeros(&gpu, 64 * n_rows).unwrap();
            gpu.matmul(&dm, &batch, n_tok, &mut out, false).unwrap();
            let got = out.to_vec(&gpu).unwrap();

            let mut single = DeviceActivations::new(&gpu, n_cols).unwrap();
            let mut one = DeviceVec::zeros(&gpu, n_rows).unwrap();
            for t in 0..n_tok {
                single
                    .x
                    .write(&gpu, &x[t * n_cols..(t + 1) * n_cols])
                    .unwrap();
                gpu.quantize_activations(&mut single).unwrap();
                gpu.matvec(&dm, &single, &mut one, false).unwrap();
                let want = one.to_vec(&gpu).unwrap();
                assert_eq!(
                    &got[t * n_rows..(t + 1) * n_rows],
                    &want[..],
                    "matmul {} token {t} of {n_tok}",
                    ty.name()
                );
            }
            // Rows beyond the batch are untouched.
            assert!(got[n_tok * n_rows..].iter().all(|&v| v == 0.0));
            if n_tok >= 3 {
                // A window of rows, accumulated onto the previous result.
                let mut acc = DeviceVec::from_host(&gpu, &got).unwrap();
                gpu.matmul_from(&dm, &batch, 1, 2, &mut acc, true).unwrap();
                let acc = acc.to_vec(&gpu).unwrap();
                for i in 0..2 * n_rows {
                    assert_eq!(
                        acc[i],
                        got[i] + got[n_rows + i],
                        "matmul_from {}",
                        ty.name()
                    );
                }
            }
        }
    }
}

/// The fused RMSNorm + Q8_1 quantization equals the two kernels run one after the other, bit
/// for bit (values and quantized form), over several rows.
#[test]
fn cuda_fused_norm_quantize_equals_two_kernels() {
    let Some(gpu) = backend() else { return };
    let mut rng = Rng(31);
    for &(n, rows) in &[
        (576usize, 1usize),
        (640, 3),
        (576, 9),
        (4096, 8),
        (2048, 64),
    ] {
        let x = rng.vec(n * rows, 2.0);
        let w = rng.vec(n, 1.0);
        let dx = DeviceVec::from_host(&gpu, &x).unwrap();
        let dw = DeviceVec::from_host(&gpu, &w).unwrap();
        let mut fused = DeviceActivations::new(&gpu, n * rows).unwrap();
        gpu.rms_norm_quantize_rows(&dx, &dw, &mut fused, rows, 1e-5)
            .unwrap();
        let mut split = DeviceActivations::new(&gpu, n * rows).unwrap();
        gpu.rms_norm_rows(&dx, &dw, &mut split.x, rows, 1e-5)
            .unwrap();
        gpu.quantize_activations_prefix(&mut split, n * rows)
            .unwrap();
        assert_eq!(
            fused.x.to_vec(&gpu).unwrap(),
            split.x.to_vec(&gpu).unwrap(),
            "normalized values, n {n} rows {rows}"
        );
        let (fq, fd) = fused.read_q8_1(&gpu).unwrap();
        let (sq, sd) = split.read_q8_1(&gpu).unwrap();
        assert_eq!(fq, sq, "quants, n {n} rows {rows}");
        assert_eq!(fd, sd, "scales, n {n} rows {rows}");
    }
}
