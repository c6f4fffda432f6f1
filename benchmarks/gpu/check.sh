#!/usr/bin/env bash
# One prepared device check (docs/gpu.md, benchmarks/gpu/README.md).
#
#   bash benchmarks/gpu/check.sh --prepare   # here, once: data (+ diffusers wheels) into shared-data/
#   bash benchmarks/gpu/check.sh             # on the GPU machine: fits in 8 minutes on one H200
#   bash benchmarks/gpu/check.sh --smoke     # toy scale on CPU, < 2 minutes (CI runs it)
#
# Steps: (1) pytest -m cuda; (2) ResNet-18 on Fashion-MNIST: Original (shortened recipe),
# Retrain, SalUn, RL, FT, GA, l1-sparse on random 10 % (salun bench); (3) images/s of
# benchmarks/throughput.py. Prints a table and writes its records under $OUT (default:
# runs/gpu-check); the bench's working folder (models, masks) stays outside $OUT.
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
MODE=full
for arg in "$@"; do
  case "$arg" in
    --smoke) MODE=smoke ;;
    --prepare) MODE=prepare ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "check.sh: unknown argument $arg (use --smoke, --prepare or nothing)" >&2; exit 2 ;;
  esac
done
DATA_SRC=${SALUN_FMNIST_SRC:-/usr/share/datasets/fashion-mnist}
SHARED="$REPO/shared-data"

if [ "$MODE" = prepare ]; then
  # the device machine has no network: the data and the one missing package travel along
  mkdir -p "$SHARED/fashion-mnist" "$SHARED/wheels"
  cp "$DATA_SRC"/*-ubyte.gz "$SHARED/fashion-mnist/" || {
    echo "check.sh: no Fashion-MNIST files in $DATA_SRC (apt-get install dataset-fashion-mnist," \
         "or set SALUN_FMNIST_SRC)" >&2; exit 2; }
  PIP=${SALUN_PIP:-"$REPO/.venv/bin/python -m pip"}
  $PIP download -q --no-deps --only-binary=:all: -d "$SHARED/wheels" \
    "diffusers==${SALUN_DIFFUSERS_VERSION:-0.42.1}" importlib_metadata \
    || echo "check.sh: could not download the diffusers wheel; the DDPM/SD CUDA tests will skip" >&2
  du -sh "$SHARED"
  echo "prepared $SHARED; on the device machine carry it: run(..., carry=[\"shared-data\"])"
  exit 0
fi

OUT=${OUT:-$REPO/runs/gpu-check}
mkdir -p "$OUT"
WORK=${SALUN_CHECK_WORK:-$(mktemp -d -t salun-gpu-check.XXXXXX)}
mkdir -p "$WORK"

# Python: SALUN_PYTHON, else the project's venv (build machines), else python3 (the GPU
# image's interpreter, which holds a CUDA build of torch)
PY=${SALUN_PYTHON:-}
if [ -z "$PY" ]; then
  for cand in "$REPO/.venv/bin/python" python3; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c "import torch" 2>/dev/null; then
      PY=$cand; break
    fi
  done
fi
[ -n "$PY" ] || { echo "check.sh: no Python with torch found; set SALUN_PYTHON" >&2; exit 2; }
export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 SALUN_QUIET=1 HF_HUB_OFFLINE=1
# before any process starts cuBLAS: the deterministic-mode test needs a fixed workspace
export CUBLAS_WORKSPACE_CONFIG=${CUBLAS_WORKSPACE_CONFIG:-:4096:8}
[ -d "$SHARED/fashion-mnist" ] && export SALUN_DATA_DIR=${SALUN_DATA_DIR:-$SHARED}

if [ "$MODE" = full ]; then
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
    echo "check.sh: torch sees no CUDA GPU here ($PY); use --smoke on a CPU machine" >&2; exit 2; }
  DEVICE=cuda
  export SALUN_PRECISION=${SALUN_PRECISION:-bf16}   # channels_last: auto (on for CUDA)
  EPOCHS=${SALUN_CHECK_EPOCHS:-10}
  T_PYTEST=${SALUN_CHECK_T_PYTEST:-130}; T_BENCH=${SALUN_CHECK_T_BENCH:-270}; T_TPUT=${SALUN_CHECK_T_TPUT:-60}
  BENCH_ARGS=()
  TPUT_ARGS=(--device cuda --width 1.0 --batch 256 --steps 40 --repeats 3 --precision "$SALUN_PRECISION")
  cat > "$OUT/check.yaml" <<YAML
# ResNet-18 on Fashion-MNIST, random 10 %: the reference recipe (SGD 0.1 cosine, momentum
# 0.9, wd 5e-4, batch 256) shortened to $EPOCHS epochs without augmentation (so that the
# short run memorises its training set, the paper's regime); the methods at the reference
# settings (10 epochs; GA 5; lrs of the reference README).
name: gpu-check
description: ResNet-18, Fashion-MNIST, random 10 %, seed 0, the reference unlearning settings
dataset: fashion-mnist
arch: resnet18
width: 1.0
original: {epochs: $EPOCHS, batch_size: 256, lr: 0.1, momentum: 0.9, weight_decay: 0.0005, schedule: cosine}
scenarios: [random10]
seeds: [0]
protocol: [paper]
mia_features: [confidence]
methods:
  salun: {epochs: 10, lr: 0.013}
  rl: {epochs: 10, lr: 0.013}
  ft: {epochs: 10, lr: 0.01}
  ga: {epochs: 5, lr: 0.0001}
  l1_sparse: {epochs: 10, lr: 0.01}
YAML
else
  DEVICE=cpu
  export SALUN_PRECISION=${SALUN_PRECISION:-fp32}
  T_PYTEST=60; T_BENCH=90; T_TPUT=60
  BENCH_ARGS=(--threads 1)
  TPUT_ARGS=(--device cpu --width 0.0625 --batch 32 --steps 2 --repeats 1 --threads 1)
  cat > "$OUT/check.yaml" <<YAML
# --smoke: the same pipeline at toy scale (scikit-learn digits, a small MLP; ResNet-18 is
# exercised on CPU by tests/test_cuda.py and by the throughput step)
name: gpu-check-smoke
description: smoke run of benchmarks/gpu/check.sh
dataset: digits
arch: mlp
width: 0.25
original: {epochs: 10, batch_size: 64, lr: 0.05, schedule: cosine}
scenarios: [random10]
seeds: [0]
protocol: [paper]
mia_features: [confidence]
methods:
  salun: {epochs: 1, lr: 0.013, batch_size: 64}
  rl: {epochs: 1, lr: 0.013, batch_size: 64}
  ft: {epochs: 1, lr: 0.01, batch_size: 64}
  ga: {epochs: 1, lr: 0.0001, batch_size: 64}
  l1_sparse: {epochs: 1, lr: 0.01, batch_size: 64}
YAML
fi

# carried wheels (diffusers) go into a private folder, only if the package is missing
if ls "$SHARED"/wheels/*.whl >/dev/null 2>&1 && ! "$PY" -c "import diffusers" 2>/dev/null; then
  SITE="$WORK/site"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$SHARED"/wheels/*.whl \
    && export PYTHONPATH="$PYTHONPATH:$SITE"
fi

echo "check.sh: mode $MODE, python $PY, device $DEVICE, precision $SALUN_PRECISION, out $OUT, work $WORK"
STATUS=()
run_step() {  # name, seconds, command...: log to $OUT/<name>.log, remember the status
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout --signal=INT --kill-after=15 "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
  local rc=${PIPESTATUS[0]}
  STATUS+=("$name=$rc:$((SECONDS - t0))")
  echo "check.sh: step $name exited $rc after $((SECONDS - t0)) s (limit $limit s)"
}

cd "$REPO" || exit 2
run_step pytest-cuda "$T_PYTEST" "$PY" -m pytest -q -m cuda tests/test_cuda.py -p no:cacheprovider \
  --junitxml="$OUT/pytest-cuda.xml"
run_step bench "$T_BENCH" "$PY" -m salun bench --config "$OUT/check.yaml" --out "$WORK/bench" \
  --device "$DEVICE" --quiet --no-report "${BENCH_ARGS[@]}"
[ -f "$WORK/bench/results.jsonl" ] && cp "$WORK/bench/results.jsonl" "$OUT/bench-results.jsonl"
run_step throughput "$T_TPUT" "$PY" benchmarks/throughput.py "${TPUT_ARGS[@]}" --json "$OUT/throughput.json"

"$PY" "$REPO/benchmarks/gpu/summarize.py" --out "$OUT" --mode "$MODE" --status "${STATUS[@]}"
