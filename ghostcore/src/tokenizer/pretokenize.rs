//! BPE pre-tokenizers: the regex cascades llama.cpp selects by `tokenizer.ggml.pre`.
//!
//! A cascade is a list of regexes applied in turn: each one splits every piece produced by
//! the previous one, and text between matches is kept as a piece of its own (llama.cpp's
//! `unicode_regex_split`, like Hugging Face's `Split` with `Isolated` behaviour). Matching
//! runs on each piece alone, so a lookahead such as `(?!\S)` sees the piece's end.

use fancy_regex::Regex;

use crate::{bail, Error, Result};

/// GPT-2's pattern (also the second stage of the StarCoder/SmolLM cascade).
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
/// Llama 3's pattern with the case-insensitive contractions spelled out.
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's pattern: Llama 3's with single digits.
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The pre-tokenizer families we implement, with the `tokenizer.ggml.pre` names that select
/// them (as in llama.cpp's `llama_vocab::impl::load`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreKind {
    /// llama.cpp's fallback cascade (`default` or no name).
    Default,
    Gpt2,
    Llama3,
    /// Llama 3's pattern without whole-word vocabulary lookup (dbrx, smaug-bpe).
    Llama3Merges,
    Qwen2,
    /// Digits split one by one, then GPT-2 (starcoder, smollm, refact, command-r, ...).
    StarCoder,
    Falcon,
}

const NAMES: &[(&str, PreKind)] = &[
    ("default", PreKind::Default),
    ("llama3", PreKind::Llama3),
    ("llama-v3", PreKind::Llama3),
    ("llama-bpe", PreKind::Llama3),
    ("falcon3", PreKind::Llama3),
    ("falcon-h1", PreKind::Llama3),
    ("pixtral", PreKind::Llama3),
    ("midm-2.0", PreKind::Llama3),
    ("lfm2", PreKind::Llama3),
    ("dbrx", PreKind::Llama3Merges),
    ("smaug-bpe", PreKind::Llama3Merges),
    ("qwen2", PreKind::Qwen2),
    ("deepseek-r1-qwen", PreKind::Qwen2),
    ("megrez", PreKind::Qwen2),
    ("stablelm2", PreKind::Qwen2),
    ("hunyuan", PreKind::Qwen2),
    ("starcoder", PreKind::StarCoder),
    ("smollm", PreKind::StarCoder),
    ("refact", PreKind::StarCoder),
    ("command-r", PreKind::StarCoder),
    ("codeshell", PreKind::StarCoder),
    ("exaone", PreKind::StarCoder),
    ("minerva-7b", PreKind::StarCoder),
    ("gpt-2", PreKind::Gpt2),
    ("phi-2", PreKind::Gpt2),
    ("jina-es", PreKind::Gpt2),
    ("jina-de", PreKind::Gpt2),
    ("gigachat", PreKind::Gpt2),
    ("jina-v2-es", PreKind::Gpt2),
    ("jina-v2-de", PreKind::Gpt2),
    ("mpt", PreKind::Gpt2),
    ("olmo", PreKind::Gpt2),
    ("jais", PreKind::Gpt2),
    ("exaone4", PreKind::Gpt2),
    ("falcon", PreKind::Falcon),
];

/// Names whose pre-tokenizer keeps spaces before punctuation when decoding
/// (llama.cpp sets `clean_spaces = false` for them).
const NO_CLEAN_SPACES: &[&str] = &[
    "qwen2",
    "deepseek-r1-qwen",
    "smollm",
    "command-r",
    "hunyuan",
];

#[derive(Debug)]
pub struct PreTokenizer {
    pub kind: PreKind,
    regexes: Vec<Regex>,
    /// A word that is already a vocabulary token is emitted whole (llama.cpp `ignore_merges`).
    pub ignore_merges: bool,
    /// Decoding removes spaces before `?!.,` and some apostrophes (llama.cpp `clean_spaces`).
    pub clean_spaces: bool,
}

/// `add_bos` default for a BPE vocabulary with this pre-tokenizer name.
pub fn default_add_bos(pre_name: &str) -> bool {
    lookup(pre_name) == Some(PreKind::Llama3)
}

fn lookup(pre_name: &str) -> Option<PreKind> {
    if pre_name.is_empty() {
        return Some(PreKind::Default);
    }
    NAMES.iter().find(|(n, _)| *n == pre_name).map(|&(_, k)| k)
}

impl PreTokenizer {
    pub fn from_name(pre_name: &str) -> Result<PreTokenizer> {
        let kind = match lookup(pre_name) {
            Some(k) => k,
            None => {
                let names: Vec<&str> = NAMES.iter().map(|(n, _)| *n).collect();
                bail!(
                    Unsupported,
                    "BPE pre-tokenizer '{pre_name}' (supported: {})",
                    names.join(", ")
                )
            }
        };
        let patterns: &[&str] = match kind {
            PreKind::Default => &[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"],
            PreKind::Gpt2 => &[GPT2],
            PreKind::Llama3 | PreKind::Llama3Merges => &[LLAMA3],
            PreKind::Qwen2 => &[QWEN2],
            PreKind::StarCoder => &[r"\p{N}", GPT2],
            PreKind::Falcon => &[r"[\p{P}\$\+<=>\^~\|`]+", GPT2, r"[0-9][0-9][0-9]"],
        };
        let regexes = patterns
            .iter()
            .map(|p| {
                Regex::new(p).map_err(|e| Error::Internal(format!("pre-tokenizer regex {p}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let clean_spaces = !NO_CLEAN_SPACES.contains(&pre_name);
        Ok(PreTokenizer {
            kind,
            regexes,
            ignore_merges: kind == PreKind::Llama3,
            clean_spaces,
        })
    }

    /// Split `text` into words (byte ranges of `text`, in order, covering all of it).
    pub fn split(&self, text: &str) -> Result<Vec<(usize, usize)>> {
        let mut pieces = vec![(0, text.len())];
        for re in &self.regexes {
            let mut next = Vec::with_capacity(pieces.len() * 2);
            for &(start, end) in &pieces {
                let piece = &text[start..end];
                let mut last = 0;
                for m in re.find_iter(piece) {
                    let m =
                        m.map_err(|e| Error::Internal(format!("pre-tokenizer regex failed: {e}")))?;
                    if m.start() > last {
                        next.push((start + last, start + m.start()));
                    }
                    if m.end() > m.start() {
                        next.push((start + m.start(), start + m.end()));
                    }
                    last = m.end();
                }
                if last < piece.len() {
                    next.push((start + last, end));
                }
            }
            pieces = next;
        }
        Ok(pieces)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(pre: &str, text: &str) -> Vec<String> {
        let p = PreTokenizer::from_name(pre).unwrap();
        p.split(text)
            .unwrap()
            .into_iter()
            .map(|(a, b)| text[a..b].to_string())
            .collect()
    }

    /// Expected splits worked out by hand from the Hugging Face regexes.
    #[test]
    fn gpt2_keeps_unmatched_whitespace_as_pieces() {
        assert_eq!(words("gpt-2", "a \tb"), ["a", " ", "\t", "b"]);
        assert_eq!(words("gpt-2", "Hello   world"), ["Hello", "  ", " world"]);
        assert_eq!(words("gpt-2", "it's 42!"), ["it", "'s", " 42", "!"]);
    }

    #[test]
    fn smollm_splits_digits_first() {
        assert_eq!(words("smollm", "x 123"), ["x", " ", "1", "2", "3"]);
    }

    #[test]
    fn llama3_groups_three_digits() {
        assert_eq!(
            words("llama-bpe", "12345 ok\n\n"),
            ["123", "45", " ok", "\n\n"]
        );
    }

    #[test]
    fn llama3_contractions_punctuation_and_whitespace() {
        assert_eq!(
            words("llama3", "Hello world's END'S"),
            ["Hello", " world", "'s", " END", "'S"]
        );
        assert_eq!(
            words("llama3", "x = 1;\n\n  y"),
            ["x", " =", " ", "1", ";\n\n", " ", " y"]
        );
    }

    #[test]
    fn qwen2_splits_single_digits() {
        assert_eq!(words("qwen2", "abc 1234"), ["abc", " ", "1", "2", "3", "4"]);
    }

    #[test]
    fn unknown_pre_is_unsupported() {
        let e = PreTokenizer::from_name("no-such-pre").unwrap_err();
        assert!(
            matches!(e, Error::Unsupported(ref m) if m.contains("smollm")),
            "{e}"
        );
    }
}
