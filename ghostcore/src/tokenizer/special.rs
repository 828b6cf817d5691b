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
    // Only tokens that occur in the text can split it: find them in one pass, then take
    // them in the cache's order (longest first, ties by id).
    let mut seen = vec![0u64; vocab.n_tokens().div_ceil(64)];
    vocab.special_trie.occurring(text.as_bytes(), |id| {
        seen[id as usize / 64] |= 1 << (id % 64);
    });
    let mut found: Vec<u32> = Vec::new();
    for (w, &bits) in seen.iter().enumerate() {
        let mut b = bits;
        while b != 0 {
            found.push(w as u32 * 64 + b.trailing_zeros());
            b &= b - 1;
        }
    }
    found.sort_by(|&a, &b| {
        let (la, lb) = (
            vocab.tokens[a as usize].text.len(),
            vocab.tokens[b as usize].text.len(),
        );
        lb.cmp(&la).then(a.cmp(&b))
    });
    let bytes = text.as_bytes();
    let mut next = Vec::new();
    for &id in &found {
        let tok = &vocab.tokens[id as usize];
        if !parse_special && tok.attr & (attr::CONTROL | attr::UNKNOWN) != 0 {
            continue;
        }
        let needle = tok.text.as_str();
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

/// A byte trie over the special tokens' texts, used to find which of them occur in a text
/// at all (one pass over the text instead of one search per special token).
#[derive(Debug, Default)]
pub struct SpecialTrie {
    /// Children of the root, by first byte (0 = none; node indices start at 1).
    root: Vec<u32>,
    /// Nodes 1..: sorted children and the token ending here.
    nodes: Vec<TrieNode>,
}

#[derive(Debug, Default)]
struct TrieNode {
    children: Vec<(u8, u32)>,
    token: Option<u32>,
}

impl SpecialTrie {
    pub fn build<'a>(entries: impl Iterator<Item = (&'a str, u32)>) -> SpecialTrie {
        let mut t = SpecialTrie {
            root: vec![0; 256],
            nodes: vec![TrieNode::default()], // index 0 unused
        };
        for (text, id) in entries {
            let bytes = text.as_bytes();
            let Some((&first, rest)) = bytes.split_first() else {
                continue;
            };
            let mut node = t.root[first as usize];
            if node == 0 {
                node = t.nodes.len() as u32;
                t.nodes.push(TrieNode::default());
                t.root[first as usize] = node;
            }
            for &b in rest {
                let children = &t.nodes[node as usize].children;
                node = match children.binary_search_by_key(&b, |&(c, _)| c) {
                    Ok(i) => children[i].1,
                    Err(i) => {
                        let new = t.nodes.len() as u32;
                        t.nodes.push(TrieNode::default());
                        t.nodes[node as usize].children.insert(i, (b, new));
                        new
                    }
                };
            }
            t.nodes[node as usize].token = Some(id);
        }
        t
    }

    /// Calls `found` for every token that occurs somewhere in `text` (possibly repeatedly).
    pub fn occurring(&self, text: &[u8], mut found: impl FnMut(u32)) {
        if self.root.is_empty() {
            return;
        }
        for start in 0..text.len() {
            let mut node = self.root[text[start] as usize];
            let mut i = start + 1;
            while node != 0 {
                let n = &self.nodes[node as usize];
                if let Some(id) = n.token {
                    found(id);
                }
                let Some(&b) = text.get(i) else { break };
                node = match n.children.binary_search_by_key(&b, |&(c, _)| c) {
                    Ok(k) => n.children[k].1,
                    Err(_) => 0,
                };
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The trie finds exactly the tokens that `str::contains` finds.
    #[test]
    fn trie_finds_the_same_tokens_as_contains() {
        let tokens = ["<a>", "<ab>", "a", "ab>", "<", "bb", "<a><a>"];
        let trie = SpecialTrie::build(tokens.iter().enumerate().map(|(i, t)| (*t, i as u32)));
        let alphabet = ['<', 'a', 'b', '>', 'x'];
        let mut state = 0x1234_5678u64;
        for _ in 0..500 {
            let mut text = String::new();
            for _ in 0..(state % 13) {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                text.push(alphabet[((state >> 33) % 5) as usize]);
            }
            let mut got = vec![false; tokens.len()];
            trie.occurring(text.as_bytes(), |id| got[id as usize] = true);
            let want: Vec<bool> = tokens.iter().map(|t| text.contains(t)).collect();
            assert_eq!(got, want, "{text:?}");
        }
    }
}
