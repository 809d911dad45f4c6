#!/usr/bin/env bash
# Set up (idempotent) and run every check and test of reenact. This is the command CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=.venv/bin/python
echo "== ruff"; .venv/bin/ruff check .
echo "== generated stubs"; $PY scripts/gen_protos.py --check
echo "== buf lint"; (cd protos && ../node_modules/.bin/buf lint)
echo "== pytest"; $PY -m pytest -q "$@"
