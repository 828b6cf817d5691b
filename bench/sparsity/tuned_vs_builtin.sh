#!/usr/bin/env bash
# Decode speed with this CPU's measured path costs (`ghost tune`) against the built-in
# curves, in alternating rounds of `ghost sweep` (dense re-measured beside every mode, CPU
# seconds, 1 thread). Prints each round's table; compare the sparse/dense ratios.
#
# Usage: bash bench/sparsity/tuned_vs_builtin.sh MODEL SIDECAR|- [ROUNDS] [MODES] [TOKENS]
# (SIDECAR `-`: none, for modes without calibration such as stat:K; SYNTHETIC=1 for a
# random-weight model from `ghost synth`; REPS, TEXT and GHOST override the defaults)
set -euo pipefail
model=$1 sidecar=$2 rounds=${3:-3}
modes=${4:-"budget:2;cascade:0.2:0.4:upw;input:0.2;target:0.5:act;stat:0.5"}
tokens=${5:-128}
G=${GHOST:-target/release/ghost}
text=${TEXT:-tests/data/sparsity/calibration-corpus.txt}
extra=()
[ -n "${SYNTHETIC:-}" ] && extra+=(--synthetic)
[ "$sidecar" != - ] && extra+=(--mask "$sidecar")
"$G" tune -m "$model"
for r in $(seq 1 "$rounds"); do
  for costs in builtin tuned; do
    echo "== round $r, path costs: $costs (load: $(cut -d' ' -f1-3 /proc/loadavg))"
    env $([ "$costs" = builtin ] && echo GHOST_PATH_COSTS=builtin) \
      "$G" sweep -m "$model" -f "$text" --no-ppl --speed-tokens "$tokens" \
      --reps "${REPS:-5}" --cpu-time -t 1 --modes "$modes" "${extra[@]}" 2>/dev/null
  done
done
