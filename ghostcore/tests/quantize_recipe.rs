//! The Q4_K_M / Q4_K_S recipes against llama.cpp's choices: the per-type histograms it
//! recorded in tests/data/reference/tensor_types.json, and tensor by tensor against the
//! Q4_K_M files it wrote.

use std::collections::BTreeMap;

use ghostcore::gguf::GgufFile;
use ghostcore::quant::recipe::{plan, plan_file, Ftype, ModelShape, Recipe, TensorDesc};
use ghostcore::test_models::{
    find_model, reference_dir, GEMMA3_Q4_K_M, SMOLLM2_Q4_1, SMOLLM2_Q4_K_M,
};

fn reference_histogram(file: &str) -> BTreeMap<String, u64> {
    let text = std::fs::read_to_string(reference_dir().join("tensor_types.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json[format!("models/{file}")]["type_histogram"]
        .as_object()
        .unwrap_or_else(|| panic!("no histogram for {file}"))
        .iter()
        .map(|(k, v)| (k.to_uppercase(), v.as_u64().unwrap()))
        .collect()
}

fn histogram(types: impl Iterator<Item = ghostcore::quant::GgmlType>) -> BTreeMap<String, u64> {
    let mut h = BTreeMap::new();
    for t in types {
        *h.entry(t.name().to_uppercase()).or_insert(0) += 1;
    }
    h
}

#[test]
fn smollm2_histograms_match_llama_cpp() {
    let Some(path) = find_model(SMOLLM2_Q4_1) else {
        return;
    };
    let file = GgufFile::open(path).unwrap();
    for (ftype, reference) in [
        (Ftype::Q4_K_M, "smollm2-135m-q4_k_m.gguf"),
        (Ftype::Q4_K_S, "smollm2-135m-q4_k_s.gguf"),
    ] {
        let choices = plan_file(&file, ftype).unwrap();
        assert_eq!(
            histogram(choices.iter().map(|c| c.target)),
            reference_histogram(reference),
            "{ftype}"
        );
    }
    // llama-quantize --pure ... Q4_K_M.
    let pure = Recipe {
        pure: true,
        ..Ftype::Q4_K_M.into()
    };
    let choices = plan_file(&file, pure).unwrap();
    assert_eq!(
        histogram(choices.iter().map(|c| c.target)),
        reference_histogram("smollm2-135m-q4_k-pure.gguf")
    );
}

/// Planning a llama.cpp Q4_K_M file for Q4_K_M again must keep every tensor's type: the
/// recipe looks only at names and shapes.
fn assert_replans_to_itself(model: &str) {
    let Some(path) = find_model(model) else {
        return;
    };
    let file = GgufFile::open(path).unwrap();
    let choices = plan_file(&file, Ftype::Q4_K_M).unwrap();
    let mut wrong = Vec::new();
    for c in &choices {
        if c.target != c.source {
            wrong.push(format!(
                "{}: llama.cpp {} ours {}",
                c.name, c.source, c.target
            ));
        }
    }
    assert!(wrong.is_empty(), "{model}: {wrong:#?}");
    assert_eq!(
        histogram(choices.iter().map(|c| c.target)),
        reference_histogram(model)
    );
}

#[test]
fn smollm2_q4_k_m_file_types_match() {
    assert_replans_to_itself(SMOLLM2_Q4_K_M);
}

#[test]
fn gemma3_q4_k_m_file_types_match() {
    assert_replans_to_itself(GEMMA3_Q4_K_M);
}

fn synthetic(n_layer: usize, n_embd: u64, n_ff: u64, tied: bool) -> Vec<TensorDesc> {
    let t = |name: String, dims: Vec<u64>| TensorDesc {
        name,
        dims,
        ty: ghostcore::quant::GgmlType::F16,
    };
    let mut v = vec![
        t("token_embd.weight".into(), vec![n_embd, 1000]),
        t("output_norm.weight".into(), vec![n_embd]),
    ];
    if !tied {
        v.push(t("output.weight".into(), vec![n_embd, 1000]));
    }
    for i in 0..n_layer {
        for (name, dims) in [
            ("attn_q.weight", vec![n_embd, n_embd]),
            ("attn_k.weight", vec![n_embd, n_embd / 4]),
            ("attn_v.weight", vec![n_embd, n_embd / 4]),
            ("attn_output.weight", vec![n_embd, n_embd]),
            ("ffn_gate.weight", vec![n_embd, n_ff]),
            ("ffn_up.weight", vec![n_embd, n_ff]),
            ("ffn_down.weight", vec![n_ff, n_embd]),
            ("attn_norm.weight", vec![n_embd]),
        ] {
            v.push(t(format!("blk.{i}.{name}"), dims));
        }
    }
    v
}

#[test]
fn untied_model_with_aligned_rows() {
    use ghostcore::quant::GgmlType as T;
    let shape = ModelShape {
        arch: "llama".into(),
        n_layer: 16,
        n_expert: 0,
        n_head: 32,
        n_head_kv: 8,
    };
    let tensors = synthetic(16, 2048, 8192, false);
    let choices = plan(&shape, &tensors, Ftype::Q4_K_M).unwrap();
    let ty = |name: &str| choices.iter().find(|c| c.name == name).unwrap().target;
    // Separate output gets Q6_K; the token embedding keeps the default.
    assert_eq!(ty("output.weight"), T::Q6_K);
    assert_eq!(ty("token_embd.weight"), T::Q4_K);
    assert_eq!(ty("output_norm.weight"), T::F16, "1-D tensors are copied");
    // 16 layers: use_more_bits picks 0, 1, 14, 15 and 4, 7, 10, 13.
    for i in 0..16 {
        let more = [0, 1, 4, 7, 10, 13, 14, 15].contains(&i);
        let want = if more { T::Q6_K } else { T::Q4_K };
        assert_eq!(ty(&format!("blk.{i}.attn_v.weight")), want, "attn_v {i}");
        assert_eq!(
            ty(&format!("blk.{i}.ffn_down.weight")),
            want,
            "ffn_down {i}"
        );
        assert_eq!(ty(&format!("blk.{i}.attn_q.weight")), T::Q4_K);
    }
    // Write order: non-layer tensors by name, then layers in numeric order.
    let names: Vec<&str> = choices.iter().take(4).map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "output.weight",
            "output_norm.weight",
            "token_embd.weight",
            "blk.0.attn_k.weight"
        ]
    );
    // Plain types.
    let q8 = plan(&shape, &tensors, Ftype::Q8_0).unwrap();
    assert!(q8
        .iter()
        .all(|c| c.target == if c.dims.len() > 1 { T::Q8_0 } else { T::F16 }));
    let q6 = plan(&shape, &tensors, Ftype::Q6_K).unwrap();
    assert!(q6
        .iter()
        .all(|c| c.target == if c.dims.len() > 1 { T::Q6_K } else { T::F16 }));
}

#[test]
fn explicit_output_and_embedding_types() {
    use ghostcore::quant::GgmlType as T;
    let shape = ModelShape {
        arch: "llama".into(),
        n_layer: 4,
        n_expert: 0,
        n_head: 8,
        n_head_kv: 8,
    };
    let ty = |tensors: &[TensorDesc], recipe: Recipe, name: &str| {
        plan(&shape, tensors, recipe)
            .unwrap()
            .into_iter()
            .find(|c| c.name == name)
            .unwrap()
            .target
    };
    let untied = synthetic(4, 512, 1024, false);
    let tied = synthetic(4, 576, 1536, true);
    let base: Recipe = Ftype::Q4_K_M.into();
    let both = Recipe {
        output_tensor_type: Some(T::Q8_0),
        token_embedding_type: Some(T::Q5_K),
        ..base
    };
    assert_eq!(ty(&untied, both, "output.weight"), T::Q8_0);
    assert_eq!(ty(&untied, both, "token_embd.weight"), T::Q5_K);
    // The explicit embedding type wins even where its block does not fit (as in llama.cpp,
    // which applies no fallback to explicit types).
    assert_eq!(ty(&tied, both, "token_embd.weight"), T::Q5_K);
    // A tied embedding follows --output-tensor-type, with the usual fallback.
    let out_only = Recipe {
        output_tensor_type: Some(T::Q6_K),
        ..base
    };
    assert_eq!(ty(&tied, out_only, "token_embd.weight"), T::Q8_0);
    assert_eq!(ty(&tied, base, "token_embd.weight"), T::Q8_0);
}
