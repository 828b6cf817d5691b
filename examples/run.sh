#!/usr/bin/env bash
# Builds and runs every example (C, C++, Python, Go, C#, Swift) against libghostcore with
# the real model, greedy, on the prompt "The capital of France is":
#  - the C example runs under valgrind (--leak-check=full) with no leaks and no errors;
#  - its generated text starts with llama.cpp's greedy continuation for that prompt
#    (tests/data/reference/greedy_smollm2-135m-q4_k_m.json, first two tokens);
#  - every other language prints exactly what the C example printed.
# A missing toolchain is skipped locally; under CI=true scripts/install-example-deps.sh is
# run first and a skip is a failure (Swift excepted: no Debian toolchain).
# Prints "examples: N passed, N failed, N skipped"; exits non-zero on any failure.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../tests/c/common.sh"
cd "$root"

if in_ci; then
  scripts/install-example-deps.sh || echo "warning: scripts/install-example-deps.sh failed"
fi
if ! libdir="$(scripts/build-lib.sh --profile test 2>"$logdir/build.log")"; then
  cat "$logdir/build.log"
  echo "examples: 0 passed, 1 failed, 0 skipped"
  exit 1
fi
export LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
bin="$logdir/bin"
mkdir -p "$bin"
prompt="The capital of France is"
n_predict=16
model="$(find_model smollm2-135m-q4_k_m.gguf || true)"

# The first two greedy pieces llama.cpp produced for the prompt.
expected_prefix="$(python3 - "$root/tests/data/reference/greedy_smollm2-135m-q4_k_m.json" <<'PY' 2>/dev/null
import json, sys
case = next(c for c in json.load(open(sys.argv[1]))["cases"] if c["name"] == "capital_france")
sys.stdout.write("".join(bytes.fromhex(h).decode() for h in case["generated_pieces_hex"][:2]))
PY
)"

# run_example NAME CMD...: runs CMD (the example), keeps its stdout in $bin/NAME.out.
run_example() {
  local name="$1"
  shift
  if "$@" >"$bin/$name.out" 2>"$bin/$name.err"; then
    cat "$bin/$name.err"
    return 0
  fi
  cat "$bin/$name.err" "$bin/$name.out"
  return 1
}

generated_like_llama_cpp() {
  local out
  out="$(cat "$bin/c.out")"
  [ -n "$expected_prefix" ] || { echo "cannot read the llama.cpp reference"; return 1; }
  case "$out" in
    "$prompt$expected_prefix"*) echo "C example: $out" ;;
    *) echo "expected \"$prompt$expected_prefix...\", got \"$out\""; return 1 ;;
  esac
}

same_as_c() {
  if ! cmp -s "$bin/c.out" "$bin/$1.out"; then
    diff "$bin/c.out" "$bin/$1.out"
    return 1
  fi
}

# check_run NAME: after run_example, the output checks that apply.
check_run() {
  local name="$1"
  if [ "$name" = c ]; then
    step "C example matches llama.cpp's greedy text" generated_like_llama_cpp
  elif [ -s "$bin/c.out" ]; then
    step "$name example prints what the C example prints" same_as_c "$name"
  fi
}

if [ -z "$model" ]; then
  skip "all examples" "smollm2-135m-q4_k_m.gguf not in models/ or ../shared/models/"
  summary "examples"
  exit $?
fi
args=(-m "$model" -n "$n_predict" "$prompt")

# C, under valgrind.
cflags=(-std=c99 -Wall -Wextra -Werror -pedantic -I"$root/include")
step "C example builds" cc "${cflags[@]}" examples/c/simple.c -L"$libdir" -lghostcore -o "$bin/simple_c"
if command -v valgrind >/dev/null; then
  step "C example runs under valgrind (no leaks, no errors)" run_example c \
    valgrind -q --leak-check=full --errors-for-leak-kinds=definite,indirect,possible \
    --suppressions="$root/tests/c/valgrind.supp" \
    --error-exitcode=99 "$bin/simple_c" "${args[@]}"
else
  skip "C example under valgrind" "valgrind not installed"
  step "C example runs" run_example c "$bin/simple_c" "${args[@]}"
fi
check_run c
sparse_c_example() {
  "$bin/simple_c" "${args[@]:0:4}" --sparsity gate:0.05 "$prompt" >"$bin/c_sparse.out" 2>"$bin/c_sparse.err" || {
    cat "$bin/c_sparse.err"
    return 1
  }
  cat "$bin/c_sparse.err" "$bin/c_sparse.out"
  grep -qE "FFN sparsity [0-9.]+%" "$bin/c_sparse.err" && ! grep -q "FFN sparsity 0.0%" "$bin/c_sparse.err"
}
step "C example with --sparsity gate:0.05 skips FFN neurons" sparse_c_example

# C++ (RAII wrapper).
if command -v c++ >/dev/null; then
  step "C++ example builds" c++ -std=c++11 -Wall -Wextra -Werror -pedantic -I"$root/include" \
    examples/cpp/main.cpp -L"$libdir" -lghostcore -o "$bin/simple_cpp"
  step "C++ example runs" run_example cpp "$bin/simple_cpp" "${args[@]}"
  check_run cpp
else
  skip "C++ example" "no C++ compiler"
fi

# Python (ctypes).
if command -v python3 >/dev/null; then
  step "Python example runs" run_example python env GHOSTCORE_LIB="$libdir/libghostcore.so" \
    python3 examples/python/simple.py "${args[@]}"
  check_run python
else
  skip "Python example" "python3 not installed"
fi

# Go (cgo).
if command -v go >/dev/null; then
  export GOCACHE="${GOCACHE:-$logdir/gocache}" GOFLAGS="${GOFLAGS:-} -mod=mod" GO111MODULE=on
  step "Go example builds" env CGO_ENABLED=1 CGO_LDFLAGS="-L$libdir" \
    sh -c "cd examples/go && go vet . && go build -o '$bin/simple_go' ."
  step "Go example runs" run_example go "$bin/simple_go" "${args[@]}"
  check_run go
else
  skip "Go example" "go not installed (scripts/install-example-deps.sh)"
fi

# C# (P/Invoke on Mono).
if command -v mcs >/dev/null && command -v mono >/dev/null; then
  step "C# example builds" mcs -warnaserror -out:"$bin/simple.exe" examples/csharp/Simple.cs
  step "C# example runs" run_example csharp mono "$bin/simple.exe" "${args[@]}"
  check_run csharp
else
  skip "C# example" "mcs/mono not installed (scripts/install-example-deps.sh)"
fi

# Swift (no toolchain in Debian: built only where one exists).
if command -v swift >/dev/null; then
  swift_prefix="$logdir/prefix"
  step "Swift example builds" sh -c "scripts/install-lib.sh '$swift_prefix' --debug >/dev/null &&
    cd examples/swift && PKG_CONFIG_PATH='$swift_prefix/lib/pkgconfig' swift build \
    --scratch-path '$logdir/swift-build' -Xlinker -L'$swift_prefix/lib'"
  step "Swift example runs" run_example swift "$logdir/swift-build/debug/simple" "${args[@]}"
  check_run swift
else
  n_skip=$((n_skip + 1))
  echo "SKIPPED Swift example: no swift toolchain on this machine (see examples/swift/README.md)"
fi

summary "examples"
