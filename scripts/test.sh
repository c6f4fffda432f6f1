#!/usr/bin/env bash
# Set up (all extras) and run the test suite. This is what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev,diffusion,sd,ray
export SALUN_QUIET=1 HF_HUB_OFFLINE=1
.venv/bin/python -m pytest -q "$@"
