#!/usr/bin/env bash
# One prepared GPU call that trains the AU mapper at scale (issue 26, lever 6): the bundled mapper's design
# (student target, keep weight 2, LPIPS identity proxy; the SFace weights do not fit the 64 MiB carry beside
# the generator and LPIPS) with batch 16 and as many steps as fit the time budget, instead of 450 CPU steps of 2.
#
# Usage (on the machine: carry [".device"], made here by ../shared/gpu/pack; timeout_s 540):
#   experiments/run_gpu_train.sh [OUT_DIR]         # default: $OUT/gpu_train; BATCH=16 BUDGET=400 (seconds)
#   QUICK=1 experiments/run_gpu_train.sh DIR       # a try on the CPU: 2 steps of batch 1
#   GEOMETRY=W ...                                  # add the geometry term (train-mapper --weight geometry=W): needs
#                                                   # OpenFace's model packed too: ../shared/gpu/pack with the
#                                                   # generator, LPIPS and openface-2.2-au.pt files of the cache
#   LOCAL=1 ...                                     # the local design instead (train-mapper --local): fine-tunes the
#                                                   # bundled mapper through the local render with the SFace identity
#                                                   # term (crops and regions from the bundled landmark net: no dlib
#                                                   # there), the colour term, no outside term and so no LPIPS. Pack:
#                                                   #   rm -rf .device; C=pretrained/third_party; ../shared/gpu/pack
#                                                   #   $C/mobilestylegan-ffhq-1024.pt $C/sface.pt $C/openface-2.2-au.pt
#                                                   # (~36 MB; openface only for GEOMETRY). TARGET=W sets its target weight
#
# Steps: (1) restore the packed weights; (2) time 4 training steps; (3) train for 90 % of BUDGET seconds' worth
# of steps (BUDGET default 400; under a timeout 60 s longer). Writes into OUT_DIR: log.txt, summary.txt and, when
# the run finishes, au-mapper-gpu.pt (3 MB) with its card au-mapper-gpu.md. The training state (17 MB, over the
# 16 MiB a returned file may have) stays on the machine: a run cut off by the timeout brings back no mapper.
# Evaluate the mapper back here on the CPU (OpenFace and dlib are not on the GPU machine):
#   python experiments/eval_edits.py --faces 8 --method mapper --mapper DIR/au-mapper-gpu.pt --local
set -uo pipefail
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then sed -n '2,/^set /p' "$0" | grep '^#' | cut -c3-; exit 0; fi
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
PY=${PYTHON:-python3}
QUICK=${QUICK:-0}
if [ $# -ge 1 ]; then D=$1; elif [ -n "${OUT:-}" ]; then D=$OUT/gpu_train; else D=experiments/results/gpu_train; fi
mkdir -p "$D"
: > "$D/log.txt"
: > "$D/summary.txt"
BATCH=${BATCH:-16}
BUDGET=${BUDGET:-400}
if [ "$QUICK" = 1 ]; then BATCH=1; fi

if [ -f .device/restore.py ]; then
  $PY .device/restore.py /tmp/stylerig_assets >> "$D/log.txt" 2>&1 && export STYLERIG_AU_PRETRAINED_PATH=/tmp/stylerig_assets
fi
DEVICE=$($PY -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')" 2>/dev/null || echo cpu)
echo "device $DEVICE batch $BATCH budget ${BUDGET}s" | tee -a "$D/summary.txt"
GEOMETRY=${GEOMETRY:-0}
LOCAL=${LOCAL:-0}
if [ "$LOCAL" = 1 ]; then
  TRAIN=($PY -m stylerig_au.cli train-mapper --batch "$BATCH" --init pretrained/au-mapper-mobilestylegan-ffhq-1024.pt
         --local --landmarks net --identity-net sface --weight outside=0 --weight colour=20 --weight keep=2
         --weight "target=${TARGET:-1}" --seed 3 --device "$DEVICE")
  echo "local design (landmark net, SFace identity, colour 20), target weight ${TARGET:-1}" | tee -a "$D/summary.txt"
else
  TRAIN=($PY -m stylerig_au.cli train-mapper --batch "$BATCH" --identity-net lpips --weight keep=2 --device "$DEVICE")
fi
if [ "$GEOMETRY" != 0 ]; then TRAIN+=(--weight "geometry=$GEOMETRY"); echo "geometry weight $GEOMETRY" | tee -a "$D/summary.txt"; fi

# (2) seconds per step, from the probe mapper's own record of its training time (loading excluded)
SCRATCH=$(mktemp -d)
if [ "$QUICK" = 1 ]; then STEPS=2; else
  timeout 120 "${TRAIN[@]}" --steps 4 --save-every 4 --out "$SCRATCH/probe.pt" >> "$D/log.txt" 2>&1
  PER_STEP=$($PY -c "import sys,torch; m=torch.load(sys.argv[1],map_location='cpu',weights_only=True)['meta']; print(m['seconds']/m['steps_this_run'])" "$SCRATCH/probe.pt" 2>>"$D/log.txt" || echo 1.0)
  STEPS=$($PY -c "import sys; print(max(8, int(float(sys.argv[1]) * 0.9 / float(sys.argv[2]))))" "$BUDGET" "$PER_STEP")
  echo "probe: $PER_STEP s/step -> $STEPS steps" | tee -a "$D/summary.txt"
fi

# (3) the run, in scratch (its state file stays there); the mapper and its card are copied out when it finishes
start=$(date +%s)
timeout $((BUDGET + 60)) "${TRAIN[@]}" --steps "$STEPS" --save-every 50 --out "$SCRATCH/au-mapper-gpu.pt" >> "$D/log.txt" 2>&1
rc=$?
echo "train: rc $rc, $(( $(date +%s) - start )) s, $STEPS steps of $BATCH" | tee -a "$D/summary.txt"
[ $rc -eq 0 ] && cp "$SCRATCH/au-mapper-gpu.pt" "$SCRATCH/au-mapper-gpu.md" "$D/"
rm -rf "$SCRATCH"
exit $rc
