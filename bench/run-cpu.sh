#!/usr/bin/env bash
# CPU speed of the dense engine on the three reference models, llama-bench style.
# Usage: bench/run-cpu.sh [REPS]   (builds ghost in release mode first)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
reps="${1:-5}"
cd "$root"
cargo build --release -p ghostcore --bin ghost
ghost="$root/target/release/ghost"
find_model() {
  for d in "${GHOSTCORE_MODELS_DIR:-}" "$root/models" "$root/../shared/models"; do
    [ -n "$d" ] && [ -f "$d/$1" ] && { echo "$d/$1"; return; }
  done
  echo "missing model $1" >&2; return 1
}
echo "# $(date -u +%F) $(lscpu | sed -n 's/^Model name: *//p') commit $(git rev-parse --short HEAD) load: $(cut -d' ' -f1-3 /proc/loadavg)"
for m in smollm2-135m-q4_k_m.gguf SmolLM2-135M-Instruct.Q4_1.gguf gemma-3-270m-q4_k_m.gguf; do
  "$ghost" bench -m "$(find_model "$m")" -p 128 -n 64 -t 1,2 -r "$reps"
done
