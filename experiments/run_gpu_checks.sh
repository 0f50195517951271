#!/usr/bin/env bash
# One prepared GPU session, sized for a 15-minute device budget: builds the
# fused ops, runs the GPU tests, a real `--device cuda` / `cuda:0` CLI run, and the op benchmark (fp32 with
# the whole-synthesis ratios, then fp16 op rows). Every step has its own timeout and writes its log as it
# goes; a step that fails or times out does not stop the next one. The step limits add up to 480 s
# (most important first), so `run` with timeout_s 540 still brings back whatever finished.
#
# Usage:
#   experiments/run_gpu_checks.sh [OUT_DIR]       # default: $OUT/gpu_checks if $OUT is set, else
#                                                 #          experiments/results/gpu_checks_<device>
#   QUICK=1 experiments/run_gpu_checks.sh DIR     # tiny settings (a try on the CPU: GPU steps say 'skip')
#
# Writes into OUT_DIR, as it goes: log.txt (every step's output under a '=== step' header), summary.txt
# (one line per step: rc and seconds), junit_gpu.xml, bench_ops_fp32.json, bench_ops_fp16.json; at the
# end OUT_DIR.tgz of it all. Six files: the device tool returns at most 8. Exit status: 0 when every
# step passed (or was skipped), else 1.
set -uo pipefail
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then sed -n '2,/^set /p' "$0" | grep '^#' | cut -c3-; exit 0; fi
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD
export STYLERIG_AU_OPS_CACHE=${STYLERIG_AU_OPS_CACHE:-/tmp/stylerig_ops} MAX_JOBS=${MAX_JOBS:-16}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
PY=${PYTHON:-python3}
QUICK=${QUICK:-0}

HAS_CUDA=$($PY -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)
SLUG=$($PY -c "import torch,re; n=torch.cuda.get_device_name() if torch.cuda.is_available() else 'no-gpu'; print(re.sub(r'[^a-z0-9]+','-',n.lower()).strip('-'))" 2>/dev/null || echo unknown)
if [ $# -ge 1 ]; then D=$1; elif [ -n "${OUT:-}" ]; then D=$OUT/gpu_checks; else D=experiments/results/gpu_checks_$SLUG; fi
mkdir -p "$D"
: > "$D/summary.txt"
: > "$D/log.txt"
SCRATCH=$(mktemp -d)  # generated images and the tiny checkpoint: not worth bringing back
FAILED=0

# step NAME SECONDS CMD...: run CMD under its own timeout, its output appended to $D/log.txt, one summary line.
step() {
  local name=$1 limit=$2 start rc
  shift 2
  start=$(date +%s)
  echo "=== $name ($(date -u +%H:%M:%S), limit ${limit}s)" >> "$D/log.txt"
  timeout --kill-after=15 "$limit" "$@" >> "$D/log.txt" 2>&1
  rc=$?
  [ $rc -eq 0 ] || FAILED=1
  local note=""
  [ $rc -eq 124 ] || [ $rc -eq 137 ] && note=" (timed out after ${limit}s)"
  echo "$name rc=$rc $(( $(date +%s) - start ))s$note" | tee -a "$D/summary.txt"
  tail -n 4 "$D/log.txt"
}

skip() { echo "$1 skip: $2" | tee -a "$D/summary.txt"; }

{
  echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) $(git rev-parse --short HEAD 2>/dev/null || echo no-git) quick=$QUICK"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 || true
  nvcc --version 2>&1 | tail -n 2 || true
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'devices', torch.cuda.device_count())"
} >> "$D/log.txt" 2>&1
cat "$D/log.txt"

if [ "$HAS_CUDA" = 1 ]; then
  step build 150 $PY -c "
from stylerig_au.ops import jit, implementation_status
import time; t = time.time(); m = jit.load(verbose=True)
print(f'built/loaded {m.__name__} in {time.time() - t:.1f} s'); print(implementation_status())"
else
  skip build "no CUDA device"
fi

# GPU tests (they skip themselves without CUDA; the CPU-side checks of the same code run in the CPU suite).
step tests_gpu 180 $PY -m pytest -q -rfEs -p no:cacheprovider -m gpu --junitxml="$D/junit_gpu.xml" \
  tests/test_ops_gpu.py tests/test_stylegan2.py tests/test_invert.py tests/test_openface_estimator.py

if [ "$HAS_CUDA" = 1 ]; then
  # The real CLI on the GPU with both spellings (the H200 run crashed on plain 'cuda'): a tiny random generator.
  step cli_device 60 bash -c "
set -e
$PY -c \"from tests.conftest import make_tiny_stylegan2; from stylerig_au.models.checkpoints import save_stylegan2; save_stylegan2(make_tiny_stylegan2(), '$SCRATCH/tiny.pt')\"
for dev in cuda cuda:0; do $PY -m stylerig_au.cli generate --seeds 0-3 --generator $SCRATCH/tiny.pt --device \$dev --out $SCRATCH/gen_\${dev/:/_}; done
! $PY -m stylerig_au.cli generate --seeds 0 --generator $SCRATCH/tiny.pt --device cuda:99 --out $SCRATCH/gen_bad"
else
  skip cli_device "no CUDA device"
fi

if [ "$QUICK" = 1 ]; then
  BENCH=(--max-res 16 --batch 1 --synthesis-res 8 --synthesis-batch 1 --repeats 2 --warmup 1)
  BENCH16=(--max-res 16 --batch 1 --synthesis-res 0 --repeats 2 --warmup 1)
else
  BENCH=(--repeats 10 --synthesis-repeats 5 --synthesis-batch 4,16)
  BENCH16=(--repeats 10 --synthesis-res 0)
fi
step bench_fp32 150 $PY experiments/bench_ops.py "${BENCH[@]}" --out "$D/bench_ops_fp32.json"
if [ "$HAS_CUDA" = 1 ] || [ "$QUICK" = 1 ]; then
  step bench_fp16 60 $PY experiments/bench_ops.py --dtype float16 "${BENCH16[@]}" --out "$D/bench_ops_fp16.json"
else
  skip bench_fp16 "no CUDA device (float16 convolutions on a CPU are not what is measured)"
fi

rm -rf "$SCRATCH"
tar -czf "$D.tgz" -C "$(dirname "$D")" "$(basename "$D")"
echo "wrote $D/ and $D.tgz"
cat "$D/summary.txt"
exit $FAILED
