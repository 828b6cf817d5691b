//! The vocabulary as llama.cpp builds it from GGUF metadata: token texts, scores, attributes,
//! special token ids, the end-of-generation set and the special-token match list.
//!
//! Every id and array length read from the file is validated here, so the tokenizers can
//! index without further checks.

use std::collections::{BTreeSet, HashMap};

use super::special::SpecialTrie;
use crate::gguf::{Array, GgufFile};
use crate::{bail, Result};

/// Per-token attribute bits, numbered as llama.cpp's `llama_token_attr`.
pub mod attr {
    pub const UNKNOWN: u32 = 1 << 0;
    pub const UNUSED: u32 = 1 << 1;
    pub const NORMAL: u32 = 1 << 2;
    pub const CONTROL: u32 = 1 << 3;
    pub const USER_DEFINED: u32 = 1 << 4;
    pub const BYTE: u32 = 1 << 5;
    pub const LSTRIP: u32 = 1 << 7;
    pub const RSTRIP: u32 = 1 << 8;
}

/// `tokenizer.ggml.token_type` values (gguf-py `TokenType`).
fn attr_from_token_type(t: i64) -> u32 {
    match t {
        1 => attr::NORMAL,
        2 => attr::UNKNOWN,
        3 => attr::CONTROL,
        4 => attr::USER_DEFINED,
        5 => attr::UNUSED,
        6 => attr::BYTE,
        _ => 0, // undefined
    }
}

/// Which tokenizer algorithm the vocabulary uses (`tokenizer.ggml.model`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VocabKind {
    /// `gpt2`: byte-level BPE with merges.
    Bpe,
    /// `llama`: SentencePiece (score-based bigram merging, byte fallback).
    Spm,
}

pub const SUPPORTED_MODELS: &str = "gpt2 (byte-level BPE), llama (SentencePiece)";

#[derive(Clone, Debug)]
pub struct TokenData {
    pub text: String,
    pub score: f32,
    pub attr: u32,
}

/// Special token ids; `None` where the vocabulary has none.
#[derive(Clone, Debug, Default)]
pub struct SpecialIds {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub eot: Option<u32>,
    pub eom: Option<u32>,
    pub unk: Option<u32>,
    pub sep: Option<u32>,
    pub pad: Option<u32>,
    pub mask: Option<u32>,
    pub fim_pre: Option<u32>,
    pub fim_suf: Option<u32>,
    pub fim_mid: Option<u32>,
    pub fim_pad: Option<u32>,
    pub fim_rep: Option<u32>,
    pub fim_sep: Option<u32>,
}

#[derive(Debug)]
pub struct Vocab {
    pub kind: VocabKind,
    pub model_name: String,
    pub pre_name: String,
    pub tokens: Vec<TokenData>,
    pub token_to_id: HashMap<String, u32>,
    pub special: SpecialIds,
    pub eog: BTreeSet<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    pub add_space_prefix: bool,
    /// Control, user-defined and unknown tokens, longest text first: the order in which
    /// they are cut out of raw text before tokenization.
    pub special_cache: Vec<u32>,
    /// The texts of `special_cache`, for finding which occur in a text.
    pub special_trie: SpecialTrie,
}

const KEY_MODEL: &str = "tokenizer.ggml.model";
const KEY_PRE: &str = "tokenizer.ggml.pre";
const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
const KEY_SCORES: &str = "tokenizer.ggml.scores";
const KEY_TOKEN_TYPE: &str = "tokenizer.ggml.token_type";

impl Vocab {
    /// Read and validate the vocabulary. `pre_add_bos` gives the `add_bos` default that
    /// llama.cpp derives from a BPE pre-tokenizer name.
    pub fn from_gguf(gguf: &GgufFile, pre_add_bos: impl Fn(&str) -> bool) -> Result<Vocab> {
        let model_name = match gguf.get(KEY_MODEL) {
            None => bail!(Format, "{KEY_MODEL} is missing: the file has no tokenizer"),
            Some(v) => match v.as_str() {
                Some(s) => s.to_string(),
                None => bail!(Format, "{KEY_MODEL} must be a string"),
            },
        };
        let kind = match model_name.as_str() {
            "gpt2" => VocabKind::Bpe,
            "llama" => VocabKind::Spm,
            other => bail!(
                Unsupported,
                "tokenizer model '{other}' (supported: {SUPPORTED_MODELS})"
            ),
        };
        let pre_name = match gguf.get(KEY_PRE) {
            None => String::new(),
            Some(v) => match v.as_str() {
                Some(s) => s.to_string(),
                None => bail!(Format, "{KEY_PRE} must be a string"),
            },
        };

        let texts = match gguf.get_array(KEY_TOKENS) {
            Some(Array::String(v)) => v,
            Some(_) => bail!(Format, "{KEY_TOKENS} must be an array of strings"),
            None => bail!(Format, "{KEY_TOKENS} is missing"),
        };
        let n = texts.len();
        if n == 0 {
            bail!(Format, "{KEY_TOKENS} is empty");
        }
        if n > i32::MAX as usize {
            bail!(
                Format,
                "{KEY_TOKENS} has {n} entries, more than token ids can address"
            );
        }
        let scores = match gguf.get(KEY_SCORES) {
            None => None,
            Some(v) => {
                let arr = match v.as_array() {
                    Some(a) => a,
                    None => bail!(Format, "{KEY_SCORES} must be an array"),
                };
                let s: Vec<f32> = match arr {
                    Array::F32(_) | Array::F64(_) => arr.to_f32_vec().unwrap_or_default(),
                    Array::I32(v) => v.iter().map(|&x| x as f32).collect(),
                    _ => bail!(Format, "{KEY_SCORES} must be an f32 or i32 array"),
                };
                if s.len() < n {
                    bail!(
                        Format,
                        "{KEY_SCORES} has {} entries for {n} tokens",
                        s.len()
                    );
                }
                Some(s)
            }
        };
        let types = match gguf.get(KEY_TOKEN_TYPE) {
            None => None,
            Some(v) => {
                let t = match v.as_array().and_then(|a| a.to_i64_vec()) {
                    Some(t) => t,
                    None => bail!(Format, "{KEY_TOKEN_TYPE} must be an integer array"),
                };
                if t.len() < n {
                    bail!(
                        Format,
                        "{KEY_TOKEN_TYPE} has {} entries for {n} tokens",
                        t.len()
                    );
                }
                Some(t)
            }
        };

        let mut tokens = Vec::with_capacity(n);
        let mut token_to_id = HashMap::with_capacity(n);
        for (i, text) in texts.iter().enumerate() {
            let text = if text.is_empty() {
                format!("[EMPTY_{i}]")
            } else {
                text.clone()
            };
            if let Some(prev) = token_to_id.insert(text.clone(), i as u32) {
                bail!(
                    Format,
                    "duplicate token in vocabulary: {text:?} has ids {prev} and {i}"
                );
            }
            tokens.push(TokenData {
                text,
                score: scores.as_ref().map_or(0.0, |s| s[i]),
                attr: types
                    .as_ref()
                    .map_or(attr::NORMAL, |t| attr_from_token_type(t[i])),
            });
        }

        // Defaults by model kind, then metadata overrides (llama_vocab::impl::load).
        let (mut add_bos, mut add_eos, mut add_space_prefix) = match kind {
            VocabKind::Bpe => (pre_add_bos(&pre_name), false, false),
            VocabKind::Spm => (true, false, true),
        };
        let default_ids: (Option<u32>, Option<u32>, Option<u32>) = match kind {
            VocabKind::Spm => (Some(1), Some(2), Some(0)),
            VocabKind::Bpe => (Some(11), Some(11), None),
        };
        let in_range = |id: Option<u32>| id.filter(|&i| (i as usize) < n);
        let mut special = SpecialIds {
            bos: in_range(default_ids.0),
            eos: in_range(default_ids.1),
            unk: in_range(default_ids.2),
            ..SpecialIds::default()
        };
        {
            let slots: [(&str, &mut Option<u32>); 14] = [
                ("bos_token_id", &mut special.bos),
                ("eos_token_id", &mut special.eos),
                ("eot_token_id", &mut special.eot),
                ("eom_token_id", &mut special.eom),
                ("unknown_token_id", &mut special.unk),
                ("seperator_token_id", &mut special.sep),
                ("padding_token_id", &mut special.pad),
                ("mask_token_id", &mut special.mask),
                ("fim_pre_token_id", &mut special.fim_pre),
                ("fim_suf_token_id", &mut special.fim_suf),
                ("fim_mid_token_id", &mut special.fim_mid),
                ("fim_pad_token_id", &mut special.fim_pad),
                ("fim_rep_token_id", &mut special.fim_rep),
                ("fim_sep_token_id", &mut special.fim_sep),
            ];
            for (name, slot) in slots {
                let key = format!("tokenizer.ggml.{name}");
                if let Some(v) = gguf.get(&key) {
                    let id = match v.as_u64() {
                        Some(id) => id,
                        None => bail!(Format, "{key} must be a non-negative integer"),
                    };
                    if id >= n as u64 {
                        bail!(
                            Format,
                            "{key} = {id} is out of range (vocabulary has {n} tokens)"
                        );
                    }
                    *slot = Some(id as u32);
                }
            }
        }
        // The deprecated FIM keys fill the FIM slots only where the new keys are absent.
        for (old, slot) in [
            ("prefix_token_id", &mut special.fim_pre),
            ("suffix_token_id", &mut special.fim_suf),
            ("middle_token_id", &mut special.fim_mid),
        ] {
            let key = format!("tokenizer.ggml.{old}");
            if let Some(v) = gguf.get(&key) {
                match v.as_u64() {
                    Some(id) if id < n as u64 => {
                        if slot.is_none() {
                            *slot = Some(id as u32);
                        }
                    }
                    _ => bail!(Format, "{key} must be a token id below {n}"),
                }
            }
        }

        let get_bool = |key: &str| -> Result<Option<bool>> {
            match gguf.get(key) {
                None => Ok(None),
                Some(v) => match v.as_bool() {
                    Some(b) => Ok(Some(b)),
                    None => bail!(Format, "{key} must be a bool"),
                },
            }
        };
        if let Some(b) = get_bool("tokenizer.ggml.add_space_prefix")? {
            add_space_prefix = b;
        }
        if let Some(b) = get_bool("tokenizer.ggml.add_bos_token")? {
            add_bos = b;
        }
        if let Some(b) = get_bool("tokenizer.ggml.add_eos_token")? {
            add_eos = b;
        }
        if add_bos && special.bos.is_none() {
            bail!(
                Format,
                "tokenizer.ggml.add_bos_token is true, but there is no BOS token"
            );
        }
        if add_eos && special.eos.is_none() {
            bail!(
                Format,
                "tokenizer.ggml.add_eos_token is true, but there is no EOS token"
            );
        }

        let mut vocab = Vocab {
            kind,
            model_name,
            pre_name,
            tokens,
            token_to_id,
            special,
            eog: BTreeSet::new(),
            add_bos,
            add_eos,
            add_space_prefix,
            special_cache: Vec::new(),
            special_trie: SpecialTrie::default(),
        };
        vocab.detect_special_by_text();
        vocab.apply_model_attributes(gguf.get_str("general.name").unwrap_or(""));
        vocab.build_special_cache();
        Ok(vocab)
    }

    fn id_of(&self, text: &str) -> Option<u32> {
        self.token_to_id.get(text).copied()
    }

    fn mark_control(&mut self, id: u32) {
        self.tokens[id as usize].attr |= attr::CONTROL;
    }

    /// llama.cpp finds EOT/EOM/FIM tokens by their text where the metadata does not name
    /// them, forces such tokens to be control tokens, marks control tokens whose text
    /// contains "unused" as unused, and collects the end-of-generation set.
    ///
    /// llama.cpp walks an unordered map here, so when several texts match (SmolLM2 has both
    /// `<|im_end|>` and `<|endoftext|>`) its choice of EOT is unspecified; we take the first
    /// text in the list order below, which puts turn terminators first.
    fn detect_special_by_text(&mut self) {
        const EOT: &[&str] = &[
            "<|eot_id|>",
            "<|im_end|>",
            "<|end|>",
            "<end_of_turn>",
            "<|endoftext|>",
            "<|end_of_text|>",
            "<EOT>",
            "_<EOT>",
            "[EOT]",
            "<｜end▁of▁sentence｜>",
            "<end_of_utterance>",
        ];
        const EOM: &[&str] = &["<|eom_id|>"];
        const FIM_PRE: &[&str] = &[
            "<|fim_prefix|>",
            "<fim-prefix>",
            "<fim_prefix>",
            "<｜fim▁begin｜>",
            "<PRE>",
            "▁<PRE>",
            "<|code_prefix|>",
            "<|prefix|>",
        ];
        const FIM_SUF: &[&str] = &[
            "<|fim_suffix|>",
            "<fim-suffix>",
            "<fim_suffix>",
            "<｜fim▁hole｜>",
            "<SUF>",
            "▁<SUF>",
            "<|code_suffix|>",
            "<|suffix|>",
        ];
        const FIM_MID: &[&str] = &[
            "<|fim_middle|>",
            "<fim-middle>",
            "<fim_middle>",
            "<｜fim▁end｜>",
            "<MID>",
            "▁<MID>",
            "<|code_middle|>",
            "<|middle|>",
        ];
        const FIM_PAD: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
        const FIM_REP: &[&str] = &[
            "<|fim_repo|>",
            "<|repo_name|>",
            "<fim-repo>",
            "<REPO>",
            "<reponame>",
        ];
        const FIM_SEP: &[&str] = &["<|file_sep|>"];
        const EOG: &[&str] = &[
            "<|eot_id|>",
            "<|im_end|>",
            "<|end|>",
            "<|return|>",
            "<|call|>",
            "<|flush|>",
            "<|calls|>",
            "<end_of_turn>",
            "<|endoftext|>",
            "</s>",
            "<|eom_id|>",
            "<EOT>",
            "_<EOT>",
            "[EOT]",
            "[EOS]",
            "<|end_of_text|>",
            "<end_of_utterance>",
            "<eos>",
            "<turn|>",
            "<|tool_response>",
            "<｜end▁of▁sentence｜>",
            "[e~[",
        ];

        type Slot = fn(&mut SpecialIds) -> &mut Option<u32>;
        let lists: [(&[&str], Slot); 8] = [
            (EOT, |s| &mut s.eot),
            (EOM, |s| &mut s.eom),
            (FIM_PRE, |s| &mut s.fim_pre),
            (FIM_SUF, |s| &mut s.fim_suf),
            (FIM_MID, |s| &mut s.fim_mid),
            (FIM_PAD, |s| &mut s.fim_pad),
            (FIM_REP, |s| &mut s.fim_rep),
            (FIM_SEP, |s| &mut s.fim_sep),
        ];
        for (texts, slot) in lists {
            if slot(&mut self.special).is_some() {
                continue;
            }
            if let Some(id) = texts.iter().find_map(|t| self.id_of(t)) {
                self.mark_control(id);
                *slot(&mut self.special) = Some(id);
            }
        }

        for t in &mut self.tokens {
            if t.attr & attr::CONTROL != 0 && t.text.contains("unused") {
                t.attr |= attr::UNUSED;
            }
        }

        let mut eog = BTreeSet::new();
        for id in [
            self.special.fim_pad,
            self.special.fim_rep,
            self.special.fim_sep,
        ]
        .into_iter()
        .flatten()
        {
            eog.insert(id);
        }
        for text in EOG {
            if let Some(id) = self.id_of(text) {
                eog.insert(id);
                self.mark_control(id);
            }
        }
        // gpt-oss: these are always rendered.
        for text in ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"] {
            if let Some(id) = self.id_of(text) {
                self.tokens[id as usize].attr = attr::USER_DEFINED;
            }
        }
        for id in [self.special.eos, self.special.eot, self.special.eom]
            .into_iter()
            .flatten()
        {
            eog.insert(id);
        }
        // o200k_harmony / solar-open: "<|end|>" is not end-of-generation there.
        let in_eog = |v: &Vocab, eog: &BTreeSet<u32>, t: &str| {
            v.id_of(t).is_some_and(|id| eog.contains(&id))
        };
        let (ret, call, flush) = (
            in_eog(self, &eog, "<|return|>"),
            in_eog(self, &eog, "<|call|>") || in_eog(self, &eog, "<|calls|>"),
            in_eog(self, &eog, "<|flush|>"),
        );
        if let Some(end) = self.id_of("<|end|>").filter(|id| eog.contains(id)) {
            if call && (ret || flush) {
                eog.remove(&end);
                self.tokens[end as usize].attr = attr::USER_DEFINED;
            }
        }
        // gemma4 / paddleocr: "</s>" is not end-of-generation when "<|tool_response>" is.
        if in_eog(self, &eog, "<|tool_response>") {
            if let Some(s) = self.id_of("</s>").filter(|id| eog.contains(id)) {
                eog.remove(&s);
                self.tokens[s as usize].attr = attr::NORMAL;
            }
        }
        self.eog = eog;
    }

    /// Per-model strip attributes that llama.cpp hard-codes by model name.
    fn apply_model_attributes(&mut self, general_name: &str) {
        let name = general_name.to_ascii_lowercase();
        let pre = self.pre_name.clone();
        if ["jina-v2-de", "jina-v2-es", "jina-v2-code"]
            .iter()
            .any(|p| pre.contains(p))
        {
            if let Some(id) = self.id_of("<mask>") {
                self.tokens[id as usize].attr |= attr::LSTRIP;
            }
        } else if name.contains("phi-3") || name.contains("phi3") {
            for t in &mut self.tokens {
                if t.attr & (attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN) != 0 {
                    t.attr |= attr::RSTRIP;
                }
            }
            if let Some(id) = self.id_of("</s>") {
                self.tokens[id as usize].attr |= attr::RSTRIP;
            }
            for t in ["<unk>", "<s>", "<|endoftext|>"] {
                if let Some(id) = self.id_of(t) {
                    self.tokens[id as usize].attr &= !attr::RSTRIP;
                }
            }
        } else if name.contains("modern-bert") {
            if let Some(id) = self.id_of("[MASK]") {
                self.tokens[id as usize].attr |= attr::LSTRIP;
            }
        }
    }

    fn build_special_cache(&mut self) {
        let mut ids: Vec<u32> = (0..self.tokens.len() as u32)
            .filter(|&id| {
                self.tokens[id as usize].attr & (attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN)
                    != 0
            })
            .collect();
        // Longest first; ties by id so the order is deterministic.
        ids.sort_by(|&a, &b| {
            let (la, lb) = (
                self.tokens[a as usize].text.len(),
                self.tokens[b as usize].text.len(),
            );
            lb.cmp(&la).then(a.cmp(&b))
        });
        self.special_trie = SpecialTrie::build(
            ids.iter()
                .map(|&id| (self.tokens[id as usize].text.as_str(), id)),
        );
        self.special_cache = ids;
    }

    pub fn n_tokens(&self) -> usize {
        self.tokens.len()
    }

    pub fn attr(&self, id: u32) -> u32 {
        self.tokens[id as usize].attr
    }

    /// The byte-fallback token `<0xXX>` of an SPM vocabulary (or the one-byte text token).
    pub fn spm_byte_token(&self, byte: u8) -> Option<u32> {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        let name = [
            b'<',
            b'0',
            b'x',
            HEX[(byte >> 4) as usize],
            HEX[(byte & 15) as usize],
            b'>',
        ];
        let name = std::str::from_utf8(&name).unwrap_or_default(); // ASCII, never fails
        self.id_of(name).or_else(|| {
            if byte < 0x80 {
                let c = [byte];
                std::str::from_utf8(&c).ok().and_then(|s| self.id_of(s))
            } else {
                None
            }
        })
    }
}
