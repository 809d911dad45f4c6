"""deploy/k8s: kustomize renders, Kubernetes schemas (strict), CRD schemas, issue 8's policy, checkov,
hadolint, and the services' env vars against their real config classes. Each validator is also shown to
catch a planted mistake, so a green run means something."""

from __future__ import annotations

import copy
import dataclasses

import deploycheck
import pytest
import yaml
from deploy_helpers import DEPLOY, ROOT, load, run, tool, validate

from reenact.runtime.config import parse_config


def test_render_both_overlays(rendered):
    for name in ("dev", "prod"):
        kinds = sorted(d["kind"] for d in load(rendered[name]))
        assert kinds.count("Deployment") == 5, kinds
        assert kinds.count("PodMonitor") == 5, kinds
        assert "PrometheusRule" in kinds
    prod_kinds = [d["kind"] for d in load(rendered["prod"])]
    assert prod_kinds.count("HorizontalPodAutoscaler") == 2 and "ScaledObject" in prod_kinds
    dev_kinds = [d["kind"] for d in load(rendered["dev"])]
    assert "HorizontalPodAutoscaler" not in dev_kinds and "ScaledObject" not in dev_kinds


def test_kubernetes_validate_strict(rendered):
    out = validate("kubeval")
    assert "prod:" in out and "objects passed" in out


def test_kubernetes_validate_catches_an_unknown_field(rendered, tmp_path):
    docs = load(rendered["prod"])
    dep = next(d for d in docs if d["kind"] == "Deployment")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    c["livenesProbe"] = c.pop("livenessProbe")  # a typo
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(dep))
    proc = run([tool("kubernetes-validate"), "--strict", "-k", "1.30.0", str(bad)])
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "livenesProbe" in proc.stdout + proc.stderr


def test_custom_resources_against_crd_models(rendered):
    validate("crds")


def test_crd_check_catches_unknown_fields_and_bad_triggers(rendered, tmp_path):
    docs = load(rendered["prod"])
    pm = copy.deepcopy(next(d for d in docs if d["kind"] == "PodMonitor"))
    pm["spec"]["podMetricsEndpoints"][0]["intervall"] = "15s"
    so = copy.deepcopy(next(d for d in docs if d["kind"] == "ScaledObject"))
    del so["spec"]["triggers"][0]["metadata"]["threshold"]
    rule = copy.deepcopy(next(d for d in docs if d["kind"] == "PrometheusRule"))
    rule["spec"]["groups"][0]["rules"][0]["exprr"] = "up"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump_all([pm, so, rule]))
    proc = run([tool("python"), "deploy/tools/deploycheck.py", "crds", str(bad)])
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "podMetricsEndpoints[0].intervall" in out
    assert "misses ['threshold']" in out
    assert "exprr" in out


def test_policy_of_issue_8(rendered):
    validate("policy")


def test_policy_catches_violations(rendered):
    docs = load(rendered["prod"])
    assert deploycheck.check_policy(docs, "prod") == []
    bad = copy.deepcopy(docs)
    deps = {d["metadata"]["name"]: d for d in bad if d["kind"] == "Deployment"}
    opt = deps["optimizer"]["spec"]["template"]["spec"]
    del opt["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
    opt["terminationGracePeriodSeconds"] = 30  # < preStop 5 + drain 30 + grace 5
    deps["landmarks"]["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = False
    deps["gateway"]["spec"]["template"]["spec"]["containers"][0]["readinessProbe"] = {"tcpSocket": {"port": 50050}}
    problems = "\n".join(deploycheck.check_policy(bad, "prod"))
    assert "optimizer/optimizer: prod needs nvidia.com/gpu: 1" in problems
    assert "terminationGracePeriodSeconds 30 must exceed preStop 5 + drain 35.0" in problems
    assert "landmarks/landmarks: readOnlyRootFilesystem must be true" in problems
    assert "gateway/gateway: readinessProbe must be a gRPC probe" in problems


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_liveness_differs_from_readiness(rendered, overlay):
    """Liveness must not follow readiness (a pod whose peer is down leaves the Service, it is not restarted):
    the reenact services' liveness/startup probes name the runtime's always-SERVING `liveness` health entry,
    readiness the overall status; Triton's liveness is HTTP /v2/health/live (its gRPC health is readiness)."""
    from reenact.runtime.server import ServiceServer

    assert ServiceServer.LIVENESS_SERVICE == deploycheck.LIVENESS_SERVICE
    for dep in (d for d in load(rendered[overlay]) if d["kind"] == "Deployment"):
        c = dep["spec"]["template"]["spec"]["containers"][0]
        live, start, ready = c["livenessProbe"], c["startupProbe"], c["readinessProbe"]
        assert live != ready and "service" not in ready["grpc"], dep["metadata"]["name"]
        if dep["metadata"]["name"] == "triton":
            assert live["httpGet"]["path"] == start["httpGet"]["path"] == "/v2/health/live"
        else:
            assert live["grpc"]["service"] == start["grpc"]["service"] == "liveness"
            assert live["grpc"]["port"] == ready["grpc"]["port"]


def test_triton_replicas_and_model_repository(rendered):
    prod = load(rendered["prod"])
    deps = {d["metadata"]["name"]: d for d in prod if d["kind"] == "Deployment"}
    assert deps["triton"]["spec"]["replicas"] >= 2
    pdb = next(d for d in prod if d["kind"] == "PodDisruptionBudget" and d["metadata"]["name"] == "triton")
    assert pdb["spec"]["maxUnavailable"] == 1  # one replica keeps serving through a drain
    headless = next(d for d in prod if d["kind"] == "Service" and d["metadata"]["name"] == "triton-headless")
    assert headless["spec"]["clusterIP"] == "None"
    # one S3 model repository: Triton reads it, trainer and gateway (shared field model_repository) write it
    store = next(d for d in prod if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "reenact-store")["data"]
    assert store["REENACT_MODEL_REPOSITORY"].startswith("s3://") and "TRITON_MODEL_REPOSITORY" not in store
    assert "--model-repository=$(REENACT_MODEL_REPOSITORY)" in deps["triton"]["spec"]["template"]["spec"][
        "containers"][0]["args"]
    trainer_vols = {v["name"] for v in deps["trainer"]["spec"]["template"]["spec"]["volumes"]}
    assert "model-repository" not in trainer_vols  # no local export directory any more


def test_policy_catches_probe_and_replica_mistakes(rendered):
    bad = copy.deepcopy(load(rendered["prod"]))
    deps = {d["metadata"]["name"]: d for d in bad if d["kind"] == "Deployment"}
    gw = deps["gateway"]["spec"]["template"]["spec"]["containers"][0]
    gw["livenessProbe"] = copy.deepcopy(gw["readinessProbe"])  # liveness = readiness again
    tr = deps["triton"]["spec"]["template"]["spec"]["containers"][0]
    tr["livenessProbe"] = {"grpc": {"port": 8001}}
    deps["triton"]["spec"]["replicas"] = 1
    deps["trainer"]["spec"]["template"]["spec"]["containers"][0]["env"].append(
        {"name": "REENACT_TRAINER_TRITON_URL", "value": "triton:8001"})
    bad = [d for d in bad if not (d["kind"] == "Service" and d["metadata"]["name"] == "triton-headless")]
    problems = "\n".join(deploycheck.check_policy(bad, "prod"))
    assert "gateway/gateway: livenessProbe must be a gRPC probe on the service port 50050 with service 'liveness'" \
        in problems
    assert "gateway/gateway: livenessProbe and readinessProbe are the same check" in problems
    assert "triton/triton: livenessProbe must be httpGet /v2/health/live" in problems
    assert "prod: Triton needs >= 2 replicas, got 1" in problems
    assert "Deployment/trainer: Triton URL must be dns:///triton-headless:8001" in problems
    assert "Service/triton-headless" in problems


def test_gpu_only_in_prod(rendered):
    for overlay, want in (("dev", set()), ("prod", {"optimizer", "trainer", "triton"})):
        got = {d["metadata"]["name"] for d in load(rendered[overlay]) if d["kind"] == "Deployment"
               and "nvidia.com/gpu" in d["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]}
        assert got == want, overlay


def test_checkov_with_written_down_exceptions(rendered):
    out = validate("checkov", timeout=240)
    assert "Failed checks: 0" in out
    cfg = yaml.safe_load((ROOT / "deploy/checkov.yaml").read_text())
    readme = (ROOT / "deploy/README.md").read_text()
    for check in cfg["skip-check"]:  # every accepted exception has its reason in the README
        assert check in readme, check


def test_hadolint_dockerfiles():
    validate("dockerfiles")


# ------------------------------------------------------------------ env vars vs the real config classes

CONFIGS = {
    "landmarks": ("services.landmarks.config", "LandmarksConfig"),
    "trainer": ("services.trainer.config", "TrainerConfig"),
    "optimizer": ("services.optimizer.config", "OptimizerConfig"),
    "gateway": ("services.gateway.config", "GatewayConfig"),
}
NON_CONFIG_REENACT_VARS = {"REENACT_S3_ENDPOINT"}  # read by reenact.store.open_store, not a config field


def container_env(docs: list[dict], dep: dict) -> dict[str, str]:
    """The container's environment: envFrom ConfigMaps (from the rendered output), then env values."""
    cms = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    c = dep["spec"]["template"]["spec"]["containers"][0]
    env: dict[str, str] = {}
    for src in c.get("envFrom", []):
        env.update(cms[src["configMapRef"]["name"]])
    env.update({e["name"]: e["value"] for e in c.get("env", []) if "value" in e})
    return env


@pytest.mark.parametrize("overlay", ["dev", "prod"])
@pytest.mark.parametrize("service", sorted(CONFIGS))
def test_env_vars_are_config_fields_and_validate(rendered, overlay, service, tmp_path):
    import importlib

    module, cls_name = CONFIGS[service]
    cls = getattr(importlib.import_module(module), cls_name)
    fields = {f.name for f in dataclasses.fields(cls)}
    shared = {f.name for m, c in CONFIGS.values() for f in dataclasses.fields(getattr(importlib.import_module(m), c))}
    docs = load(rendered[overlay])
    dep = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == service)
    env = container_env(docs, dep)
    prefix = f"REENACT_{service.upper()}_"
    unknown = []
    for key in env:
        if not key.startswith("REENACT_") or key in NON_CONFIG_REENACT_VARS:
            continue
        if key.startswith(prefix):  # REENACT_<SERVICE>_<FIELD>: a field of this service
            ok = key[len(prefix):].lower() in fields
        else:  # shared REENACT_<FIELD>: a field of some service (e.g. REENACT_STORE_URL)
            ok = key[len("REENACT_"):].lower() in shared
        if not ok:
            unknown.append(key)
    assert not unknown, f"{service}: env vars that no config field reads: {unknown}"
    if service == "gateway":
        # auth is on in every overlay: the keys file is the mounted Secret (key `api-keys`); the dev overlay's
        # Secret is generated from its keys file, which must parse (prod's is created at deploy time)
        assert env["REENACT_GATEWAY_API_KEYS_FILE"] == "/etc/reenact/api-keys/api-keys"
        mounts = {m["name"]: m["mountPath"] for m in dep["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
        assert mounts["api-keys"] == "/etc/reenact/api-keys"
        from services.gateway.auth import hash_secret, parse_keys

        text = (DEPLOY / "k8s/overlays/dev/secrets/api-keys.json").read_text()
        keys = parse_keys(text)
        assert any(k.secret_sha256 == hash_secret("reenact-dev-not-a-secret") for k in keys.values())
        (tmp_path / "api-keys").write_text(text)
        env = {**env, "REENACT_GATEWAY_API_KEYS_FILE": str(tmp_path / "api-keys")}
    cfg = parse_config(cls, service, [], env=env)  # runs the config's validate()
    assert cfg.host == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in dep["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert (cfg.port, cfg.metrics_port) == (ports["grpc"], ports["metrics"])
    if service in ("trainer", "optimizer", "gateway"):
        assert cfg.store_url.startswith("s3://")
    if service in ("trainer", "gateway"):  # the S3 model repository Triton reads (ConfigMap reenact-store)
        assert cfg.model_repository == env["REENACT_MODEL_REPOSITORY"] and cfg.model_repository.startswith("s3://")
        assert cfg.triton_url == "dns:///triton-headless:8001"


# ---------------------------------------------------------------------------- PromQL name extraction


def test_metric_names_of_promql():
    expr = ('sum by (namespace, le) (rate(reenact_optimizer_frame_latency_seconds_bucket{job="optimizer", '
            'le!="0.5"}[5m])) / on (namespace) group_left reenact:grpc_requests:rate5m > bool 0.5 '
            'and absent(up{job="triton"}) unless nv_inference_count offset 5m')
    assert deploycheck.metric_names(expr) == {
        "reenact_optimizer_frame_latency_seconds_bucket", "reenact:grpc_requests:rate5m", "up", "nv_inference_count"}
    assert deploycheck.metric_names('48 * count(up{namespace="reenact"} == 1)') == {"up"}
