//! The BPE pre-tokenizer cascades against Python's `regex` module (the engine Hugging Face
//! tokenizer patterns are written for) on seeded random multilingual strings.
//!
//! Needs a Python with `regex` installed: `$GHOSTCORE_REGEX_PYTHON`, else the project oracle
//! Python (`$GHOSTCORE_PYTHON` / .venv). Skips with a message when `import regex` fails
//! (the project venv does not install it).

use std::collections::HashMap;
use std::process::Command;

use ghostcore::test_models::python_oracle;
use ghostcore::tokenizer::pretokenize::PreTokenizer;
use serde_json::Value;

const SCRIPT: &str = r##"
import json, random, sys
import regex
GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
LLAMA3 = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2 = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
CASCADES = {"gpt-2": [GPT2], "llama3": [LLAMA3], "qwen2": [QWEN2], "smollm": [r"\p{N}", GPT2],
            "default": [r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"]}
def split(text, pats):
    pieces = [(0, len(text))]
    for p in pats:
        r = regex.compile(p)
        nxt = []
        for a, b in pieces:
            sub = text[a:b]
            last = 0
            for m in r.finditer(sub):
                if m.start() > last:
                    nxt.append((a + last, a + m.start()))
                if m.end() > m.start():
                    nxt.append((a + m.start(), a + m.end()))
                last = m.end()
            if last < len(sub):
                nxt.append((a + last, b))
        pieces = nxt
    return [text[a:b] for a, b in pieces]
frags = ["a", "The", " word", "Hello", "'s", "'S", "'ll", "'RE", "x1", "42", "12345", "3.14",
         " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n", "\u00a0", "\u3000", "\u2009",
         ".", ",", "!?", "...", "(", ")", "<", ">", "$", "+", "^", "|", "~", "`", "@", "#", "_",
         "-", "\u2014", "\u2026", "\u00ab", "\u00bb", "\u00e9", "\u00f1", "\u00df", "e\u0301",
         "\u0395\u03bb\u03bb", "\u0440\u0443\u0441", "\u4e2d\u6587", "\u65e5\u672c", "\ud55c\uad6d",
         "\u0627\u0644\u0639", "\u0939\u093f\u0928", "\u0e44\u0e17\u0e22", "\U0001F600",
         "\U0001F44D\U0001F3FD", "\U0001F468\u200d\U0001F469", "\U0001F1EB\U0001F1F7",
         "\u00b2", "\u00bd", "\u216b", "\u0663", "\u200b", "\u0000", "\u007f", "\ue000"]
random.seed(int(sys.argv[1]))
cases = []
for i in range(int(sys.argv[2])):
    t = "".join(random.choice(frags) for _ in range(random.randint(0, 20)))
    for name, pats in CASCADES.items():
        cases.append({"pre": name, "text": t, "words": split(t, pats)})
json.dump(cases, sys.stdout)
"##;

#[test]
fn pre_tokenizers_match_python_regex() {
    let python = match std::env::var("GHOSTCORE_REGEX_PYTHON") {
        Ok(p) => p.into(),
        Err(_) => match python_oracle() {
            Some(p) => p,
            None => return,
        },
    };
    let out = Command::new(&python)
        .args(["-c", SCRIPT, "1234", "2000"])
        .output()
        .expect("run python");
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("No module named 'regex'") {
            eprintln!("SKIPPED: {python:?} has no `regex` module (set GHOSTCORE_REGEX_PYTHON)");
            return;
        }
        panic!("oracle script failed: {err}");
    }
    let cases: Value = serde_json::from_slice(&out.stdout).expect("oracle JSON");
    let mut pres: HashMap<String, PreTokenizer> = HashMap::new();
    let mut failures = Vec::new();
    let cases = cases.as_array().unwrap();
    for c in cases {
        let name = c["pre"].as_str().unwrap();
        let pre = pres
            .entry(name.to_string())
            .or_insert_with(|| PreTokenizer::from_name(name).unwrap());
        let text = c["text"].as_str().unwrap();
        let got: Vec<&str> = pre
            .split(text)
            .unwrap()
            .into_iter()
            .map(|(a, b)| &text[a..b])
            .collect();
        let want: Vec<&str> = c["words"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_str().unwrap())
            .collect();
        if got != want {
            failures.push(format!("{name} {text:?}\n  got  {got:?}\n  want {want:?}"));
        }
    }
    assert!(cases.len() >= 10_000);
    assert!(
        failures.is_empty(),
        "{} of {} differ:\n{}",
        failures.len(),
        cases.len(),
        failures[..failures.len().min(10)].join("\n")
    );
}
