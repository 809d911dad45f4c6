#!/usr/bin/env bash
# Set up (idempotent) and run every check and test of reenact. This is the command CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=.venv/bin/python
echo "== ruff"; .venv/bin/ruff check .
echo "== generated stubs"; $PY scripts/gen_protos.py --check
echo "== buf lint"; (cd protos && ../node_modules/.bin/buf lint)
# One math thread per process: the tests start several servers at once on a 2-core CI machine and
# torch's default thread pools oversubscribe the cores badly (measured ~100x slower under load).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
echo "== pytest"; $PY -m pytest -q "$@"
