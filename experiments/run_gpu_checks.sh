#!/usr/bin/env bash
# Run on a machine with a CUDA GPU, nvcc and ninja: builds the fused ops, runs the GPU tests
# (CUDA vs reference, values and gradients) and the op benchmark, and records everything under
# experiments/results/. Usage: experiments/run_gpu_checks.sh [extra bench_ops.py args]
set -euo pipefail
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then sed -n 2,4p "$0" | cut -c3-; exit 0; fi
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
RESULTS=experiments/results
mkdir -p "$RESULTS"
SLUG=$($PY -c "import torch,re; n=torch.cuda.get_device_name() if torch.cuda.is_available() else 'no-gpu'; print(re.sub(r'[^a-z0-9]+','-',n.lower()).strip('-'))")
LOG="$RESULTS/gpu_checks_${SLUG}.txt"
set +e
{
  echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) $(git rev-parse --short HEAD 2>/dev/null || echo no-git)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
  nvcc --version | tail -n 2 || true
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  echo "## stylerig-au doctor --build-ops"
  $PY -m stylerig_au.cli doctor --build-ops 2>&1 | sed -n '/\[ops\]/,/\[assets\]/p' || true
  echo "## GPU + compile tests"
  $PY -m pytest -v -p no:cacheprovider tests/test_ops_gpu.py tests/test_cuda_compile.py 2>&1
} 2>&1 | tee "$LOG"
test_status=${PIPESTATUS[0]}
set -e
echo "## bench_ops" | tee -a "$LOG"
$PY experiments/bench_ops.py "$@" 2>&1 | tee -a "$LOG" || test_status=1
echo "log written to $LOG"
exit "$test_status"
