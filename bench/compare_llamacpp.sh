#!/usr/bin/env bash
# Side-by-side CPU speed of `ghost bench` and llama.cpp's `llama-bench` on the same machine.
#
# Builds llama-bench from the llama.cpp source vendored in the llama-cpp-python sdist (cached
# under bench/tmp/, see bench/llamacpp/build.sh) and ghost (release), then runs, interleaved,
#   llama-bench -m M -p P -n N -t T -r R -o json
#   ghost bench -m M -p P -n N -t T -r R -o json
# for every model M and thread count T, and writes bench/results/<date>-llamacpp-compare.md
# with both figures, the ratio ghost / llama.cpp, date, CPU, both commits and machine load.
#
# Usage: bench/compare_llamacpp.sh [options]
#   -r REPS        repetitions per invocation (default 5)
#   -t "1 2"       thread counts (default "1 2")
#   -p N           prompt length for the prefill test (default 128)
#   -n N           generation length for the decode test (default 64)
#   --rounds K     invocations per tool and block; order alternates between rounds (default 2)
#   --max-load L   before each block, wait (up to --max-wait seconds, default 600) until the
#                  1-minute load average is below L (default: do not wait)
#   --out FILE     report path (default bench/results/<UTC date>-llamacpp-compare.md)
#   --note TEXT    free text added to the report's Notes section
#   --ghost-arg A  extra argument for `ghost bench` (repeatable), e.g. --ghost-arg --quantized-prefill
# Models (override with env): SMOLLM2_Q4KM, GEMMA3_Q4KM. Defaults: smollm2-135m-q4_k_m.gguf in
# ../shared/models/ (relative to the repo) or $GHOSTCORE_MODELS_DIR, and
# gemma-3-270m-q4_k_m.gguf in models/ or $GHOSTCORE_MODELS_DIR. A model not found is skipped.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"

reps=5
threads="1 2"
n_prompt=128
n_gen=64
rounds=2
max_load=""
max_wait=600
out=""
note=""
ghost_extra=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        -r) reps=$2; shift 2 ;;
        -t) threads=$2; shift 2 ;;
        -p) n_prompt=$2; shift 2 ;;
        -n) n_gen=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --max-load) max_load=$2; shift 2 ;;
        --max-wait) max_wait=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --note) note=$2; shift 2 ;;
        --ghost-arg) ghost_extra+=("$2"); shift 2 ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
done
for v in "$reps" "$n_prompt" "$n_gen" "$rounds" $threads; do
    [[ "$v" =~ ^[1-9][0-9]*$ ]] || { echo "expected a positive integer, got '$v'" >&2; exit 2; }
done

log() { echo "[compare] $*" >&2; }
load1() { cut -d' ' -f1 /proc/loadavg; }

# --- models -------------------------------------------------------------------------------
first_existing() {
    local f
    for f in "$@"; do
        if [[ -n "$f" && -f "$f" ]]; then echo "$f"; return 0; fi
    done
    return 1
}
models_dir=${GHOSTCORE_MODELS_DIR:-}
declare -A model_path=()
model_keys=()
if p=$(first_existing "${SMOLLM2_Q4KM:-}" "$repo_root/../shared/models/smollm2-135m-q4_k_m.gguf" \
    "${models_dir:+$models_dir/smollm2-135m-q4_k_m.gguf}" "/work/shared/models/smollm2-135m-q4_k_m.gguf"); then
    model_path["SmolLM2-135M Q4_K_M"]=$p; model_keys+=("SmolLM2-135M Q4_K_M")
else
    log "SmolLM2 Q4_K_M not found: skipped (set SMOLLM2_Q4KM)"
fi
if p=$(first_existing "${GEMMA3_Q4KM:-}" "$repo_root/models/gemma-3-270m-q4_k_m.gguf" \
    "${models_dir:+$models_dir/gemma-3-270m-q4_k_m.gguf}"); then
    model_path["Gemma3-270M Q4_K_M"]=$p; model_keys+=("Gemma3-270M Q4_K_M")
else
    log "Gemma3 Q4_K_M not found: skipped (set GEMMA3_Q4KM)"
fi
[[ ${#model_keys[@]} -gt 0 ]] || { log "no model found"; exit 1; }

# --- builds -------------------------------------------------------------------------------
llama_bench=$(bench/llamacpp/build.sh)
log "llama-bench: $llama_bench"
log "building ghost (release)"
cargo build --release --quiet -p ghostcore --bin ghost
ghost="${CARGO_TARGET_DIR:-$repo_root/target}/release/ghost"
[[ -x "$ghost" ]] || { log "ghost binary missing at $ghost"; exit 1; }

# --- run ----------------------------------------------------------------------------------
stamp=$(date -u +%Y%m%dT%H%M%SZ)
run_dir="$repo_root/bench/tmp/compare-$stamp"
mkdir -p "$run_dir"
: > "$run_dir/runs.jsonl"
date_utc=$(date -u +%Y-%m-%dT%H:%M:%SZ)
uptime_before=$(uptime)
log "run dir: $run_dir; load now: $uptime_before"

wait_quiet() {
    [[ -n "$max_load" ]] || return 0
    local waited=0
    while awk -v l="$(load1)" -v m="$max_load" 'BEGIN { exit !(l >= m) }'; do
        if (( waited >= max_wait )); then
            log "load $(load1) still >= $max_load after ${waited}s: measuring anyway"
            return 0
        fi
        sleep 15; waited=$((waited + 15))
    done
}

# One invocation: run_tool TOOL MODEL_KEY THREADS ROUND ORDER
run_tool() {
    local tool=$1 key=$2 t=$3 round=$4 order=$5
    local m=${model_path[$key]}
    local slug
    slug=$(echo "$key" | tr -c 'A-Za-z0-9\n' '_')
    local file="${slug}-t${t}-r${round}-${tool//./}.json"
    local lb la t0 t1
    lb=$(load1); t0=$(date +%s.%N)
    if [[ $tool == llama.cpp ]]; then
        "$llama_bench" -m "$m" -p "$n_prompt" -n "$n_gen" -t "$t" -r "$reps" -o json \
            > "$run_dir/$file" 2> "$run_dir/$file.stderr"
    else
        "$ghost" bench -m "$m" -p "$n_prompt" -n "$n_gen" -t "$t" -r "$reps" -o json \
            ${ghost_extra[@]+"${ghost_extra[@]}"} > "$run_dir/$file" 2> "$run_dir/$file.stderr"
    fi
    t1=$(date +%s.%N); la=$(load1)
    TOOL=$tool KEY=$key M=$m T=$t ROUND=$round ORDER=$order FILE=$file LB=$lb LA=$la \
        SECS=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }') python3 -c '
import json, os
e = os.environ
print(json.dumps({"model_key": e["KEY"], "model_path": e["M"], "threads": int(e["T"]),
    "round": int(e["ROUND"]), "order": int(e["ORDER"]), "tool": e["TOOL"], "file": e["FILE"],
    "load_before": float(e["LB"]), "load_after": float(e["LA"]), "seconds": float(e["SECS"])}))
' >> "$run_dir/runs.jsonl"
    log "  $tool t=$t round $round: $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s, load $lb -> $la"
}

block=0
for key in "${model_keys[@]}"; do
    for t in $threads; do
        wait_quiet
        log "$key, $t thread(s)"
        for ((round = 1; round <= rounds; round++)); do
            if (( (block + round) % 2 == 1 )); then
                run_tool llama.cpp "$key" "$t" "$round" 1
                run_tool ghost "$key" "$t" "$round" 2
            else
                run_tool ghost "$key" "$t" "$round" 1
                run_tool llama.cpp "$key" "$t" "$round" 2
            fi
        done
        block=$((block + 1))
    done
done

# --- report -------------------------------------------------------------------------------
end_utc=$(date -u +%Y-%m-%dT%H:%M:%SZ)
uptime_after=$(uptime)
ghost_commit=$(git rev-parse --short=12 HEAD)
# Uncommitted changes outside bench/ (those could change the ghost binary) mark the commit dirty.
if [[ -n "$(git status --porcelain --untracked-files=no -- . ':!bench')" ]]; then ghost_commit+="-dirty"; fi
models_json=$(for k in "${model_keys[@]}"; do printf '%s\t%s\n' "$k" "${model_path[$k]}"; done)
DATE_UTC=$date_utc END_UTC=$end_utc UPTIME_BEFORE=$uptime_before UPTIME_AFTER=$uptime_after \
    CPU_MODEL=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1) CPU_COUNT=$(nproc --all) \
    KERNEL=$(uname -sr) GHOST_COMMIT=$ghost_commit GHOST_BRANCH=$(git rev-parse --abbrev-ref HEAD) \
    LLAMACPP_PY_VERSION=${LLAMACPP_PY_VERSION:-0.3.36} N_PROMPT=$n_prompt N_GEN=$n_gen REPS=$reps \
    THREADS=$threads ROUNDS=$rounds MODELS=$models_json NOTE=$note GHOST_EXTRA="${ghost_extra[*]-}" python3 -c '
import json, os
e = os.environ
models = dict(line.split("\t", 1) for line in e["MODELS"].splitlines() if line)
print(json.dumps({"date_utc": e["DATE_UTC"], "end_utc": e["END_UTC"], "uptime_before": e["UPTIME_BEFORE"].strip(),
    "uptime_after": e["UPTIME_AFTER"].strip(), "cpu_model": e["CPU_MODEL"], "cpu_count": int(e["CPU_COUNT"]),
    "kernel": e["KERNEL"], "ghost_commit": e["GHOST_COMMIT"], "ghost_branch": e["GHOST_BRANCH"],
    "llamacpp_py_version": e["LLAMACPP_PY_VERSION"], "n_prompt": int(e["N_PROMPT"]), "n_gen": int(e["N_GEN"]),
    "reps": int(e["REPS"]), "threads": e["THREADS"], "rounds": int(e["ROUNDS"]), "models": models,
    "ghost_extra_args": e["GHOST_EXTRA"], "notes": e["NOTE"]}, indent=1))
' > "$run_dir/meta.json"

out=${out:-"$repo_root/bench/results/${date_utc:0:10}-llamacpp-compare.md"}
mkdir -p "$(dirname "$out")"
python3 bench/llamacpp/report.py "$run_dir" > "$out.partial"
mv "$out.partial" "$out"
log "report: $out"
cat "$out"
