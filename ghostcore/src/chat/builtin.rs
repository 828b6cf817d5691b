//! llama.cpp's built-in chat formats (`llama_chat_apply_template`): fixed formatters for
//! well-known templates, and the substring heuristics that map a Jinja source to one.

use super::ChatMessage;

/// A built-in chat format, named as in llama.cpp (`llama_chat_builtin_templates`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuiltinTemplate {
    ChatMl,
    Gemma,
    Llama3,
    Phi3,
    Zephyr,
}

const ALL: &[BuiltinTemplate] = &[
    BuiltinTemplate::ChatMl,
    BuiltinTemplate::Gemma,
    BuiltinTemplate::Llama3,
    BuiltinTemplate::Phi3,
    BuiltinTemplate::Zephyr,
];

/// C `isspace` trimming, as llama.cpp's `trim`.
fn trim(s: &str) -> &str {
    s.trim_matches(|c: char| matches!(c, ' ' | '\t' | '\n' | '\x0B' | '\x0C' | '\r'))
}

impl BuiltinTemplate {
    pub fn name(self) -> &'static str {
        match self {
            BuiltinTemplate::ChatMl => "chatml",
            BuiltinTemplate::Gemma => "gemma",
            BuiltinTemplate::Llama3 => "llama3",
            BuiltinTemplate::Phi3 => "phi3",
            BuiltinTemplate::Zephyr => "zephyr",
        }
    }

    /// The names of all built-in formats.
    pub fn names() -> Vec<&'static str> {
        ALL.iter().map(|t| t.name()).collect()
    }

    pub fn from_name(name: &str) -> Option<BuiltinTemplate> {
        ALL.iter().copied().find(|t| t.name() == name)
    }

    /// llama.cpp's `llm_chat_detect_template` for the formats we implement: a built-in name,
    /// or marker substrings of a Jinja source. `None` when the source matches none of them
    /// (or matches a format we do not implement, such as Phi-4 or SmolVLM).
    pub fn detect(source: &str) -> Option<BuiltinTemplate> {
        if let Some(t) = Self::from_name(source) {
            return Some(t);
        }
        let has = |s: &str| source.contains(s);
        if has("<|im_start|>") {
            return (!has("<|im_sep|>") && !has("<end_of_utterance>"))
                .then_some(BuiltinTemplate::ChatMl);
        }
        if source.starts_with("mistral") || has("[INST]") {
            return None;
        }
        if has("<|assistant|>") && has("<|end|>") {
            return Some(BuiltinTemplate::Phi3);
        }
        if has("[gMASK]<sop>") || (has("<|assistant|>") && has("<|user|>")) {
            return None;
        }
        if has("<|{{ item['role'] }}|>") && has("<|begin_of_image|>") {
            return None;
        }
        if has("<|user|>") && has("<|endoftext|>") {
            return Some(BuiltinTemplate::Zephyr);
        }
        if has("bos_token + message['role']") {
            return None;
        }
        if has("<start_of_turn>") {
            return Some(BuiltinTemplate::Gemma);
        }
        // Formats that llama.cpp tests before Llama 3's markers.
        let earlier = [
            has("'\\n\\nAssistant: ' + eos_token"),
            has("GPT4 Correct "),
            has("USER: ") && has("ASSISTANT: "),
            has("### Instruction:") && has("<|EOT|>"),
            has("<|START_OF_TURN_TOKEN|>") && has("<|USER_TOKEN|>"),
        ];
        if earlier.iter().any(|&b| b) {
            return None;
        }
        if has("<|start_header_id|>") && has("<|end_header_id|>") {
            return Some(BuiltinTemplate::Llama3);
        }
        None
    }

    /// Format `messages` as llama.cpp's `llm_chat_apply_template` does.
    pub fn apply(self, messages: &[ChatMessage], add_generation_prompt: bool) -> String {
        let mut s = String::new();
        match self {
            BuiltinTemplate::ChatMl => {
                for m in messages {
                    s += &format!("<|im_start|>{}\n{}<|im_end|>\n", m.role, m.content);
                }
                if add_generation_prompt {
                    s += "<|im_start|>assistant\n";
                }
            }
            BuiltinTemplate::Gemma => {
                // No system role: the system text is merged into the next user turn.
                let mut system = String::new();
                for m in messages {
                    if m.role == "system" {
                        system += trim(&m.content);
                        continue;
                    }
                    let role = if m.role == "assistant" {
                        "model"
                    } else {
                        m.role.as_str()
                    };
                    s += &format!("<start_of_turn>{role}\n");
                    if !system.is_empty() && role != "model" {
                        s += &system;
                        s += "\n\n";
                        system.clear();
                    }
                    s += trim(&m.content);
                    s += "<end_of_turn>\n";
                }
                if add_generation_prompt {
                    s += "<start_of_turn>model\n";
                }
            }
            BuiltinTemplate::Llama3 => {
                for m in messages {
                    s += &format!(
                        "<|start_header_id|>{}<|end_header_id|>\n\n{}<|eot_id|>",
                        m.role,
                        trim(&m.content)
                    );
                }
                if add_generation_prompt {
                    s += "<|start_header_id|>assistant<|end_header_id|>\n\n";
                }
            }
            BuiltinTemplate::Phi3 => {
                for m in messages {
                    s += &format!("<|{}|>\n{}<|end|>\n", m.role, m.content);
                }
                if add_generation_prompt {
                    s += "<|assistant|>\n";
                }
            }
            BuiltinTemplate::Zephyr => {
                for m in messages {
                    s += &format!("<|{}|>\n{}<|endoftext|>\n", m.role, m.content);
                }
                if add_generation_prompt {
                    s += "<|assistant|>\n";
                }
            }
        }
        s
    }
}
