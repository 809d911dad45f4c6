"""Checks of the rendered deploy manifests that no off-the-shelf tool does (run by deploy/validate.sh).

    python deploy/tools/deploycheck.py crds RENDERED.yaml...            # CRs against the CRD models, strict
    python deploy/tools/deploycheck.py rules RENDERED.yaml OUT.yaml     # PrometheusRule spec -> promtool file
    python deploy/tools/deploycheck.py queries RENDERED.yaml DASHBOARD.json OUT.yaml  # PromQL -> rules file
    python deploy/tools/deploycheck.py policy RENDERED.yaml --overlay dev|prod
    python deploy/tools/deploycheck.py dashboard DASHBOARD.json METRICS.txt RENDERED.yaml

`crds` needs the deploy tool venv (cloudcoil models); the rest needs only PyYAML. Every command prints
one line per finding and exits 1 if there is any.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import yaml

# ------------------------------------------------------------------------------------------ loading


def load_docs(paths: Iterable[str | Path]) -> list[dict]:
    docs: list[dict] = []
    for p in paths:
        with open(p) as fh:
            docs += [d for d in yaml.safe_load_all(fh) if d]
    return docs


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d.get("kind") == kind]


def name_of(doc: dict) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


# ----------------------------------------------------------------------------------- CRD validation

CRD_MODELS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): ("cloudcoil.models.prometheus_operator.v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PodMonitor"): ("cloudcoil.models.prometheus_operator.v1", "PodMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"): ("cloudcoil.models.prometheus_operator.v1", "PrometheusRule"),
    ("keda.sh/v1alpha1", "ScaledObject"): ("cloudcoil.models.keda.v1alpha1", "ScaledObject"),
}
# keys of a KEDA prometheus trigger's metadata (https://keda.sh/docs/scalers/prometheus/)
KEDA_PROMETHEUS_REQUIRED = {"serverAddress", "query", "threshold"}
KEDA_PROMETHEUS_KNOWN = KEDA_PROMETHEUS_REQUIRED | {
    "activationThreshold", "namespace", "customHeaders", "ignoreNullValues", "unsafeSsl", "queryParameters",
    "authModes", "timeout"}


def unknown_fields(given, parsed, path: str = "") -> Iterator[str]:
    """Keys present in the input but absent after a pydantic round trip = fields the schema does not have
    (the cloudcoil models ignore unknown fields instead of rejecting them)."""
    if isinstance(given, dict):
        if not isinstance(parsed, dict):
            return
        for k, v in given.items():
            if k not in parsed:
                yield f"{path}.{k}".lstrip(".")
            else:
                yield from unknown_fields(v, parsed[k], f"{path}.{k}")
    elif isinstance(given, list) and isinstance(parsed, list):
        for i, (g, p) in enumerate(zip(given, parsed, strict=False)):
            yield from unknown_fields(g, p, f"{path}[{i}]")


def check_crds(docs: list[dict]) -> list[str]:
    import importlib

    problems: list[str] = []
    for doc in docs:
        key = (doc.get("apiVersion"), doc.get("kind"))
        if key not in CRD_MODELS:
            continue
        module, cls_name = CRD_MODELS[key]
        cls = getattr(importlib.import_module(module), cls_name)
        try:
            obj = cls.model_validate(doc)
        except Exception as exc:  # noqa: BLE001 - pydantic's ValidationError and friends
            problems.append(f"{name_of(doc)}: schema: {exc}")
            continue
        dumped = obj.model_dump(mode="json", by_alias=True, exclude_none=True)
        problems += [f"{name_of(doc)}: unknown field {f}" for f in unknown_fields(doc, dumped)]
        if doc["kind"] == "ScaledObject":
            for i, trig in enumerate(doc["spec"].get("triggers", [])):
                if trig.get("type") != "prometheus":
                    continue
                meta = trig.get("metadata", {})
                missing = KEDA_PROMETHEUS_REQUIRED - set(meta)
                extra = set(meta) - KEDA_PROMETHEUS_KNOWN
                if missing:
                    problems.append(f"{name_of(doc)}: triggers[{i}] misses {sorted(missing)}")
                if extra:
                    problems.append(f"{name_of(doc)}: triggers[{i}] unknown metadata {sorted(extra)}")
                if any(not isinstance(v, str) for v in meta.values()):
                    problems.append(f"{name_of(doc)}: triggers[{i}] metadata values must be strings")
    if not any((d.get("apiVersion"), d.get("kind")) in CRD_MODELS for d in docs):
        problems.append("no custom resources found (expected PodMonitors, a PrometheusRule, ...)")
    return problems


# ------------------------------------------------------------------------------------ rules, queries


def rule_file(docs: list[dict]) -> dict:
    """The PrometheusRules' groups as one Prometheus rule file (the CR's spec has the same format)."""
    groups = []
    for doc in by_kind(docs, "PrometheusRule"):
        groups += doc["spec"]["groups"]
    if not groups:
        raise SystemExit("no PrometheusRule found")
    return {"groups": groups}


GRAFANA_VARS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h",
                "${namespace}": "reenact", "$namespace": "reenact", "${DS_PROMETHEUS}": "prometheus"}


def dashboard_exprs(dashboard: dict) -> list[tuple[str, str]]:
    """(panel title, expr) of every Prometheus target, Grafana variables replaced by sample values."""
    out = []
    for panel in iter_panels(dashboard.get("panels", [])):
        for t in panel.get("targets", []):
            expr = t.get("expr", "")
            for k, v in GRAFANA_VARS.items():
                expr = expr.replace(k, v)
            out.append((panel.get("title", "?"), expr))
    return out


def iter_panels(panels: list[dict]) -> Iterator[dict]:
    for p in panels:
        yield p
        yield from iter_panels(p.get("panels", []))


def queries_rule_file(docs: list[dict], dashboards: list[dict]) -> dict:
    """KEDA trigger queries and dashboard expressions as recording rules, for `promtool check rules`
    (which parses every expression)."""
    rules = []
    for doc in by_kind(docs, "ScaledObject"):
        for i, trig in enumerate(doc["spec"].get("triggers", [])):
            if trig.get("type") == "prometheus":
                rules.append({"record": f"keda:{doc['metadata']['name']}:{i}", "expr": trig["metadata"]["query"]})
    for d in dashboards:
        for i, (_title, expr) in enumerate(dashboard_exprs(d)):
            rules.append({"record": f"dashboard:expr:{i}", "expr": expr})
    return {"groups": [{"name": "queries", "rules": rules}]}


# ------------------------------------------------------------------------ metric names in PromQL

PROMQL_FUNCS_AND_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and", "or", "unless",
    "sum", "avg", "min", "max", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values",
    "group", "rate", "irate", "increase", "delta", "idelta", "deriv", "histogram_quantile", "absent",
    "absent_over_time", "avg_over_time", "max_over_time", "min_over_time", "sum_over_time", "count_over_time",
    "last_over_time", "quantile_over_time", "clamp_min", "clamp_max", "clamp", "abs", "ceil", "floor", "round",
    "vector", "scalar", "time", "label_replace", "label_join", "sort", "sort_desc", "changes", "resets",
    "predict_linear", "timestamp", "exp", "ln", "log2", "log10", "sqrt", "inf", "nan",
}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_BRACES = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w:.])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])")


def metric_names(expr: str) -> set[str]:
    """Metric names used by a PromQL expression (selectors), without functions, keywords and labels."""
    text = _STRING.sub('""', expr)
    text = _BRACES.sub("", text)
    text = _BRACKETS.sub("", text)
    text = _GROUPING.sub("", text)
    names = set()
    for m in _IDENT.finditer(text):
        word = m.group(1)
        rest = text[m.end():].lstrip()
        if word in PROMQL_FUNCS_AND_KEYWORDS or rest.startswith("("):
            continue
        if re.fullmatch(r"\d+[smhdwy]", word):
            continue
        names.add(word)
    return names


def label_matchers(expr: str) -> list[tuple[str, str]]:
    """(metric name, matcher block) pairs, e.g. ('reenact_grpc_requests_total', 'service="gateway"')."""
    text = _STRING.sub(lambda m: m.group(0), expr)
    return re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^{}]*)\}", text)


# ---------------------------------------------------------------------------------------- dashboard


def check_dashboard(dashboard: dict, known_metrics: set[str], rules: dict) -> list[str]:
    problems = []
    for key in ("title", "uid", "panels", "schemaVersion"):
        if key not in dashboard:
            problems.append(f"dashboard: missing {key!r}")
    recorded = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    known = known_metrics | recorded | {"up"}
    ids = [p.get("id") for p in iter_panels(dashboard.get("panels", []))]
    if len(ids) != len(set(ids)) or None in ids:
        problems.append(f"dashboard: panel ids must be unique and set: {ids}")
    exprs = dashboard_exprs(dashboard)
    if not exprs:
        problems.append("dashboard: no Prometheus targets")
    for p in iter_panels(dashboard.get("panels", [])):
        if p.get("type") == "row":
            continue
        if not p.get("targets"):
            problems.append(f"dashboard: panel {p.get('title')!r} has no targets")
        ds = p.get("datasource") or {}
        if ds.get("type") != "prometheus":
            problems.append(f"dashboard: panel {p.get('title')!r} datasource is not prometheus: {ds}")
    for title, expr in exprs:
        names = metric_names(expr)
        if not names:
            problems.append(f"dashboard: panel {title!r}: no metric in {expr!r}")
        for n in sorted(names - known):
            problems.append(f"dashboard: panel {title!r}: unknown metric {n!r} in {expr!r}")
    return problems


def check_rule_metrics(rules: dict, known_metrics: set[str]) -> list[str]:
    """Every metric an alert/recording rule reads is exported by a service, Triton, or recorded."""
    recorded = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    known = known_metrics | recorded | {"up"}
    problems = []
    for g in rules["groups"]:
        for r in g["rules"]:
            for n in sorted(metric_names(r["expr"]) - known):
                problems.append(f"rule {r.get('alert') or r.get('record')}: unknown metric {n!r}")
    return problems


# ------------------------------------------------------------------------------------------- policy

GPU_SERVICES = {"optimizer", "trainer", "triton"}
LIVENESS_SERVICE = "liveness"  # reenact.runtime.server.ServiceServer.LIVENESS_SERVICE
MODEL_REPOSITORY_ARG = "--model-repository=$(REENACT_MODEL_REPOSITORY)"
TRITON_REPLICAS_URL = "dns:///triton-headless:8001"
SERVICES = {"landmarks", "trainer", "optimizer", "gateway", "triton"}


def _env(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", []) if "value" in e}


def _port(container: dict, name: str) -> int | None:
    return next((x["containerPort"] for x in container.get("ports", []) if x.get("name") == name), None)


class _Index:
    """The rendered objects the per-Deployment checks look up."""

    def __init__(self, docs: list[dict]) -> None:
        self.deps = {d["metadata"]["name"]: d for d in by_kind(docs, "Deployment")}
        self.services = {d["metadata"]["name"] for d in by_kind(docs, "Service")}
        self.sas = {d["metadata"]["name"]: d for d in by_kind(docs, "ServiceAccount")}
        self.pdbs = {d["spec"]["selector"]["matchLabels"].get("app.kubernetes.io/name")
                     for d in by_kind(docs, "PodDisruptionBudget")}
        self.monitors = {d["spec"]["selector"]["matchLabels"].get("app.kubernetes.io/name")
                         for d in by_kind(docs, "PodMonitor") + by_kind(docs, "ServiceMonitor")}
        self.netpols = {d["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name")
                        for d in by_kind(docs, "NetworkPolicy")}
        self.hpas = {d["spec"]["scaleTargetRef"]["name"]: d for d in by_kind(docs, "HorizontalPodAutoscaler")}
        self.scaled = {d["spec"]["scaleTargetRef"]["name"]: d for d in by_kind(docs, "ScaledObject")}
        self.secrets = by_kind(docs, "Secret")


def _check_pod(name: str, dep: dict, ix: _Index) -> list[str]:
    p, where = [], f"Deployment/{name}"
    pod = dep["spec"]["template"]["spec"]
    psc = pod.get("securityContext", {})
    if not psc.get("runAsNonRoot"):
        p.append(f"{where}: pod securityContext.runAsNonRoot must be true")
    if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        p.append(f"{where}: seccompProfile RuntimeDefault missing")
    if pod.get("automountServiceAccountToken") is not False:
        p.append(f"{where}: automountServiceAccountToken must be false")
    sa = pod.get("serviceAccountName")
    if sa not in ix.sas or ix.sas[sa].get("automountServiceAccountToken") is not False:
        p.append(f"{where}: ServiceAccount {sa!r} missing or automounts its token")
    for what, have in (("Service", ix.services), ("PodDisruptionBudget", ix.pdbs),
                       ("PodMonitor/ServiceMonitor", ix.monitors), ("NetworkPolicy", ix.netpols)):
        if name not in have:
            p.append(f"{where}: no {what}")
    return p


def _check_security(cw: str, c: dict, vols: dict) -> list[str]:
    p = []
    sc = c.get("securityContext", {})
    if sc.get("readOnlyRootFilesystem") is not True:
        p.append(f"{cw}: readOnlyRootFilesystem must be true")
    if sc.get("allowPrivilegeEscalation") is not False:
        p.append(f"{cw}: allowPrivilegeEscalation must be false")
    if sc.get("capabilities", {}).get("drop") != ["ALL"]:
        p.append(f"{cw}: capabilities.drop must be [ALL]")
    tmp = [m for m in c.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
    if not tmp or "emptyDir" not in vols.get(tmp[0]["name"], {}):
        p.append(f"{cw}: /tmp must be an emptyDir (read-only root filesystem)")
    return p


def _check_resources(cw: str, name: str, c: dict, overlay: str) -> list[str]:
    p = []
    res = c.get("resources", {})
    for kind in ("requests", "limits"):
        for r in ("cpu", "memory"):
            if r not in res.get(kind, {}):
                p.append(f"{cw}: resources.{kind}.{r} missing")
    gpu = res.get("limits", {}).get("nvidia.com/gpu")
    if overlay == "prod" and name in GPU_SERVICES and str(gpu) != "1":
        p.append(f"{cw}: prod needs nvidia.com/gpu: 1, got {gpu!r}")
    if (overlay == "dev" or name not in GPU_SERVICES) and gpu is not None:
        p.append(f"{cw}: no GPU expected here, got nvidia.com/gpu {gpu!r}")
    return p


def _check_probes(cw: str, c: dict) -> list[str]:
    p = []
    port = _port(c, "grpc")
    if port is None:
        p.append(f"{cw}: no container port named grpc")
    if _port(c, "metrics") is None:
        p.append(f"{cw}: no container port named metrics")
    ready = c.get("readinessProbe", {})
    if ready.get("grpc", {}).get("port") != port or ready["grpc"].get("service", ""):
        p.append(f"{cw}: readinessProbe must be a gRPC probe on the service port {port} (overall health, no "
                 f"service name), got {ready}")
    for probe in ("livenessProbe", "startupProbe"):
        got = c.get(probe, {})
        if cw.endswith("/triton"):  # Triton's gRPC health is its readiness: liveness is HTTP /v2/health/live
            ok = got.get("httpGet", {}).get("path") == "/v2/health/live" and got["httpGet"].get("port") in (
                "http", _port(c, "http")) and _port(c, "http") is not None
            want = "httpGet /v2/health/live on the http port"
        else:  # reenact/runtime/server.py: ServiceServer.LIVENESS_SERVICE
            ok = got.get("grpc", {}).get("port") == port and got["grpc"].get("service") == LIVENESS_SERVICE
            want = f"a gRPC probe on the service port {port} with service {LIVENESS_SERVICE!r}"
        if not ok:
            p.append(f"{cw}: {probe} must be {want} (liveness must not follow readiness), got {got}")
    if c.get("livenessProbe") == ready:
        p.append(f"{cw}: livenessProbe and readinessProbe are the same check")
    return p


def _shutdown_seconds(cw: str, name: str, c: dict, overlay: str, p: list[str]) -> float:
    """Seconds the process may take after SIGTERM (drain + grace; Triton's exit timeout); checks config."""
    if name == "triton":
        args = c.get("args", [])
        if MODEL_REPOSITORY_ARG not in args:
            p.append(f"{cw}: {MODEL_REPOSITORY_ARG} missing (one S3 model repository for Triton, trainer, gateway)")
        if "--model-control-mode=explicit" not in args:
            p.append(f"{cw}: --model-control-mode=explicit missing")
        return next((float(a.split("=", 1)[1]) for a in args if a.startswith("--exit-timeout-secs=")), 30.0)
    env, prefix = _env(c), f"REENACT_{name.upper()}_"
    if env.get(prefix + "METRICS_PORT") != str(_port(c, "metrics")):
        p.append(f"{cw}: {prefix}METRICS_PORT does not match the metrics container port")
    if env.get(prefix + "PORT") != str(_port(c, "grpc")):
        p.append(f"{cw}: {prefix}PORT does not match the grpc container port")
    if name in ("optimizer", "trainer"):
        want = "cuda" if overlay == "prod" else "cpu"
        if env.get(prefix + "DEVICE") != want:
            p.append(f"{cw}: {prefix}DEVICE must be {want} in {overlay}, got {env.get(prefix + 'DEVICE')!r}")
    drain = float(env.get(prefix + "DRAIN_SECONDS", 10.0))
    grace = float(env.get(prefix + "GRACE_SECONDS", 5.0))
    # the trainer closes its job manager with timeout=drain before the runtime's own drain
    return (2 * drain if name == "trainer" else drain) + grace


def _check_deployment(name: str, dep: dict, ix: _Index, overlay: str) -> list[str]:
    p = _check_pod(name, dep, ix)
    pod = dep["spec"]["template"]["spec"]
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    tgps = pod.get("terminationGracePeriodSeconds", 30)
    for c in pod["containers"]:
        cw = f"Deployment/{name}/{c['name']}"
        p += _check_security(cw, c, vols) + _check_resources(cw, name, c, overlay) + _check_probes(cw, c)
        needed = _shutdown_seconds(cw, name, c, overlay, p)
        pre = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        if tgps <= pre + needed:
            p.append(f"{cw}: terminationGracePeriodSeconds {tgps} must exceed preStop {pre} + drain {needed}")
    if name in ("gateway", "trainer"):
        url = _env(pod["containers"][0]).get(f"REENACT_{name.upper()}_TRITON_URL")
        if url != TRITON_REPLICAS_URL:
            p.append(f"Deployment/{name}: Triton URL must be {TRITON_REPLICAS_URL} (every replica), got {url!r}")
    replicas = dep["spec"].get("replicas")
    if overlay == "dev" and replicas != 1:
        p.append(f"Deployment/{name}: dev runs one replica, got {replicas}")
    if name == "trainer" and (replicas != 1 or dep["spec"].get("strategy", {}).get("type") != "Recreate"):
        p.append(f"Deployment/{name}: the trainer must be a single replica with strategy Recreate")
    return p


def _check_scaling(ix: _Index) -> list[str]:
    p = []
    for name in ("landmarks", "gateway"):
        metrics = ix.hpas.get(name, {}).get("spec", {}).get("metrics", [])
        if not any(m.get("resource", {}).get("name") == "cpu" for m in metrics):
            p.append(f"prod: {name} needs a CPU HPA")
    so = ix.scaled.get("optimizer")
    if not so or not any("reenact_optimizer_queue_depth" in t.get("metadata", {}).get("query", "")
                         for t in so["spec"].get("triggers", [])):
        p.append("prod: the optimizer needs a ScaledObject on reenact_optimizer_queue_depth")
    for name in ("landmarks", "gateway", "optimizer"):
        if name in ix.deps and "replicas" in ix.deps[name]["spec"]:
            p.append(f"prod: Deployment/{name} sets replicas while its autoscaler owns them")
    return p


def _check_triton_replicas(docs: list[dict], ix: _Index, overlay: str) -> list[str]:
    """Several Triton replicas in prod, a PDB that keeps one, the headless Service, the S3 model repository."""
    p = []
    replicas = ix.deps.get("triton", {}).get("spec", {}).get("replicas", 1)
    if overlay == "prod" and replicas < 2:
        p.append(f"prod: Triton needs >= 2 replicas, got {replicas}")
    for pdb in by_kind(docs, "PodDisruptionBudget"):
        if pdb["spec"]["selector"]["matchLabels"].get("app.kubernetes.io/name") == "triton":
            spec = pdb["spec"]
            if "minAvailable" in spec or spec.get("maxUnavailable") != 1:
                p.append(f"PodDisruptionBudget/triton must be maxUnavailable: 1, got {spec}")
    headless = [d for d in by_kind(docs, "Service") if d["metadata"]["name"] == "triton-headless"]
    if not headless or headless[0]["spec"].get("clusterIP") != "None" or \
            headless[0]["spec"].get("selector", {}).get("app.kubernetes.io/name") != "triton":
        p.append("Service/triton-headless (clusterIP: None, selecting Triton) missing")
    store = next((d.get("data", {}) for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"] == "reenact-store"), {})
    if not store.get("REENACT_MODEL_REPOSITORY", "").startswith("s3://"):
        p.append("ConfigMap reenact-store: REENACT_MODEL_REPOSITORY must be an s3:// URL")
    return p


def check_policy(docs: list[dict], overlay: str) -> list[str]:
    """The deployment rules of issue 8, on a rendered overlay."""
    ix = _Index(docs)
    p: list[str] = _check_triton_replicas(docs, ix, overlay)
    if set(ix.deps) != SERVICES:
        p.append(f"Deployments {sorted(ix.deps)} != {sorted(SERVICES)}")
    for name, dep in ix.deps.items():
        p += _check_deployment(name, dep, ix, overlay)
    if overlay == "prod":
        p += _check_scaling(ix)
        p += [f"prod must not carry Secrets in git: {name_of(s)}" for s in ix.secrets]
    return p


# ---------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("crds")
    a.add_argument("files", nargs="+")
    a = sub.add_parser("rules")
    a.add_argument("file")
    a.add_argument("out")
    a = sub.add_parser("queries")
    a.add_argument("file")
    a.add_argument("dashboard")
    a.add_argument("out")
    a = sub.add_parser("policy")
    a.add_argument("file")
    a.add_argument("--overlay", required=True, choices=["dev", "prod"])
    a = sub.add_parser("dashboard")
    a.add_argument("dashboard")
    a.add_argument("metrics", help="file with one known metric name per line")
    a.add_argument("file", help="rendered manifests (for the PrometheusRule)")
    args = ap.parse_args(argv)

    problems: list[str] = []
    if args.cmd == "crds":
        problems = check_crds(load_docs(args.files))
    elif args.cmd == "rules":
        Path(args.out).write_text(yaml.safe_dump(rule_file(load_docs([args.file])), sort_keys=False))
    elif args.cmd == "queries":
        dash = json.loads(Path(args.dashboard).read_text())
        out = queries_rule_file(load_docs([args.file]), [dash])
        Path(args.out).write_text(yaml.safe_dump(out, sort_keys=False))
    elif args.cmd == "policy":
        problems = check_policy(load_docs([args.file]), args.overlay)
    elif args.cmd == "dashboard":
        dash = json.loads(Path(args.dashboard).read_text())
        known = {ln.strip() for ln in Path(args.metrics).read_text().splitlines() if ln.strip()}
        rules = rule_file(load_docs([args.file]))
        problems = check_dashboard(dash, known, rules) + check_rule_metrics(rules, known)
    for line in problems:
        print(f"FAIL {line}")
    if not problems:
        print(f"ok: {args.cmd}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
