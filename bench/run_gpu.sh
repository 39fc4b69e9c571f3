#!/usr/bin/env bash
# The whole speed benchmark on one lent GPU, in one go (< 8 minutes on an H100).
#
#   bash bench/run_gpu.sh            # from the repo root on the device machine
#   bash bench/run_gpu.sh --smoke    # tiny shapes, any machine (CPU too): checks the whole path
#
# Runs bench/train_step.py (JAX: anchor work (a) and full PLIP objective (b)) then
# bench/torch_reference.py (PyTorch: (a) eager, channels_last, torch.compile), each with a time
# budget after which rows are skipped (rows run in priority order), then merges both into
# bench/results/<date>-<card>.json (+ a copy in $OUT when set) with the device, versions and
# ratio_jax_over_torch_compile, and prints the table. Needs jax/flax/optax/einops/pillow,
# ml_collections (the run builder's configs) and torch/transformers, no tfds or grain; the lent GPU
# image lacks ml_collections: bench/README.md "On a GPU machine".
# Overridable: PYTHON, JAX_ROWS, TORCH_ROWS, JAX_BUDGET, TORCH_BUDGET (seconds before no new row
# starts), JAX_TIMEOUT, TORCH_TIMEOUT (hard limits), STEPS.
set -uo pipefail
cd "$(dirname "$0")/.."

SMOKE=0
[[ "${1:-}" == "--smoke" ]] && SMOKE=1
PY="${PYTHON:-python3}"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# XLA on GPU, conservative: the latency-hiding scheduler overlaps copies/collectives with compute;
# let the allocator take 90% of the card (b512 full-objective rows need it); quiet C++ logs.
export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_latency_hiding_scheduler=true"
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.90}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"

if [[ $SMOKE == 1 ]]; then
  FLAGS=(--smoke)
  JAX_ROWS="${JAX_ROWS:-anchor:bf16:4,full:fp32:4}"
  TORCH_ROWS="${TORCH_ROWS:-eager:bf16:4,compile:bf16:4}"
  JAX_BUDGET="${JAX_BUDGET:-0}"; TORCH_BUDGET="${TORCH_BUDGET:-0}"
  JAX_TIMEOUT="${JAX_TIMEOUT:-600}"; TORCH_TIMEOUT="${TORCH_TIMEOUT:-600}"
else
  FLAGS=()
  JAX_ROWS="${JAX_ROWS:-anchor:bf16:256,full:bf16:256,anchor:bf16:512,anchor:bf16:128,full:bf16:128,anchor:fp32:128,full:bf16:512,anchor:fp32:256,full:fp32:128}"
  TORCH_ROWS="${TORCH_ROWS:-compile:bf16:256,eager:bf16:128,channels_last:bf16:128,eager:fp32:128,eager:bf16:256,channels_last:bf16:256,compile:bf16:512,compile:bf16:128}"
  JAX_BUDGET="${JAX_BUDGET:-240}"; TORCH_BUDGET="${TORCH_BUDGET:-110}"
  JAX_TIMEOUT="${JAX_TIMEOUT:-310}"; TORCH_TIMEOUT="${TORCH_TIMEOUT:-190}"
fi
[[ -n "${STEPS:-}" ]] && FLAGS+=(--steps "$STEPS")

echo "== device"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" - <<'EOF' || { echo "run_gpu.sh: a required package is missing (see above)" >&2; exit 2; }
import importlib
missing = []
for m in ("jax", "flax", "optax", "einops", "PIL", "numpy", "ml_collections", "torch", "transformers"):
    try:
        importlib.import_module(m)
    except Exception as e:
        missing.append(f"{m} ({type(e).__name__}: {e})")
if missing:
    raise SystemExit("missing: " + ", ".join(missing))
import jax, torch
print("jax", jax.__version__, jax.devices(), "| torch", torch.__version__, "cuda", torch.cuda.is_available())
EOF

T0=$(date +%s)
echo "== JAX (rows: $JAX_ROWS; budget ${JAX_BUDGET}s, hard limit ${JAX_TIMEOUT}s)"
timeout -k 10 "$JAX_TIMEOUT" "$PY" bench/train_step.py "${FLAGS[@]}" --isolate --rows "$JAX_ROWS" \
  --time-budget "$JAX_BUDGET" --row-grace 70 --out "$TMP/jax.json" ${OUT:+--also-dir "$OUT"}
echo "JAX part exit $? after $(( $(date +%s) - T0 ))s"

T1=$(date +%s)
echo "== PyTorch (rows: $TORCH_ROWS; budget ${TORCH_BUDGET}s, hard limit ${TORCH_TIMEOUT}s)"
timeout -k 10 "$TORCH_TIMEOUT" "$PY" bench/torch_reference.py "${FLAGS[@]}" --rows "$TORCH_ROWS" \
  --time-budget "$TORCH_BUDGET" --out "$TMP/torch.json" ${OUT:+--also-dir "$OUT"}
echo "PyTorch part exit $? after $(( $(date +%s) - T1 ))s"

echo "== results"
if [[ ! -f "$TMP/jax.json" ]]; then
  echo "run_gpu.sh: the JAX part wrote no results" >&2
  exit 1
fi
NAME_ARGS=()
[[ $SMOKE == 1 ]] && NAME_ARGS=(--name "gpu_run-$(date +%F)-smoke.json")
"$PY" bench/common.py merge "$TMP/jax.json" "$TMP/torch.json" --out-dir bench/results \
  ${OUT:+--out-dir "$OUT"} "${NAME_ARGS[@]}"
echo "total $(( $(date +%s) - T0 ))s"
