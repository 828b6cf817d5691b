#!/usr/bin/env bash
# Checks that include/ghostcore.h is what cbindgen generates from ffi/ (CI runs this and
# fails on any diff). With --bless, rewrites the header instead; commit the result.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
case "${1:-}" in
  --bless) GHOSTCORE_BLESS=1 cargo test -p ghostcore-ffi --test header_sync ;;
  "") cargo test -p ghostcore-ffi --test header_sync ;;
  *) echo "usage: $0 [--bless]" >&2; exit 2 ;;
esac
