//! Forward-pass behaviour on a real model: batched and incremental decoding agree,
//! logits of every position match the last-token logits, and caller errors (context
//! overflow, bad token ids, empty input) are typed and leave the context usable.

use std::sync::Arc;

use ghostcore::context::{Context, ContextParams};
use ghostcore::model::{Model, ModelParams};
use ghostcore::test_models::{find_model, SMOLLM2_Q4_K_M};
use ghostcore::Error;

const TOKENS: [u32; 12] = [504, 3575, 282, 4649, 314, 7042, 30, 198, 504, 2988, 314, 42];

fn model() -> Option<Arc<Model>> {
    let path = find_model(SMOLLM2_Q4_K_M)?;
    Some(Model::load(&path, &ModelParams::default()).unwrap())
}

fn ctx(model: &Arc<Model>, n_ctx: usize, exact_prefill: bool) -> Context {
    Context::new(
        Arc::clone(model),
        ContextParams {
            n_ctx,
            n_threads: 2,
            exact_prefill,
            ..Default::default()
        },
    )
    .unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Small batches use the same 8-bit activation math as single tokens; their logits must
/// equal incremental decoding up to f32 reassociation, and the argmax must agree.
#[test]
fn batch_prefill_matches_incremental_decode() {
    let Some(model) = model() else { return };
    let n_vocab = model.config().n_vocab;
    let mut a = ctx(&model, 64, false);
    let batched = a.decode_all_logits(&TOKENS).unwrap().to_vec();
    let mut b = ctx(&model, 64, false);
    for (i, &t) in TOKENS.iter().enumerate() {
        b.decode(&[t]).unwrap();
        let row = &batched[i * n_vocab..(i + 1) * n_vocab];
        let d = max_abs_diff(row, b.logits());
        assert!(d < 1e-2, "position {i}: max |Δlogit| {d}");
        assert_eq!(
            ghostcore::sampling::argmax(row),
            ghostcore::sampling::argmax(b.logits())
        );
    }
    // The last row of decode_all_logits is what logits() reports.
    assert_eq!(a.logits(), &batched[(TOKENS.len() - 1) * n_vocab..]);
    assert_eq!(a.n_past(), TOKENS.len());
}

/// Splitting a prompt into several decode calls gives the same final logits.
#[test]
fn split_prefill_matches_single_prefill() {
    let Some(model) = model() else { return };
    let mut a = ctx(&model, 64, false);
    a.decode(&TOKENS).unwrap();
    let mut b = ctx(&model, 64, false);
    b.decode(&TOKENS[..5]).unwrap();
    b.decode(&TOKENS[5..]).unwrap();
    assert!(max_abs_diff(a.logits(), b.logits()) < 1e-2);
}

#[test]
fn overflow_is_an_error_and_leaves_context_unchanged() {
    let Some(model) = model() else { return };
    let mut c = ctx(&model, 8, false);
    c.decode(&TOKENS[..6]).unwrap();
    let before = c.logits().to_vec();
    match c.decode(&TOKENS[6..9]) {
        Err(Error::InvalidArgument(msg)) => assert!(msg.contains("context full"), "{msg}"),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    assert_eq!(c.n_past(), 6);
    assert_eq!(c.logits(), &before[..]);
    c.decode(&TOKENS[6..8]).unwrap();
    assert_eq!(c.n_past(), 8);
    assert!(c.decode(&TOKENS[8..9]).is_err());
    c.reset();
    c.decode(&TOKENS[..3]).unwrap();
    assert_eq!(c.n_past(), 3);
}

#[test]
fn bad_token_and_empty_input_are_errors() {
    let Some(model) = model() else { return };
    let mut c = ctx(&model, 16, false);
    let n_vocab = model.config().n_vocab as u32;
    assert!(matches!(
        c.decode(&[1, n_vocab]),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        c.decode(&[u32::MAX]),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(c.decode(&[]), Err(Error::InvalidArgument(_))));
    assert_eq!(c.n_past(), 0);
    c.decode(&[1]).unwrap();
}

/// Truncating and re-decoding reproduces the original logits (KV cache positions reused).
#[test]
fn truncate_then_redecode_is_consistent() {
    let Some(model) = model() else { return };
    let mut c = ctx(&model, 32, false);
    c.decode(&TOKENS).unwrap();
    let full = c.logits().to_vec();
    c.truncate(7);
    c.decode(&TOKENS[7..]).unwrap();
    assert!(max_abs_diff(&full, c.logits()) < 1e-2);
}

#[test]
fn unsupported_architecture_names_the_supported_ones() {
    let mut w = ghostcore::gguf::GgufWriter::new();
    w.set_str("general.architecture", "mamba");
    let bytes = w.to_bytes();
    let file = ghostcore::gguf::GgufFile::from_bytes(bytes).unwrap();
    match Model::from_file(file, &ModelParams::default()) {
        Err(Error::Unsupported(msg)) => {
            assert!(
                msg.contains("mamba") && msg.contains("llama") && msg.contains("gemma3"),
                "{msg}"
            )
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
}
