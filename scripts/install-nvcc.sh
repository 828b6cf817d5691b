#!/usr/bin/env bash
# Install nvcc (CUDA 13.0) from NVIDIA's PyPI wheels into <repo>/.cuda/, without a GPU or root.
#
# CUDA 13.0 matches the driver on the project's GPU machines (580 / CUDA 13.0), so the PTX
# fallback embedded next to the SASS cubins is JIT-compilable there. Versions are pinned.
# Idempotent: re-running on a ready install only prints the nvcc path.
#
# Usage: bash scripts/install-nvcc.sh        (prints the nvcc path on stdout)
# Env:   PYTHON (default python3), GHOSTCORE_CUDA_DIR (default <repo>/.cuda)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${GHOSTCORE_CUDA_DIR:-$root/.cuda}"
PY="${PYTHON:-python3}"

pins=(
  "nvidia-cuda-nvcc==13.0.88"
  "nvidia-cuda-crt==13.0.88"
  "nvidia-cuda-cccl==13.0.85"
  "nvidia-nvvm==13.0.88"
  "nvidia-cuda-runtime==13.0.96"
)
stamp="$dest/.installed"
want="$(printf '%s\n' "${pins[@]}")"
cuda_home="$dest/nvidia/cu13"
nvcc="$cuda_home/bin/nvcc"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$nvcc" ]; then
  echo "$nvcc"
  exit 0
fi

echo "install-nvcc: installing ${pins[*]} into $dest" >&2
mkdir -p "$dest"
"$PY" -m pip install --quiet --disable-pip-version-check --no-deps --upgrade \
  --target "$dest" "${pins[@]}"

if [ ! -f "$nvcc" ]; then
  echo "install-nvcc: nvcc not found at $nvcc after install" >&2
  exit 1
fi
# Wheels do not keep the executable bit.
chmod +x "$cuda_home"/bin/* 2>/dev/null || true
chmod +x "$cuda_home"/nvvm/bin/* 2>/dev/null || true
# nvcc looks for its libraries under <cuda_home>/lib64; the wheel names the folder lib.
if [ -d "$cuda_home/lib" ] && [ ! -e "$cuda_home/lib64" ]; then
  ln -s lib "$cuda_home/lib64"
fi
"$nvcc" --version >&2
printf '%s\n' "$want" >"$stamp"
echo "$nvcc"
