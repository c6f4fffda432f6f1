#!/usr/bin/env bash
# One prepared device check (docs/gpu.md, benchmarks/gpu/README.md).
#
#   bash benchmarks/gpu/check.sh --prepare   # here, once: data (+ diffusers wheels) into shared-data/
#   bash benchmarks/gpu/check.sh             # on the GPU machine: one call of at most ~9 minutes
#   bash benchmarks/gpu/check.sh --smoke     # toy scale on CPU, < 2 minutes (CI runs it)
#
# Steps: (1) pytest -m cuda; (2) configs/paper-gpu.yaml (SalUn, RL, FT and a random mask on
# ResNet-18 / all of Fashion-MNIST, random 10 %), one `salun bench` per seed for as many
# seeds as fit in the step's budget; (3) images/s of benchmarks/throughput.py. Prints a table
# and writes its records under $OUT (default: runs/gpu-check); the bench's working folders
# (models, masks) stay outside $OUT. Time limits: SALUN_CHECK_T_PYTEST / _T_BENCH / _T_TPUT
# (seconds; 0 skips the step).
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
MODE=full
for arg in "$@"; do
  case "$arg" in
    --smoke) MODE=smoke ;;
    --prepare) MODE=prepare ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
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
  # one device call of at most 600 s: 120 + 330 + 60 s of steps; the rest (~40 s) for the
  # start-up (wheels, CUDA init), the kill grace of a cut step and the summary
  T_PYTEST=${SALUN_CHECK_T_PYTEST:-120}; T_BENCH=${SALUN_CHECK_T_BENCH:-330}; T_TPUT=${SALUN_CHECK_T_TPUT:-60}
  BENCH_ARGS=()
  TPUT_ARGS=(--device cuda --width 1.0 --batch 256 --steps 40 --repeats 3 --precision "$SALUN_PRECISION")
  CONFIG=${SALUN_CHECK_CONFIG:-$REPO/configs/paper-gpu.yaml}
  EPOCHS=()
  [ -n "${SALUN_CHECK_EPOCHS:-}" ] && EPOCHS=(--epochs "$SALUN_CHECK_EPOCHS")
  "$PY" "$REPO/benchmarks/gpu/seeds.py" base "$CONFIG" "$OUT/check.yaml" "${EPOCHS[@]}" || exit 2
else
  DEVICE=cpu
  export SALUN_PRECISION=${SALUN_PRECISION:-fp32}
  T_PYTEST=${SALUN_CHECK_T_PYTEST:-60}; T_BENCH=${SALUN_CHECK_T_BENCH:-240}; T_TPUT=${SALUN_CHECK_T_TPUT:-60}
  BENCH_ARGS=(--threads 1)
  TPUT_ARGS=(--device cpu --width 0.0625 --batch 32 --steps 2 --repeats 1 --threads 1)
  cat > "$OUT/check.yaml" <<YAML
# --smoke: the same per-seed loop at toy scale (scikit-learn digits, a small MLP; ResNet-18
# is exercised on CPU by tests/test_cuda.py and by the throughput step)
name: gpu-check-smoke
description: smoke run of benchmarks/gpu/check.sh
dataset: digits
arch: mlp
width: 0.25
original: {epochs: 10, batch_size: 64, lr: 0.05, schedule: cosine}
scenarios: [random10]
seeds: [0, 1]
protocol: [paper]
mia_features: [confidence]
methods:
  salun: {epochs: 1, lr: 0.013, batch_size: 64}
  rl: {epochs: 1, lr: 0.013, batch_size: 64}
  ft: {epochs: 1, lr: 0.01, batch_size: 64}
  salun_random_mask: {method: salun, epochs: 1, lr: 0.013, batch_size: 64, mask_source: random}
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
  if [ "$limit" = 0 ]; then  # a trimmed rerun skips a step with the limit 0
    STATUS+=("$name=skipped:0"); echo "check.sh: step $name skipped (time limit 0)"; return
  fi
  local t0=$SECONDS
  timeout --signal=INT --kill-after=15 "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
  local rc=${PIPESTATUS[0]}
  STATUS+=("$name=$rc:$((SECONDS - t0))")
  echo "check.sh: step $name exited $rc after $((SECONDS - t0)) s (limit $limit s)"
}

cd "$REPO" || exit 2
run_step pytest-cuda "$T_PYTEST" "$PY" -m pytest -q -m cuda tests/test_cuda.py -p no:cacheprovider \
  --junitxml="$OUT/pytest-cuda.xml"

# step 2: one bench per seed (its own folder: a time cut leaves whole seeds), the next seed
# only if the time left exceeds the last seed's by a margin (seeds.py fits)
SEEDS=$("$PY" "$REPO/benchmarks/gpu/seeds.py" list "$OUT/check.yaml") || exit 2
SEED_STATUS=()
bench_t0=$SECONDS; bench_rc=0; last=
: > "$OUT/bench.log"
[ "$T_BENCH" = 0 ] && SEEDS_TO_RUN= || SEEDS_TO_RUN=$SEEDS  # limit 0: skip the step
for s in $SEEDS_TO_RUN; do
  left=$((T_BENCH - (SECONDS - bench_t0)))
  if [ -n "$last" ] && ! "$PY" "$REPO/benchmarks/gpu/seeds.py" fits "$left" "$last"; then
    echo "check.sh: seed $s not started: $left s left in the bench step, the last seed took $last s" \
      | tee -a "$OUT/bench.log"
    break
  fi
  [ "$left" -ge 1 ] || left=1
  "$PY" "$REPO/benchmarks/gpu/seeds.py" config "$OUT/check.yaml" "$s" "$WORK/seed$s.yaml" || exit 2
  echo "check.sh: bench seed $s ($left s left in the step)" | tee -a "$OUT/bench.log"
  t0=$SECONDS
  timeout --signal=INT --kill-after=15 "$left" "$PY" -m salun bench --config "$WORK/seed$s.yaml" \
    --out "$WORK/bench-seed$s" --device "$DEVICE" --quiet --no-report "${BENCH_ARGS[@]}" \
    2>&1 | tee -a "$OUT/bench.log"
  bench_rc=${PIPESTATUS[0]}
  last=$((SECONDS - t0))
  SEED_STATUS+=("$s=$bench_rc:$last")
  echo "check.sh: bench seed $s exited $bench_rc after $last s" | tee -a "$OUT/bench.log"
  # every finished seed's records, in seed order, replaced whole (a cut call keeps them)
  for d in $SEEDS; do
    [ -f "$WORK/bench-seed$d/results.jsonl" ] && cat "$WORK/bench-seed$d/results.jsonl"
  done > "$OUT/.bench-results.jsonl.tmp" && mv "$OUT/.bench-results.jsonl.tmp" "$OUT/bench-results.jsonl"
  [ "$bench_rc" = 0 ] || break  # a failed or cut seed: the next would fail or be cut too
done
if [ "$T_BENCH" = 0 ]; then
  STATUS+=("bench=skipped:0"); echo "check.sh: step bench skipped (time limit 0)"
else
  STATUS+=("bench=$bench_rc:$((SECONDS - bench_t0))")
  echo "check.sh: step bench exited $bench_rc after $((SECONDS - bench_t0)) s (limit $T_BENCH s)"
fi

run_step throughput "$T_TPUT" "$PY" benchmarks/throughput.py "${TPUT_ARGS[@]}" --json "$OUT/throughput.json"

"$PY" "$REPO/benchmarks/gpu/summarize.py" --out "$OUT" --mode "$MODE" --status "${STATUS[@]}" \
  --seeds-planned $SEEDS --seeds "${SEED_STATUS[@]}"
