#!/usr/bin/env bash
# Python virtual environment with the oracles the tests compare against (gguf-py + numpy).
# Idempotent: re-running on a ready venv does nothing.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
PY="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  "$PY" -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import gguf, numpy, regex" 2>/dev/null; then
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet "gguf==0.19.0" "numpy<3" "regex==2024.11.6"
fi
echo "setup-venv: $venv ready" >&2
