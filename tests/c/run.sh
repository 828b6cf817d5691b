#!/usr/bin/env bash
# The C-level test suite of libghostcore:
#  - ghostcore.h compiles as strict C99 and as C++11 (-Wall -Wextra -Werror -pedantic);
#  - the header is what cbindgen generates (scripts/check-header.sh), and the functions it
#    declares are exactly the library's exported gc_* symbols;
#  - libghostcore.so has SONAME libghostcore.so.<GHOSTCORE_ABI_VERSION>;
#  - threads.c: one model shared by contexts on several threads; a busy context rejects
#    calls from another thread;
#  - sparsity.c: mask calibration, save/load, sparsity modes and the sparsity achieved,
#    path-cost tuning (gc_ctx_tune_path_costs);
#  - tokenization through the C ABI equals llama.cpp's (tokenize_reference.py);
#  - abi_errors (every export with NULL/invalid arguments) passes linked shared, linked
#    static, and under valgrind with no leaks or errors;
#  - scripts/install-lib.sh installs a tree that pkg-config builds against.
# Prints "c-abi: N passed, N failed, N skipped"; exits non-zero on any failure.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$root"

cflags=(-std=c99 -Wall -Wextra -Werror -pedantic -I"$root/include")
cxxflags=(-std=c++11 -Wall -Wextra -Werror -pedantic -I"$root/include")
model="$(find_model smollm2-135m-q4_k_m.gguf || true)"
if [ -z "$model" ]; then
  skip "model lookup" "smollm2-135m-q4_k_m.gguf not in models/ or ../shared/models/"
fi

if ! libdir="$(scripts/build-lib.sh --profile test 2>"$logdir/build.log")"; then
  cat "$logdir/build.log"
  echo "c-abi: 0 passed, 1 failed, 0 skipped"
  exit 1
fi
abi="$(sed -n 's/^pub const GHOSTCORE_ABI_VERSION: u32 = \([0-9]*\);$/\1/p' ffi/src/version.rs)"
bin="$logdir/bin"
mkdir -p "$bin"

step "header compiles as C99" cc "${cflags[@]}" -c tests/c/header_c99.c -o "$bin/h99.o"
if command -v c++ >/dev/null; then
  step "header compiles as C++11" c++ "${cxxflags[@]}" -c tests/c/header_cpp.cpp -o "$bin/hcpp.o"
else
  skip "header compiles as C++11" "no C++ compiler"
fi
step "header is in sync with ffi/ (cbindgen)" scripts/check-header.sh

exports_match_header() {
  local declared exported
  declared="$(grep -oE '\bgc_[a-z_]+\(' include/ghostcore.h | tr -d '(' | sort -u)"
  exported="$(nm -D --defined-only "$libdir/libghostcore.so" | awk '{print $3}' | grep '^gc_' | sort -u)"
  if [ "$declared" != "$exported" ]; then
    diff <(echo "$declared") <(echo "$exported")
    return 1
  fi
  # abi_errors.c must exercise every export.
  local f missing=0
  for f in $exported; do
    grep -q "\b$f\b" tests/c/abi_errors.c || { echo "abi_errors.c does not call $f"; missing=1; }
  done
  return $missing
}
step "exported gc_* symbols == header declarations, all tested" exports_match_header

soname_is_abi() {
  readelf -d "$libdir/libghostcore.so" | grep -F "Library soname: [libghostcore.so.$abi]"
}
step "SONAME is libghostcore.so.$abi" soname_is_abi

model_args=()
[ -n "$model" ] && model_args=("$model")
step "abi_errors builds (shared)" cc "${cflags[@]}" tests/c/abi_errors.c -L"$libdir" -lghostcore -o "$bin/abi_errors"
step "abi_errors passes (shared)" env LD_LIBRARY_PATH="$libdir" "$bin/abi_errors" "${model_args[@]}"
step "abi_errors builds (static)" cc "${cflags[@]}" tests/c/abi_errors.c "$libdir/libghostcore.a" \
  -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc -o "$bin/abi_errors_static"
step "abi_errors passes (static)" "$bin/abi_errors_static" "${model_args[@]}"
if command -v valgrind >/dev/null; then
  step "abi_errors under valgrind: no leaks, no errors" env LD_LIBRARY_PATH="$libdir" \
    valgrind -q --leak-check=full --errors-for-leak-kinds=definite,indirect,possible \
    --suppressions="$root/tests/c/valgrind.supp" \
    --error-exitcode=99 "$bin/abi_errors" "${model_args[@]}"
else
  skip "abi_errors under valgrind" "valgrind not installed (scripts/install-example-deps.sh)"
fi

if [ -n "$model" ]; then
  step "threads test builds" cc "${cflags[@]}" -D_POSIX_C_SOURCE=200809L tests/c/threads.c \
    -L"$libdir" -lghostcore -lpthread -o "$bin/threads"
  step "threads: one model on many threads; a busy context is rejected" \
    env LD_LIBRARY_PATH="$libdir" "$bin/threads" "$model"
fi

if [ -n "$model" ]; then
  other_model="$(find_model gemma-3-270m-q4_k_m.gguf || true)"
  step "sparsity test builds" cc "${cflags[@]}" tests/c/sparsity.c -L"$libdir" -lghostcore \
    -o "$bin/sparsity"
  step "sparsity: calibrate/save/load masks, modes, achieved sparsity, path-cost tuning" \
    env LD_LIBRARY_PATH="$libdir" XDG_CACHE_HOME="$logdir/cache" \
    "$bin/sparsity" "$model" tests/data/sparsity/calibration-corpus.txt "$logdir" $other_model
fi

if command -v python3 >/dev/null; then
  model_dirs=()
  for d in "${GHOSTCORE_MODELS_DIR:-}" "$root/models" "$root/../shared/models"; do
    [ -n "$d" ] && [ -d "$d" ] && model_dirs+=("$d")
  done
  if [ ${#model_dirs[@]} -gt 0 ]; then
    step "tokenization through the C ABI == llama.cpp (tokenize_reference.py)" \
      env GHOSTCORE_LIB="$libdir/libghostcore.so" python3 tests/c/tokenize_reference.py "${model_dirs[@]}"
  else
    skip "tokenize_reference.py" "no model folder"
  fi
else
  skip "tokenize_reference.py" "python3 not installed"
fi

install_and_pkg_config() {
  local prefix="$logdir/prefix"
  scripts/install-lib.sh "$prefix" --debug >/dev/null || return 1
  test -f "$prefix/include/ghostcore.h" && test -f "$prefix/lib/libghostcore.a" || return 1
  test -L "$prefix/lib/libghostcore.so.$abi" || return 1
  export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
  # shellcheck disable=SC2046
  cc -std=c99 examples/c/simple.c $(pkg-config --cflags --libs ghostcore) -o "$bin/simple_pc" || return 1
  LD_LIBRARY_PATH="$prefix/lib" ldd "$bin/simple_pc" | grep -F "libghostcore.so.$abi => $prefix/lib/" || return 1
  # shellcheck disable=SC2046
  cc -std=c99 examples/c/simple.c -static-libgcc $(pkg-config --cflags ghostcore) \
    "$prefix/lib/libghostcore.a" $(pkg-config --static --libs-only-l ghostcore | sed 's/-lghostcore//') \
    -o "$bin/simple_static" || return 1
  ! ldd "$bin/simple_static" | grep -q ghostcore
}
if command -v pkg-config >/dev/null; then
  step "install-lib.sh + pkg-config (shared and static link)" install_and_pkg_config
else
  skip "install-lib.sh + pkg-config" "pkg-config not installed"
fi

summary "c-abi"
