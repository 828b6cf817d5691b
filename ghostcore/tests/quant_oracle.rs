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
