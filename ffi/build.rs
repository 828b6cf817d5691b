//! Gives libghostcore.so the SONAME `libghostcore.so.<ABI>`, where ABI is the
//! `GHOSTCORE_ABI_VERSION` constant of src/version.rs (the one source of that number).

use std::fs;

fn main() {
    println!("cargo:rerun-if-changed=src/version.rs");
    let source = fs::read_to_string("src/version.rs").expect("read src/version.rs");
    let abi = abi_version(&source)
        .expect("src/version.rs must contain `pub const GHOSTCORE_ABI_VERSION: u32 = <number>;`");
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if target_os == "linux" || target_os == "freebsd" {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libghostcore.so.{abi}");
    }
}

/// The number in `pub const GHOSTCORE_ABI_VERSION: u32 = N;`.
fn abi_version(source: &str) -> Option<u32> {
    source.lines().find_map(|line| {
        let rest = line
            .trim()
            .strip_prefix("pub const GHOSTCORE_ABI_VERSION: u32 =")?;
        rest.trim().strip_suffix(';')?.trim().parse().ok()
    })
}
