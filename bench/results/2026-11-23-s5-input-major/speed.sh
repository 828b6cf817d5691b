#!/bin/bash
# Side-by-side decode speed: before (fde742a) and after binaries alternated, 3 rounds per model.
# ghost-before: release build of fde742a; ghost-after: release build of this branch (322be72 for run A, 1f6a92b for run B).
# Sidecars of the s4 pass (2026-11-23-s2-sparsity.md, fourth pass): smol5.ghost, gemma5.ghost.
cd /tmp/sp5
MODES="input:0.1;input:0.2;budget:2;input:0.1,cascade:0.2:0.4:upw;cascade:0.2:0.4:upw"
for round in 1 2 3; do
  for b in before after; do
    echo "=== round $round $b smollm2 $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
    ./ghost-$b sweep -m /work/shared/models/smollm2-135m-q4_k_m.gguf --mask /tmp/sp4/smol5.ghost -f /usr/share/common-licenses/GPL-3 --no-ppl --speed-tokens 64 --cpu-time --reps 7 -t 1 --modes "$MODES" -o run-b/smol-$b-$round 2>&1 | grep "tok/s vs"
  done
  for b in before after; do
    echo "=== round $round $b gemma3 $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
    ./ghost-$b sweep -m /work/main/models/gemma-3-270m-q4_k_m.gguf --mask /tmp/sp4/gemma5.ghost -f /usr/share/common-licenses/GPL-3 --no-ppl --speed-tokens 64 --cpu-time --reps 7 -t 1 --modes "$MODES" -o run-b/gemma-$b-$round 2>&1 | grep "tok/s vs"
  done
done
echo "=== done $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
