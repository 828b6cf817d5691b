//! `ghost quantize SmolLM2-Q4_1 → q4_k_m` against llama-quantize's own output
//! (`smollm2-135m-q4_k_m.gguf`, made by llama.cpp 0c1e57098 from the same input).

use ghostcore::gguf::GgufFile;
use ghostcore::quant::quantize::quantize_gguf;
use ghostcore::quant::recipe::Ftype;
use ghostcore::quant::{dequantize_row, GgmlType};
use ghostcore::test_models::{find_model, SMOLLM2_Q4_1, SMOLLM2_Q4_K_M};

#[test]
fn smollm2_q4_k_m_matches_llama_quantize() {
    let (Some(input), Some(reference)) = (find_model(SMOLLM2_Q4_1), find_model(SMOLLM2_Q4_K_M))
    else {
        return;
    };
    let input = GgufFile::open(&input).unwrap();
    let reference = GgufFile::open(&reference).unwrap();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (writer, summary) = quantize_gguf(&input, Ftype::Q4_K_M, threads, &mut |_| {}).unwrap();
    let ours = GgufFile::from_bytes(writer.to_bytes()).unwrap();

    // Metadata: same keys, same order, same values.
    let our_keys: Vec<&str> = ours.metadata().iter().map(|(k, _)| k.as_str()).collect();
    let ref_keys: Vec<&str> = reference
        .metadata()
        .iter()
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(our_keys, ref_keys, "metadata keys or order differ");
    for ((k, a), (_, b)) in ours.metadata().iter().zip(reference.metadata()) {
        assert_eq!(a, b, "metadata value of {k} differs");
    }

    // Tensors: same order, types, shapes; count byte-identical data.
    assert_eq!(ours.tensors().len(), reference.tensors().len());
    let mut identical = 0;
    let mut differing = Vec::new();
    for (a, b) in ours.tensors().iter().zip(reference.tensors()) {
        assert_eq!(a.name, b.name, "tensor order differs");
        assert_eq!(a.ty, b.ty, "type of {}", a.name);
        assert_eq!(a.dims, b.dims, "shape of {}", a.name);
        if ours.tensor_data(a) == reference.tensor_data(b) {
            identical += 1;
        } else {
            let n_diff = ours
                .tensor_data(a)
                .iter()
                .zip(reference.tensor_data(b))
                .filter(|(x, y)| x != y)
                .count();
            let max_abs = max_dequantized_difference(
                a.ty,
                a.row_len() as usize,
                ours.tensor_data(a),
                reference.tensor_data(b),
            );
            differing.push(format!(
                "{} ({}): {n_diff} bytes differ, max |dequantized difference| {max_abs:e}",
                a.name, a.ty
            ));
        }
    }
    eprintln!(
        "{identical}/{} tensors byte-identical; differing: {differing:#?}",
        ours.tensors().len()
    );
    assert_eq!(summary.tensors.len(), reference.tensors().len());
    assert!(differing.is_empty(), "{} tensors differ", differing.len());
    // And so the whole file is identical.
    assert_eq!(ours.bytes(), reference.bytes());
}

fn max_dequantized_difference(ty: GgmlType, row_len: usize, a: &[u8], b: &[u8]) -> f32 {
    let row_bytes = ty.row_bytes(row_len as u64).unwrap() as usize;
    let mut ra = vec![0.0f32; row_len];
    let mut rb = vec![0.0f32; row_len];
    let mut max = 0.0f32;
    for (x, y) in a.chunks_exact(row_bytes).zip(b.chunks_exact(row_bytes)) {
        dequantize_row(ty, x, &mut ra).unwrap();
        dequantize_row(ty, y, &mut rb).unwrap();
        for (u, v) in ra.iter().zip(&rb) {
            max = max.max((u - v).abs());
        }
    }
    max
}
