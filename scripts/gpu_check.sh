#!/usr/bin/env bash
# One-command check of evotui on a GPU machine (one H100/H200, at most ~8 minutes):
#   scripts/gpu_check.sh OUTDIR [--wheels DIR] [--cpu]
# Prints the environment (torch, CUDA, GPU, flash-attn, compile and FlexAttention), then runs
# `pytest -m gpu`, `evotui bench attention --device cuda --seq-len 2048`, `evotui bench train`
# on gpt2_124m and the scalehop seed, `evotui bench compile`, and a one-generation `evotui run`
# of the scalehop genome scaled to ~100M parameters on the offline corpus. Each step's output
# goes to OUTDIR/<step>.{json,log}; OUTDIR/summary.json and OUTDIR/summary.md sum it up.
#   --wheels DIR  install the Python packages this machine lacks from a local wheel folder
#                 (no index, no deps, into OUTDIR/site on PYTHONPATH); torch, triton and
#                 nvidia-* wheels are never installed: the machine's CUDA torch is kept.
#   --cpu         the same steps on the CPU with small sizes (what CI runs).
# A failing step is recorded (exit code, log) and the next one runs; the script exits 1 when
# any step failed.
set -u

usage() { echo "usage: scripts/gpu_check.sh OUTDIR [--wheels DIR] [--cpu]" >&2; exit 2; }
OUT="" WHEELS="" CPU=0
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) [ $# -ge 2 ] || usage; WHEELS="$2"; shift 2 ;;
    --cpu) CPU=1; shift ;;
    -h|--help) usage ;;
    -*) echo "gpu_check: unknown option $1" >&2; usage ;;
    *) [ -z "$OUT" ] || usage; OUT="$1"; shift ;;
  esac
done
[ -n "$OUT" ] || usage
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python3}"
mkdir -p "$OUT" || exit 2
OUT="$(cd "$OUT" && pwd)"
cd "$ROOT" || exit 2
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1

if [ -n "$WHEELS" ]; then
  [ -d "$WHEELS" ] || { echo "gpu_check: --wheels $WHEELS is not a directory" >&2; exit 2; }
  SITE="$OUT/site"
  mkdir -p "$SITE"
  mapfile -t wheels < <(ls "$WHEELS"/*.whl 2>/dev/null | grep -viE '/(torch|triton|nvidia)[-_]')
  if [ ${#wheels[@]} -gt 0 ]; then
    "$PY" -m pip install -q --no-index --find-links "$WHEELS" --no-deps --no-compile \
      --target "$SITE" "${wheels[@]}" || echo "gpu_check: some wheels did not install" >&2
  fi
  export PYTHONPATH="$ROOT:$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
EVOTUI=("$PY" -m evotui)

if [ "$CPU" = 1 ]; then
  DEV=cpu
  ATTN=(--device cpu --seq-len 256 --window 32 --repeats 1)
  TRAIN_CONFIGS=(--config configs/tiny.yaml --config "$OUT/scalehop_small.yaml")
  TRAIN=(--device cpu --steps 1 --warmup 1 --batch-size 1 --seq-len 128 --no-optimizers)
  COMPILE=(--device cpu --candidates 2 --steps 1 --backend eager --batch-size 1 --seq-len 128
           --config configs/tiny.yaml)
  SCALE=(--dim 128 --seq-len 128) SCALED=scalehop_small.yaml
  RUN=(--device cpu --population 2 --generations 1 --steps 2 --eval-batches 1)
  RUNG1=1 T_TEST=300 T_ATTN=300 T_TRAIN=300 T_COMPILE=300 T_RUN=600
else
  DEV=cuda
  ATTN=(--device cuda --seq-len 2048)
  TRAIN_CONFIGS=(--config configs/gpt2_124m.yaml --config configs/scalehop_xover-68-8a93.yaml)
  TRAIN=(--device cuda --steps 8 --warmup 2 --no-optimizers)
  COMPILE=(--device cuda --candidates 3 --steps 2 --config configs/gpt2_124m.yaml)
  SCALE=(--dim 640) SCALED=scalehop_100m.yaml
  RUN=(--device cuda --population 2 --generations 1 --steps 30 --eval-batches 2)
  # per-step limits, about 8 minutes in all (each is a bound, not the expected time)
  RUNG1=20 T_TEST=120 T_ATTN=60 T_TRAIN=150 T_COMPILE=60 T_RUN=90
fi

STEPS_JSON="$OUT/steps.jsonl"
: > "$STEPS_JSON"
FAILED=0
step() {  # step NAME TIMEOUT_S CMD... : run, time, record; stdout to NAME.out, both to NAME.log
  local name="$1" limit="$2"; shift 2
  echo "== $name: $*"
  local start end rc
  start=$(date +%s.%N)
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.out" 2> "$OUT/$name.log"
  rc=$?
  end=$(date +%s.%N)
  [ $rc -eq 0 ] || { FAILED=1; echo "   FAILED (exit $rc): see $OUT/$name.log"; tail -n 5 "$OUT/$name.log"; }
  "$PY" -c 'import json,sys; print(json.dumps({"step": sys.argv[1], "rc": int(sys.argv[2]), "seconds": round(float(sys.argv[4]) - float(sys.argv[3]), 1), "command": sys.argv[5:]}))' \
    "$name" "$rc" "$start" "$end" "$@" >> "$STEPS_JSON"
}

# 1. the environment
step env 120 "$PY" - "$DEV" <<'PYEOF'
import json, platform, sys
import torch
from evotui.model.backends import available_backends
from evotui.model.backends.flash import flash_fn
from evotui.model.masks import flex_available
from evotui.dsl.patterns import Pattern
from evotui.train.hardware import describe_device
dev = sys.argv[1]
info = {"python": platform.python_version(), "torch": torch.__version__,
        "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
        "device": describe_device(dev if dev == "cpu" or torch.cuda.is_available() else "cpu"),
        "flex_attention": flex_available(), "flash_attn": flash_fn() is not None,
        "compile": hasattr(torch, "compile")}
try:
    import triton
    info["triton"] = triton.__version__
except Exception as e:  # noqa: BLE001
    info["triton"] = f"unavailable ({type(e).__name__})"
info["backends"] = {p.kind: available_backends(p, dev, torch.bfloat16 if dev == "cuda" else None)
                    for p in (Pattern("none"), Pattern("sliding", sw=192))}
print(json.dumps(info))
for k, v in info.items():
    print(f"  {k}: {v}", file=sys.stderr)
PYEOF
cat "$OUT/env.log"

# 2. the CUDA tests (every one skips cleanly on the CPU)
step pytest_gpu "$T_TEST" "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/model tests/train

# 3. attention kernels, every pattern and backend
step bench_attention "$T_ATTN" "${EVOTUI[@]}" bench attention "${ATTN[@]}" --json

# 4. the scaled scalehop genome: for the CPU bench (small) or the one-generation run (~100M)
step scale 60 "${EVOTUI[@]}" scale configs/scalehop_xover-68-8a93.yaml "${SCALE[@]}" \
  --out "$OUT/$SCALED.tmp" --json
"$PY" - "$OUT/$SCALED.tmp" "$OUT/$SCALED" "$RUNG1" "$CPU" <<'PYEOF' || FAILED=1
import sys, yaml
src, dst, rung1, cpu = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
data = yaml.safe_load(open(src))
data["evolution"]["rung1_steps"] = rung1  # a check, not a search
data["train"]["passkey_eval_batches"] = 1
if cpu:  # Inductor on a CPU takes minutes per candidate: bench compile covers compiling
    data["train"]["compile"] = False
    data["train"]["grad_accum"] = 1
yaml.safe_dump(data, open(dst, "w"), sort_keys=False)
PYEOF

# 5. training throughput (steady state), MFU, peak memory, compile seconds
step bench_train "$T_TRAIN" "${EVOTUI[@]}" bench train "${TRAIN_CONFIGS[@]}" "${TRAIN[@]}" --json

# 6. consecutive compiled candidates in one process
step bench_compile "$T_COMPILE" "${EVOTUI[@]}" bench compile "${COMPILE[@]}" --json

# 7. one generation of the scaled genome on the offline corpus
step run "$T_RUN" "${EVOTUI[@]}" run "$OUT/$SCALED" "${RUN[@]}" --data offline \
  --run-dir "$OUT/run" --quiet

"$PY" "$ROOT/scripts/gpu_check_summary.py" "$OUT" "$DEV" || FAILED=1
cat "$OUT/summary.md"
exit $FAILED
