//! Whole-model quantization beyond the SmolLM2 parity case: llama.cpp's Gemma3 Q4_K_M file
//! requantized to q4_k_m is unchanged, to q8_0 stays close to the original weights; the
//! output does not depend on the thread count; F16/BF16/F32 inputs; progress reports.

use ghostcore::gguf::{GgufFile, GgufWriter, Value};
use ghostcore::quant::quantize::{quantize_gguf, QuantizeProgress};
use ghostcore::quant::recipe::Ftype;
use ghostcore::quant::{dequantize_row, GgmlType};
use ghostcore::test_models::{find_model, GEMMA3_Q4_K_M};

fn dequantize_tensor(file: &GgufFile, name: &str) -> Vec<f32> {
    let (info, data) = file.tensor(name).unwrap();
    let row_len = info.row_len() as usize;
    let row_bytes = info.ty.row_bytes(row_len as u64).unwrap() as usize;
    let mut out = vec![0.0f32; info.n_elements() as usize];
    for (src, dst) in data
        .chunks_exact(row_bytes)
        .zip(out.chunks_exact_mut(row_len))
    {
        dequantize_row(info.ty, src, dst).unwrap();
    }
    out
}

#[test]
fn gemma3_q4_k_m_requantized_to_q4_k_m_is_unchanged() {
    let Some(path) = find_model(GEMMA3_Q4_K_M) else {
        return;
    };
    let file = GgufFile::open(path).unwrap();
    let (writer, summary) = quantize_gguf(&file, Ftype::Q4_K_M, 2, &mut |_| {}).unwrap();
    assert!(summary.tensors.iter().all(|t| t.source == t.target));
    assert!(
        writer.to_bytes() == file.bytes(),
        "output differs from llama.cpp's file"
    );
}

#[test]
fn gemma3_to_q8_0_stays_close() {
    let Some(path) = find_model(GEMMA3_Q4_K_M) else {
        return;
    };
    let file = GgufFile::open(path).unwrap();
    let (writer, _) = quantize_gguf(&file, Ftype::Q8_0, 0, &mut |_| {}).unwrap();
    let out = GgufFile::from_bytes(writer.to_bytes()).unwrap();
    assert_eq!(out.get_u64("general.file_type"), Some(7));
    assert_eq!(out.get_u64("general.quantization_version"), Some(2));
    for t in out.tensors() {
        let src = file.tensor_info(&t.name).unwrap();
        assert_eq!(t.dims, src.dims);
        if t.dims.len() == 1 {
            assert_eq!(t.ty, src.ty, "{} is copied", t.name);
            assert_eq!(out.tensor_data(t), file.tensor_data(src));
            continue;
        }
        assert_eq!(t.ty, GgmlType::Q8_0, "{}", t.name);
        let (a, b) = (
            dequantize_tensor(&file, &t.name),
            dequantize_tensor(&out, &t.name),
        );
        let err: f64 = a
            .iter()
            .zip(&b)
            .map(|(x, y)| ((x - y) as f64).powi(2))
            .sum();
        let norm: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum();
        let rel = (err / norm).sqrt();
        // Q8_0 noise: absmax/127/√12 per 32 weights, ~0.5% of the RMS on weight data.
        assert!(rel < 0.01, "{}: relative RMSE {rel}", t.name);
    }
}

/// A small model with random F32/F16/BF16 weights, built in memory.
fn synthetic_model() -> Vec<u8> {
    let mut s = 0x2545_f491_4f6c_dd1du64;
    let mut rand = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
    };
    let mut w = GgufWriter::new();
    w.set_str("general.architecture", "llama");
    w.set_u32("llama.block_count", 2);
    w.set_u32("general.file_type", 1);
    w.set("split.count", Value::U16(1));
    let mut add = |w: &mut GgufWriter, name: &str, ty: GgmlType, dims: &[u64]| {
        let n: u64 = dims.iter().product();
        let bytes: Vec<u8> = (0..n)
            .flat_map(|_| {
                let v = rand();
                match ty {
                    GgmlType::F32 => v.to_le_bytes().to_vec(),
                    GgmlType::F16 => half::f16::from_f32(v).to_le_bytes().to_vec(),
                    GgmlType::BF16 => half::bf16::from_f32(v).to_le_bytes().to_vec(),
                    _ => unreachable!(),
                }
            })
            .collect();
        w.add_tensor(name, ty, dims, bytes).unwrap();
    };
    add(&mut w, "token_embd.weight", GgmlType::F16, &[512, 64]);
    for l in 0..2 {
        add(
            &mut w,
            &format!("blk.{l}.attn_norm.weight"),
            GgmlType::F32,
            &[512],
        );
        add(
            &mut w,
            &format!("blk.{l}.attn_v.weight"),
            GgmlType::BF16,
            &[512, 128],
        );
        add(
            &mut w,
            &format!("blk.{l}.ffn_down.weight"),
            GgmlType::F32,
            &[1024, 512],
        );
        add(
            &mut w,
            &format!("blk.{l}.ffn_up.weight"),
            GgmlType::F16,
            &[512, 1024],
        );
    }
    w.to_bytes()
}

#[test]
fn output_does_not_depend_on_thread_count() {
    let file = GgufFile::from_bytes(synthetic_model()).unwrap();
    for ftype in [Ftype::Q4_K_M, Ftype::Q5_K_S, Ftype::Q3_K_M, Ftype::Q8_0] {
        let one = quantize_gguf(&file, ftype, 1, &mut |_| {})
            .unwrap()
            .0
            .to_bytes();
        for threads in [2, 3, 8] {
            let many = quantize_gguf(&file, ftype, threads, &mut |_| {})
                .unwrap()
                .0
                .to_bytes();
            assert!(one == many, "{ftype}: {threads} threads differ from 1");
        }
    }
}

#[test]
fn synthetic_model_types_metadata_and_progress() {
    let file = GgufFile::from_bytes(synthetic_model()).unwrap();
    let mut reports: Vec<(usize, usize, String, u64, u64)> = Vec::new();
    let mut on_progress = |p: &QuantizeProgress| {
        if p.tensor_finished {
            let r = (
                p.done,
                p.total,
                p.name.to_string(),
                p.elements_done,
                p.elements_total,
            );
            reports.push(r);
        }
    };
    let (w, summary) = quantize_gguf(&file, Ftype::Q4_K_M, 2, &mut on_progress).unwrap();
    let out = GgufFile::from_bytes(w.to_bytes()).unwrap();
    // Split keys dropped; file type and quantization version appended last.
    let keys: Vec<&str> = out.metadata().iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "general.architecture",
            "llama.block_count",
            "general.quantization_version",
            "general.file_type"
        ]
    );
    assert_eq!(out.get_u64("general.file_type"), Some(15));
    let ty = |n: &str| out.tensor_info(n).unwrap().ty;
    // Tied embedding with 512-wide rows: the output rule gives Q6_K.
    assert_eq!(ty("token_embd.weight"), GgmlType::Q6_K);
    // 2 layers: use_more_bits(i, 2) is false for layer 0 and true for layer 1 (i ≥ 7·2/8).
    assert_eq!(ty("blk.0.attn_v.weight"), GgmlType::Q4_K);
    assert_eq!(ty("blk.1.attn_v.weight"), GgmlType::Q6_K);
    assert_eq!(ty("blk.0.ffn_down.weight"), GgmlType::Q4_K);
    assert_eq!(ty("blk.1.ffn_down.weight"), GgmlType::Q6_K);
    assert_eq!(ty("blk.0.ffn_up.weight"), GgmlType::Q4_K);
    assert_eq!(ty("blk.0.attn_norm.weight"), GgmlType::F32);
    // Progress: once per tensor, in output order, ending at the totals.
    assert_eq!(reports.len(), file.tensors().len());
    for (i, r) in reports.iter().enumerate() {
        assert_eq!((r.0, r.1), (i + 1, file.tensors().len()));
        assert_eq!(r.2, summary.tensors[i].name);
    }
    let last = reports.last().unwrap();
    assert_eq!(last.3, last.4);
    assert_eq!(
        summary.output_bytes,
        summary.tensors.iter().map(|t| t.bytes).sum::<u64>()
    );
}

fn one_tensor_model(ty: GgmlType, dims: &[u64], data: Vec<u8>) -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.set_str("general.architecture", "llama");
    w.set_u32("llama.block_count", 1);
    w.add_tensor("blk.0.ffn_up.weight", ty, dims, data).unwrap();
    w.to_bytes()
}

#[test]
fn errors_are_typed_and_name_the_tensor() {
    use ghostcore::Error;
    // A source type with no dequantizer.
    let file = GgufFile::from_bytes(one_tensor_model(
        GgmlType::IQ4_NL,
        &[64, 2],
        vec![0u8; 4 * 18],
    ))
    .unwrap();
    match quantize_gguf(&file, Ftype::Q8_0, 1, &mut |_| {}) {
        Err(Error::Unsupported(m)) => assert!(m.contains("blk.0.ffn_up.weight"), "{m}"),
        other => panic!("expected Unsupported, got {:?}", other.map(|_| ())),
    }
    assert!(matches!(
        quantize_gguf(&file, Ftype::F16, 1, &mut |_| {}),
        Err(Error::Unsupported(_))
    ));
    // A NaN weight.
    let mut data: Vec<u8> = (0..512)
        .flat_map(|i| (i as f32 * 1e-3).to_le_bytes())
        .collect();
    data[4 * 300..4 * 301].copy_from_slice(&f32::NAN.to_le_bytes());
    let file = GgufFile::from_bytes(one_tensor_model(GgmlType::F32, &[256, 2], data)).unwrap();
    match quantize_gguf(&file, Ftype::Q4_K_M, 2, &mut |_| {}) {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("blk.0.ffn_up.weight"), "{m}"),
        other => panic!("expected InvalidArgument, got {:?}", other.map(|_| ())),
    }
    // No architecture metadata: not a model the recipe can plan.
    let mut w = GgufWriter::new();
    w.add_tensor("x.weight", GgmlType::F32, &[32, 2], vec![0u8; 256])
        .unwrap();
    let file = GgufFile::from_bytes(w.to_bytes()).unwrap();
    assert!(matches!(
        quantize_gguf(&file, Ftype::Q8_0, 1, &mut |_| {}),
        Err(Error::Format(_))
    ));
}

#[test]
fn explicit_type_that_does_not_fit_is_rejected_up_front() {
    use ghostcore::quant::recipe::Recipe;
    use ghostcore::Error;
    let file = GgufFile::from_bytes(synthetic_model()).unwrap();
    let recipe = Recipe {
        token_embedding_type: Some(GgmlType::Q4_K),
        ..Ftype::Q8_0.into()
    };
    // 512-wide rows take Q4_K...
    assert!(quantize_gguf(&file, recipe, 1, &mut |_| {}).is_ok());
    // ...but not a 32-wide one.
    let data: Vec<u8> = (0..96).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let mut w = GgufWriter::new();
    w.set_str("general.architecture", "llama");
    w.set_u32("llama.block_count", 1);
    w.add_tensor("token_embd.weight", GgmlType::F32, &[32, 3], data)
        .unwrap();
    let file = GgufFile::from_bytes(w.to_bytes()).unwrap();
    let mut calls = 0;
    match quantize_gguf(&file, recipe, 1, &mut |_| calls += 1) {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("token_embd.weight"), "{m}"),
        other => panic!("expected InvalidArgument, got {:?}", other.map(|_| ())),
    }
    assert_eq!(calls, 0, "nothing was converted before the error");
}
