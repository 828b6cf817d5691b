#!/usr/bin/env bash
# Installs libghostcore for C (and other-language) users:
#
#   scripts/install-lib.sh PREFIX [--debug]
#
#   PREFIX/include/ghostcore.h
#   PREFIX/lib/libghostcore.so.<VERSION>, libghostcore.so.<ABI> -> it, libghostcore.so -> .<ABI>
#   PREFIX/lib/libghostcore.a
#   PREFIX/lib/pkgconfig/ghostcore.pc
#
# Builds the release profile unless --debug. Then:
#   PKG_CONFIG_PATH=PREFIX/lib/pkgconfig cc app.c $(pkg-config --cflags --libs ghostcore)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[ $# -ge 1 ] || { echo "usage: $0 PREFIX [--debug]" >&2; exit 2; }
prefix="$1"
build_args=(--release)
[ "${2:-}" = "--debug" ] && build_args=()
case "$prefix" in /*) ;; *) prefix="$(pwd)/$prefix" ;; esac

libdir_built="$("$root/scripts/build-lib.sh" "${build_args[@]}")"
abi="$(sed -n 's/^pub const GHOSTCORE_ABI_VERSION: u32 = \([0-9]*\);$/\1/p' "$root/ffi/src/version.rs")"
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml" | head -n1)"
[ -n "$abi" ] && [ -n "$version" ] || { echo "cannot read ABI/version" >&2; exit 1; }
# What a static link needs besides libghostcore.a (rustc's native-static-libs on Linux/glibc).
native_static_libs="-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc"

install -d "$prefix/include" "$prefix/lib/pkgconfig"
install -m 0644 "$root/include/ghostcore.h" "$prefix/include/ghostcore.h"
install -m 0755 "$libdir_built/libghostcore.so" "$prefix/lib/libghostcore.so.$version"
ln -sfn "libghostcore.so.$version" "$prefix/lib/libghostcore.so.$abi"
ln -sfn "libghostcore.so.$abi" "$prefix/lib/libghostcore.so"
install -m 0644 "$libdir_built/libghostcore.a" "$prefix/lib/libghostcore.a"
sed -e "s|@PREFIX@|$prefix|" -e "s|@VERSION@|$version|" \
    -e "s|@NATIVE_STATIC_LIBS@|$native_static_libs|" \
    "$root/ffi/ghostcore.pc.in" > "$prefix/lib/pkgconfig/ghostcore.pc"
echo "installed libghostcore $version (ABI $abi) into $prefix"
