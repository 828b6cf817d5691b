//! SentencePiece (BPE-flavoured, as llama.cpp's `llm_tokenizer_spm`): start from single
//! UTF-8 characters, repeatedly merge the adjacent pair whose concatenation is the vocabulary
//! token with the highest score (ties: leftmost first), and emit characters that end up in no
//! token as `<0xXX>` byte tokens.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::vocab::Vocab;
use crate::{bail, Result};

/// The SentencePiece space marker, U+2581 "▁".
pub const SPACE_MARKER: &str = "\u{2581}";

struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    size: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    /// Max-heap order: higher score first, then the leftmost pair.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: usize,
    next: usize,
}

const NONE: usize = usize::MAX;

/// Tokenize `text` (spaces already replaced by [`SPACE_MARKER`]) and append the ids.
pub fn encode(vocab: &Vocab, text: &str, out: &mut Vec<u32>) -> Result<()> {
    let mut symbols: Vec<Symbol> = Vec::with_capacity(text.len());
    for (start, c) in text.char_indices() {
        let idx = symbols.len();
        symbols.push(Symbol {
            start,
            len: c.len_utf8(),
            prev: if idx == 0 { NONE } else { idx - 1 },
            next: idx + 1,
        });
    }
    if let Some(last) = symbols.last_mut() {
        last.next = NONE;
    }
    let mut heap = BinaryHeap::new();
    let try_add = |symbols: &[Symbol], left: usize, right: usize, heap: &mut BinaryHeap<Bigram>| {
        if left == NONE || right == NONE {
            return;
        }
        let (l, r) = (symbols[left], symbols[right]);
        let piece = &text[l.start..l.start + l.len + r.len];
        if let Some(&id) = vocab.token_to_id.get(piece) {
            heap.push(Bigram {
                score: vocab.tokens[id as usize].score,
                left,
                right,
                size: piece.len(),
            });
        }
    };
    for i in 1..symbols.len() {
        try_add(&symbols, i - 1, i, &mut heap);
    }
    while let Some(b) = heap.pop() {
        let (l, r) = (symbols[b.left], symbols[b.right]);
        if l.len == 0 || r.len == 0 || l.len + r.len != b.size {
            continue;
        }
        symbols[b.left].len += r.len;
        symbols[b.left].next = r.next;
        symbols[b.right].len = 0;
        if r.next != NONE {
            symbols[r.next].prev = b.left;
        }
        try_add(&symbols, l.prev, b.left, &mut heap);
        try_add(&symbols, b.left, r.next, &mut heap);
    }

    let mut i = if symbols.is_empty() { NONE } else { 0 };
    while i != NONE {
        let s = symbols[i];
        let piece = &text[s.start..s.start + s.len];
        match vocab.token_to_id.get(piece) {
            Some(&id) => out.push(id),
            None => {
                for &byte in piece.as_bytes() {
                    match vocab.spm_byte_token(byte).or(vocab.special.unk) {
                        Some(id) => out.push(id),
                        None => bail!(
                            Format,
                            "SentencePiece vocabulary has no byte token <0x{byte:02X}> and no unknown token"
                        ),
                    }
                }
            }
        }
        i = s.next;
    }
    Ok(())
}
