//! Sampler semantics against hand-computed expectations (llama.cpp's definitions) and
//! determinism for a fixed seed.

use std::collections::HashMap;

use ghostcore::sampling::{
    apply_penalties, argmax, min_p, top_k, top_p, Candidate, Sampler, SamplerParams,
};

fn cands(logits: &[f32]) -> Vec<Candidate> {
    logits
        .iter()
        .enumerate()
        .map(|(i, &l)| Candidate {
            id: i as u32,
            logit: l,
        })
        .collect()
}

fn ids(c: &[Candidate]) -> Vec<u32> {
    let mut v: Vec<u32> = c.iter().map(|c| c.id).collect();
    v.sort();
    v
}

#[test]
fn greedy_is_first_argmax() {
    assert_eq!(argmax(&[0.0, 3.0, 1.0, 3.0]), 1);
    let mut s = Sampler::new(SamplerParams::greedy());
    assert_eq!(s.sample(&[0.5, -1.0, 2.5, 2.5, 0.0]), 2);
}

#[test]
fn top_k_keeps_k_highest_sorted() {
    let logits = [0.1, 5.0, -2.0, 3.0, 4.0, 3.0];
    let mut c = cands(&logits);
    top_k(&mut c, 3);
    let got: Vec<u32> = c.iter().map(|c| c.id).collect();
    assert_eq!(got, vec![1, 4, 3], "descending, ties by lower id");
    let mut c = cands(&logits);
    top_k(&mut c, 0);
    assert_eq!(c.len(), logits.len(), "k = 0 disables");
}

#[test]
fn top_p_keeps_smallest_prefix_reaching_p() {
    // Probabilities 0.5, 0.3, 0.15, 0.05 (logits are their logs).
    let probs = [0.05f32, 0.5, 0.15, 0.3];
    let logits: Vec<f32> = probs.iter().map(|p| p.ln()).collect();
    let mut scratch = Vec::new();
    let mut c = cands(&logits);
    top_p(&mut c, 0.79, 1, &mut scratch);
    assert_eq!(ids(&c), vec![1, 3]);
    let mut c = cands(&logits);
    top_p(&mut c, 0.81, 1, &mut scratch);
    assert_eq!(ids(&c), vec![1, 2, 3]);
    let mut c = cands(&logits);
    top_p(&mut c, 0.1, 2, &mut scratch);
    assert_eq!(ids(&c), vec![1, 3], "min_keep");
}

#[test]
fn min_p_drops_tokens_below_fraction_of_top() {
    let probs = [0.4f32, 0.3, 0.2, 0.1];
    let logits: Vec<f32> = probs.iter().map(|p| p.ln()).collect();
    let mut c = cands(&logits);
    min_p(&mut c, 0.5, 1); // threshold 0.2 (kept: p >= 0.2)
    assert_eq!(ids(&c), vec![0, 1, 2]);
    let mut c = cands(&logits);
    min_p(&mut c, 0.9, 1);
    assert_eq!(ids(&c), vec![0]);
}

#[test]
fn penalties_follow_llama_cpp_formula() {
    let logits = [2.0f32, -1.0, 0.5, 3.0];
    let mut c = cands(&logits);
    let counts: HashMap<u32, usize> = [(0, 2), (1, 1)].into_iter().collect();
    apply_penalties(&mut c, &counts, 2.0, 0.1, 0.5);
    // token 0: positive → /2, then - (2*0.1 + 0.5); token 1: negative → *2, then - (0.1 + 0.5)
    assert!((c[0].logit - (1.0 - 0.7)).abs() < 1e-6);
    assert!((c[1].logit - (-2.0 - 0.6)).abs() < 1e-6);
    assert_eq!(c[2].logit, 0.5);
    assert_eq!(c[3].logit, 3.0);
}

#[test]
fn repeat_penalty_changes_greedy_choice_through_history() {
    let logits = [1.0f32, 1.5, 0.0];
    let mut s = Sampler::new(SamplerParams {
        temperature: 0.0,
        repeat_penalty: 2.0,
        ..Default::default()
    });
    assert_eq!(s.sample(&logits), 1);
    s.accept(1);
    assert_eq!(s.sample(&logits), 0, "1.5 / 2 < 1.0");
}

#[test]
fn same_seed_same_tokens_and_distribution_follows_temperature() {
    let logits = [1.0f32, 2.0, 0.5, 1.5];
    let params = SamplerParams {
        temperature: 0.7,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        seed: 42,
        ..Default::default()
    };
    let draw = |p: &SamplerParams, n: usize| {
        let mut s = Sampler::new(p.clone());
        (0..n).map(|_| s.sample(&logits)).collect::<Vec<u32>>()
    };
    let a = draw(&params, 20000);
    assert_eq!(a, draw(&params, 20000), "deterministic for a fixed seed");
    assert_ne!(
        a[..64],
        draw(
            &SamplerParams {
                seed: 43,
                ..params.clone()
            },
            64
        )[..],
        "seed matters"
    );
    // Empirical frequencies vs softmax(logits / T).
    let z: f64 = logits.iter().map(|&l| (l as f64 / 0.7).exp()).sum();
    for (i, &l) in logits.iter().enumerate() {
        let p = (l as f64 / 0.7).exp() / z;
        let f = a.iter().filter(|&&t| t as usize == i).count() as f64 / a.len() as f64;
        assert!(
            (f - p).abs() < 0.015,
            "token {i}: frequency {f} vs probability {p}"
        );
    }
}

#[test]
fn chain_applies_top_k_before_sampling() {
    let logits = [0.0f32, 10.0, 9.9, -5.0];
    let params = SamplerParams {
        temperature: 1.0,
        top_k: 2,
        top_p: 1.0,
        min_p: 0.0,
        seed: 1,
        ..Default::default()
    };
    let mut s = Sampler::new(params);
    for _ in 0..500 {
        let t = s.sample(&logits);
        assert!(t == 1 || t == 2, "only the top-2 survive, got {t}");
    }
}
