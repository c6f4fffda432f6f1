#!/usr/bin/env bash
# Set up and run the main job: one seed of the `paper-steps` benchmark on real Fashion-MNIST
# (a ResNet that memorises its training set, unlearning at the paper's number of steps;
# every method, random 10 % + class-wise forgetting), then its report. Both cores: Ray runs
# two one-thread runs at a time.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh ray
OUT="${1:-runs/main}"
.venv/bin/salun bench --preset paper-steps-1seed --out "$OUT" --executor ray --threads 1
# salun bench prints the report's paths as its last line
