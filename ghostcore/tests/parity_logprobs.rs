//! Log-probability parity with llama.cpp on the first 256 tokens of GPL-3
//! (`tests/data/reference/logprobs_top10_gpl3_*.json`): batched decoding against variant
//! `primary`, one token per decode against variant `incremental`.
//! Tolerances from the reference README: top-1 agreement ≥ 96 %, median |Δ logprob| over
//! llama.cpp's top-10 ≤ 0.25, mean NLL of the actual next token within 0.01 nats.

use std::sync::Arc;

use ghostcore::context::{Context, ContextParams};
use ghostcore::model::{Model, ModelParams};
use ghostcore::test_models::{find_model, reference_dir, GEMMA3_Q4_K_M, SMOLLM2_Q4_K_M};
use serde_json::Value;

struct Report {
    top1_agree: f64,
    median_abs_dlogprob: f64,
    mean_nll: f64,
    ref_mean_nll: f64,
}

fn log_softmax_at(logits: &[f32], ids: impl Iterator<Item = usize>) -> (f64, Vec<f64>) {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = max
        + logits
            .iter()
            .map(|&l| (l as f64 - max).exp())
            .sum::<f64>()
            .ln();
    (lse, ids.map(|i| logits[i] as f64 - lse).collect())
}

fn run(model_file: &str, batch: bool) -> Option<Report> {
    let path = find_model(model_file)?;
    let stem = model_file.trim_end_matches(".gguf");
    let reff: Value = serde_json::from_str(
        &std::fs::read_to_string(reference_dir().join(format!("logprobs_top10_gpl3_{stem}.json")))
            .unwrap(),
    )
    .unwrap();
    let tokens: Vec<u32> = reff["token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    // Batched decoding is compared with llama.cpp's batched run, single-token steps with its
    // incremental run (llama.cpp uses different math for the two; see the reference README).
    let primary = &reff[if batch { "primary" } else { "incremental" }];
    let positions = primary["positions"].as_array().expect("positions");
    let model = Model::load(&path, &ModelParams::default()).unwrap();
    let n_vocab = model.config().n_vocab;
    let mut ctx = Context::new(
        Arc::clone(&model),
        ContextParams {
            n_ctx: 512,
            n_batch: 512,
            n_threads: 2,
            ..Default::default()
        },
    )
    .unwrap();
    let logits: Vec<f32> = if batch {
        ctx.decode_all_logits(&tokens).unwrap().to_vec()
    } else {
        let mut all = Vec::with_capacity(tokens.len() * n_vocab);
        for &t in &tokens {
            ctx.decode(&[t]).unwrap();
            all.extend_from_slice(ctx.logits());
        }
        all
    };
    let mut agree = 0usize;
    let mut deltas = Vec::new();
    let (mut nll, mut ref_nll) = (0.0f64, 0.0f64);
    let mut n = 0usize;
    for pos in positions.iter() {
        let i = pos["pos"].as_u64().unwrap() as usize;
        let row = &logits[i * n_vocab..(i + 1) * n_vocab];
        let top: Vec<(usize, f64)> = pos["top10"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_u64().unwrap() as usize, p[1].as_f64().unwrap()))
            .collect();
        let (_, ours) = log_softmax_at(row, top.iter().map(|t| t.0));
        for (k, (_, lp)) in top.iter().enumerate() {
            deltas.push((ours[k] - lp).abs());
        }
        let our_top = ghostcore::sampling::argmax(row);
        if our_top == top[0].0 {
            agree += 1;
        }
        if let (Some(lp), Some(&next)) = (pos["logprob_next_token"].as_f64(), tokens.get(i + 1)) {
            let (_, o) = log_softmax_at(row, std::iter::once(next as usize));
            nll -= o[0];
            ref_nll -= lp;
            n += 1;
        }
    }
    deltas.sort_by(|a, b| a.total_cmp(b));
    let r = Report {
        top1_agree: agree as f64 / positions.len() as f64,
        median_abs_dlogprob: deltas[deltas.len() / 2],
        mean_nll: nll / n as f64,
        ref_mean_nll: ref_nll / n as f64,
    };
    eprintln!(
        "{model_file} batch={batch}: top-1 agreement {:.2}%, median |Δlogprob| {:.4}, mean NLL {:.5} (llama.cpp {:.5}, Δ {:+.5})",
        100.0 * r.top1_agree,
        r.median_abs_dlogprob,
        r.mean_nll,
        r.ref_mean_nll,
        r.mean_nll - r.ref_mean_nll
    );
    Some(r)
}

fn check(r: Report) {
    assert!(r.top1_agree >= 0.96, "top-1 agreement {}", r.top1_agree);
    assert!(
        r.median_abs_dlogprob <= 0.25,
        "median |Δ logprob| {}",
        r.median_abs_dlogprob
    );
    assert!(
        (r.mean_nll - r.ref_mean_nll).abs() <= 0.01,
        "mean NLL {} vs {}",
        r.mean_nll,
        r.ref_mean_nll
    );
}

#[test]
fn smollm2_q4_k_m_batch_matches_llama_cpp() {
    if let Some(r) = run(SMOLLM2_Q4_K_M, true) {
        check(r);
    }
}

#[test]
fn smollm2_q4_k_m_incremental_matches_llama_cpp() {
    if let Some(r) = run(SMOLLM2_Q4_K_M, false) {
        check(r);
    }
}

#[test]
fn gemma3_q4_k_m_incremental_matches_llama_cpp() {
    if let Some(r) = run(GEMMA3_Q4_K_M, false) {
        check(r);
    }
}

#[test]
fn gemma3_q4_k_m_batch_matches_llama_cpp() {
    if let Some(r) = run(GEMMA3_Q4_K_M, true) {
        check(r);
    }
}
