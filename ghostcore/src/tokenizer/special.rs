//! Cutting special tokens out of raw text before tokenization (llama.cpp's
//! `tokenizer_st_partition`).
//!
//! Special tokens are tried longest first; each one splits every remaining text fragment at
//! its leftmost non-overlapping occurrences. Control and unknown tokens take part only with
//! `parse_special`; user-defined tokens always do. Tokens with the LSTRIP / RSTRIP attribute
//! swallow ASCII whitespace on that side.

use super::vocab::{attr, Vocab};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fragment {
    /// Raw text: a byte range of the input.
    Text(usize, usize),
    Token(u32),
}

/// C `isspace` in the "C" locale.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

pub fn partition(vocab: &Vocab, text: &str, parse_special: bool) -> Vec<Fragment> {
    let mut fragments = Vec::new();
    if text.is_empty() {
        return fragments;
    }
    fragments.push(Fragment::Text(0, text.len()));
    // Bytes present in the text: a token whose first byte is absent cannot match.
    let mut present = [false; 256];
    for &b in text.as_bytes() {
        present[b as usize] = true;
    }
    let bytes = text.as_bytes();
    let mut next = Vec::new();
    for &id in &vocab.special_cache {
        let tok = &vocab.tokens[id as usize];
        if !parse_special && tok.attr & (attr::CONTROL | attr::UNKNOWN) != 0 {
            continue;
        }
        let needle = tok.text.as_str();
        if !present[needle.as_bytes()[0] as usize] {
            continue;
        }
        let mut changed = false;
        next.clear();
        for &f in &fragments {
            let Fragment::Text(start, end) = f else {
                next.push(f);
                continue;
            };
            let mut pos = start;
            loop {
                let Some(off) = text[pos..end].find(needle) else {
                    if pos < end {
                        next.push(Fragment::Text(pos, end));
                    }
                    break;
                };
                changed = true;
                let m = pos + off;
                let mut left_end = m;
                if tok.attr & attr::LSTRIP != 0 {
                    while left_end > pos && is_c_space(bytes[left_end - 1]) {
                        left_end -= 1;
                    }
                }
                if left_end > pos {
                    next.push(Fragment::Text(pos, left_end));
                }
                next.push(Fragment::Token(id));
                pos = m + needle.len();
                if tok.attr & attr::RSTRIP != 0 {
                    while pos < end && is_c_space(bytes[pos]) {
                        pos += 1;
                    }
                }
                if pos >= end {
                    break;
                }
            }
        }
        if changed {
            std::mem::swap(&mut fragments, &mut next);
        }
    }
    fragments
}
