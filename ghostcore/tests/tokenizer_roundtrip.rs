//! Property test: `decode(encode(s)) == s` on deterministic random UTF-8 strings (mixed
//! scripts, emoji and ZWJ sequences, combining marks, whitespace runs, digits, punctuation,
//! control characters), for the real models' tokenizers.
//!
//! Where the round trip is exact:
//! - byte-level BPE (SmolLM2): every string; every byte has a token and pieces are raw bytes
//!   (SmolLM2's pre-tokenizer does not clean up spaces on decode).
//! - SentencePiece with byte fallback (Gemma3, `add_space_prefix = false`): every string
//!   without U+2581 "▁", which encoding cannot tell apart from a space and decoding turns
//!   into one; the BOS added by `add_special` is dropped by `decode(.., skip_special)`.

use ghostcore::gguf::GgufFile;
use ghostcore::test_models::{find_model, GEMMA3_Q4_K_M, SMOLLM2_Q4_K_M};
use ghostcore::tokenizer::Tokenizer;

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

/// Pools of text the generator draws from, each a list of fragments.
const POOLS: &[&[&str]] = &[
    &[
        "a",
        "e",
        "the",
        "Hello",
        "World",
        "xyz",
        "QUIC",
        "camelCase",
        "snake_case",
    ],
    &["0", "1", "42", "2026", "3.14", "1e9", "007"],
    &[
        " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n ", "\u{a0}", "\u{3000}",
    ],
    &[
        ".", ",", "!", "?", "'s", "'ll", "\"", "(", ")", "[", "]", "{", "}", "<", ">", "/", "\\",
        "#", "@", "$", "%", "^", "&", "*", "-", "+", "=", "|", "~", "`", "…", "«", "»", "—",
    ],
    &["é", "ü", "ñ", "ø", "Å", "ß", "œ", "ç"],
    &[
        "Ελληνικά",
        "русский",
        "עברית",
        "العربية",
        "हिन्दी",
        "ไทย",
        "한국어",
        "日本語",
        "中文",
        "ქართული",
    ],
    &["😀", "🎉", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇫🇷", "❤️", "🤖"],
    &[
        "e\u{301}", "a\u{308}", "n\u{303}", "\u{200b}", "\u{feff}", "\u{200d}",
    ],
    &[
        "\u{0}",
        "\u{1}",
        "\u{7f}",
        "\u{1b}[0m",
        "\u{85}",
        "\u{fffd}",
        "\u{10ffff}",
        "\u{e000}",
    ],
    &[
        "<|im_start|>",
        "<start_of_turn>",
        "<bos>",
        "<s>",
        "</s>",
        "<table>",
        "[multimodal]",
    ],
];

fn random_string(rng: &mut Rng) -> String {
    let n = rng.below(24);
    let mut s = String::new();
    for _ in 0..n {
        let pool = POOLS[rng.below(POOLS.len())];
        s.push_str(pool[rng.below(pool.len())]);
    }
    s
}

fn load(file: &str) -> Option<Tokenizer> {
    let path = find_model(file)?;
    Some(Tokenizer::from_gguf(&GgufFile::open(path).unwrap()).unwrap())
}

#[test]
fn byte_level_bpe_round_trips_every_string() {
    let Some(tok) = load(SMOLLM2_Q4_K_M) else {
        return;
    };
    let mut rng = Rng(0x5eed_0001);
    for _ in 0..2000 {
        let s = random_string(&mut rng);
        for parse_special in [false, true] {
            let ids = tok.encode(&s, true, parse_special).unwrap();
            assert_eq!(
                tok.decode(&ids, false).unwrap(),
                s,
                "parse_special={parse_special}"
            );
            // Pieces concatenate to the same bytes, even where one piece is a partial
            // UTF-8 sequence.
            let mut bytes = Vec::new();
            for &id in &ids {
                bytes.extend(tok.token_to_piece(id, true).unwrap());
            }
            assert_eq!(bytes, s.as_bytes());
        }
    }
}

#[test]
fn sentencepiece_round_trips_strings_without_the_space_marker() {
    let Some(tok) = load(GEMMA3_Q4_K_M) else {
        return;
    };
    assert!(tok.add_bos());
    let mut rng = Rng(0x5eed_0002);
    for _ in 0..2000 {
        let s = random_string(&mut rng);
        assert!(!s.contains('\u{2581}'));
        let ids = tok.encode(&s, true, false).unwrap();
        assert_eq!(ids.first(), tok.bos().as_ref());
        assert_eq!(tok.decode(&ids, true).unwrap(), s);
        // With special parsing, control tokens cut out of the text render back as their
        // text when decoding keeps specials.
        let ids = tok.encode(&s, false, true).unwrap();
        assert_eq!(tok.decode(&ids, false).unwrap(), s);
    }
}

/// The documented exception: "▁" comes back as a space.
#[test]
fn sentencepiece_space_marker_decodes_as_space() {
    let Some(tok) = load(GEMMA3_Q4_K_M) else {
        return;
    };
    let ids = tok.encode("a\u{2581}b", false, false).unwrap();
    assert_eq!(tok.decode(&ids, false).unwrap(), "a b");
}
