//! include/ghostcore.h is generated from this crate by cbindgen and committed. This test
//! regenerates it and fails on any difference, so the header can never drift from the
//! library. `GHOSTCORE_BLESS=1` (or `scripts/check-header.sh --bless`) rewrites it.

use std::path::{Path, PathBuf};

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn generate_header() -> String {
    let dir = crate_dir();
    let config =
        cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("read cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_crate(&dir)
        .with_config(config)
        .generate()
        .expect("cbindgen failed to generate the header");
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).expect("header is UTF-8")
}

#[test]
fn committed_header_matches_sources() {
    let generated = generate_header();
    let path: PathBuf = crate_dir().join("..").join("include").join("ghostcore.h");
    if std::env::var("GHOSTCORE_BLESS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &generated).expect("write include/ghostcore.h");
        eprintln!("wrote {}", path.display());
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != generated {
        let first_diff = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(committed.lines().count().min(generated.lines().count()));
        panic!(
            "{} is out of date (first difference at line {}); run scripts/check-header.sh --bless \
             and commit the result",
            Path::new("include/ghostcore.h").display(),
            first_diff + 1
        );
    }
}

#[test]
fn header_declares_the_contract() {
    let header = generate_header();
    for name in [
        "GHOSTCORE_ABI_VERSION",
        "gc_abi_version",
        "gc_version",
        "gc_last_error",
        "GC_OK = 0",
        "GC_ERR_INVALID_ARG",
        "GC_ERR_INTERNAL",
        "gc_model_default_params",
        "gc_model_load",
        "gc_model_free",
        "gc_model_get_info",
        "gc_ctx_default_params",
        "gc_ctx_new",
        "gc_ctx_free",
        "gc_ctx_reset",
        "gc_mask_calibrate",
        "gc_mask_load",
        "gc_mask_save",
        "gc_mask_free",
        "gc_ctx_set_mask",
        "gc_ctx_set_sparsity",
        "gc_tokenize",
        "gc_token_to_piece",
        "gc_detokenize",
        "gc_generate_default_params",
        "gc_generate",
        "gc_decode",
        "gc_get_logits",
        "typedef struct gc_model gc_model;",
    ] {
        assert!(header.contains(name), "header lacks {name}");
    }
    // The ABI version macro and the SONAME come from the same constant (build.rs).
    let version_rs = std::fs::read_to_string(crate_dir().join("src/version.rs")).unwrap();
    let abi = version_rs
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("pub const GHOSTCORE_ABI_VERSION: u32 = ")
        })
        .and_then(|r| r.strip_suffix(';'))
        .expect("GHOSTCORE_ABI_VERSION in version.rs");
    assert!(header.contains(&format!("#define GHOSTCORE_ABI_VERSION {abi}")));
}
