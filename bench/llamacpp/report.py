#!/usr/bin/env python3
"""Turn the raw JSON of interleaved `llama-bench` / `ghost bench` runs into a Markdown report.

Input: a run directory written by bench/compare_llamacpp.sh, holding
  - meta.json: date, machine, commits, settings (written by the script);
  - runs.jsonl: one line per tool invocation,
    {"model_key", "model_path", "threads", "round", "order", "tool", "file", "load_before",
     "load_after", "seconds"};
  - the per-invocation JSON files named there (llama-bench `-o json`, ghost bench `-o json`).

Samples of the same (model, threads, test, tool) from several rounds are pooled: the table shows
mean +- sample standard deviation over all of them, and the ratio ghost / llama.cpp of the means
with its propagated relative spread. Only the Python standard library is used.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

# Issue 4 targets: ratio ghost / llama.cpp.
TARGETS = {"pp": 0.8, "tg": 1.0}


def load_json_array(path: Path) -> list[dict]:
    """Parse a tool's stdout; tolerate stray text around the JSON array."""
    text = path.read_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        start, end = text.find("["), text.rfind("]")
        if start < 0 or end < start:
            raise ValueError(f"{path}: no JSON array in output") from None
        data = json.loads(text[start : end + 1])
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON array, got {type(data).__name__}")
    return data


def llama_rows(data: list[dict]) -> list[tuple[str, list[float], dict]]:
    """(test name like pp128/tg64, samples in tok/s, raw entry) from llama-bench JSON."""
    out = []
    for e in data:
        n_prompt, n_gen = int(e.get("n_prompt", 0)), int(e.get("n_gen", 0))
        if n_prompt > 0 and n_gen == 0:
            test = f"pp{n_prompt}"
        elif n_gen > 0 and n_prompt == 0:
            test = f"tg{n_gen}"
        else:
            test = f"pp{n_prompt}+tg{n_gen}"
        samples = [float(x) for x in e.get("samples_ts") or [e["avg_ts"]]]
        out.append((test, samples, e))
    return out


def ghost_rows(data: list[dict]) -> list[tuple[str, list[float], dict]]:
    """(test name, samples in tok/s, raw entry) from ghost bench JSON."""
    out = []
    for e in data:
        samples = [float(x) for x in e.get("samples_ts") or [e["avg_ts"]]]
        out.append((str(e["test"]), samples, e))
    return out


def mean_sd(v: list[float]) -> tuple[float, float]:
    m = statistics.fmean(v)
    return m, (statistics.stdev(v) if len(v) > 1 else 0.0)


def fmt_ts(v: list[float]) -> str:
    m, s = mean_sd(v)
    return f"{m:.1f} ± {s:.1f}"


def main() -> int:
    if len(sys.argv) != 2:
        print(f"usage: {sys.argv[0]} RUN_DIR", file=sys.stderr)
        return 2
    run_dir = Path(sys.argv[1])
    meta = json.loads((run_dir / "meta.json").read_text())
    runs = [json.loads(line) for line in (run_dir / "runs.jsonl").read_text().splitlines() if line.strip()]

    # (model_key, threads, test) -> tool -> pooled samples
    pooled: dict[tuple[str, int, str], dict[str, list[float]]] = {}
    loads: dict[tuple[str, int], list[float]] = {}
    model_order: list[str] = []
    llama_info: dict = {}
    ghost_info: dict = {}
    for r in runs:
        key_mt = (r["model_key"], int(r["threads"]))
        if r["model_key"] not in model_order:
            model_order.append(r["model_key"])
        loads.setdefault(key_mt, []).extend([float(r["load_before"]), float(r["load_after"])])
        data = load_json_array(run_dir / r["file"])
        if r["tool"] == "llama.cpp":
            rows = llama_rows(data)
            if data:
                llama_info = data[0]
        else:
            rows = ghost_rows(data)
            if data:
                ghost_info = data[0]
        for test, samples, _ in rows:
            pooled.setdefault((r["model_key"], int(r["threads"]), test), {}).setdefault(r["tool"], []).extend(
                samples
            )

    models = meta["models"]
    lines: list[str] = []
    w = lines.append
    w(f"# GhostCore vs llama.cpp: CPU prefill and decode speed ({meta['date_utc'][:10]})")
    w("")
    w("Produced by `bench/compare_llamacpp.sh` (report: `bench/llamacpp/report.py`).")
    w("")
    w("| | |")
    w("| --- | --- |")
    w(f"| date (UTC) | {meta['date_utc']} → {meta['end_utc']} |")
    w(f"| CPU | {meta['cpu_model']} ({meta['cpu_count']} logical CPUs) |")
    w(f"| kernel | {meta['kernel']} |")
    w(f"| ghost commit | `{meta['ghost_commit']}` (branch `{meta['ghost_branch']}`), release build, ISA `{ghost_info.get('isa', '?')}` |")
    w(
        f"| llama.cpp | build `{llama_info.get('build_commit', '?')}` (build number {llama_info.get('build_number', '?')}), "
        f"vendored in llama-cpp-python {meta['llamacpp_py_version']} sdist; CPU backend, Release, `GGML_NATIVE=ON` |"
    )
    w(f"| llama.cpp CPU info | {llama_info.get('cpu_info', '?')} |")
    llama_settings = ", ".join(
        f"{k} {llama_info[k]}"
        for k in ("n_batch", "n_ubatch", "type_k", "type_v", "flash_attn", "repack", "poll")
        if k in llama_info
    )
    w(f"| llama-bench defaults in force | {llama_settings or '?'} |")
    if meta.get("ghost_extra_args"):
        w(f"| extra `ghost bench` arguments | `{meta['ghost_extra_args']}` |")
    w(f"| settings | `-p {meta['n_prompt']} -n {meta['n_gen']} -r {meta['reps']}`, threads {meta['threads']}, {meta['rounds']} round(s) per tool |")
    w(f"| load before | `{meta['uptime_before']}` |")
    w(f"| load after | `{meta['uptime_after']}` |")
    w("")
    w("Models:")
    w("")
    for key in model_order:
        w(f"- **{key}**: `{models[key]}`")
    w("")
    w(
        "Interleaving: for every (model, threads) block each round runs both tools back to back, and "
        "the order alternates between rounds and between blocks (llama.cpp first, then ghost first, …), "
        "so drift in machine load hits both tools alike. Each invocation does its own untimed warm-up. "
        "Figures are tokens/s, mean ± sample standard deviation over all repetitions of all rounds; "
        "the ratio is ghost / llama.cpp with the propagated relative spread. Targets (issue 4): "
        f"decode (tg) ≥ {TARGETS['tg']:.1f}×, prefill (pp) ≥ {TARGETS['pp']:.1f}×."
    )
    w("")
    w("| model | threads | test | llama.cpp t/s | ghost t/s | ghost / llama.cpp | target | load (1 min) during block |")
    w("| --- | ---: | --- | ---: | ---: | ---: | ---: | --- |")
    summary = []
    for key in model_order:
        for threads in sorted({t for (m, t, _) in pooled if m == key}):
            tests = sorted({t for (m, th, t) in pooled if m == key and th == threads}, key=lambda s: (s[:2] != "pp", s))
            ld = loads.get((key, threads), [])
            ld_s = f"{min(ld):.1f}–{max(ld):.1f}" if ld else "?"
            for test in tests:
                by_tool = pooled[(key, threads, test)]
                lv, gv = by_tool.get("llama.cpp"), by_tool.get("ghost")
                target = TARGETS.get(test[:2])
                if lv and gv:
                    (lm, ls), (gm, gs) = mean_sd(lv), mean_sd(gv)
                    ratio = gm / lm
                    rel = math.hypot(ls / lm, gs / gm)
                    verdict = "" if target is None else (" ✅" if ratio >= target else " ❌")
                    ratio_s = f"**{ratio:.2f}×** ± {ratio * rel:.2f}{verdict}"
                    summary.append((key, threads, test, ratio))
                else:
                    ratio_s = "n/a"
                w(
                    f"| {key} | {threads} | {test} | {fmt_ts(lv) if lv else 'n/a'} | {fmt_ts(gv) if gv else 'n/a'} "
                    f"| {ratio_s} | {'' if target is None else f'≥ {target:.1f}×'} | {ld_s} |"
                )
    w("")
    if summary:
        for kind, label in (("tg", "decode"), ("pp", "prefill")):
            rs = [r for (_, _, t, r) in summary if t.startswith(kind)]
            if rs:
                geo = math.exp(statistics.fmean(math.log(r) for r in rs))
                w(f"- {label} ratio: geometric mean {geo:.2f}× over {len(rs)} cells (min {min(rs):.2f}×, max {max(rs):.2f}×)")
        w("")
    w("## Invocations, in the order run")
    w("")
    w("| # | model | threads | round | tool | wall s | load before → after | samples t/s (pp; tg) |")
    w("| ---: | --- | ---: | ---: | --- | ---: | --- | --- |")
    for i, r in enumerate(runs, 1):
        data = load_json_array(run_dir / r["file"])
        rows = llama_rows(data) if r["tool"] == "llama.cpp" else ghost_rows(data)
        samples = "; ".join(f"{t}: " + ", ".join(f"{x:.1f}" for x in s) for t, s, _ in rows)
        w(
            f"| {i} | {r['model_key']} | {r['threads']} | {r['round']} | {r['tool']} | {float(r['seconds']):.1f} "
            f"| {float(r['load_before']):.2f} → {float(r['load_after']):.2f} | {samples} |"
        )
    w("")
    if meta.get("notes"):
        w("## Notes")
        w("")
        w(meta["notes"])
        w("")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
