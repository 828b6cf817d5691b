//! GGUF reader/writer on the real models: read → write → read is byte-identical, and the
//! tensor table matches what llama.cpp reported (tests/data/reference/tensor_types.json).

use ghostcore::gguf::{GgufFile, GgufWriter};
use ghostcore::test_models::{find_model, GEMMA3_Q4_K_M, SMOLLM2_Q4_1, SMOLLM2_Q4_K_M};

fn round_trip(file: &str) {
    let Some(path) = find_model(file) else { return };
    let g = GgufFile::open(&path).unwrap();
    let bytes = GgufWriter::from_file(&g).to_bytes();
    assert_eq!(bytes.len(), g.bytes().len(), "{file}: size differs");
    assert!(bytes == g.bytes(), "{file}: rewritten bytes differ");
    let g2 = GgufFile::from_bytes(bytes).unwrap();
    assert_eq!(g2.metadata(), g.metadata());
    assert_eq!(g2.tensors(), g.tensors());
}

#[test]
fn smollm2_q4_1_round_trip() {
    round_trip(SMOLLM2_Q4_1);
}

#[test]
fn smollm2_q4_k_m_round_trip() {
    round_trip(SMOLLM2_Q4_K_M);
}

#[test]
fn gemma3_round_trip() {
    round_trip(GEMMA3_Q4_K_M);
}

/// The type histogram of each file equals the one llama.cpp's tooling recorded.
#[test]
fn type_histograms_match_reference() {
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(ghostcore::test_models::reference_dir().join("tensor_types.json"))
            .unwrap(),
    )
    .unwrap();
    for (key, entry) in reference.as_object().unwrap() {
        let file = key.rsplit('/').next().unwrap();
        // The reference also lists llama.cpp variants this project does not ship.
        if ![SMOLLM2_Q4_1, SMOLLM2_Q4_K_M, GEMMA3_Q4_K_M].contains(&file) {
            continue;
        }
        let Some(path) = find_model(file) else {
            continue;
        };
        let g = GgufFile::open(&path).unwrap();
        assert_eq!(
            g.tensors().len() as u64,
            entry["n_tensors"].as_u64().unwrap(),
            "{file}"
        );
        for (ty, count) in entry["type_histogram"].as_object().unwrap() {
            let n = g
                .tensors()
                .iter()
                .filter(|t| t.ty.name().eq_ignore_ascii_case(ty))
                .count() as u64;
            assert_eq!(n, count.as_u64().unwrap(), "{file}: count of {ty}");
        }
    }
}
