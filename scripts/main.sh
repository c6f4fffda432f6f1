#!/usr/bin/env bash
# Set up and run the main job: the `quick` benchmark on real Fashion-MNIST data
# (every method, random 10 % + class-wise forgetting, one seed), then its report.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
OUT="${1:-runs/quick}"
.venv/bin/salun bench --preset quick --out "$OUT" --threads 1
# salun bench prints the report's paths as its last line
