//! Locating the real models that tests and benchmarks use.
//!
//! A model is looked for in `models/` at the workspace root, then in `../shared/models/`
//! beside the checkout (and in `$GHOSTCORE_MODELS_DIR` first, if set). Under CI (`CI=true`)
//! a missing model is a failure; elsewhere the caller skips and says why.

use std::path::{Path, PathBuf};

/// SmolLM2-135M-Instruct as published on PyPI (Q4_1).
pub const SMOLLM2_Q4_1: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// llama.cpp's Q4_K_M requantization of the above (the oracle file in ../shared/models).
pub const SMOLLM2_Q4_K_M: &str = "smollm2-135m-q4_k_m.gguf";
/// Gemma3-270M Q4_K_M as published on PyPI.
pub const GEMMA3_Q4_K_M: &str = "gemma-3-270m-q4_k_m.gguf";

/// The workspace root (the folder holding the top Cargo.toml).
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

/// Folders searched for models, in order.
pub fn model_dirs() -> Vec<PathBuf> {
    let root = workspace_root();
    let mut dirs = Vec::new();
    if let Ok(d) = std::env::var("GHOSTCORE_MODELS_DIR") {
        dirs.push(PathBuf::from(d));
    }
    dirs.push(root.join("models"));
    if let Some(parent) = root.parent() {
        dirs.push(parent.join("shared").join("models"));
    }
    dirs
}

pub fn running_in_ci() -> bool {
    std::env::var("CI")
        .map(|v| v == "true" || v == "1")
        .unwrap_or(false)
}

/// Find `file` in the model folders. `None` means "skip": a message saying why has been
/// printed. Under CI a missing model panics (the test fails).
pub fn find_model(file: &str) -> Option<PathBuf> {
    for d in model_dirs() {
        let p = d.join(file);
        if p.is_file() {
            return Some(p);
        }
    }
    let msg = format!(
        "model {file} not found in {:?}; run scripts/fetch-models.sh",
        model_dirs()
    );
    if running_in_ci() {
        panic!("CI=true and {msg}");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

/// The reference data copied from llama.cpp runs (tests/data/reference).
pub fn reference_dir() -> PathBuf {
    workspace_root()
        .join("tests")
        .join("data")
        .join("reference")
}

/// A Python interpreter with the oracle packages (gguf-py, numpy): `$GHOSTCORE_PYTHON`, else
/// `<workspace>/.venv/bin/python` (made by scripts/setup-venv.sh). `None` means skip (a
/// message was printed); under CI its absence panics.
pub fn python_oracle() -> Option<PathBuf> {
    let candidates = std::env::var("GHOSTCORE_PYTHON")
        .ok()
        .map(PathBuf::from)
        .into_iter()
        .chain(std::iter::once(workspace_root().join(".venv/bin/python")));
    for p in candidates {
        if p.is_file() {
            return Some(p);
        }
    }
    let msg = "no Python oracle (gguf-py); run scripts/setup-venv.sh or set GHOSTCORE_PYTHON";
    if running_in_ci() {
        panic!("CI=true and {msg}");
    }
    eprintln!("SKIPPED: {msg}");
    None
}
