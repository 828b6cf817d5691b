//! Tokenizers built from GGUF metadata, matching llama.cpp's `llama_tokenize`,
//! `llama_token_to_piece` and `llama_detokenize`.
//!
//! - [`vocab`]: token table, attributes, special ids, end-of-generation set.
//! - [`pretokenize`]: the BPE pre-tokenizer regex cascades chosen by `tokenizer.ggml.pre`.
//! - [`bpe`]: byte-level BPE (`tokenizer.ggml.model = gpt2`).
//! - [`spm`]: SentencePiece (`tokenizer.ggml.model = llama`, e.g. Gemma 3).
//! - [`special`]: cutting control / user-defined tokens out of raw text.
//!
//! A [`Tokenizer`] is immutable after construction, so it is `Send + Sync` and can be
//! shared across threads behind an `Arc`.

pub mod bpe;
pub mod pretokenize;
pub mod special;
pub mod spm;
pub mod vocab;

use crate::gguf::GgufFile;
use crate::{bail, Result};

use bpe::Bpe;
use special::Fragment;
use vocab::{attr, Vocab, VocabKind};

pub use vocab::SUPPORTED_MODELS;

#[derive(Debug)]
enum Algorithm {
    Bpe(Box<Bpe>),
    Spm,
}

/// A tokenizer read from a GGUF file's `tokenizer.*` metadata.
pub struct Tokenizer {
    vocab: Vocab,
    algorithm: Algorithm,
    /// `token_to_piece(id, special = true)` for every token.
    pieces: Vec<Box<[u8]>>,
    /// Decoding removes spaces before `?!.,` and in some contractions.
    clean_spaces: bool,
}

impl std::fmt::Debug for Tokenizer {
    /// A summary: the full vocabulary would be hundreds of thousands of entries.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("model", &self.vocab.model_name)
            .field("pre", &self.vocab.pre_name)
            .field("n_vocab", &self.vocab.n_tokens())
            .field("bos", &self.vocab.special.bos)
            .field("eos", &self.vocab.special.eos)
            .field("add_bos", &self.vocab.add_bos)
            .finish()
    }
}

impl Tokenizer {
    /// Build the tokenizer described by `gguf`'s metadata. Unsupported tokenizer models
    /// give [`crate::Error::Unsupported`]; inconsistent metadata gives
    /// [`crate::Error::Format`].
    pub fn from_gguf(gguf: &GgufFile) -> Result<Tokenizer> {
        let vocab = Vocab::from_gguf(gguf, pretokenize::default_add_bos)?;
        let (algorithm, clean_spaces) = match vocab.kind {
            VocabKind::Bpe => {
                let bpe = Bpe::from_gguf(gguf, &vocab)?;
                let clean = bpe.pre.clean_spaces;
                (Algorithm::Bpe(Box::new(bpe)), clean)
            }
            VocabKind::Spm => (Algorithm::Spm, false),
        };
        let mut pieces = Vec::with_capacity(vocab.n_tokens());
        for (id, t) in vocab.tokens.iter().enumerate() {
            let piece: Vec<u8> =
                if t.attr & (attr::UNKNOWN | attr::CONTROL | attr::USER_DEFINED) != 0 {
                    t.text.as_bytes().to_vec()
                } else if t.attr & attr::NORMAL != 0 {
                    match vocab.kind {
                        VocabKind::Spm => t.text.replace(spm::SPACE_MARKER, " ").into_bytes(),
                        VocabKind::Bpe => Bpe::decode_token_text(&t.text),
                    }
                } else if t.attr & attr::BYTE != 0 {
                    match parse_byte_token(&t.text) {
                        Some(b) => vec![b],
                        None => bail!(
                            Format,
                            "token {id} {:?} is typed as a byte token but is not <0xXX>",
                            t.text
                        ),
                    }
                } else {
                    Vec::new()
                };
            pieces.push(piece.into_boxed_slice());
        }
        Ok(Tokenizer {
            vocab,
            algorithm,
            pieces,
            clean_spaces,
        })
    }

    /// Tokenize `text`. `add_special` adds BOS/EOS where the model asks for them
    /// (`add_bos_token` / `add_eos_token`); `parse_special` lets control tokens written in
    /// the text (e.g. `<|im_start|>`) become single tokens. User-defined tokens are always
    /// matched, as in llama.cpp.
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<u32>> {
        let v = &self.vocab;
        let fragments = special::partition(v, text, parse_special);
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && v.add_bos {
            out.extend(v.special.bos);
        }
        match &self.algorithm {
            Algorithm::Bpe(bpe) => {
                for f in &fragments {
                    match *f {
                        Fragment::Text(a, b) => bpe.encode(v, &text[a..b], &mut out)?,
                        Fragment::Token(id) => out.push(id),
                    }
                }
            }
            Algorithm::Spm => {
                let mut prev_special = true;
                let mut buf = String::new();
                for f in &fragments {
                    match *f {
                        Fragment::Text(a, b) => {
                            buf.clear();
                            if v.add_space_prefix && prev_special {
                                buf.push(' ');
                            }
                            buf.push_str(&text[a..b]);
                            let escaped = buf.replace(' ', spm::SPACE_MARKER);
                            spm::encode(v, &escaped, &mut out)?;
                            prev_special = false;
                        }
                        Fragment::Token(id) => {
                            out.push(id);
                            prev_special = true;
                        }
                    }
                }
            }
        }
        if add_special && v.add_eos {
            out.extend(v.special.eos);
        }
        Ok(out)
    }

    fn check(&self, id: u32) -> Result<usize> {
        let n = self.vocab.n_tokens();
        if (id as usize) < n {
            Ok(id as usize)
        } else {
            bail!(
                InvalidArgument,
                "token id {id} is out of range (vocabulary has {n} tokens)"
            )
        }
    }

    /// The bytes token `id` stands for (possibly part of a UTF-8 sequence). Control and
    /// unknown tokens give their text when `special` is true and nothing otherwise.
    pub fn token_to_piece(&self, id: u32, special: bool) -> Result<Vec<u8>> {
        Ok(self.piece(id, special)?.to_vec())
    }

    fn piece(&self, id: u32, special: bool) -> Result<&[u8]> {
        let i = self.check(id)?;
        if !special && self.vocab.tokens[i].attr & (attr::UNKNOWN | attr::CONTROL) != 0 {
            return Ok(&[]);
        }
        Ok(&self.pieces[i])
    }

    /// Detokenize like `llama_detokenize(remove_special = skip_special,
    /// unparse_special = !skip_special)`: with `skip_special`, a leading BOS and trailing EOS
    /// that the model adds are dropped and control tokens render as nothing. The leading
    /// space SentencePiece models add when encoding is removed from the first piece (unless
    /// a BOS was dropped, as in llama.cpp). Invalid UTF-8 is replaced by U+FFFD.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.decode_bytes(ids, skip_special)?).into_owned())
    }

    /// [`Self::decode`] without the UTF-8 conversion.
    pub fn decode_bytes(&self, ids: &[u32], skip_special: bool) -> Result<Vec<u8>> {
        self.detokenize(ids, skip_special, !skip_special)
    }

    /// `llama_detokenize` with both of its flags: `remove_special` drops a leading BOS and
    /// trailing EOS that the model adds; `unparse_special` renders control tokens as text.
    pub fn detokenize(
        &self,
        ids: &[u32],
        remove_special: bool,
        unparse_special: bool,
    ) -> Result<Vec<u8>> {
        let v = &self.vocab;
        let mut ids = ids;
        let mut remove_space = v.add_space_prefix;
        if remove_special && v.add_bos && !ids.is_empty() && Some(ids[0]) == v.special.bos {
            remove_space = false;
            ids = &ids[1..];
        }
        if remove_special
            && v.add_eos
            && !ids.is_empty()
            && Some(ids[ids.len() - 1]) == v.special.eos
        {
            ids = &ids[..ids.len() - 1];
        }
        let mut text = Vec::new();
        for &id in ids {
            let mut piece = self.piece(id, unparse_special)?;
            if remove_space && piece.first() == Some(&b' ') {
                piece = &piece[1..];
            }
            remove_space = false;
            text.extend_from_slice(piece);
        }
        if self.clean_spaces {
            clean_up_spaces(&mut text);
        }
        Ok(text)
    }

    /// `llama_token_to_piece` with its `lstrip` argument: up to `lstrip` leading spaces of
    /// the piece are skipped.
    pub fn token_to_piece_lstrip(&self, id: u32, lstrip: usize, special: bool) -> Result<Vec<u8>> {
        let piece = self.piece(id, special)?;
        let n = piece
            .iter()
            .take(lstrip)
            .take_while(|&&b| b == b' ')
            .count();
        Ok(piece[n..].to_vec())
    }

    pub fn n_vocab(&self) -> usize {
        self.vocab.n_tokens()
    }
    pub fn bos(&self) -> Option<u32> {
        self.vocab.special.bos
    }
    pub fn eos(&self) -> Option<u32> {
        self.vocab.special.eos
    }
    /// End of turn: from metadata, else found by text (`<|im_end|>`, `<end_of_turn>`, ...).
    pub fn eot(&self) -> Option<u32> {
        self.vocab.special.eot
    }
    pub fn eom(&self) -> Option<u32> {
        self.vocab.special.eom
    }
    pub fn unk(&self) -> Option<u32> {
        self.vocab.special.unk
    }
    pub fn pad(&self) -> Option<u32> {
        self.vocab.special.pad
    }
    /// Whether encoding with `add_special` prepends BOS.
    pub fn add_bos(&self) -> bool {
        self.vocab.add_bos
    }
    /// Whether encoding with `add_special` appends EOS.
    pub fn add_eos(&self) -> bool {
        self.vocab.add_eos
    }
    /// `tokenizer.ggml.model` (`gpt2` or `llama`).
    pub fn model_name(&self) -> &str {
        &self.vocab.model_name
    }
    /// `tokenizer.ggml.pre` (empty when absent).
    pub fn pre_name(&self) -> &str {
        &self.vocab.pre_name
    }
    /// End-of-generation: EOS, EOT, EOM and the tokens llama.cpp adds by text.
    pub fn is_eog(&self, id: u32) -> bool {
        self.vocab.eog.contains(&id)
    }
    /// The end-of-generation set, ascending.
    pub fn eog_ids(&self) -> Vec<u32> {
        self.vocab.eog.iter().copied().collect()
    }
    pub fn is_control(&self, id: u32) -> bool {
        (id as usize) < self.n_vocab() && self.vocab.attr(id) & attr::CONTROL != 0
    }
    /// The token's text as stored in the vocabulary (byte-level BPE texts are in the GPT-2
    /// alphabet, SentencePiece texts use ▁ for spaces).
    pub fn token_text(&self, id: u32) -> Result<&str> {
        let i = self.check(id)?;
        Ok(&self.vocab.tokens[i].text)
    }
    /// The token id whose vocabulary text is exactly `text`.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.vocab.token_to_id.get(text).copied()
    }
}

/// `<0xXX>` → the byte.
fn parse_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// llama.cpp's `clean_spaces` passes over the detokenized bytes: drop the space in
/// " ?", " !", " .", " ,"; turn " ' " into "'"; drop the space before "'s", "'m", "'re", "'ve".
fn clean_up_spaces(text: &mut Vec<u8>) {
    // Pass 1.
    let mut out: Vec<u8> = Vec::with_capacity(text.len());
    for (i, &x) in text.iter().enumerate() {
        if i > 0 && text[i - 1] == b' ' && matches!(x, b'?' | b'!' | b'.' | b',') {
            out.pop();
        }
        out.push(x);
    }
    // Pass 2: a lone apostrophe between spaces. llama.cpp overwrites the dropped space with
    // NUL in place, which later reads of the previous byte then see.
    let mut t = std::mem::take(&mut out);
    let mut i = 0;
    while i < t.len() {
        let x = t[i];
        if i > 0 && x == b'\'' && i + 1 < t.len() && t[i - 1] == b' ' && t[i + 1] == b' ' {
            out.pop();
            t[i + 1] = 0;
            out.push(x);
            i += 2;
            continue;
        }
        out.push(x);
        i += 1;
    }
    // Pass 3: contractions.
    let t = std::mem::take(&mut out);
    for (i, &x) in t.iter().enumerate() {
        if i > 0 && t[i - 1] == b' ' && x == b'\'' && i + 1 < t.len() {
            let x1 = t[i + 1];
            let drop = match x1 {
                b's' | b'm' => true,
                b't' | b'd' => false,
                _ => i + 2 < t.len() && matches!((x1, t[i + 2]), (b'r', b'e') | (b'v', b'e')),
            };
            if drop {
                out.pop();
            }
        }
        out.push(x);
    }
    *text = out;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean(s: &str) -> String {
        let mut v = s.as_bytes().to_vec();
        clean_up_spaces(&mut v);
        String::from_utf8(v).unwrap()
    }

    /// Expected values worked out by hand from llama.cpp's three passes.
    #[test]
    fn clean_spaces_passes() {
        assert_eq!(clean("Hello , world !"), "Hello, world!");
        assert_eq!(clean("a ' b"), "a'b");
        assert_eq!(clean("it 's we 're I 'll"), "it's we're I 'll");
        assert_eq!(clean(" ."), ".");
    }

    #[test]
    fn byte_token_names() {
        assert_eq!(parse_byte_token("<0x0A>"), Some(10));
        assert_eq!(parse_byte_token("<0xff>"), Some(255));
        assert_eq!(parse_byte_token("<0x1>"), None);
        assert_eq!(parse_byte_token("0x10"), None);
    }

    #[test]
    fn tokenizer_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Tokenizer>();
    }
}
