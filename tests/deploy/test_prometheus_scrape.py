"""End to end: a REAL Prometheus server (the `prometheus` binary) scrapes every running service (landmarks,
trainer, optimizer, gateway: `start_local_stack`, each its own process) and a running tritonserver,
evaluates the shipped alert/recording rules, and its HTTP API returns each service's metrics.

It runs deploy/prometheus/prometheus.yml (the shipped config; targets replaced by loopback ports) with the
rules of deploy/k8s/base/monitoring/prometheusrule.yaml. Triton is configured the way the Kubernetes
manifests configure it (the Deployment's own args): model repository on S3 (moto_server here, MinIO/S3 in
the cluster) in Triton's `s3://http://host:port/bucket/path` form, explicit model control, credentials
only from an AWS shared-credentials file (AWS_SHARED_CREDENTIALS_FILE, as the Secret mount provides them),
HTTP only for the liveness probe's /v2/health/live. The four services use that Triton (the gateway is
SERVING only when Triton is ready).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
import yaml
from deploy_helpers import DEPLOY, ROOT, tool
from metric_inventory import TRITON_CPU_VERIFIED

from reenact.launcher import free_port, start_local_stack

pytestmark = pytest.mark.slow

ECHO_CONFIG = """name: "echo"
backend: "python"
max_batch_size: 0
input [{ name: "X" data_type: TYPE_FP32 dims: [ 2 ] }]
output [{ name: "Y" data_type: TYPE_FP32 dims: [ 2 ] }]
instance_group [{ kind: KIND_CPU count: 1 }]
"""
ECHO_MODEL = """import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("Y", pb_utils.get_input_tensor_by_name(r, "X").as_numpy())])
                for r in requests]
"""
KEY_ID, SECRET = "deploytest", "deploytest-secret"


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    """Until `url` answers with a status below 500 (a 4xx means the server is up; Prometheus' /-/ready answers
    503 until it has loaded its config and TSDB, and returning on that raced the first query)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError as err:
            if err.code < 500:
                return
        except OSError:
            pass
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(url)
        time.sleep(0.1)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def s3_model_repository(tmp_path):
    """moto_server with bucket `reenact-models` holding model_repository/echo (a python-backend model)."""
    import boto3

    port = free_port()
    moto = subprocess.Popen([tool("moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=open(tmp_path / "moto.log", "wb"), stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/", 20, moto)
        s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", aws_access_key_id=KEY_ID,
                          aws_secret_access_key=SECRET, region_name="us-east-1")
        s3.create_bucket(Bucket="reenact-models")
        s3.put_object(Bucket="reenact-models", Key="model_repository/echo/config.pbtxt", Body=ECHO_CONFIG.encode())
        s3.put_object(Bucket="reenact-models", Key="model_repository/echo/1/model.py", Body=ECHO_MODEL.encode())
        yield f"s3://http://127.0.0.1:{port}/reenact-models/model_repository"
    finally:
        stop(moto)


@pytest.fixture
def triton(tmp_path, s3_model_repository):
    """tritonserver run with the Deployment's args (S3 repository, explicit model control), credentials
    from a file only."""
    from reenact.tritonserve.server import prepare_install, server_env

    install = prepare_install()
    creds = tmp_path / "credentials"
    creds.write_text(f"[default]\naws_access_key_id = {KEY_ID}\naws_secret_access_key = {SECRET}\n")
    env = {k: v for k, v in server_env().items() if not k.startswith("AWS_")}
    env.update(AWS_SHARED_CREDENTIALS_FILE=str(creds), AWS_CONFIG_FILE=os.devnull, AWS_DEFAULT_REGION="us-east-1",
               AWS_EC2_METADATA_DISABLED="true")
    grpc_port, metrics_port, http_port = free_port(), free_port(), free_port()
    # the Deployment's own args (what the image's ENTRYPOINT gets in the cluster), ports made free ones
    dep = yaml.safe_load((DEPLOY / "k8s/base/triton/deployment.yaml").read_text())
    container = dep["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert "--model-repository=$(REENACT_MODEL_REPOSITORY)" in args and "--model-control-mode=explicit" in args
    swap = {"--model-repository=": s3_model_repository, "--grpc-port=": grpc_port, "--metrics-port=": metrics_port,
            "--http-port=": http_port}
    args = [next((k + str(v) for k, v in swap.items() if a.startswith(k)), a) for a in args]
    cmd = [str(install.binary), f"--backend-directory={install.backends}", f"--cache-directory={install.caches}",
           *args, "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1", "--http-address=127.0.0.1",
           "--load-model=echo", f"--backend-config=python,shm-region-prefix-name=deploytest{os.getpid()}_"]
    log = tmp_path / "triton.log"
    proc = subprocess.Popen(cmd, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    try:
        import tritonclient.grpc as tc

        client = tc.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        deadline = time.monotonic() + 60
        while True:
            try:
                if client.is_model_ready("echo"):
                    break
            except Exception:  # noqa: BLE001 - not up yet
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"tritonserver did not load echo from S3:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        x = tc.InferInput("X", [2], "FP32")
        x.set_data_from_numpy(np.array([1.0, 2.0], np.float32))
        y = client.infer("echo", [x]).as_numpy("Y")
        assert y.tolist() == [1.0, 2.0]
        # the liveness/startup probes' endpoint (the Deployment's httpGet path) answers 200
        live = container["livenessProbe"]["httpGet"]["path"]
        assert urllib.request.urlopen(f"http://127.0.0.1:{http_port}{live}", timeout=5).status == 200
        yield {"grpc": grpc_port, "metrics": metrics_port}
    finally:
        stop(proc)


SERVICES = ("landmarks", "trainer", "optimizer", "gateway")


@pytest.fixture
def stack(tmp_path, triton):
    """landmarks, trainer, optimizer and gateway as their own processes on that Triton; one cheap RPC each."""
    from reenact.api.gateway.v1 import gateway_pb2, gateway_pb2_grpc
    from reenact.api.landmarks.v1 import landmarks_pb2, landmarks_pb2_grpc
    from reenact.api.optimizer.v1 import optimizer_pb2, optimizer_pb2_grpc
    from reenact.api.trainer.v1 import trainer_pb2, trainer_pb2_grpc
    from reenact.samples import astronaut
    from reenact.wire import image_to_proto

    st = start_local_stack(tmp_path / "stack", device="cpu", triton=False, triton_url=f"127.0.0.1:{triton['grpc']}",
                           timeout=120, threads=1)
    try:
        with grpc.insecure_channel(st.address("landmarks")) as ch:
            r = landmarks_pb2_grpc.LandmarksServiceStub(ch).DetectImage(
                landmarks_pb2.DetectImageRequest(image=image_to_proto(astronaut())), timeout=60)
            assert r.result is not None
        with grpc.insecure_channel(st.address("trainer")) as ch:
            trainer_pb2_grpc.TrainerServiceStub(ch).ListJobs(trainer_pb2.ListJobsRequest(), timeout=30)
        with grpc.insecure_channel(st.address("gateway")) as ch:
            gateway_pb2_grpc.ReenactServiceStub(ch).ListPersons(gateway_pb2.ListPersonsRequest(), timeout=30)
        with grpc.insecure_channel(st.address("optimizer")) as ch:  # a stream without its config: refused
            with pytest.raises(grpc.RpcError) as err:
                list(optimizer_pb2_grpc.OptimizerServiceStub(ch).Optimize(
                    iter([optimizer_pb2.OptimizeRequest()]), timeout=30))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        yield st
    finally:
        st.stop()


def query(base: str, q: str) -> list[dict]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": q})
    body = json.loads(urllib.request.urlopen(url, timeout=5).read())
    assert body["status"] == "success", body
    return body["data"]["result"]


def rule_groups(base: str) -> list[dict]:
    return json.loads(urllib.request.urlopen(f"{base}/api/v1/rules", timeout=5).read())["data"]["groups"]


def _epoch(rfc3339: str) -> float:
    """Prometheus' timestamps (nanosecond fractions, 'Z') as seconds since the epoch."""
    from datetime import datetime

    head, _, frac = rfc3339.rstrip("Z").partition(".")
    return datetime.fromisoformat(head + "+00:00").timestamp() + float("0." + (frac or "0"))


def test_real_prometheus_scrapes_every_service_and_triton(tmp_path, stack, triton):
    # the shipped config with loopback targets, the shipped rules
    rules = {"groups": yaml.safe_load((DEPLOY / "k8s/base/monitoring/prometheusrule.yaml").read_text())["spec"]["groups"]}
    cfg = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    cfg["global"].update(scrape_interval="1s", evaluation_interval="1s")
    cfg["rule_files"] = [str(tmp_path / "reenact.rules.yaml")]
    targets = {name: f"127.0.0.1:{stack.process(name).metrics_port}" for name in SERVICES}
    targets["triton"] = f"127.0.0.1:{triton['metrics']}"
    assert {sc["job_name"] for sc in cfg["scrape_configs"]} == set(targets)  # the shipped config has all five
    for sc in cfg["scrape_configs"]:
        sc["static_configs"][0]["targets"] = [targets[sc["job_name"]]]
    for g in rules["groups"]:
        g["interval"] = "1s"
    (tmp_path / "reenact.rules.yaml").write_text(yaml.safe_dump(rules, sort_keys=False))
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(cfg, sort_keys=False))

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    prom = subprocess.Popen([tool("prometheus"), f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=open(tmp_path / "prometheus.log", "wb"), stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        wait_http(f"{base}/-/ready", 30, prom)
        deadline = time.monotonic() + 45
        calls = {"landmarks": ("DetectImage", "OK"), "trainer": ("ListJobs", "OK"),
                 "gateway": ("ListPersons", "OK"), "optimizer": ("Optimize", "INVALID_ARGUMENT")}
        want = {}
        for name, (method, code) in calls.items():
            want[f"{name} requests"] = (f'reenact_grpc_requests_total{{job="{name}", namespace="reenact", '
                                        f'service="{name}", method="{method}", code="{code}"}}')
            want[f"{name} ready"] = f'reenact_service_ready{{job="{name}", service="{name}"}} == 1'
            want[f"{name} latency"] = f'reenact_grpc_request_duration_seconds_count{{job="{name}"}}'
        want.update({
            "optimizer queue": 'reenact_optimizer_queue_depth{job="optimizer"}',
            "trainer jobs": 'count(reenact_trainer_jobs{job="trainer"})',
            "triton up": 'up{job="triton"} == 1',
            "triton inferences": 'nv_inference_request_success{job="triton", model="echo"} >= 1',
            "recording rule": 'reenact:grpc_requests:rate5m{namespace="reenact", service="gateway"}',
        })
        got: dict[str, list] = {}
        while time.monotonic() < deadline:
            got = {k: query(base, q) for k, q in want.items()}
            if all(got.values()):
                break
            time.sleep(0.5)
        missing = [k for k, v in got.items() if not v]
        assert not missing, f"no result for {missing} after 45 s; log:\n{(tmp_path / 'prometheus.log').read_text()[-3000:]}"
        for name in SERVICES:
            assert float(got[f"{name} requests"][0]["value"][1]) >= 1, name
        assert {r["metric"]["job"] for r in query(base, 'up == 1')} == set(targets)

        # every rule of the PrometheusRule loaded and evaluates without error on real data
        loaded = [r for g in rule_groups(base) for r in g["rules"]]
        assert len(loaded) == sum(len(g["rules"]) for g in rules["groups"])
        assert all(r["health"] in ("ok", "unknown") for r in loaded), [r for r in loaded if r["health"] == "err"]
        # no false alarm on a healthy pipeline (ReenactTritonAbsent/Down, ServiceDown, NotReady...), read once
        # every rule group has been evaluated after the data above was seen: an evaluation that ran before
        # Triton's first scrape leaves absent(up{job="triton"}) pending until the next one (a CI run met it)
        seen = time.time()
        until = time.monotonic() + 15
        while not all(_epoch(g["lastEvaluation"]) > seen for g in rule_groups(base)):
            assert time.monotonic() < until, "the rule groups were not evaluated again within 15 s"
            time.sleep(0.2)
        firing = [a for a in json.loads(urllib.request.urlopen(f"{base}/api/v1/alerts", timeout=5).read())
                  ["data"]["alerts"]]
        assert firing == [], firing

        # the Triton names the alert rules and dashboard rely on are the ones this Triton exports
        names = {r["metric"]["__name__"] for r in query(base, '{job="triton"}')}
        assert TRITON_CPU_VERIFIED <= names, sorted(TRITON_CPU_VERIFIED - names)
    finally:
        stop(prom)


def test_prometheus_binary_is_the_expected_major_version():
    out = subprocess.run([tool("prometheus"), "--version"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "version 2." in (out.stdout + out.stderr)
    assert Path(tool("promtool")).exists()
