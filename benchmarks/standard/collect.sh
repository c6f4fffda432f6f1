#!/usr/bin/env bash
# Copy a `standard` run's records (no model weights) into benchmarks/standard/ and rebuild
# the report from them:   bash benchmarks/standard/collect.sh [RUN_FOLDER]
# The run itself:  salun bench --preset standard --out runs/standard --executor ray --threads 1
# (resumable: rerun the same command to finish a partial run, then collect again).
set -euo pipefail
cd "$(dirname "$0")/../.."
R=${1:-runs/standard}
OUT=benchmarks/standard
[ -f "$R/bench.json" ] || { echo "collect.sh: $R is not a benchmark folder" >&2; exit 2; }
cp "$R/bench.json" "$R/results.jsonl" "$OUT/"
rm -rf "$OUT/splits" && cp -r "$R/splits" "$OUT/splits"
.venv/bin/salun report "$OUT" >/dev/null
echo "$(wc -l < "$OUT/results.jsonl") records in $OUT; report: $OUT/report.md" >&2
