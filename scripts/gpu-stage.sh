#!/usr/bin/env bash
# Stage GPU test and benchmark binaries for a machine that has a CUDA driver (and nvcc) but no
# Rust toolchain and no network. Builds here, release, `--features cuda`:
#   gpu-stage/bin/ghost           the CLI
#   gpu-stage/bin/cuda_kernels    the kernel test binary (ghostcore/tests/cuda_kernels.rs)
#   gpu-stage/bin/cuda_bench      the kernel benchmark (bench/gpu/cuda_kernels.rs)
#   gpu-stage/run-gpu.sh          runs tests, benchmarks, then compute-sanitizer memcheck (if
#                                 installed) over the tests, writing results to $OUT or
#                                 gpu-stage/results/<UTC time>/
#   gpu-stage/MANIFEST            commit, build time, nvcc version, file sizes
# gpu-stage/ is git-ignored; the whole folder stays well under 64 MiB (binaries stripped).
# See bench/gpu/README.md for how a session with a GPU runs it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
stage="$root/gpu-stage"

NVCC="${NVCC:-$(bash scripts/install-nvcc.sh)}"
export NVCC

# Prints the executable of the artifact whose target is named $1, from cargo's JSON messages.
pick_executable() {
  python3 -c '
import json, sys
name = sys.argv[1]
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == name and m.get("executable"):
        print(m["executable"])
' "$1" | tail -n 1
}

echo "gpu-stage: building (release, --features cuda) ..." >&2
cargo build --release -p ghostcore --features cuda --bin ghost
test_bin="$(cargo test --release -p ghostcore --features cuda --test cuda_kernels --no-run --message-format=json \
  | pick_executable cuda_kernels)"
bench_bin="$(cargo bench -p ghostcore --features cuda --bench cuda_kernels --no-run --message-format=json \
  | pick_executable cuda_kernels)"
[ -x "$test_bin" ] || { echo "gpu-stage: test binary not found" >&2; exit 1; }
[ -x "$bench_bin" ] || { echo "gpu-stage: bench binary not found" >&2; exit 1; }

rm -rf "$stage"
mkdir -p "$stage/bin"
cp "$root/target/release/ghost" "$stage/bin/ghost"
cp "$test_bin" "$stage/bin/cuda_kernels"
cp "$bench_bin" "$stage/bin/cuda_bench"
if command -v strip >/dev/null; then strip "$stage"/bin/* 2>/dev/null || true; fi

# The real-model GPU tests read layer 0 of llama.cpp's SmolLM2 Q4_K_M file (Q5_0, Q8_0, Q6_K
# tensors). The whole file is over the carry limit, so stage a GGUF holding only blk.0.*
# (byte-identical tensors, ~2.5 MiB) under the same name. Skipped without the model or gguf-py.
model="$(for d in "${GHOSTCORE_MODELS_DIR:-}" "$root/models" "$root/../shared/models"; do
  [ -n "$d" ] && [ -f "$d/smollm2-135m-q4_k_m.gguf" ] && { echo "$d/smollm2-135m-q4_k_m.gguf"; break; }
done)"
py="${GHOSTCORE_PYTHON:-$root/.venv/bin/python}"
if [ -n "$model" ] && [ -x "$py" ] && "$py" -c "import gguf" 2>/dev/null; then
  mkdir -p "$stage/models"
  "$py" - "$model" "$stage/models/smollm2-135m-q4_k_m.gguf" <<'PY'
import sys
import numpy as np
from gguf import GGUFReader, GGUFWriter
src, dst = sys.argv[1], sys.argv[2]
w = GGUFWriter(dst, arch="llama")
for t in GGUFReader(src).tensors:
    if t.name.startswith("blk.0."):
        w.add_tensor(t.name, np.asarray(t.data), raw_dtype=t.tensor_type)
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
PY
else
  echo "gpu-stage: no SmolLM2 Q4_K_M model or gguf-py; real-model GPU tests will skip" >&2
fi

cat >"$stage/run-gpu.sh" <<'RUN'
#!/usr/bin/env bash
# Runs the staged CUDA tests and benchmarks on a GPU machine. Results go to $OUT (the device
# tool's output folder) when set, else gpu-stage/results/<UTC time>/.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${OUT:-$here/results/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$out"
cp "$here/MANIFEST" "$out/MANIFEST" 2>/dev/null || true
{ nvidia-smi || echo "nvidia-smi unavailable"; } >"$out/nvidia-smi.txt" 2>&1
# Real-model tests look for models here; absent ones are skipped (CI is not set).
unset CI
export GHOSTCORE_MODELS_DIR="${GHOSTCORE_MODELS_DIR:-$here/models}"
status=0
echo "== tests ==" >&2
"$here/bin/cuda_kernels" --test-threads=1 --nocapture >"$out/tests.txt" 2>&1 || status=$?
tail -n 25 "$out/tests.txt" >&2
echo "tests exit status: $status" | tee -a "$out/tests.txt" >&2
echo "== benchmarks ==" >&2
GHOSTCORE_BENCH_OUT="$out/bench.jsonl" "$here/bin/cuda_bench" >"$out/bench.txt" 2>&1 || status=$?
cat "$out/bench.txt" >&2
# Out-of-bounds and race checks of the kernels, where the toolkit's sanitizer is installed.
san="$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)"
if [ -n "$san" ]; then
  echo "== compute-sanitizer memcheck ==" >&2
  timeout 300 "$san" --tool memcheck --error-exitcode 3 "$here/bin/cuda_kernels" --test-threads=1 \
    >"$out/sanitizer.txt" 2>&1 || status=$?
  tail -n 5 "$out/sanitizer.txt" >&2
fi
echo "results in $out" >&2
exit "$status"
RUN
chmod +x "$stage/run-gpu.sh"

{
  echo "commit: $(git -C "$root" rev-parse HEAD)$(git -C "$root" diff --quiet HEAD -- . ':!gpu-stage' || echo ' (+ uncommitted changes)')"
  echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -m)"
  echo "nvcc: $("$NVCC" --version | tail -n 1)"
  echo "archs: sm_80 sm_86 sm_89 sm_90 sm_120 + compute_80 PTX"
  (cd "$stage" && du -b bin/* run-gpu.sh models/* 2>/dev/null)
} >"$stage/MANIFEST"

total=$(du -sb "$stage" | cut -f1)
if [ "$total" -ge $((64 * 1024 * 1024)) ]; then
  echo "gpu-stage: $total bytes, over the 64 MiB carry limit" >&2
  exit 1
fi
cat "$stage/MANIFEST" >&2
echo "gpu-stage: ready in $stage ($((total / 1024)) KiB)" >&2
