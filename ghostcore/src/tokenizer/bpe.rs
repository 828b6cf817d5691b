//! Byte-level BPE (GPT-2 style): the byte↔unicode alphabet, merge ranks from
//! `tokenizer.ggml.merges`, and rank-ordered merging with a priority queue.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

use super::pretokenize::PreTokenizer;
use super::vocab::Vocab;
use crate::gguf::{Array, GgufFile};
use crate::{bail, Result};

/// GPT-2's reversible byte → char map: printable Latin-1 bytes map to themselves, the other
/// 68 bytes to U+0100.. in byte order.
pub fn byte_to_char_table() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..=255u8 {
        let printable = (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
        table[b as usize] = if printable {
            b as char
        } else {
            let c = char::from_u32(256 + n).unwrap_or('\u{FFFD}');
            n += 1;
            c
        };
    }
    table
}

/// Inverse of [`byte_to_char_table`]: the byte for a char, if it is in the alphabet.
pub fn char_to_byte(c: char) -> Option<u8> {
    static INVERSE: OnceLock<HashMap<char, u8>> = OnceLock::new();
    let inv = INVERSE.get_or_init(|| {
        let t = byte_to_char_table();
        (0..=255u8).map(|b| (t[b as usize], b)).collect()
    });
    inv.get(&c).copied()
}

/// Hasher for the merge table's packed `(left, right)` keys: one multiply-xorshift round
/// with a per-process random odd multiplier, so crafted vocabularies cannot aim collisions
/// at it. Several times faster than SipHash on the encode hot path.
#[derive(Clone, Copy, Debug)]
struct PairHasherBuilder(u64);

impl PairHasherBuilder {
    fn new() -> Self {
        let seed =
            std::collections::hash_map::RandomState::new().hash_one(0x9E37_79B9_7F4A_7C15u64);
        PairHasherBuilder(seed | 1)
    }
}

struct PairHasher {
    mul: u64,
    value: u64,
}

impl BuildHasher for PairHasherBuilder {
    type Hasher = PairHasher;
    fn build_hasher(&self) -> PairHasher {
        PairHasher {
            mul: self.0,
            value: 0,
        }
    }
}

impl Hasher for PairHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(b as u64);
        }
    }
    fn write_u64(&mut self, v: u64) {
        let x = (self.value ^ v).wrapping_mul(self.mul);
        self.value = x ^ (x >> 29);
    }
    fn finish(&self) -> u64 {
        self.value
    }
}

fn pair_key(left: u32, right: u32) -> u64 {
    ((left as u64) << 32) | right as u64
}

#[derive(Clone, Copy, Debug)]
struct Merge {
    rank: u32,
    /// The token the merged text is, if the vocabulary has it.
    merged: Option<u32>,
}

#[derive(Debug)]
pub struct Bpe {
    pub pre: PreTokenizer,
    byte_chars: [char; 256],
    /// The token of each single byte's alphabet char.
    byte_token: [Option<u32>; 256],
    merges: HashMap<u64, Merge, PairHasherBuilder>,
}

#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    id: Option<u32>,
    prev: usize,
    next: usize,
}

const NONE: usize = usize::MAX;

impl Bpe {
    pub fn from_gguf(gguf: &GgufFile, vocab: &Vocab) -> Result<Bpe> {
        let pre = PreTokenizer::from_name(&vocab.pre_name)?;
        let lines = match gguf.get_array("tokenizer.ggml.merges") {
            Some(Array::String(v)) => v,
            Some(_) => bail!(Format, "tokenizer.ggml.merges must be an array of strings"),
            None => bail!(
                Format,
                "tokenizer.ggml.merges is missing (needed by a gpt2 tokenizer)"
            ),
        };
        let mut merges = HashMap::with_capacity_and_hasher(lines.len(), PairHasherBuilder::new());
        for (rank, line) in lines.iter().enumerate() {
            // The separator is the first space after the first byte (a side may be " ").
            let split = line.bytes().skip(1).position(|b| b == b' ').map(|p| p + 1);
            let Some(pos) = split else {
                bail!(
                    Format,
                    "merge {rank} {line:?} has no space separating its two sides"
                );
            };
            let (left, right) = (&line[..pos], &line[pos + 1..]);
            let id = |side: &str| match vocab.token_to_id.get(side) {
                Some(&id) => Ok(id),
                None => Err(crate::Error::Format(format!(
                    "merge {rank} {line:?} names {side:?}, which is not in the vocabulary"
                ))),
            };
            let (l, r) = (id(left)?, id(right)?);
            let merged = vocab.token_to_id.get(&format!("{left}{right}")).copied();
            // The first occurrence of a pair keeps its rank, as in llama.cpp.
            merges.entry(pair_key(l, r)).or_insert(Merge {
                rank: rank as u32,
                merged,
            });
        }
        let byte_chars = byte_to_char_table();
        let mut byte_token = [None; 256];
        for (b, slot) in byte_token.iter_mut().enumerate() {
            let mut buf = [0u8; 4];
            *slot = vocab
                .token_to_id
                .get(byte_chars[b].encode_utf8(&mut buf) as &str)
                .copied();
        }
        Ok(Bpe {
            pre,
            byte_chars,
            byte_token,
            merges,
        })
    }

    /// Tokenize raw text (no special tokens in it) and append the ids to `out`.
    pub fn encode(&self, vocab: &Vocab, text: &str, out: &mut Vec<u32>) -> Result<()> {
        let bytes = text.as_bytes();
        let mut symbols: Vec<Symbol> = Vec::new();
        let mut heap: BinaryHeap<Reverse<(u32, usize, usize, usize)>> = BinaryHeap::new();
        for (ws, we) in self.pre.split(text)? {
            let word = &bytes[ws..we];
            if self.pre.ignore_merges {
                let encoded: String = word.iter().map(|&b| self.byte_chars[b as usize]).collect();
                if let Some(&id) = vocab.token_to_id.get(&encoded) {
                    out.push(id);
                    continue;
                }
            }
            symbols.clear();
            heap.clear();
            for (i, &b) in word.iter().enumerate() {
                symbols.push(Symbol {
                    start: i,
                    len: 1,
                    id: self.byte_token[b as usize],
                    prev: if i == 0 { NONE } else { i - 1 },
                    next: if i + 1 == word.len() { NONE } else { i + 1 },
                });
            }
            for i in 1..symbols.len() {
                self.push_pair(&symbols, i - 1, i, &mut heap);
            }
            while let Some(Reverse((_, left, right, size))) = heap.pop() {
                let (l, r) = (symbols[left], symbols[right]);
                // Skip pairs that went stale: symbols only grow, so an unchanged total
                // length means both sides are as they were when the pair was queued.
                if l.len == 0 || r.len == 0 || l.len + r.len != size {
                    continue;
                }
                let merged = self
                    .merges
                    .get(&pair_key(
                        l.id.unwrap_or(u32::MAX),
                        r.id.unwrap_or(u32::MAX),
                    ))
                    .and_then(|m| m.merged);
                symbols[left].len += r.len;
                symbols[left].id = merged;
                symbols[left].next = r.next;
                symbols[right].len = 0;
                if r.next != NONE {
                    symbols[r.next].prev = left;
                }
                if l.prev != NONE {
                    self.push_pair(&symbols, l.prev, left, &mut heap);
                }
                if r.next != NONE {
                    self.push_pair(&symbols, left, r.next, &mut heap);
                }
            }
            let mut i = if symbols.is_empty() { NONE } else { 0 };
            while i != NONE {
                let s = symbols[i];
                match s.id {
                    Some(id) => out.push(id),
                    None => {
                        // llama.cpp looks each byte of the (alphabet-encoded) text up as a
                        // one-byte token: only printable ASCII can match.
                        for &b in &word[s.start..s.start + s.len] {
                            let c = self.byte_chars[b as usize];
                            if c.is_ascii() {
                                if let Some(&id) =
                                    vocab.token_to_id.get(c.encode_utf8(&mut [0; 4]) as &str)
                                {
                                    out.push(id);
                                }
                            }
                        }
                    }
                }
                i = s.next;
            }
        }
        Ok(())
    }

    fn push_pair(
        &self,
        symbols: &[Symbol],
        left: usize,
        right: usize,
        heap: &mut BinaryHeap<Reverse<(u32, usize, usize, usize)>>,
    ) {
        let (l, r) = (&symbols[left], &symbols[right]);
        let (Some(a), Some(b)) = (l.id, r.id) else {
            return;
        };
        if let Some(m) = self.merges.get(&pair_key(a, b)) {
            heap.push(Reverse((m.rank, left, right, l.len + r.len)));
        }
    }

    /// The bytes a normal token's text stands for. Chars outside the alphabet are rendered
    /// as llama.cpp does: `[UNK_BYTE_0x<hex>` + the token text + `]`.
    pub fn decode_token_text(text: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(text.len());
        for c in text.chars() {
            match char_to_byte(c) {
                Some(b) => out.push(b),
                None => {
                    out.extend_from_slice(b"[UNK_BYTE_0x");
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        out.extend_from_slice(format!("{b:02x}").as_bytes());
                    }
                    out.extend_from_slice(text.as_bytes());
                    out.push(b']');
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_alphabet_is_a_bijection() {
        let t = byte_to_char_table();
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(t[b as usize]), Some(b), "byte {b}");
        }
        // Known GPT-2 values: space is 'Ġ' (U+0120), newline 'Ċ' (U+010A).
        assert_eq!(t[b' ' as usize], 'Ġ');
        assert_eq!(t[b'\n' as usize], 'Ċ');
        assert_eq!(t[b'A' as usize], 'A');
    }
}
