#!/usr/bin/env bash
# Every GPU figure in one run (issue 15): the `gpu` tests, inference, training, dense
# training and prompt latency, MaskLoop against plain torchvision in the same run, then ONE
# markdown table (GPU named) for docs/benchmarks.md. Installs nothing: run it where the
# project and its dependencies are installed. Planned to finish in under 8 minutes on one
# H100/H200 (each step has its own time limit).
#
#   bash benchmarks/gpu_check.sh              # on a CUDA machine
#   bash benchmarks/gpu_check.sh --dry-run    # every step at toy size on the CPU (CI, tests)
#   bash benchmarks/gpu_check.sh --out DIR    # keep the logs and JSON in DIR
#
# Exit status: 0 when every step passed; 1 when a step failed (the table still prints, the
# failed step is named above it); 2 on bad usage or no CUDA without --dry-run.
set -uo pipefail
cd "$(dirname "$0")/.."

DRY=0
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --out) OUT="$2"; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
if [ -z "$OUT" ]; then OUT="$(mktemp -d -t maskloop-gpu-check-XXXXXX)"; fi
mkdir -p "$OUT"
export QT_QPA_PLATFORM=offscreen
PY="${PYTHON:-python}"

if [ "$DRY" = 1 ]; then
  DEV=cpu
  FLAGS=" --dry-run"
  PYTEST_ARGS=(tests/engine/test_gpu.py)            # collected and skipped without CUDA
  INFER=(--devices cpu --images 1 --size 96 --warmup 0 --baseline-size 96)
  # r18fpn_lite (the CPU default) where MaskLoop's model is ours to choose: a walk-through, not
  # figures, and most of its CPU is process start-up (each contender in a fresh process)
  TRAIN=(--device cpu --size 64 --images 2 --batch 1 --steps 1 --warmup 1 --baseline-size 64 --arches r18fpn_lite)
  DENSE=(--device cpu --objects 8 --size 96 --rois 8 --repeat 1)
  STEP=(--step --device cpu --objects 4 --size 64 --repeat 1 --arch r18fpn_lite)
  PROMPTS=(--device cpu --tiny --size 64 --prompts 2 --repeat 1 --archs r18fpn_lite)
  # limits that only catch a hang: toy steps take seconds on an idle CPU but minutes on a busy
  # one (with 120 s, three steps of a dry run at load 8 were killed: issue 14)
  T_PYTEST=400; T_STEP=400
  export OMP_NUM_THREADS=1
  # contenders in this process: a dry run proves the steps, a torch start-up each is its CPU
  export MASKLOOP_BENCH_IN_PROCESS=1
else
  DEV=cuda
  FLAGS=""
  PYTEST_ARGS=(tests)
  INFER=(--devices cuda --cuda-images 64 --size 1024 --warmup 3 --batch 8)
  TRAIN=(--device cuda --size 1024 --batch 4 --steps 20 --warmup 5)
  DENSE=(--device cuda --objects 1000 --size 1024 --repeat 5)
  STEP=(--step --device cuda --objects 500 --size 1024 --repeat 5 --arch r50fpn)
  PROMPTS=(--device cuda)
  T_PYTEST=240; T_STEP=150
fi

"$PY" - "$OUT" "$DEV" "$FLAGS" <<'EOF' || exit 2
import datetime, json, os, sys
import torch
out, dev, flags = sys.argv[1:4]
if dev == "cuda" and not torch.cuda.is_available():
    print("gpu_check.sh: CUDA is not available here (use --dry-run for the CPU walk-through)", file=sys.stderr)
    sys.exit(1)
name = torch.cuda.get_device_name(0) if dev == "cuda" else "CPU dry run (toy sizes: not figures)"
meta = {"device": name, "torch": torch.__version__, "cuda": torch.version.cuda if dev == "cuda" else "-",
        "cpus": os.cpu_count(), "date": datetime.date.today().isoformat(), "flags": flags}
json.dump(meta, open(os.path.join(out, "meta.json"), "w"))
print(f"gpu_check: {name}; logs and JSON in {out}", file=sys.stderr)
EOF

FAILED=()
: > "$OUT/notes.txt"
step() {  # step NAME LIMIT_S CMD...: runs CMD with a time limit, its output to OUT/NAME.log
  local name="$1" limit="$2"; shift 2
  local t0=$SECONDS
  echo "gpu_check: $name ..." >&2
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "gpu_check: $name rc=$rc ($((SECONDS - t0)) s)" >&2
  if [ $rc -ne 0 ]; then
    FAILED+=("$name")
    echo "$name FAILED (exit $rc$([ $rc -eq 124 ] && echo ', over its time limit')); see $OUT/$name.log" >> "$OUT/notes.txt"
    tail -n 20 "$OUT/$name.log" >&2
  fi
}

step pytest "$T_PYTEST" "$PY" -m pytest -m gpu -q -p no:cacheprovider "${PYTEST_ARGS[@]}"
tail -n 3 "$OUT/pytest.log" > "$OUT/pytest.txt"
step inference "$T_STEP" "$PY" benchmarks/bench_inference.py "${INFER[@]}" --json "$OUT/inference.json"
step train "$T_STEP" "$PY" benchmarks/bench_train.py "${TRAIN[@]}" --json "$OUT/train.json"
step dense_targets "$T_STEP" "$PY" benchmarks/bench_dense_training.py "${DENSE[@]}" --json "$OUT/dense_targets.json"
step dense_step "$T_STEP" "$PY" benchmarks/bench_dense_training.py "${STEP[@]}" --json "$OUT/dense_step.json"
if [ -f benchmarks/bench_prompts.py ]; then
  # written by another helper: pass only the flags its --help offers; its own output is in
  # prompts.log, its rows join the table when it writes --json
  HELP="$("$PY" benchmarks/bench_prompts.py --help 2>/dev/null)"
  ARGS=()
  for ((k = 0; k < ${#PROMPTS[@]}; k++)); do  # a flag, or a flag and its value
    a="${PROMPTS[k]}"; v="${PROMPTS[k + 1]:-}"
    [[ "$v" == --* || -z "$v" ]] && v="" || k=$((k + 1))
    grep -q -- "$a\b" <<<"$HELP" && ARGS+=("$a" ${v:+"$v"})
  done
  grep -q -- "--json" <<<"$HELP" && ARGS+=(--json "$OUT/prompts.json")
  if [ "$DRY" = 1 ] && ! grep -q -- "--tiny\|--size" <<<"$HELP"; then
    echo "prompt latency skipped in the dry run: bench_prompts.py has no --tiny or --size" >> "$OUT/notes.txt"
  else
    step prompts "$T_STEP" "$PY" benchmarks/bench_prompts.py "${ARGS[@]}"
    grep -q -- "--json" <<<"$HELP" || echo "prompt latency: see $OUT/prompts.log (bench_prompts.py writes no --json)" >> "$OUT/notes.txt"
  fi
else
  echo "prompt latency skipped: benchmarks/bench_prompts.py is not in this tree yet" >> "$OUT/notes.txt"
fi

echo
"$PY" benchmarks/gpu_report.py "$OUT"
if [ ${#FAILED[@]} -gt 0 ]; then
  echo "gpu_check: FAILED steps: ${FAILED[*]}" >&2
  exit 1
fi
exit 0
