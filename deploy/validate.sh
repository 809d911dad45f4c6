#!/usr/bin/env bash
# Validate everything under deploy/ (what CI runs through tests/deploy/). Usage:
#   bash deploy/validate.sh [all|render|kubeval|crds|policy|rules|queries|dashboard|checkov|dockerfiles]...
# Tools come from $DEPLOY_TOOLS (default .cache/deploy-tools, made by `bash deploy/setup-tools.sh`):
# kubectl (kustomize), kubernetes-validate, checkov, hadolint, the cloudcoil CRD models, promtool. The
# metric inventory and the service configs come from the project venv (.venv). A missing tool is an
# error (exit 3), never a skip. Outputs go to deploy/build/ (git-ignored).
#
# Steps:
#   render       kubectl kustomize of overlays dev and prod (and the base) -> deploy/build/<name>.yaml
#   kubeval      kubernetes-validate --strict against Kubernetes $K8S_VERSION (default 1.30.0) schemas
#   crds         PodMonitor/ServiceMonitor/PrometheusRule (prometheus-operator) and ScaledObject (KEDA)
#                against the CRD models, unknown fields rejected
#   policy       the deployment rules of issue 8 (security contexts, probes, PDBs, GPUs, drain vs grace...)
#   rules        promtool check rules on the PrometheusRule, promtool test rules deploy/prometheus/tests/,
#                promtool check config deploy/prometheus/prometheus.yml
#   queries      promtool parses every KEDA trigger query and every dashboard expression
#   dashboard    deploy/grafana/*.json: structure, and every metric an expression or rule uses exists
#   checkov      checkov on the rendered overlays and the Dockerfiles (accepted exceptions:
#                deploy/checkov.yaml, reasons in deploy/README.md)
#   dockerfiles  hadolint on deploy/docker/*.Dockerfile (deploy/docker/hadolint.yaml)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
TOOLS=${DEPLOY_TOOLS:-$ROOT/.cache/deploy-tools}
K8S_VERSION=${K8S_VERSION:-1.30.0}
BUILD=$ROOT/deploy/build
PROJECT_PY=${PROJECT_PY:-$ROOT/.venv/bin/python}
export PATH="$TOOLS/venv/bin:$TOOLS/prometheus/bin:$PATH"
mkdir -p "$BUILD/prometheus"

need() {  # need TOOL...: fail loudly (exit 3) when a tool is missing
  local t
  for t in "$@"; do
    if ! command -v "$t" >/dev/null 2>&1 && [ ! -x "$t" ]; then
      echo "MISSING TOOL: $t (expected in $TOOLS; run: bash deploy/setup-tools.sh)" >&2
      exit 3
    fi
  done
}
TOOLPY="$TOOLS/venv/bin/python"
CHECK=("$TOOLPY" "$ROOT/deploy/tools/deploycheck.py")

step_render() {
  need kubectl
  echo "== render ($(kubectl version --client 2>/dev/null | grep -i kustomize))"
  kubectl kustomize deploy/k8s/base > "$BUILD/base.yaml"
  local o
  for o in dev prod; do
    kubectl kustomize "deploy/k8s/overlays/$o" > "$BUILD/$o.yaml"
    echo "rendered $o: $(grep -c '^kind:' "$BUILD/$o.yaml") objects"
  done
}

rendered() {  # make sure the overlays are rendered
  [ -s "$BUILD/dev.yaml" ] && [ -s "$BUILD/prod.yaml" ] || step_render
}

step_kubeval() {
  need kubernetes-validate
  rendered
  echo "== kubernetes-validate --strict -k $K8S_VERSION"
  local o out
  for o in base dev prod; do
    [ -s "$BUILD/$o.yaml" ] || step_render
    # custom resources have no schema here (WARN lines); the crds step validates them
    out=$(kubernetes-validate --strict -k "$K8S_VERSION" "$BUILD/$o.yaml" 2>&1) || { echo "$out"; return 1; }
    echo "$o: $(grep -c 'passed for resource' <<<"$out") objects passed"
  done
}

step_crds() {
  need "$TOOLPY"
  rendered
  echo "== CRD validation (cloudcoil-models-prometheus-operator, cloudcoil-models-keda)"
  "${CHECK[@]}" crds "$BUILD/dev.yaml" "$BUILD/prod.yaml"
}

step_policy() {
  need "$TOOLPY"
  rendered
  echo "== policy"
  "${CHECK[@]}" policy "$BUILD/dev.yaml" --overlay dev
  "${CHECK[@]}" policy "$BUILD/prod.yaml" --overlay prod
}

step_rules() {
  need promtool "$TOOLPY"
  rendered
  echo "== promtool ($(promtool --version 2>&1 | sed -n 1p))"
  "${CHECK[@]}" rules "$BUILD/prod.yaml" "$BUILD/prometheus/reenact.rules.yaml"
  promtool check rules "$BUILD/prometheus/reenact.rules.yaml"
  promtool test rules deploy/prometheus/tests/*.yaml
  promtool check config deploy/prometheus/prometheus.yml
}

step_queries() {
  need promtool "$TOOLPY"
  rendered
  echo "== PromQL of the KEDA triggers and the dashboard"
  local d
  for d in deploy/grafana/*.json; do
    "${CHECK[@]}" queries "$BUILD/prod.yaml" "$d" "$BUILD/prometheus/queries.rules.yaml"
    promtool check rules "$BUILD/prometheus/queries.rules.yaml"
  done
}

step_dashboard() {
  need "$TOOLPY"
  rendered
  if [ ! -x "$PROJECT_PY" ]; then
    echo "MISSING TOOL: $PROJECT_PY (the project venv; run: bash scripts/setup.sh)" >&2
    exit 3
  fi
  echo "== dashboards and rules use exported metrics"
  "$PROJECT_PY" deploy/tools/metric_inventory.py > "$BUILD/metrics.txt"
  echo "$(wc -l < "$BUILD/metrics.txt") metric names exported"
  local d
  for d in deploy/grafana/*.json; do
    "${CHECK[@]}" dashboard "$d" "$BUILD/metrics.txt" "$BUILD/prod.yaml"
  done
}

step_checkov() {
  need checkov
  rendered
  echo "== checkov ($(checkov --version))"
  export BC_SKIP_MAPPING=TRUE  # no Prisma Cloud look-ups (offline)
  # rendered manifests + Dockerfiles in one process (checkov's start-up takes seconds); exit 1 on any
  # failed check that deploy/checkov.yaml does not skip
  checkov --config-file deploy/checkov.yaml --framework kubernetes dockerfile \
    -f "$BUILD/dev.yaml" -f "$BUILD/prod.yaml" \
    -f deploy/docker/landmarks.Dockerfile -f deploy/docker/trainer.Dockerfile \
    -f deploy/docker/optimizer.Dockerfile -f deploy/docker/gateway.Dockerfile \
    -f deploy/docker/triton.Dockerfile
  # secrets: on the sources in git (the rendered dev Secret is base64 of a placeholder, which the
  # entropy check cannot tell from a real key)
  checkov --config-file deploy/checkov.yaml --framework secrets -d deploy --skip-path deploy/build
}

step_dockerfiles() {
  need hadolint
  echo "== hadolint ($(hadolint --version))"
  hadolint --config deploy/docker/hadolint.yaml deploy/docker/*.Dockerfile
  echo "ok: hadolint"
}

steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(all)
for s in "${steps[@]}"; do
  case "$s" in
    all)
      step_render; step_kubeval; step_crds; step_policy; step_rules; step_queries; step_dashboard
      step_checkov; step_dockerfiles
      echo "== deploy validation passed" ;;
    render|kubeval|crds|policy|rules|queries|dashboard|checkov|dockerfiles) "step_$s" ;;
    *) echo "unknown step $s" >&2; exit 2 ;;
  esac
done
