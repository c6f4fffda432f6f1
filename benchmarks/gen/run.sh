#!/usr/bin/env bash
# DDPM class forgetting: the report of benchmarks/gen/README.md, or the mask ablation.
#
#   bash benchmarks/gen/run.sh [--preset fashion|cifar10] [--ablation "0 1 2"] [RUN_FOLDER]
#
#   --preset fashion   configs/gen-fashion-cpu.yaml, CNN judge (default; CPU, ~4-5 h)
#   --preset cifar10   configs/gen-paper-cifar10.yaml, ResNet-34 judge (the paper's figure; GPU)
#   --ablation SEEDS   only the saliency-mask vs random-mask ablation, one mask and one
#                      SalUn run per seed and per mask kind (then benchmarks/gen/ablation.py)
#
# Resumable: every step whose output already exists is skipped, and the DDPM trainings and
# unlearning runs continue from their last checkpoint. Needs `scripts/setup.sh diffusion`.
# SALUN=... picks another salun executable; DEVICE=cuda runs on a GPU.
set -euo pipefail
cd "$(dirname "$0")/../.."

PRESET=fashion
SEEDS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --preset) PRESET=$2; shift 2 ;;
    --ablation) SEEDS=$2; shift 2 ;;
    -h|--help) sed -n 2,15p "$0"; exit 0 ;;
    -*) echo "run.sh: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
case "$PRESET" in
  fashion)
    C=configs/gen-fashion-cpu.yaml; DATA=fashion-mnist
    # the DDPM trains with flips (no crops), so the judge must know mirrored shoes
    JUDGE=(--arch cnn --epochs 8 --augment true --pad 0) ;;
  cifar10)
    C=configs/gen-paper-cifar10.yaml; DATA=cifar10
    # the reference judges with a ResNet-34 (ImageNet-pretrained, fine-tuned at 224 px); no
    # pretrained weights offline, so a CIFAR-stem ResNet-34 is trained from scratch
    JUDGE=(--arch resnet34 --epochs 60 --lr 0.1 --batch-size 128 --augment true --pad 4) ;;
  *) echo "run.sh: --preset must be fashion or cifar10, not $PRESET" >&2; exit 2 ;;
esac
R=${1:-runs/gen-$PRESET}
SALUN=${SALUN:-.venv/bin/salun}
DEV=(--device "${DEVICE:-auto}")
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}   # one thread: see the README on shared cores
mkdir -p "$R"

step() { echo "== $(date -u +%H:%M:%S) $*" >&2; }

# 0. The evaluation classifier, trained on all classes with the DDPM's own augmentation.
if [ ! -f "$R/classifier/model.json" ]; then
  step classifier
  "$SALUN" train --data "$DATA" "${JUDGE[@]}" "${DEV[@]}" --out "$R/classifier"
fi

# 1. The Original DDPM (skipped when complete; continued from its checkpoint otherwise).
step original
"$SALUN" gen train --config "$C" "${DEV[@]}" --resume --out "$R/original"

evaluate() {  # name
  [ -f "$R/$1.eval.json" ] && return 0
  step "evaluate $1"
  "$SALUN" gen evaluate --config "$C" "${DEV[@]}" --model "$R/$1" --classifier "$R/classifier" \
    --grid "$R/$1.png" --out "$R/$1.eval.json"
}
finished() {  # folder: a model folder that is not an unfinished checkpoint
  [ -f "$1/model.json" ] && ! grep -q '"complete": false' "$1/model.json"
}
unlearn() {  # name method [mask] [extra flags...]
  local name=$1 method=$2 mask=${3:-}
  shift 3 2>/dev/null || shift $#
  finished "$R/$name" && return 0
  step "unlearn $name"
  # checkpointed every 50 iterations: the same command continues a killed run exactly
  "$SALUN" gen unlearn --config "$C" "${DEV[@]}" --model "$R/original" --method "$method" \
    ${mask:+--mask "$mask"} --checkpoint-every 50 "$@" --out "$R/$name"
}
mask() {  # file [extra flags...]
  local file=$1; shift
  [ -f "$file" ] && return 0
  step "mask $file"
  "$SALUN" gen mask --config "$C" "${DEV[@]}" --model "$R/original" "$@" --out "$file"
}

if [ -n "$SEEDS" ]; then
  # The ablation: per seed, a saliency mask and a random mask (both seeded), and one SalUn
  # run with each (seeded identically), so the only difference is which weights move.
  # A run already judged (its .eval.json is there, e.g. copied from benchmarks/gen/) is done.
  for s in $SEEDS; do
    if [ ! -f "$R/salun-s$s.eval.json" ]; then
      mask "$R/mask-s$s.safetensors" --seed "$s"
      unlearn "salun-s$s" salun "$R/mask-s$s.safetensors" --seed "$s"
    fi
    if [ ! -f "$R/salun-random-mask-s$s.eval.json" ]; then
      mask "$R/mask-random-s$s.safetensors" --random --seed "$s"
      unlearn "salun-random-mask-s$s" salun "$R/mask-random-s$s.safetensors" --seed "$s"
    fi
  done
  evaluate original
  for s in $SEEDS; do evaluate "salun-s$s"; evaluate "salun-random-mask-s$s"; done
  "$(dirname "$SALUN")/python" benchmarks/gen/ablation.py "$R" $SEEDS
  exit 0
fi

# 2. Masks: SalUn's saliency mask and the random-mask ablation.
mask "$R/mask.safetensors"
mask "$R/mask-random.safetensors" --random

# 3. Unlearning (Retrain = the Original's recipe on D_r, resumable like the Original).
unlearn salun salun "$R/mask.safetensors"
unlearn salun-random-mask salun "$R/mask-random.safetensors"
unlearn rl rl ""
unlearn ga ga ""
# the preset's 1 000 x 64 schedule is SalUn's; ESD takes the reference's 10 000 x 1 (its
# default, the reference's partial sampler, runs up to 50 guided steps per iteration, so
# batch 64 would cost ~50x)
unlearn esd esd "" --iterations 10000 --batch-size 1
step "retrain"
"$SALUN" gen unlearn --config "$C" "${DEV[@]}" --model "$R/original" --method retrain --out "$R/retrain"

# 4. Evaluation with a per-class grid for every model.
for m in original retrain salun salun-random-mask rl ga esd; do evaluate "$m"; done

# 5. The tables.
"$(dirname "$SALUN")/python" benchmarks/gen/summarize.py "$R"
