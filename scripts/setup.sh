#!/usr/bin/env bash
# Set up salun in ./.venv: Fashion-MNIST from Debian, CPU PyTorch, the package and extras.
# Usage: scripts/setup.sh [EXTRAS]   e.g. scripts/setup.sh dev,diffusion,sd,ray
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-}"
PY="${PYTHON:-python3}"

if [ ! -d /usr/share/datasets/fashion-mnist ] && [ -z "${SALUN_DATA_DIR:-}" ]; then
  echo "setup: installing Debian's dataset-fashion-mnist" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# torch first, pinned: an unpinned torch (or one pulled in by another package) would fetch a
# multi-GB CUDA build; 2.13.0 CPU is what this project is developed and tested with.
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q "torch==2.13.0"
if [ -n "$EXTRAS" ]; then
  .venv/bin/python -m pip install -q -e ".[${EXTRAS}]"
else
  .venv/bin/python -m pip install -q -e .
fi
