//! ABI and library versions.

use std::ffi::c_char;

/// The ABI version this header describes. It changes only when an existing function,
/// struct field or constant changes meaning or layout (appending fields to a params struct
/// does not change it; see struct_size). Compare it with gc_abi_version() at start-up
/// and refuse to run on a mismatch. The shared library's SONAME is
/// libghostcore.so.<GHOSTCORE_ABI_VERSION>.
pub const GHOSTCORE_ABI_VERSION: u32 = 1;

/// Returns the ABI version of the loaded library (GHOSTCORE_ABI_VERSION of the header it
/// was built from).
#[no_mangle]
pub extern "C" fn gc_abi_version() -> u32 {
    GHOSTCORE_ABI_VERSION
}

/// Returns the library version ("MAJOR.MINOR.PATCH") as a static string. Never NULL.
#[no_mangle]
pub extern "C" fn gc_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}
