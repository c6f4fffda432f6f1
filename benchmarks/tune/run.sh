#!/usr/bin/env bash
# Retrain-free pick (salun tune) against the Retrain-tuned pick (salun tune --retrain) on
# the quick preset's regime: Fashion-MNIST, MLP 784-512-256-10 trained 60 epochs (cosine,
# lr 0.05, batch 128), random 10 % and class-wise forgetting of class 0, 4 unlearning
# epochs, seed 0, each method's own lr grid.
#
#   bash benchmarks/tune/run.sh runs/tune          # then: python benchmarks/tune/compare.py runs/tune
#
# Long on 2 CPU cores (an original, a Retrain per scenario, 2 × |grid| runs per method and
# scenario); every step skips what an earlier run already wrote, so a killed run resumes.
set -euo pipefail
OUT=${1:-runs/tune}
METHODS=${METHODS:-"salun rl ft ga l1_sparse"}
THREADS=${THREADS:-2}
mkdir -p "$OUT"
common=(--threads "$THREADS" --quiet)
train=(--arch mlp --epochs 60 --batch-size 128 --lr 0.05 --weight-decay 0 --schedule cosine)

for scenario in random10 class0; do
  d="$OUT/$scenario"
  mkdir -p "$d"
  if [ ! -f "$d/split.json" ]; then
    if [ "$scenario" = random10 ]; then
      salun split --data fashion-mnist --scenario random --fraction 0.1 --seed 0 --out "$d/split.json"
    else
      salun split --data fashion-mnist --scenario class --classes 0 --seed 0 --out "$d/split.json"
    fi
  fi
  [ -d "$d/original" ] || salun train --data fashion-mnist "${train[@]}" --split "$d/split.json" \
    --out "$d/original" "${common[@]}"
  [ -d "$d/retrain" ] || salun unlearn --model "$d/original" --forget "$d/split.json" \
    --method retrain --out "$d/retrain" "${common[@]}"
  for m in $METHODS; do
    [ -f "$d/$m.free.json" ] || salun tune --model "$d/original" --forget "$d/split.json" \
      --method "$m" --set epochs=4 --out "$d/$m.free.json" "${common[@]}"
    [ -f "$d/$m.retrain.json" ] || salun tune --model "$d/original" --forget "$d/split.json" \
      --method "$m" --set epochs=4 --retrain "$d/retrain" --out "$d/$m.retrain.json" "${common[@]}"
  done
done
python "$(dirname "$0")/compare.py" "$OUT" | tee "$OUT/comparison.md"
