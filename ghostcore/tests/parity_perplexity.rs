//! Perplexity on GPL-3 (`tests/data/GPL-3`, Debian's common-licenses copy, md5
//! 1ebbd3e34237af26da5dc08a4e440464) with `-c 512`, within 1 % of llama-perplexity's figure
//! (reference README: SmolLM2 Q4_K_M 18.9995, Q4_1 18.3914, Gemma3 Q4_K_M 13.9062).
//! Heavy: each model decodes 14 chunks of 512 tokens with all logits.

use std::sync::Arc;

use ghostcore::cli::perplexity::perplexity;
use ghostcore::context::{Context, ContextParams};
use ghostcore::model::{Model, ModelParams};
use ghostcore::test_models::{
    find_model, workspace_root, GEMMA3_Q4_K_M, SMOLLM2_Q4_1, SMOLLM2_Q4_K_M,
};

fn check(model_file: &str, reference: f64) {
    let Some(path) = find_model(model_file) else {
        return;
    };
    let text = std::fs::read_to_string(workspace_root().join("tests/data/GPL-3")).unwrap();
    let model = Model::load(&path, &ModelParams::default()).unwrap();
    let tok = model.tokenizer().unwrap();
    let tokens = tok.encode(&text, tok.add_bos(), false).unwrap();
    let params = ContextParams {
        n_ctx: 512,
        n_batch: 512,
        n_threads: 2,
        ..Default::default()
    };
    let mut ctx = Context::new(Arc::clone(&model), params).unwrap();
    let bos = if tok.add_bos() { tok.bos() } else { None };
    let r = perplexity(&mut ctx, &tokens, 512, bos, None, |_, _| {}).unwrap();
    eprintln!(
        "{model_file}: PPL {:.4} +/- {:.4} (llama.cpp {reference}), {} chunks, {} scored, mean NLL {:.5}",
        r.ppl, r.ppl_err, r.n_chunks, r.n_scored, r.mean_nll
    );
    assert_eq!(r.n_chunks, 14, "chunk count");
    assert_eq!(r.n_scored, 14 * 255, "scored tokens");
    assert!(
        (r.ppl / reference - 1.0).abs() < 0.01,
        "PPL {} vs llama.cpp {reference}",
        r.ppl
    );
}

#[test]
fn smollm2_q4_k_m_perplexity_matches_llama_cpp() {
    check(SMOLLM2_Q4_K_M, 18.9995);
}

#[test]
fn smollm2_q4_1_perplexity_matches_llama_cpp() {
    check(SMOLLM2_Q4_1, 18.3914);
}

#[test]
fn gemma3_q4_k_m_perplexity_matches_llama_cpp() {
    check(GEMMA3_Q4_K_M, 13.9062);
}
