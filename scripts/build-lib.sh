#!/usr/bin/env bash
# Builds libghostcore (shared + static) and prints the folder that holds them.
#
#   scripts/build-lib.sh [--release | --profile NAME]
#
# The test scripts use `--profile test` (opt-level 3, the profile `cargo test` builds the
# engine with, so nothing is compiled twice).
#
# The shared library's SONAME is libghostcore.so.<ABI>; a symlink of that name is made
# next to it so programs linked against it run with LD_LIBRARY_PATH=<folder>.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
profile=debug
cargo_args=()
case "${1:-}" in
  --release) profile=release; cargo_args+=(--release) ;;
  --profile)
    [ -n "${2:-}" ] || { echo "usage: $0 [--release | --profile NAME]" >&2; exit 2; }
    cargo_args+=(--profile "$2")
    case "$2" in dev | test) profile=debug ;; release | bench) profile=release ;; *) profile="$2" ;; esac
    ;;
  "") ;;
  *) echo "usage: $0 [--release | --profile NAME]" >&2; exit 2 ;;
esac
cd "$root"
cargo build -p ghostcore-ffi "${cargo_args[@]}" >&2
target_dir="${CARGO_TARGET_DIR:-$root/target}"
libdir="$target_dir/$profile"
abi="$(sed -n 's/^pub const GHOSTCORE_ABI_VERSION: u32 = \([0-9]*\);$/\1/p' ffi/src/version.rs)"
[ -n "$abi" ] || { echo "cannot read GHOSTCORE_ABI_VERSION from ffi/src/version.rs" >&2; exit 1; }
ln -sf libghostcore.so "$libdir/libghostcore.so.$abi"
echo "$libdir"
