//! Dequantization against gguf-py (`gguf.quants.dequantize`, llama.cpp's Python package),
//! run through `tests/oracle/dequantize.py`.
//!
//! - Real models: for every tensor of a computable type in the three test models, the
//!   first, middle and last rows.
//! - Synthetic: random and extreme blocks of every computable type (including those the
//!   models lack: Q2_K, Q3_K, Q5_K, Q4_0, Q5_1, BF16, Q8_K), with finite scales.
//!
//! The rows are written into one GGUF with our `GgufWriter`; the script dequantizes every
//! tensor of that file and writes f32 back. Required agreement: bit-identical f32 values
//! (our scalar code performs the same float operations in the same order as ggml's
//! reference and gguf-py). Q8_K, which gguf-py lacks, is compared with a hand-written numpy
//! formula in the script.
//!
//! Activation quantization (Q8_0, Q8_1, Q8_K) is compared byte for byte with an independent
//! numpy implementation of llama.cpp's x86 formulas (`tests/oracle/quantize_activations.py`).

mod quant_common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use ghostcore::gguf::{GgufFile, GgufWriter};
use ghostcore::quant::{dequantize_row, GgmlType};
use ghostcore::test_models::{
    find_model, python_oracle, workspace_root, GEMMA3_Q4_K_M, SMOLLM2_Q4_1, SMOLLM2_Q4_K_M,
};
use quant_common::*;

struct Case {
    what: String,
    ty: GgmlType,
    row_len: usize,
    data: Vec<u8>,
}

fn real_model_cases(cases: &mut Vec<Case>, types_seen: &mut BTreeMap<GgmlType, usize>) -> bool {
    let mut all_found = true;
    for model in [SMOLLM2_Q4_1, SMOLLM2_Q4_K_M, GEMMA3_Q4_K_M] {
        let Some(path) = find_model(model) else {
            all_found = false;
            continue;
        };
        let file = GgufFile::open(&path).expect("open model");
        for info in file.tensors() {
            if !info.ty.is_supported_for_compute() {
                panic!(
                    "{model}: tensor {} has type {} without a kernel",
                    info.name, info.ty
                );
            }
            let data = file.tensor_data(info);
            let row_len = info.row_len() as usize;
            let n_rows = info.n_rows() as usize;
            let rb = info.ty.row_bytes(row_len as u64).unwrap() as usize;
            let mut rows = vec![0, n_rows / 2, n_rows - 1];
            rows.dedup();
            let mut bytes = Vec::new();
            for &r in &rows {
                bytes.extend_from_slice(&data[r * rb..(r + 1) * rb]);
            }
            *types_seen.entry(info.ty).or_default() += 1;
            cases.push(Case {
                what: format!("{model} {} rows {rows:?}", info.name),
                ty: info.ty,
                row_len,
                data: bytes,
            });
        }
    }
    all_found
}

fn synthetic_cases(cases: &mut Vec<Case>) {
    let mut rng = Rng::new(0x5eed);
    for ty in DOT_TYPES {
        let n = 512;
        let rb = ty.row_bytes(n as u64).unwrap() as usize;
        let mut data = Vec::new();
        for _ in 0..4 {
            data.extend(random_row(&mut rng, ty, n));
        }
        if !matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
            for (fill, s) in [
                (0xffu8, 65504.0f32),
                (0x00, -65504.0),
                (0x88, -0.75),
                (0x5a, 0.0),
            ] {
                let mut row = vec![fill; rb];
                set_scales(ty, &mut row, |_, k| if k == 0 { s } else { -s / 3.0 });
                data.extend(row);
            }
        }
        cases.push(Case {
            what: format!("synthetic {ty}"),
            ty,
            row_len: n,
            data,
        });
    }
}

#[test]
fn dequantization_matches_gguf_py() {
    let Some(python) = python_oracle() else {
        return;
    };
    let mut cases = Vec::new();
    let mut seen = BTreeMap::new();
    let all_models = real_model_cases(&mut cases, &mut seen);
    synthetic_cases(&mut cases);
    eprintln!("tensor types in the real models: {seen:?}");
    if all_models {
        for ty in [
            GgmlType::Q4_K,
            GgmlType::Q5_0,
            GgmlType::Q6_K,
            GgmlType::Q8_0,
            GgmlType::Q4_1,
        ] {
            assert!(
                seen.contains_key(&ty),
                "expected {ty} tensors in the real models"
            );
        }
    }

    let mut writer = GgufWriter::new();
    for (i, c) in cases.iter().enumerate() {
        let rows = (c.data.len() / c.ty.row_bytes(c.row_len as u64).unwrap() as usize) as u64;
        writer
            .add_tensor(
                format!("t{i}"),
                c.ty,
                &[c.row_len as u64, rows],
                c.data.as_slice(),
            )
            .expect("add tensor");
    }
    let dir = std::env::temp_dir();
    let stem = format!("ghostcore-quant-oracle-{}", std::process::id());
    let gguf_path: PathBuf = dir.join(format!("{stem}.gguf"));
    let out_path: PathBuf = dir.join(format!("{stem}.bin"));
    writer.write_file(&gguf_path).expect("write gguf");

    let script = workspace_root().join("tests/oracle/dequantize.py");
    let status = Command::new(&python)
        .arg(&script)
        .arg(&gguf_path)
        .arg(&out_path)
        .status()
        .expect("run python oracle");
    let _ = std::fs::remove_file(&gguf_path);
    assert!(status.success(), "{script:?} failed: {status}");
    let bytes = std::fs::read(&out_path).expect("read oracle output");
    let _ = std::fs::remove_file(&out_path);

    let mut pos = 0usize;
    let mut take = |n: usize| {
        let s = &bytes[pos..pos + n];
        pos += n;
        s
    };
    let mut checked_values = 0usize;
    for (i, c) in cases.iter().enumerate() {
        let name_len = u32::from_le_bytes(take(4).try_into().unwrap()) as usize;
        let name = String::from_utf8(take(name_len).to_vec()).unwrap();
        assert_eq!(name, format!("t{i}"), "oracle output order");
        let count = u64::from_le_bytes(take(8).try_into().unwrap()) as usize;
        let want: Vec<f32> = take(4 * count)
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let mut got = vec![0f32; count];
        dequantize_row(c.ty, &c.data, &mut got).expect("dequantize");
        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                "{} ({}): element {k}: ours {g:e} vs gguf-py {w:e}",
                c.what,
                c.ty
            );
        }
        checked_values += count;
    }
    assert_eq!(pos, bytes.len(), "trailing oracle output");
    eprintln!(
        "{} tensors, {checked_values} values bit-identical to gguf-py",
        cases.len()
    );
}

/// Activation quantization against an independent numpy implementation of llama.cpp's x86
/// CPU formulas (`tests/oracle/quantize_activations.py`): byte-identical Q8_0, Q8_1, Q8_K.
#[test]
fn activation_quantization_matches_numpy_oracle() {
    use ghostcore::quant::quantize_activations;
    let Some(python) = python_oracle() else {
        return;
    };
    let mut rng = Rng::new(0xac7);
    let blocks = 64;
    let mut x: Vec<f32> = (0..256 * blocks).map(|_| rng.activation()).collect();
    // Special blocks: all zero, exact .5 ties after scaling, a lone negative maximum,
    // equal positive and negative maxima, tiny values.
    x[..256].iter_mut().for_each(|v| *v = 0.0);
    for (i, v) in x[256..512].iter_mut().enumerate() {
        *v = (i as f32 - 127.5) * if i % 32 == 0 { 1.0 } else { 0.5 };
    }
    x[512 + 17] = -300.0;
    x[768 + 3] = 50.0;
    x[768 + 200] = -50.0;
    x[1024..1280].iter_mut().for_each(|v| *v *= 1e-30);
    // Every block scale exactly 1 (largest element 127): all other values are .5 ties.
    for (i, v) in x[1280..1536].iter_mut().enumerate() {
        *v = if i % 32 == 0 {
            127.0
        } else {
            (i % 100) as f32 - 49.5
        };
    }

    let dir = std::env::temp_dir().join(format!("ghostcore-quant-act-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("x.f32");
    std::fs::write(
        &input,
        x.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>(),
    )
    .unwrap();
    let script = workspace_root().join("tests/oracle/quantize_activations.py");
    let status = Command::new(&python)
        .arg(&script)
        .arg(&input)
        .arg(&dir)
        .status()
        .unwrap();
    assert!(status.success(), "{script:?} failed: {status}");
    for (ty, file) in [
        (GgmlType::Q8_0, "q8_0.bin"),
        (GgmlType::Q8_1, "q8_1.bin"),
        (GgmlType::Q8_K, "q8_k.bin"),
    ] {
        let want = std::fs::read(dir.join(file)).unwrap();
        let mut got = vec![0u8; ty.row_bytes(x.len() as u64).unwrap() as usize];
        quantize_activations(ty, &x, &mut got).unwrap();
        assert_eq!(got.len(), want.len(), "{ty} length");
        let ts = ty.type_size();
        for (b, (g, w)) in got.chunks(ts).zip(want.chunks(ts)).enumerate() {
            assert_eq!(g, w, "{ty} block {b} differs from the numpy oracle");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
