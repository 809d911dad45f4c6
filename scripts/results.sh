#!/usr/bin/env bash
# Regenerate the tables of docs/RESULTS.md with one command (issue 6's evaluation suite: both protocols x
# the methods: the four of issue 6 + ours-relative). Usage:
#   bash scripts/results.sh cpu            # CPU profile, everything here (about 10 min on 2 cores)
#   bash scripts/results.sh gpu-prepare    # CPU machine: bundles for the GPU profile (MediaPipe)
#   bash scripts/results.sh gpu-produce    # GPU machine: enrollment + the methods (torch only)
#   bash scripts/results.sh gpu-opening    # GPU machine, optional: the opening_weight experiment
#   bash scripts/results.sh gpu-score      # CPU machine: metrics, results.md, report.html (MediaPipe, dlib)
# Output: $OUT (default runs/results-<profile>)/results.md, {self,cross}/results.json and report.html.
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-cpu}
if [ -x .venv/bin/python ]; then PY=${PYTHON:-.venv/bin/python}; else PY=${PYTHON:-python3}; fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
suite() { "$PY" -m reenact.evaluation suite "$@"; }
# (d) ours twice: the engine's defaults (motion absolute) and motion=relative (reenact.optimize.retarget)
METHODS=${METHODS:-nearest,warp,paper,ours,ours-relative}
case "$what" in
  cpu)
    OUT=${OUT:-runs/results-cpu}
    suite --out "$OUT" --profile cpu-quick --device cpu --frames 30 --crop-size 128 --paper-steps 100 --methods "$METHODS" ;;
  gpu-prepare)
    OUT=${OUT:-runs/results-gpu}
    suite --out "$OUT" --phase prepare --profile gpu --frames 24 --crop-size 256 ;;
  gpu-produce)
    # Needs torch (CUDA), numpy, opencv and this repository; the MobileNetV2 weights of the perceptual
    # distance ($REENACT_WEIGHTS_DIR or .cache/weights, from `python -m reenact.perceptual --fetch`).
    OUT=${OUT:-runs/results-gpu}
    suite --out "$OUT" --phase produce --profile gpu --device cuda --frames 24 --crop-size 256 --paper-steps 100 \
      --methods "$METHODS" ;;
  gpu-opening)
    # The opening_weight experiment of docs/RESULTS.md (after gpu-produce, on the same GPU machine: it uses
    # the person gpu-produce enrolled): ours and ours-relative per weight into $OUT/<protocol>-ow<W>;
    # score each folder on the CPU machine with `reenact eval score <folder> --bundle $OUT/<protocol>/bundle.npz`.
    OUT=${OUT:-runs/results-gpu}
    for w in ${WEIGHTS:-1 4 10}; do
      for p in self cross; do
        "$PY" -m reenact.evaluation produce "$OUT/$p/bundle.npz" --out "$OUT/$p-ow$w" --device cuda --profile gpu \
          --methods ours,ours-relative --store "file://$(cd "$OUT" && pwd)/self/store" --person person --ours-set "opening_weight=$w"
      done
    done ;;
  gpu-score)
    OUT=${OUT:-runs/results-gpu}
    suite --out "$OUT" --phase score --profile gpu --frames 24 --crop-size 256 ;;
  *) echo "usage: $0 cpu|gpu-prepare|gpu-produce|gpu-opening|gpu-score" >&2; exit 2 ;;
esac
