#!/usr/bin/env bash
# Copy what the report needs from a run folder into benchmarks/gen/results/ (no weights,
# except the Original's, so that others can skip its 80 minutes of training), then print
# the tables from the copies.   bash benchmarks/gen/collect.sh [RUN_FOLDER]
set -euo pipefail
cd "$(dirname "$0")/../.."
R=${1:-runs/gen-fashion}
OUT=benchmarks/gen/results
mkdir -p "$OUT"
for m in classifier original retrain salun salun-random-mask rl ga esd; do
  [ -f "$R/$m/model.json" ] || continue
  mkdir -p "$OUT/$m" && cp "$R/$m/model.json" "$OUT/$m/"
  for f in "$R/$m.eval.json" "$R/$m.png"; do [ -f "$f" ] && cp "$f" "$OUT/"; done
done
if [ -d "$R/noflip-classifier" ]; then  # the Original scored by a classifier without flips
  mkdir -p benchmarks/gen/noflip-classifier
  cp "$R/noflip-classifier/"* "$R/classifier-noflip/model.json" benchmarks/gen/noflip-classifier/
fi
cp "$R/original/model.safetensors" "$R/original/ema.safetensors" "$OUT/original/"
.venv/bin/python benchmarks/gen/summarize.py "$OUT"
