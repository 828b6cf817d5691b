//! `ghost quantize` end to end: the file it writes for SmolLM2 Q4_1 → q4_k_m has the
//! sha256 of llama-quantize's output (scripts/fetch-models.sh / models.md), and bad
//! arguments give an error exit, not a panic.

use std::process::Command;

use ghostcore::test_models::{find_model, SMOLLM2_Q4_1};
use sha2::{Digest, Sha256};

/// sha256 of /work/shared/models/smollm2-135m-q4_k_m.gguf (llama.cpp 0c1e57098,
/// `llama-quantize --allow-requantize SmolLM2-135M-Instruct.Q4_1.gguf OUT Q4_K_M`).
const LLAMA_QUANTIZE_SHA256: &str =
    "dc0f3a02e821146247a0af6895adf9872124f368682cb110cb9ed09ff2a9f9f1";

fn ghost() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ghost"))
}

#[test]
fn cli_output_has_llama_quantize_sha256() {
    let Some(input) = find_model(SMOLLM2_Q4_1) else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("ghost-quantize-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("smollm2-q4_k_m.gguf");
    let status = ghost()
        .args(["quantize", "--quiet", "--threads", "2"])
        .arg(&input)
        .arg(&out)
        .arg("q4_k_m")
        .status()
        .unwrap();
    assert!(status.success());
    let bytes = std::fs::read(&out).unwrap();
    let digest: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(digest, LLAMA_QUANTIZE_SHA256);
    // Nothing else left behind (the atomic write's temporary file is gone).
    let entries: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(entries.len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cli_rejects_bad_arguments() {
    let dir = std::env::temp_dir().join(format!("ghost-quantize-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("missing.gguf");
    let out = dir.join("out.gguf");
    for (ftype, input, expect) in [
        ("q4_k_m", missing.as_path(), "No such file"),
        ("q9_z", missing.as_path(), "unknown quantization type"),
    ] {
        let res = ghost()
            .args(["quantize", "--quiet"])
            .arg(input)
            .arg(&out)
            .arg(ftype)
            .output()
            .unwrap();
        assert_eq!(res.status.code(), Some(1), "{ftype}");
        let err = String::from_utf8_lossy(&res.stderr);
        assert!(err.contains(expect), "{ftype}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // A file that is not GGUF.
    let junk = dir.join("junk.gguf");
    std::fs::write(&junk, b"definitely not a gguf file").unwrap();
    let res = ghost()
        .args(["quantize", "--quiet"])
        .arg(&junk)
        .arg(&out)
        .arg("q8_0")
        .output()
        .unwrap();
    assert_eq!(res.status.code(), Some(1));
    assert!(!out.exists());
    let _ = std::fs::remove_dir_all(&dir);
}
