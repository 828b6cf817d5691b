#!/usr/bin/env bash
# Stage GPU test and benchmark binaries for a machine that has a CUDA driver (and nvcc) but no
# Rust toolchain and no network. Builds here, release, `--features cuda`:
#   gpu-stage/bin/ghost           the CLI
#   gpu-stage/bin/cuda_kernels    the kernel test binary (ghostcore/tests/cuda_kernels.rs)
#   gpu-stage/bin/cuda_forward  the whole-model GPU-vs-CPU tests (ghostcore/tests/cuda_forward.rs)
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
fwd_bin="$(cargo test --release -p ghostcore --features cuda --test cuda_forward --no-run --message-format=json \
  | pick_executable cuda_forward)"
bench_bin="$(cargo bench -p ghostcore --features cuda --bench cuda_kernels --no-run --message-format=json \
  | pick_executable cuda_kernels)"
[ -x "$test_bin" ] || { echo "gpu-stage: test binary not found" >&2; exit 1; }
[ -x "$fwd_bin" ] || { echo "gpu-stage: forward test binary not found" >&2; exit 1; }
[ -x "$bench_bin" ] || { echo "gpu-stage: bench binary not found" >&2; exit 1; }

rm -rf "$stage"
mkdir -p "$stage/bin"
cp "$root/target/release/ghost" "$stage/bin/ghost"
cp "$test_bin" "$stage/bin/cuda_kernels"
cp "$fwd_bin" "$stage/bin/cuda_forward"
cp "$bench_bin" "$stage/bin/cuda_bench"
if command -v strip >/dev/null; then strip "$stage"/bin/* 2>/dev/null || true; fi

# The real-model GPU tests need llama.cpp's SmolLM2 Q4_K_M file. The whole file (105 MiB) is
# over the carry limit, so stage a valid model cut to its first 4 layers (all metadata and the
# tokenizer kept, block_count set to 4, tensors byte-identical, ~40 MiB) under the same name:
# the kernel tests read layer 0 of it, the forward tests run it as a model. Skipped without
# the model or gguf-py.
model="$(for d in "${GHOSTCORE_MODELS_DIR:-}" "$root/models" "$root/../shared/models"; do
  [ -n "$d" ] && [ -f "$d/smollm2-135m-q4_k_m.gguf" ] && { echo "$d/smollm2-135m-q4_k_m.gguf"; break; }
done)"
py="${GHOSTCORE_PYTHON:-$root/.venv/bin/python}"
if [ -n "$model" ] && [ -x "$py" ] && "$py" -c "import gguf" 2>/dev/null; then
  mkdir -p "$stage/models"
  "$py" - "$model" "$stage/models/smollm2-135m-q4_k_m.gguf" 4 <<'PY'
import sys
import numpy as np
from gguf import GGUFReader, GGUFValueType, GGUFWriter
src, dst, keep = sys.argv[1], sys.argv[2], int(sys.argv[3])
r = GGUFReader(src)
arch = r.fields["general.architecture"].contents()
w = GGUFWriter(dst, arch=arch)
for name, field in r.fields.items():
    if name.startswith("GGUF.") or name == "general.architecture":
        continue
    value = keep if name == f"{arch}.block_count" else field.contents()
    vtype = field.types[0]
    sub = field.types[1] if vtype == GGUFValueType.ARRAY else None
    w.add_key_value(name, value, vtype, sub_type=sub)
for t in r.tensors:
    if t.name.startswith("blk.") and int(t.name.split(".")[1]) >= keep:
        continue
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
# Usage: run-gpu.sh [PART...]   PARTs: tests forward bench e2e profile sanitizer (default: all
# but profile). GHOSTCORE_BENCH_ONLY=matvec,matmul,sparse,attention narrows "bench".
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${OUT:-$here/results/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$out"
parts="${*:-tests forward bench e2e sanitizer}"
want() { case " $parts " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
[ -d "$here/bin" ] || tar -C "$here" -xzf "$here/bin.tar.gz" || exit 1
cp "$here/MANIFEST" "$out/MANIFEST" 2>/dev/null || true
{ nvidia-smi || echo "nvidia-smi unavailable"; } >"$out/nvidia-smi.txt" 2>&1
# Real-model tests look for models here; absent ones are skipped (CI is not set).
unset CI
export GHOSTCORE_MODELS_DIR="${GHOSTCORE_MODELS_DIR:-$here/models}"
status=0
if want tests; then
  echo "== kernel tests ==" >&2
  "$here/bin/cuda_kernels" --test-threads=1 --nocapture >"$out/tests.txt" 2>&1 || status=$?
  grep -E "^test |test result|panicked|SKIPPED" "$out/tests.txt" >&2
fi
if want forward; then
  echo "== forward tests (GPU vs CPU) ==" >&2
  "$here/bin/cuda_forward" --test-threads=1 --nocapture >"$out/forward.txt" 2>&1 || status=$?
  grep -E "^test |test result|panicked|SKIPPED|worst|agreement|running on|GPU argmax" "$out/forward.txt" >&2
fi
if want bench; then
  echo "== kernel benchmarks ==" >&2
  GHOSTCORE_BENCH_OUT="$out/bench.jsonl" "$here/bin/cuda_bench" >"$out/bench.txt" 2>&1 || status=$?
  cat "$out/bench.txt" >&2
fi
if want e2e; then
  echo "== end-to-end ghost bench (synthetic models written here) ==" >&2
  tmp="${TMPDIR:-/tmp}/ghost-e2e"; mkdir -p "$tmp"
  {
    for spec in ${GHOSTCORE_E2E_MODELS:-smollm2:q8_0 llama3-8b:q4_k_m}; do
      shape="${spec%%:*}"; ty="${spec##*:}"
      m="$tmp/$shape-$ty.gguf"
      [ -f "$m" ] || "$here/bin/ghost" synth --shape "$shape" --type "$ty" -o "$m" || status=$?
      echo "### $shape $ty, GPU"
      "$here/bin/ghost" bench -m "$m" --device gpu -p 128,512 -n 128 -r 3 || status=$?
      if [ "${GHOSTCORE_E2E_CPU:-1}" = 1 ]; then
        echo "### $shape $ty, CPU, $(nproc) threads"
        "$here/bin/ghost" bench -m "$m" -t "$(nproc)" -p 64 -n 16 -r 2 || status=$?
      fi
    done
    m="$here/models/smollm2-135m-q4_k_m.gguf"
    if [ -f "$m" ]; then
      echo "### SmolLM2-135M Q4_K_M cut to 4 layers (real weights), GPU"
      "$here/bin/ghost" bench -m "$m" --device gpu -p 128,512 -n 128 -r 3 || status=$?
    fi
  } >"$out/e2e.txt" 2>&1
  cat "$out/e2e.txt" >&2
fi
if want profile; then
  # Per-kernel GPU time of a short prefill + decode run on the synthetic 8B model (Nsight
  # Compute, one metric: each kernel's duration).
  ncu_bin="$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -n 1)"
  tmp="${TMPDIR:-/tmp}/ghost-e2e"; mkdir -p "$tmp"; m="$tmp/llama3-8b-q4_k_m.gguf"
  [ -f "$m" ] || "$here/bin/ghost" synth --shape llama3-8b --type q4_k_m -o "$m" >/dev/null || status=$?
  if [ -n "$ncu_bin" ]; then
    echo "== per-kernel time (ncu) ==" >&2
    timeout 300 "$ncu_bin" --metrics gpu__time_duration.sum --print-summary per-kernel \
      "$here/bin/ghost" bench -m "$m" --device gpu -p 64 -n 2 -r 1 >"$out/profile.txt" 2>&1 || status=$?
    grep -E "gc_|Invocations|gpu__time_duration" "$out/profile.txt" | head -n 120 >&2
  fi
fi
# Out-of-bounds and race checks of the kernels, where the toolkit's sanitizer is installed.
san="$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)"
if want sanitizer && [ -n "$san" ]; then
  echo "== compute-sanitizer memcheck ==" >&2
  timeout 300 "$san" --tool memcheck --error-exitcode 3 "$here/bin/cuda_kernels" --test-threads=1 \
    >"$out/sanitizer.txt" 2>&1 || status=$?
  timeout 200 "$san" --tool memcheck --error-exitcode 3 "$here/bin/cuda_forward" --test-threads=1 \
    >>"$out/sanitizer.txt" 2>&1 || status=$?
  grep -E "ERROR SUMMARY|test result" "$out/sanitizer.txt" >&2
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
  (cd "$stage" && du -b bin/* run-gpu.sh models/* 2>/dev/null) || true
} >"$stage/MANIFEST"

# The binaries compress about 3x; run-gpu.sh unpacks them on the GPU machine.
tar -C "$stage" -czf "$stage/bin.tar.gz" bin && rm -rf "$stage/bin"
total=$(du -sb "$stage" | cut -f1)
if [ "$total" -ge $((64 * 1024 * 1024)) ]; then
  echo "gpu-stage: $total bytes, over the 64 MiB carry limit" >&2
  exit 1
fi
cat "$stage/MANIFEST" >&2
echo "gpu-stage: ready in $stage ($((total / 1024)) KiB)" >&2
