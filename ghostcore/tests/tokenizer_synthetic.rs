//! Tokenizers built from small synthetic GGUF vocabularies: the priority-queue merging
//! against naive scalar reference implementations (repeatedly scan for the best pair), and
//! the metadata validation error paths.

use std::collections::HashMap;
use std::sync::Arc;

use ghostcore::gguf::{Array, GgufFile, GgufWriter, Value};
use ghostcore::tokenizer::bpe::byte_to_char_table;
use ghostcore::tokenizer::pretokenize::PreTokenizer;
use ghostcore::tokenizer::Tokenizer;
use ghostcore::Error;

/// Deterministic xorshift64* generator.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn strings(v: &[String]) -> Value {
    Value::Array(Array::String(v.to_vec()))
}

fn build(w: &GgufWriter) -> Arc<GgufFile> {
    GgufFile::from_bytes(w.to_bytes()).expect("valid GGUF")
}

/// A byte-level BPE vocabulary over the alphabet "abc " with random merges.
struct BpeFixture {
    tokens: Vec<String>,
    merges: Vec<(String, String)>,
}

fn bpe_fixture(seed: u64) -> BpeFixture {
    let table = byte_to_char_table();
    let mut tokens: Vec<String> = (0..=255u8).map(|b| table[b as usize].to_string()).collect();
    let mut merges = Vec::new();
    let mut rng = Rng(seed);
    let base: Vec<String> = "abc "
        .bytes()
        .map(|b| table[b as usize].to_string())
        .collect();
    let mut pool = base.clone();
    while merges.len() < 40 {
        let l = pool[rng.below(pool.len())].clone();
        let r = pool[rng.below(pool.len())].clone();
        let m = format!("{l}{r}");
        // The GPT-2 pre-tokenizer never puts a space after the first character of a word.
        if r.contains('Ġ') || merges.iter().any(|(a, b)| *a == l && *b == r) || m.len() > 12 {
            continue;
        }
        merges.push((l, r));
        if !tokens.contains(&m) {
            tokens.push(m.clone());
            pool.push(m);
        }
    }
    BpeFixture { tokens, merges }
}

fn bpe_writer(f: &BpeFixture) -> GgufWriter<'static> {
    let mut w = GgufWriter::new();
    w.set_str("tokenizer.ggml.model", "gpt2");
    w.set_str("tokenizer.ggml.pre", "gpt-2");
    w.set("tokenizer.ggml.tokens", strings(&f.tokens));
    let lines: Vec<String> = f.merges.iter().map(|(a, b)| format!("{a} {b}")).collect();
    w.set("tokenizer.ggml.merges", strings(&lines));
    w.set_u32("tokenizer.ggml.bos_token_id", 0);
    w.set_u32("tokenizer.ggml.eos_token_id", 0);
    w
}

/// Scalar reference BPE: merge the adjacent pair with the lowest rank (leftmost on ties)
/// until no pair has a rank.
fn naive_bpe(f: &BpeFixture, word: &[u8]) -> Vec<u32> {
    let table = byte_to_char_table();
    let rank: HashMap<(&str, &str), usize> = f
        .merges
        .iter()
        .enumerate()
        .map(|(i, (a, b))| ((a.as_str(), b.as_str()), i))
        .collect();
    let mut syms: Vec<String> = word
        .iter()
        .map(|&b| table[b as usize].to_string())
        .collect();
    loop {
        let best = (0..syms.len().saturating_sub(1))
            .filter_map(|i| {
                rank.get(&(syms[i].as_str(), syms[i + 1].as_str()))
                    .map(|&r| (r, i))
            })
            .min();
        let Some((_, i)) = best else { break };
        let right = syms.remove(i + 1);
        syms[i].push_str(&right);
    }
    syms.iter()
        .map(|s| f.tokens.iter().position(|t| t == s).unwrap() as u32)
        .collect()
}

#[test]
fn bpe_merging_matches_naive_reference() {
    for seed in 1..=20u64 {
        let f = bpe_fixture(seed * 7919);
        let tok = Tokenizer::from_gguf(&build(&bpe_writer(&f))).unwrap();
        let pre = PreTokenizer::from_name("gpt-2").unwrap();
        let mut rng = Rng(seed);
        for _ in 0..50 {
            let len = rng.below(40);
            let text: String = (0..len)
                .map(|_| ['a', 'b', 'c', ' '][rng.below(4)])
                .collect();
            let mut want = Vec::new();
            for (a, b) in pre.split(&text).unwrap() {
                want.extend(naive_bpe(&f, &text.as_bytes()[a..b]));
            }
            assert_eq!(
                tok.encode(&text, false, false).unwrap(),
                want,
                "seed {seed} {text:?}"
            );
            assert_eq!(tok.decode(&want, false).unwrap(), text);
        }
    }
}

/// A SentencePiece vocabulary: byte tokens, "▁", letters and random multi-char pieces with
/// random scores.
fn spm_fixture(seed: u64) -> (Vec<String>, Vec<f32>) {
    let mut rng = Rng(seed);
    let mut tokens = vec!["<unk>".to_string(), "<s>".to_string(), "</s>".to_string()];
    tokens.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
    let letters = ["a", "b", "c", "▁"];
    tokens.extend(letters.iter().map(|s| s.to_string()));
    while tokens.len() < 3 + 256 + 4 + 40 {
        let n = 2 + rng.below(4);
        let piece: String = (0..n).map(|_| letters[rng.below(4)]).collect();
        if !tokens.contains(&piece) {
            tokens.push(piece);
        }
    }
    let scores = (0..tokens.len())
        .map(|i| {
            if i < 259 {
                0.0
            } else {
                -((rng.below(1000)) as f32) / 10.0
            }
        })
        .collect();
    (tokens, scores)
}

fn naive_spm(tokens: &[String], scores: &[f32], text: &str) -> Vec<u32> {
    let id = |s: &str| tokens.iter().position(|t| t == s);
    let mut syms: Vec<String> = text.chars().map(|c| c.to_string()).collect();
    loop {
        let mut best: Option<(f32, usize)> = None;
        for i in 0..syms.len().saturating_sub(1) {
            if let Some(t) = id(&format!("{}{}", syms[i], syms[i + 1])) {
                if best.is_none_or(|(s, _)| scores[t] > s) {
                    best = Some((scores[t], i));
                }
            }
        }
        let Some((_, i)) = best else { break };
        let right = syms.remove(i + 1);
        syms[i].push_str(&right);
    }
    let mut out = Vec::new();
    for s in &syms {
        match id(s) {
            Some(t) => out.push(t as u32),
            None => out.extend(
                s.bytes()
                    .map(|b| id(&format!("<0x{b:02X}>")).unwrap() as u32),
            ),
        }
    }
    out
}

fn spm_writer(tokens: &[String], scores: &[f32]) -> GgufWriter<'static> {
    let mut w = GgufWriter::new();
    w.set_str("tokenizer.ggml.model", "llama");
    w.set("tokenizer.ggml.tokens", strings(tokens));
    w.set(
        "tokenizer.ggml.scores",
        Value::Array(Array::F32(scores.to_vec())),
    );
    let types: Vec<i32> = (0..tokens.len())
        .map(|i| match i {
            0 => 2,
            1 | 2 => 3,
            3..=258 => 6,
            _ => 1,
        })
        .collect();
    w.set("tokenizer.ggml.token_type", Value::Array(Array::I32(types)));
    w
}

#[test]
fn spm_merging_matches_naive_reference() {
    for seed in 1..=20u64 {
        let (tokens, scores) = spm_fixture(seed * 104729);
        let tok = Tokenizer::from_gguf(&build(&spm_writer(&tokens, &scores))).unwrap();
        assert!(tok.add_bos(), "SentencePiece adds BOS by default");
        let mut rng = Rng(seed);
        for _ in 0..50 {
            let len = rng.below(30);
            let text: String = (0..len)
                .map(|_| ['a', 'b', 'c', ' ', 'é'][rng.below(5)])
                .collect();
            // add_space_prefix defaults to true for SentencePiece.
            // Empty text has no fragment, so no prefix either.
            let escaped = format!(" {text}").replace(' ', "▁");
            let mut want = vec![1];
            if !text.is_empty() {
                want.extend(naive_spm(&tokens, &scores, &escaped));
            }
            assert_eq!(
                tok.encode(&text, true, false).unwrap(),
                want,
                "seed {seed} {text:?}"
            );
            // Decoding drops the prefix space again, except when a BOS was dropped first
            // (llama_detokenize clears its remove-space flag then).
            let plain = tok.encode(&text, false, false).unwrap();
            assert_eq!(tok.decode(&plain, false).unwrap(), text);
            if !text.is_empty() {
                assert_eq!(tok.decode(&want, true).unwrap(), format!(" {text}"));
            }
        }
    }
}

fn err_of(w: &GgufWriter) -> Error {
    Tokenizer::from_gguf(&build(w)).expect_err("tokenizer should be rejected")
}

#[test]
fn unsupported_tokenizer_model_names_the_supported_ones() {
    let f = bpe_fixture(3);
    let mut w = bpe_writer(&f);
    w.set_str("tokenizer.ggml.model", "bert");
    let e = err_of(&w);
    assert!(
        matches!(&e, Error::Unsupported(m) if m.contains("gpt2") && m.contains("llama")),
        "{e}"
    );
}

#[test]
fn metadata_errors_are_typed() {
    let f = bpe_fixture(5);
    let n = f.tokens.len() as u32;

    let mut w = bpe_writer(&f);
    w.set(
        "tokenizer.ggml.merges",
        strings(&["a zzz_not_a_token".to_string()]),
    );
    assert!(matches!(err_of(&w), Error::Format(m) if m.contains("not in the vocabulary")));

    let mut w = bpe_writer(&f);
    w.set("tokenizer.ggml.merges", strings(&["ab".to_string()]));
    assert!(matches!(err_of(&w), Error::Format(_)));

    let mut w = bpe_writer(&f);
    w.set_u32("tokenizer.ggml.bos_token_id", n);
    assert!(matches!(err_of(&w), Error::Format(m) if m.contains("out of range")));

    let mut w = bpe_writer(&f);
    w.set_u32("tokenizer.ggml.eot_token_id", n + 100);
    assert!(matches!(err_of(&w), Error::Format(_)));

    let mut w = bpe_writer(&f);
    w.remove("tokenizer.ggml.merges");
    assert!(matches!(err_of(&w), Error::Format(_)));

    let mut w = bpe_writer(&f);
    w.remove("tokenizer.ggml.tokens");
    assert!(matches!(err_of(&w), Error::Format(_)));

    let mut w = bpe_writer(&f);
    w.set_str("tokenizer.ggml.pre", "no-such-pre");
    assert!(matches!(err_of(&w), Error::Unsupported(m) if m.contains("smollm")));

    let mut w = bpe_writer(&f);
    let mut dup = f.tokens.clone();
    dup[260] = dup[259].clone();
    w.set("tokenizer.ggml.tokens", strings(&dup));
    assert!(matches!(err_of(&w), Error::Format(m) if m.contains("duplicate")));

    let mut w = bpe_writer(&f);
    w.set("tokenizer.ggml.add_bos_token", Value::Bool(true));
    w.remove("tokenizer.ggml.bos_token_id");
    // The gpt2 default BOS (11) exists here, so this is accepted...
    assert!(Tokenizer::from_gguf(&build(&w)).is_ok());
    // ...and a wrong value type is not.
    let mut w = bpe_writer(&f);
    w.set_str("tokenizer.ggml.add_bos_token", "yes");
    assert!(matches!(err_of(&w), Error::Format(_)));

    let (tokens, scores) = spm_fixture(9);
    let mut w = spm_writer(&tokens, &scores);
    w.set(
        "tokenizer.ggml.scores",
        Value::Array(Array::F32(scores[..10].to_vec())),
    );
    assert!(matches!(err_of(&w), Error::Format(_)));
    let mut w = spm_writer(&tokens, &scores);
    let mut bad = tokens.clone();
    bad[3] = "<0xZZ>".into();
    w.set("tokenizer.ggml.tokens", strings(&bad));
    assert!(matches!(err_of(&w), Error::Format(m) if m.contains("byte token")));
}

#[test]
fn out_of_range_ids_are_invalid_arguments() {
    let f = bpe_fixture(11);
    let tok = Tokenizer::from_gguf(&build(&bpe_writer(&f))).unwrap();
    let n = tok.n_vocab() as u32;
    assert!(matches!(
        tok.token_to_piece(n, true),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        tok.decode(&[0, n + 5], false),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        tok.token_text(u32::MAX),
        Err(Error::InvalidArgument(_))
    ));
    assert!(!tok.is_control(u32::MAX));
    assert!(!tok.is_eog(u32::MAX));
}
