//! Chat templates: rendering a model's `tokenizer.chat_template` (Jinja, via minijinja) or
//! one of llama.cpp's built-in formats when the model has none.
//!
//! Jinja templates are rendered the way Hugging Face `apply_chat_template` does: with
//! `trim_blocks` and `lstrip_blocks`, the variables `messages`, `add_generation_prompt`,
//! `bos_token`, `eos_token`, the function `raise_exception`, and the Python string and dict
//! methods templates commonly call (`.strip()`, `.startswith()`, `.items()`, ...; see
//! [`python_method`]). Those methods are implemented here instead of pulling in
//! `minijinja-contrib`, which is not a workspace dependency.

mod builtin;

pub use builtin::BuiltinTemplate;

use std::collections::BTreeMap;

use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Environment, ErrorKind, State};

use crate::gguf::{Array, GgufFile};
use crate::{Error, Result};

/// One chat turn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

#[derive(Debug)]
enum Kind {
    Jinja {
        source: String,
        bos_token: String,
        eos_token: String,
    },
    Builtin(BuiltinTemplate),
}

/// A chat template ready to render conversations.
#[derive(Debug)]
pub struct ChatTemplate {
    kind: Kind,
}

impl ChatTemplate {
    /// The template a model's file describes: its `tokenizer.chat_template` if present,
    /// else a built-in format chosen by architecture: `gemma` for Gemma models (their own
    /// turn format; llama-cli itself would fall back to ChatML here), `chatml` otherwise.
    pub fn for_model(gguf: &GgufFile) -> Result<ChatTemplate> {
        if let Some(v) = gguf.get("tokenizer.chat_template") {
            let Some(source) = v.as_str() else {
                return Err(Error::Format(
                    "tokenizer.chat_template must be a string".into(),
                ));
            };
            let token = |key: &str| -> String {
                let texts = match gguf.get_array("tokenizer.ggml.tokens") {
                    Some(Array::String(t)) => t,
                    _ => return String::new(),
                };
                gguf.get_u64(key)
                    .and_then(|id| texts.get(id as usize))
                    .cloned()
                    .unwrap_or_default()
            };
            return ChatTemplate::from_jinja(
                source,
                &token("tokenizer.ggml.bos_token_id"),
                &token("tokenizer.ggml.eos_token_id"),
            );
        }
        let arch = gguf.architecture().unwrap_or("");
        Ok(ChatTemplate::builtin(if arch.starts_with("gemma") {
            BuiltinTemplate::Gemma
        } else {
            BuiltinTemplate::ChatMl
        }))
    }

    /// A Jinja template. Syntax errors are reported here, as [`Error::Format`].
    pub fn from_jinja(source: &str, bos_token: &str, eos_token: &str) -> Result<ChatTemplate> {
        environment()
            .template_from_str(source)
            .map_err(|e| Error::Format(format!("chat template does not parse: {e:#}")))?;
        Ok(ChatTemplate {
            kind: Kind::Jinja {
                source: source.to_string(),
                bos_token: bos_token.to_string(),
                eos_token: eos_token.to_string(),
            },
        })
    }

    pub fn builtin(t: BuiltinTemplate) -> ChatTemplate {
        ChatTemplate {
            kind: Kind::Builtin(t),
        }
    }

    /// A built-in format by llama.cpp name (`chatml`, `gemma`, ...).
    pub fn builtin_by_name(name: &str) -> Result<ChatTemplate> {
        match BuiltinTemplate::from_name(name) {
            Some(t) => Ok(ChatTemplate::builtin(t)),
            None => Err(Error::Unsupported(format!(
                "chat template '{name}' (built-in: {})",
                BuiltinTemplate::names().join(", ")
            ))),
        }
    }

    /// "jinja" or the built-in format's name.
    pub fn name(&self) -> &str {
        match &self.kind {
            Kind::Jinja { .. } => "jinja",
            Kind::Builtin(t) => t.name(),
        }
    }

    /// The built-in format llama.cpp's heuristics would use for this template
    /// (`llama_chat_apply_template` with the model's template string).
    pub fn detected_builtin(&self) -> Option<BuiltinTemplate> {
        match &self.kind {
            Kind::Jinja { source, .. } => BuiltinTemplate::detect(source),
            Kind::Builtin(t) => Some(*t),
        }
    }

    /// Render a conversation. `add_generation_prompt` appends the opening of an assistant
    /// turn. Template errors (including `raise_exception`) give [`Error::InvalidArgument`].
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        match &self.kind {
            Kind::Builtin(t) => Ok(t.apply(messages, add_generation_prompt)),
            Kind::Jinja {
                source,
                bos_token,
                eos_token,
            } => {
                let msgs: Vec<Value> = messages
                    .iter()
                    .map(|m| {
                        let mut map = BTreeMap::new();
                        map.insert("role".to_string(), Value::from(m.role.as_str()));
                        map.insert("content".to_string(), Value::from(m.content.as_str()));
                        Value::from(map)
                    })
                    .collect();
                let mut ctx = BTreeMap::new();
                ctx.insert("messages".to_string(), Value::from(msgs));
                ctx.insert(
                    "add_generation_prompt".to_string(),
                    Value::from(add_generation_prompt),
                );
                ctx.insert("bos_token".to_string(), Value::from(bos_token.as_str()));
                ctx.insert("eos_token".to_string(), Value::from(eos_token.as_str()));
                environment()
                    .render_str(source, Value::from(ctx))
                    .map_err(|e| Error::InvalidArgument(format!("chat template failed: {e:#}")))
            }
        }
    }
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_syntax(
        minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .expect("default delimiters are valid"),
    );
    env.add_function(
        "raise_exception",
        |msg: String| -> Result<Value, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
        },
    );
    env.set_unknown_method_callback(python_method);
    env
}

fn string_arg(args: &[Value], i: usize) -> Option<String> {
    args.get(i).and_then(|v| v.as_str()).map(str::to_string)
}

/// Python `str` and `dict` methods that chat templates call:
/// `strip/lstrip/rstrip([chars])`, `startswith/endswith(prefix)`, `upper`, `lower`,
/// `title`, `capitalize`, `replace(old, new)`, `split([sep])`, and on maps `items`, `keys`,
/// `values`, `get(key[, default])`.
pub fn python_method(
    state: &mut State,
    value: &Value,
    method: &str,
    args: &[Value],
) -> Result<Value, minijinja::Error> {
    let unknown = || Err(minijinja::Error::from(ErrorKind::UnknownMethod));
    let args: Vec<Value> = args
        .iter()
        .filter(|a| Kwargs::try_from(Value::clone(a)).is_err())
        .cloned()
        .collect();
    match value.kind() {
        ValueKind::String => {
            let s = value.as_str().unwrap_or_default();
            let chars = string_arg(&args, 0);
            let strip_set = |c: char| match &chars {
                Some(set) => set.contains(c),
                None => c.is_whitespace(),
            };
            Ok(match method {
                "strip" => Value::from(s.trim_matches(strip_set)),
                "lstrip" => Value::from(s.trim_start_matches(strip_set)),
                "rstrip" => Value::from(s.trim_end_matches(strip_set)),
                "startswith" => Value::from(chars.is_some_and(|p| s.starts_with(&p))),
                "endswith" => Value::from(chars.is_some_and(|p| s.ends_with(&p))),
                "upper" => Value::from(s.to_uppercase()),
                "lower" => Value::from(s.to_lowercase()),
                "capitalize" => {
                    let mut c = s.chars();
                    Value::from(match c.next() {
                        Some(f) => f
                            .to_uppercase()
                            .chain(c.flat_map(char::to_lowercase))
                            .collect(),
                        None => String::new(),
                    })
                }
                "title" => state.apply_filter("title", std::slice::from_ref(value))?,
                "replace" => match (string_arg(&args, 0), string_arg(&args, 1)) {
                    (Some(a), Some(b)) => Value::from(s.replace(&a, &b)),
                    _ => return unknown(),
                },
                "split" => match chars {
                    Some(sep) => s.split(sep.as_str()).map(Value::from).collect(),
                    None => s.split_whitespace().map(Value::from).collect(),
                },
                _ => return unknown(),
            })
        }
        ValueKind::Map => match method {
            "items" => state.apply_filter("items", std::slice::from_ref(value)),
            "keys" => Ok(value.try_iter()?.collect()),
            "values" => Ok(value
                .try_iter()?
                .map(|k| value.get_item(&k).unwrap_or_default())
                .collect()),
            "get" => {
                let key = args.first().cloned().unwrap_or_default();
                let found = value.get_item(&key).unwrap_or_default();
                Ok(if found.is_undefined() {
                    args.get(1).cloned().unwrap_or(Value::from(()))
                } else {
                    found
                })
            }
            _ => unknown(),
        },
        _ => unknown(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs() -> Vec<ChatMessage> {
        vec![
            ChatMessage::new("system", "  Be brief.  "),
            ChatMessage::new("user", "Hi"),
            ChatMessage::new("assistant", "Hello!"),
            ChatMessage::new("user", "Bye"),
        ]
    }

    /// Expected strings written out by hand from Jinja2 semantics with
    /// `trim_blocks`/`lstrip_blocks` (what transformers' `apply_chat_template` uses).
    #[test]
    fn jinja_python_methods_and_whitespace_control() {
        let src = "{% for m in messages %}\n  {% if m['role'] == 'system' %}\n[{{ m['content'].strip() }}]\n  {% elif m.content.startswith('H') %}\n{{ m.role.upper() }}:{{ m.content.lower() }};\n  {% else %}\n{{ m.content.replace('y', 'Y').split('Y') | join('+') }};\n  {% endif %}\n{% endfor %}\n{% if add_generation_prompt %}{{ bos_token }}|{{ eos_token }}{% endif %}";
        let t = ChatTemplate::from_jinja(src, "<s>", "</s>").unwrap();
        assert_eq!(
            t.render(&msgs(), true).unwrap(),
            "[Be brief.]\nUSER:hi;\nASSISTANT:hello!;\nB+e;\n<s>|</s>"
        );
        assert_eq!(
            t.render(&msgs(), false).unwrap(),
            "[Be brief.]\nUSER:hi;\nASSISTANT:hello!;\nB+e;\n"
        );
    }

    #[test]
    fn jinja_dict_methods() {
        let src = "{% for m in messages %}{% for k, v in m.items() %}{{ k }}={{ v }} {% endfor %}{{ m.get('name', 'anon') }}/{{ m.keys() | length }};{% endfor %}";
        let t = ChatTemplate::from_jinja(src, "", "").unwrap();
        assert_eq!(
            t.render(&[ChatMessage::new("user", "x")], false).unwrap(),
            "content=x role=user anon/2;"
        );
    }

    #[test]
    fn raise_exception_and_syntax_errors_are_typed() {
        let t = ChatTemplate::from_jinja(
            "{% if messages[0].role != 'user' %}{{ raise_exception('first must be user') }}{% endif %}ok",
            "",
            "",
        )
        .unwrap();
        assert_eq!(
            t.render(&[ChatMessage::new("user", "a")], true).unwrap(),
            "ok"
        );
        let e = t
            .render(&[ChatMessage::new("system", "a")], true)
            .unwrap_err();
        assert!(
            matches!(&e, Error::InvalidArgument(m) if m.contains("first must be user")),
            "{e}"
        );
        let e = ChatTemplate::from_jinja("{% for m in messages %}", "", "").unwrap_err();
        assert!(matches!(e, Error::Format(_)), "{e}");
    }

    /// llama.cpp's built-in formats, strings as its `llm_chat_apply_template` builds them.
    #[test]
    fn builtin_formats() {
        let gemma = ChatTemplate::builtin_by_name("gemma").unwrap();
        assert_eq!(
            gemma.render(&msgs(), true).unwrap(),
            "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
        );
        let chatml = ChatTemplate::builtin_by_name("chatml").unwrap();
        assert_eq!(
            chatml.render(&msgs()[1..2], false).unwrap(),
            "<|im_start|>user\nHi<|im_end|>\n"
        );
        let llama3 = ChatTemplate::builtin_by_name("llama3").unwrap();
        assert_eq!(
            llama3.render(&msgs()[..2], true).unwrap(),
            "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
        );
        assert!(matches!(
            ChatTemplate::builtin_by_name("nope"),
            Err(Error::Unsupported(m)) if m.contains("chatml")
        ));
    }

    #[test]
    fn detection_follows_llama_cpp_markers() {
        use BuiltinTemplate as B;
        assert_eq!(B::detect("{{ '<|im_start|>' + m }}"), Some(B::ChatMl));
        assert_eq!(B::detect("<|im_start|><|im_sep|>"), None); // phi4
        assert_eq!(B::detect("{{ '<start_of_turn>' }}"), Some(B::Gemma));
        assert_eq!(
            B::detect("<|start_header_id|>x<|end_header_id|>"),
            Some(B::Llama3)
        );
        assert_eq!(B::detect("<|user|><|endoftext|>"), Some(B::Zephyr));
        assert_eq!(B::detect("<|assistant|><|end|>"), Some(B::Phi3));
        assert_eq!(B::detect("[INST]"), None);
        assert_eq!(B::detect("gemma"), Some(B::Gemma));
    }
}
