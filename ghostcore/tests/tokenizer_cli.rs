//! `ghost tokenize` against llama-tokenize's recorded output
//! (`llama-tokenize -m MODEL -f FILE --ids --no-escape [--no-parse-special]`).

use std::process::Command;

use ghostcore::test_models::{find_model, reference_dir, GEMMA3_Q4_K_M, SMOLLM2_Q4_K_M};
use serde_json::Value;

fn run_ghost(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ghost"))
        .args(args)
        .output()
        .expect("run ghost");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn expected_ids_line(ids: &Value) -> String {
    let list: Vec<String> = ids
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap().to_string())
        .collect();
    format!("[{}]\n", list.join(", "))
}

#[test]
fn ids_output_matches_llama_tokenize() {
    for (file, json) in [
        (SMOLLM2_Q4_K_M, "tokenize_smollm2-135m-q4_k_m.json"),
        (GEMMA3_Q4_K_M, "tokenize_gemma-3-270m-q4_k_m.json"),
    ] {
        let Some(model) = find_model(file) else {
            continue;
        };
        let model = model.to_str().unwrap();
        let data: Value =
            serde_json::from_str(&std::fs::read_to_string(reference_dir().join(json)).unwrap())
                .unwrap();
        // A few cases cover the flags; the library test checks every case.
        for name in ["special_chatml", "special_gemma", "newlines_tabs", "emoji"] {
            let case = data["cases"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == name)
                .unwrap();
            let prompt = reference_dir().join(format!("prompts/{name}.txt"));
            let prompt = prompt.to_str().unwrap();
            let (ok, out, err) = run_ghost(&[
                "tokenize",
                "-m",
                model,
                "-f",
                prompt,
                "--ids",
                "--parse-special",
            ]);
            assert!(ok, "{err}");
            assert_eq!(
                out,
                expected_ids_line(&case["ids_parse_special"]),
                "{json} {name}"
            );
            let (ok, out, err) = run_ghost(&["tokenize", "-m", model, "-f", prompt, "--ids"]);
            assert!(ok, "{err}");
            assert_eq!(
                out,
                expected_ids_line(&case["ids_no_parse_special"]),
                "{json} {name}"
            );
        }
    }
}

#[test]
fn piece_lines_and_no_bos() {
    let Some(model) = find_model(GEMMA3_Q4_K_M) else {
        return;
    };
    let model = model.to_str().unwrap();
    // Gemma3 adds BOS (id 2); --no-bos drops it.
    let (ok, out, err) = run_ghost(&["tokenize", "-m", model, "-p", "Hello", "--ids"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("[2, "), "{out}");
    let (ok, out, _) = run_ghost(&["tokenize", "-m", model, "-p", "Hello", "--ids", "--no-bos"]);
    assert!(ok);
    assert!(!out.starts_with("[2, "), "{out}");
    let (ok, out, _) = run_ghost(&["tokenize", "-m", model, "-p", "Hello"]);
    assert!(ok);
    assert_eq!(out.lines().next().unwrap(), "     2 -> '<bos>'");
}

#[test]
fn bad_invocations_fail_cleanly() {
    let (ok, _, err) = run_ghost(&["tokenize", "-m", "/nonexistent.gguf", "-p", "x"]);
    assert!(!ok);
    assert!(err.contains("ghost: error"), "{err}");
    let Some(model) = find_model(SMOLLM2_Q4_K_M) else {
        return;
    };
    let (ok, _, err) = run_ghost(&["tokenize", "-m", model.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("-p TEXT or -f FILE"), "{err}");
}
