//! `generate` end to end on SmolLM2: the streamed text equals the tokenizer's decoding of
//! the greedy tokens (computed independently with `Context` + argmax), generation stops at
//! end-of-generation tokens and when the callback says so, and a fixed seed reproduces a
//! sampled continuation.

use std::sync::Arc;

use ghostcore::context::{Context, ContextParams};
use ghostcore::generate::{generate, GenerateParams, Prompt, StopReason};
use ghostcore::model::{Model, ModelParams};
use ghostcore::sampling::{argmax, SamplerParams};
use ghostcore::test_models::{find_model, SMOLLM2_Q4_K_M};

fn setup() -> Option<(Arc<Model>, Context)> {
    let path = find_model(SMOLLM2_Q4_K_M)?;
    let model = Model::load(&path, &ModelParams::default()).unwrap();
    let params = ContextParams {
        n_ctx: 256,
        n_threads: 2,
        ..Default::default()
    };
    let ctx = Context::new(Arc::clone(&model), params).unwrap();
    Some((model, ctx))
}

#[test]
fn streamed_text_equals_decoded_greedy_tokens() {
    let Some((model, mut ctx)) = setup() else {
        return;
    };
    let tok = model.tokenizer().unwrap();
    let prompt = "The capital of France is";
    let params = GenerateParams {
        max_tokens: 20,
        sampling: SamplerParams::greedy(),
        ignore_eog: true,
    };
    let mut text = String::new();
    let stats = generate(&mut ctx, Prompt::Text(prompt), &params, |p| {
        text.push_str(p);
        true
    })
    .unwrap();
    assert_eq!(stats.generated_tokens, 20);
    assert_eq!(stats.stop, StopReason::Length);

    // Independent greedy loop.
    let ids = tok.encode(prompt, true, true).unwrap();
    assert_eq!(stats.prompt_tokens, ids.len());
    ctx.reset();
    ctx.decode(&ids).unwrap();
    let mut gen = Vec::new();
    for _ in 0..20 {
        let t = argmax(ctx.logits()) as u32;
        gen.push(t);
        ctx.decode(&[t]).unwrap();
    }
    let mut bytes = Vec::new();
    for &t in &gen {
        bytes.extend(tok.token_to_piece(t, true).unwrap());
    }
    assert_eq!(text, String::from_utf8_lossy(&bytes));
}

#[test]
fn stops_at_eog_and_on_callback() {
    let Some((model, mut ctx)) = setup() else {
        return;
    };
    let tok = model.tokenizer().unwrap();
    // The reference greedy continuation of this prompt emits <|im_end|> (EOG) at step 11.
    let params = GenerateParams {
        max_tokens: 32,
        sampling: SamplerParams::greedy(),
        ignore_eog: false,
    };
    let stats = generate(
        &mut ctx,
        Prompt::Text("The capital of France is"),
        &params,
        |_| true,
    )
    .unwrap();
    assert_eq!(stats.stop, StopReason::EndOfGeneration);
    assert_eq!(stats.generated_tokens, 11);
    assert!(tok.eog_ids().contains(&2));

    ctx.reset();
    let mut pieces = 0;
    let stats = generate(&mut ctx, Prompt::Text("Once upon a time"), &params, |_| {
        pieces += 1;
        pieces < 3
    })
    .unwrap();
    assert_eq!(stats.stop, StopReason::Callback);
    assert_eq!(pieces, 3);
}

#[test]
fn fixed_seed_reproduces_sampled_text() {
    let Some((_model, mut ctx)) = setup() else {
        return;
    };
    let params = GenerateParams {
        max_tokens: 16,
        sampling: SamplerParams {
            temperature: 0.9,
            seed: 7,
            ..Default::default()
        },
        ignore_eog: true,
    };
    let run = |ctx: &mut Context| {
        ctx.reset();
        let mut s = String::new();
        generate(ctx, Prompt::Text("Once upon a time"), &params, |p| {
            s.push_str(p);
            true
        })
        .unwrap();
        s
    };
    let a = run(&mut ctx);
    assert_eq!(a, run(&mut ctx));
}

/// A model whose embedding has more rows than its tokenizer has tokens (a padded vocabulary;
/// here a synthetic model with SmolLM2's tokenizer and 4× the rows) only ever samples ids the
/// tokenizer can name: greedy picks the argmax over those, so the text can always be decoded.
#[test]
fn padded_embedding_rows_are_never_sampled() {
    let Some(path) = find_model(SMOLLM2_Q4_K_M) else {
        return;
    };
    let source = ghostcore::gguf::GgufFile::open(&path).unwrap();
    let n_source = ghostcore::tokenizer::Tokenizer::from_gguf(&source)
        .unwrap()
        .n_vocab();
    let shape = ghostcore::cli::synth::Shape {
        n_embd: 256,
        n_layer: 1,
        n_head: 4,
        n_head_kv: 2,
        n_ff: 512,
        n_vocab: 4 * n_source,
        rope_base: 10000.0,
    };
    let w = ghostcore::cli::synth::build(&shape, "llama", "q8_0", Some(&source), 3).unwrap();
    let file = ghostcore::gguf::GgufFile::from_bytes(w.to_bytes()).unwrap();
    let model = Model::from_file(file, &ModelParams::default()).unwrap();
    let n_named = model.tokenizer().unwrap().n_vocab();
    assert_eq!(n_named, n_source);
    assert!(n_named < model.config().n_vocab);
    let mut ctx = Context::new(
        Arc::clone(&model),
        ContextParams {
            n_ctx: 64,
            n_threads: 2,
            ..Default::default()
        },
    )
    .unwrap();
    let params = GenerateParams {
        max_tokens: 12,
        sampling: SamplerParams::greedy(),
        ignore_eog: true,
    };
    let mut text = String::new();
    let stats = generate(&mut ctx, Prompt::Text("Hello"), &params, |p| {
        text.push_str(p);
        true
    })
    .unwrap();
    assert_eq!(stats.generated_tokens, 12);

    // Independently: the argmax over the named ids, and how often the padded rows would win.
    let ids = model
        .tokenizer()
        .unwrap()
        .encode("Hello", true, true)
        .unwrap();
    ctx.reset();
    ctx.decode(&ids).unwrap();
    let (mut padded_wins, mut expected) = (0, Vec::new());
    for _ in 0..12 {
        let logits = ctx.logits();
        padded_wins += usize::from(argmax(logits) >= n_named);
        let t = argmax(&logits[..n_named]) as u32;
        expected.push(t);
        ctx.decode(&[t]).unwrap();
    }
    assert!(
        padded_wins > 0,
        "the padded rows never won the argmax: test exercises nothing"
    );
    let bytes: Vec<u8> = expected
        .iter()
        .flat_map(|&t| model.tokenizer().unwrap().token_to_piece(t, true).unwrap())
        .collect();
    assert_eq!(text, String::from_utf8_lossy(&bytes));
}
