#!/usr/bin/env bash
# Copy a `paper-steps` run's records (no model weights) into benchmarks/paper-steps/, rebuild
# the report and the findings from them:   bash benchmarks/paper-steps/collect.sh [RUN_FOLDER]
# The run itself:  salun bench --preset paper-steps --out runs/paper-steps --executor ray --threads 1
# (resumable: rerun the same command to continue a partial run, then collect again; a
# partial run's report shows the stages that have finished).
set -euo pipefail
cd "$(dirname "$0")/../.."
R=${1:-runs/paper-steps}
OUT=benchmarks/paper-steps
[ -f "$R/bench.json" ] || { echo "collect.sh: $R is not a benchmark folder" >&2; exit 2; }
cp "$R/bench.json" "$R/results.jsonl" "$OUT/"
rm -rf "$OUT/splits" && cp -r "$R/splits" "$OUT/splits"
.venv/bin/salun report "$OUT" >/dev/null
.venv/bin/python benchmarks/standard/findings.py "$OUT" > "$OUT/findings.md"
echo "$(wc -l < "$OUT/results.jsonl") records in $OUT; report: $OUT/report.md, findings: $OUT/findings.md" >&2
