//! Every row quantizer against ggml's own reference quantizers (`quantize_row_*_ref` of
//! llama.cpp 0c1e57098, the build that made the reference models), on 8192 values that
//! cover ordinary, outlier-heavy, all-zero, constant, one-signed, sparse and tiny blocks.
//! tests/data/quantize_ref/ggml_ref.bin holds the input followed by ggml's output for each
//! type; gen.c there (with stubs.c) is the program that wrote it.

use ghostcore::quant::quantize::quantize_row;
use ghostcore::quant::GgmlType;

const N: usize = 8192;
const TYPES: [GgmlType; 10] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

#[test]
fn byte_identical_to_ggml_reference_quantizers() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/quantize_ref/ggml_ref.bin");
    let data = std::fs::read(&path).unwrap();
    let (input, mut rest) = data.split_at(4 * N);
    let x: Vec<f32> = input
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let mut report = Vec::new();
    for ty in TYPES {
        let n = ty.row_bytes(N as u64).unwrap() as usize;
        let (expected, tail) = rest.split_at(n);
        rest = tail;
        let mut ours = vec![0u8; n];
        quantize_row(ty, &x, &mut ours).unwrap();
        let bad: Vec<usize> = ours
            .chunks(ty.type_size())
            .zip(expected.chunks(ty.type_size()))
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .map(|(i, _)| i)
            .collect();
        if !bad.is_empty() {
            report.push(format!("{ty}: blocks {bad:?} differ"));
        }
    }
    assert!(rest.is_empty(), "unexpected trailing data");
    assert!(report.is_empty(), "{report:#?}");
}
