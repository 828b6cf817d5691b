#!/usr/bin/env bash
# Build llama.cpp's `llama-bench` (CPU only, Release, native ISA) from the llama.cpp source
# vendored in the llama-cpp-python sdist. Everything lands under bench/tmp/ (git-ignored).
#
# Usage: bench/llamacpp/build.sh            -> prints the path of the llama-bench binary
# Env:   LLAMACPP_PY_VERSION (default 0.3.36), BUILD_JOBS (default 2)
#
# The build is cached: a rerun with the same version finds the binary and skips the build.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
version=${LLAMACPP_PY_VERSION:-0.3.36}
jobs=${BUILD_JOBS:-2}
tmp="$repo_root/bench/tmp"
tools="$tmp/tools"          # pip --target dir holding cmake (+ ninja)
dl="$tmp/sdist"
src="$tmp/llama-cpp-python-$version"
build="$tmp/llamacpp-build-$version"
bin="$build/bin/llama-bench"

log() { echo "[llamacpp/build] $*" >&2; }

if [[ -x "$bin" ]]; then
    log "cached: $bin"
    echo "$bin"
    exit 0
fi

mkdir -p "$tmp" "$dl"

# 1. Build tools from PyPI into a private target folder: cmake and ninja for the build, and
#    scikit-build-core (llama-cpp-python's build backend), which `pip download` imports to read
#    the sdist's metadata. Without it, pip would set up an isolated build environment and,
#    under --no-binary :all:, compile cmake itself from source.
if [[ ! -x "$tools/bin/cmake" || ! -d "$tools/scikit_build_core" ]]; then
    log "installing cmake, ninja, scikit-build-core from PyPI into $tools"
    python3 -m pip install --quiet --disable-pip-version-check --target "$tools" \
        cmake ninja scikit-build-core
fi
export PATH="$tools/bin:$PATH"
export PYTHONPATH="$tools${PYTHONPATH:+:$PYTHONPATH}"
cmake --version | head -1 >&2

# 2. The llama-cpp-python source distribution (vendors llama.cpp under vendor/llama.cpp).
if [[ ! -d "$src/vendor/llama.cpp" ]]; then
    archive=$(ls "$dl"/llama_cpp_python-"$version".tar.gz 2>/dev/null || true)
    if [[ -z "$archive" ]]; then
        log "downloading llama-cpp-python==$version sdist"
        python3 -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
            --no-build-isolation -d "$dl" "llama-cpp-python==$version"
        archive=$(ls "$dl"/llama_cpp_python-"$version".tar.gz)
    fi
    log "unpacking $archive"
    rm -rf "$src.partial"
    mkdir -p "$src.partial"
    tar -xzf "$archive" -C "$src.partial" --strip-components=1
    rm -rf "$src"
    mv "$src.partial" "$src"
fi
llama_src="$src/vendor/llama.cpp"

# 3. Configure and build only the llama-bench target.
generator=()
if command -v ninja >/dev/null; then generator=(-G Ninja); fi
log "configuring $build"
cmake -S "$llama_src" -B "$build" "${generator[@]}" \
    -DCMAKE_BUILD_TYPE=Release \
    -DGGML_NATIVE=ON \
    -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF \
    -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_SERVER=OFF \
    -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_TOOLS=ON \
    -DBUILD_SHARED_LIBS=OFF \
    -DCMAKE_RUNTIME_OUTPUT_DIRECTORY="$build/bin" >&2
log "building llama-bench with -j$jobs"
cmake --build "$build" --target llama-bench -j "$jobs" >&2
[[ -x "$bin" ]] || { log "build finished but $bin is missing"; exit 1; }
echo "$bin"
