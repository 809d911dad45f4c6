"""Alert rules (promtool check + promtool unit tests), KEDA/dashboard PromQL, the Grafana dashboard's
metric names against what the services really export."""

from __future__ import annotations

import json

import deploycheck
import yaml
from deploy_helpers import BUILD, DEPLOY, run, tool, validate
from metric_inventory import all_metrics

RULE_SOURCE = DEPLOY / "k8s/base/monitoring/prometheusrule.yaml"
RULE_TESTS = DEPLOY / "prometheus/tests/reenact_rules_test.yaml"
DASHBOARD = DEPLOY / "grafana/reenact-pipeline.json"


def rules() -> dict:
    return {"groups": yaml.safe_load(RULE_SOURCE.read_text())["spec"]["groups"]}


def alerts() -> list[str]:
    return [r["alert"] for g in rules()["groups"] for r in g["rules"] if "alert" in r]


def test_promtool_check_and_unit_tests(rendered):
    out = validate("rules")
    assert "SUCCESS" in out and "FAILED" not in out


def test_slo_alerts_exist():
    names = set(alerts())
    for needed in ("ReenactGatewayErrorRateHigh", "ReenactGatewayLatencyP99High", "ReenactOptimizerQueueBacklog",
                   "ReenactTritonDown", "ReenactTritonAbsent", "ReenactTrainingJobsFailing"):
        assert needed in names


def test_every_alert_has_a_firing_and_a_silent_case():
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fires, silent = set(), set()
    for t in tests:
        for case in t.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else silent).add(case["alertname"])
    for name in alerts():
        assert name in fires, f"{name}: no promtool case where it fires"
        assert name in silent, f"{name}: no promtool case where it must not fire"


def test_promtool_unit_tests_catch_a_broken_alert(tmp_path):
    """The unit tests are not vacuous: raising the gateway error threshold to 50% makes them fail."""
    broken = rules()
    for g in broken["groups"]:
        for r in g["rules"]:
            if r.get("alert") == "ReenactGatewayErrorRateHigh":
                r["expr"] = r["expr"].replace("> 0.05", "> 0.5")
    (tmp_path / "broken.rules.yaml").write_text(yaml.safe_dump(broken, sort_keys=False))
    suite = yaml.safe_load(RULE_TESTS.read_text())
    suite["rule_files"] = [str(tmp_path / "broken.rules.yaml")]
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(suite, sort_keys=False))
    proc = run([tool("promtool"), "test", "rules", str(tmp_path / "test.yaml")])
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "ReenactGatewayErrorRateHigh" in out


def test_keda_and_dashboard_promql_parse(rendered):
    validate("queries")


def test_dashboard_and_rules_use_exported_metrics(rendered):
    validate("dashboard")


def test_dashboard_check_catches_an_unknown_metric():
    dash = json.loads(DASHBOARD.read_text())
    dash["panels"][1]["targets"][0]["expr"] = 'sum(rate(reenact_grpc_request_total{service="gateway"}[5m]))'
    problems = deploycheck.check_dashboard(dash, set(all_metrics()), rules())
    assert any("reenact_grpc_request_total" in p for p in problems), problems


def test_dashboard_covers_the_pipeline():
    dash = json.loads(DASHBOARD.read_text())
    used = set()
    for _title, expr in deploycheck.dashboard_exprs(dash):
        used |= deploycheck.metric_names(expr)
    for m in ("reenact_grpc_requests_total", "reenact:grpc_server_errors:ratio_rate5m",
              "reenact:grpc_unary_latency_seconds:p99_5m", "reenact_optimizer_queue_depth",
              "reenact_optimizer_frame_latency_seconds_bucket", "reenact_trainer_jobs",
              "nv_inference_request_success", "reenact_gateway_frames_total", "up"):
        assert m in used, m
    assert dash["uid"] == "reenact-pipeline"


def test_keda_query_uses_the_optimizer_queue_metric(rendered):
    docs = [d for d in yaml.safe_load_all((BUILD / "prod.yaml").read_text()) if d]
    so = next(d for d in docs if d["kind"] == "ScaledObject")
    names = set()
    for t in so["spec"]["triggers"]:
        names |= deploycheck.metric_names(t["metadata"]["query"])
    assert names == {"reenact_optimizer_queue_depth"}
    assert "reenact_optimizer_queue_depth" in all_metrics()

