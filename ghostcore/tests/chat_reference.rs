//! Chat templates against llama.cpp's rendering of the reference chat prompts
//! (tests/data/reference/greedy_*.json, case "chat", and prompts/gen_chat_*_rendered.txt).

use ghostcore::chat::{BuiltinTemplate, ChatMessage, ChatTemplate};
use ghostcore::gguf::GgufFile;
use ghostcore::test_models::{
    find_model, reference_dir, GEMMA3_Q4_K_M, SMOLLM2_Q4_1, SMOLLM2_Q4_K_M,
};
use ghostcore::tokenizer::Tokenizer;
use serde_json::Value;

struct ChatCase {
    messages: Vec<ChatMessage>,
    template_used: String,
    rendered: String,
    prompt_ids: Vec<u32>,
}

fn chat_case(model_stem: &str) -> ChatCase {
    let dir = reference_dir();
    let json: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join(format!("greedy_{model_stem}.json"))).unwrap(),
    )
    .unwrap();
    let case = json["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["chat"].as_bool() == Some(true))
        .expect("a chat case");
    let messages = case["chat_messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| ChatMessage::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect();
    let rendered =
        std::fs::read_to_string(dir.join(format!("prompts/gen_chat_{model_stem}_rendered.txt")))
            .unwrap();
    assert_eq!(rendered, case["prompt_text"].as_str().unwrap());
    ChatCase {
        messages,
        template_used: case["chat_template_used"].as_str().unwrap().to_string(),
        rendered,
        prompt_ids: case["prompt_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect(),
    }
}

/// Render with the model's own template, compare with llama.cpp's text, then tokenize with
/// special parsing and compare with llama.cpp's prompt ids.
fn check_model(file: &str, model_stem: &str, expect_name: &str) {
    let Some(path) = find_model(file) else { return };
    let gguf = GgufFile::open(&path).unwrap();
    let case = chat_case(model_stem);
    let template = ChatTemplate::for_model(&gguf).unwrap();
    assert_eq!(template.name(), expect_name, "{}", case.template_used);
    let text = template.render(&case.messages, true).unwrap();
    assert_eq!(text, case.rendered, "{file}: rendered prompt");
    let tok = Tokenizer::from_gguf(&gguf).unwrap();
    assert_eq!(
        tok.encode(&text, true, true).unwrap(),
        case.prompt_ids,
        "{file}: prompt ids"
    );
}

#[test]
fn smollm2_metadata_template_renders_like_llama_cpp() {
    check_model(SMOLLM2_Q4_K_M, "smollm2-135m-q4_k_m", "jinja");
}

/// llama.cpp rendered SmolLM2's prompt with its built-in ChatML formatter (it detected the
/// metadata template as chatml); our detection agrees and the built-in gives the same text.
#[test]
fn smollm2_template_is_detected_as_chatml() {
    let Some(path) = find_model(SMOLLM2_Q4_1) else {
        return;
    };
    let gguf = GgufFile::open(&path).unwrap();
    let case = chat_case("smollm2-135m-q4_k_m");
    assert!(
        case.template_used.contains("chatml"),
        "{}",
        case.template_used
    );
    let template = ChatTemplate::for_model(&gguf).unwrap();
    assert_eq!(template.detected_builtin(), Some(BuiltinTemplate::ChatMl));
    let builtin = ChatTemplate::builtin(BuiltinTemplate::ChatMl);
    assert_eq!(builtin.render(&case.messages, true).unwrap(), case.rendered);
}

/// Gemma3's file has no template; llama.cpp's built-in `gemma` format was used.
#[test]
fn gemma3_builtin_template_renders_like_llama_cpp() {
    let case = chat_case("gemma-3-270m-q4_k_m");
    assert!(
        case.template_used.contains("'gemma'"),
        "{}",
        case.template_used
    );
    check_model(GEMMA3_Q4_K_M, "gemma-3-270m-q4_k_m", "gemma");
}
