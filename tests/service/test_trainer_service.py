"""The trainer service on a real gRPC server on port 0, with a LocalStore and a scripted run_fn.

The run_fn is a test double of the training function (its behaviour is chosen by the person id), so
these tests cover the RPC surface: idempotent CreateJob, WatchJob streaming and client cancel, GetJob,
CancelJob, ListJobs pages, status codes with field violations, health and the jobs metric.
"""

from __future__ import annotations

import threading
import time
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from reenact.api.common.v1 import types_pb2
from reenact.api.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from reenact.errors import CancelledError, NotFoundError
from reenact.runtime.status import details_of
from reenact.store import LocalStore
from services.trainer.__main__ import SERVICE_NAME, build_manager, build_server, start_when_store_ready
from services.trainer.config import TrainerConfig

SCAN = "uploads/scan.mp4"
TIMEOUT = 10


class ScriptedRunFn:
    """Test double of the enrollment function: 'blocker-*' waits for release or stop, 'failing-*' raises
    a domain error, anything else reports two progress steps and succeeds."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.blocking = threading.Event()

    def __call__(self, job, ctx):
        if job.person_id.startswith("failing"):
            raise NotFoundError("base checkpoint vanished")
        if job.person_id.startswith("blocker"):
            ctx.progress("tune", 0, 100)
            self.blocking.set()
            while not self.release.wait(0.01):
                if ctx.should_stop():
                    raise CancelledError("stopped")
        ctx.set_coverage({"frames_total": 30, "frames_usable": 28, "yaw_min_deg": -30.0, "missing": ["blink"]})
        ctx.progress("align", 1, 1, message="aligned")
        ctx.progress("tune", 5, 10, losses={"lpips": 0.2})
        return {"person_version": 3, "metrics": {"heldout_psnr_db": 29.5}}


@pytest.fixture()
def service(tmp_path):
    store = LocalStore(tmp_path / "store", fsync=False)
    store.put_bytes(SCAN, b"scan bytes")
    cfg = TrainerConfig(port=0, metrics_port=0, store_url=str(tmp_path / "store"), device="cpu",
                        drain_seconds=2, grace_seconds=1)
    run_fn = ScriptedRunFn()
    manager = build_manager(cfg, store=store, run_fn=run_fn)
    server = build_server(cfg, manager)
    server.start()
    stopping = threading.Event()
    assert start_when_store_ready(server, manager, stopping)
    server.run_fn, server.manager = run_fn, manager
    yield server
    stopping.set()
    run_fn.release.set()
    manager.close(timeout=5)
    server.stop(drain_seconds=2, grace_seconds=0)


@pytest.fixture()
def stub(service):
    with grpc.insecure_channel(service.address) as ch:
        yield trainer_pb2_grpc.TrainerServiceStub(ch)


def create(stub, rid="req-1", person="alice", scan_key=SCAN, **kw):
    req = trainer_pb2.CreateJobRequest(request_id=rid, person_id=person, scan_key=scan_key, **kw)
    return stub.CreateJob(req, timeout=TIMEOUT)


def watch_all(stub, job_id):
    return [r.job for r in stub.WatchJob(trainer_pb2.WatchJobRequest(job_id=job_id), timeout=TIMEOUT)]


def test_ready_after_recovery(service):
    with grpc.insecure_channel(service.address) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        resp = health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=TIMEOUT)
    assert resp.status == health_pb2.HealthCheckResponse.SERVING


def test_create_twice_then_watch_to_completion_and_get(service, stub):
    first = create(stub, options=types_pb2.EnrollOptions(seed=3))
    again = create(stub, options=types_pb2.EnrollOptions(seed=3))
    assert first.created and not again.created and again.job.job_id == first.job.job_id
    assert first.job.profile == "cpu-quick"  # device=cpu: the default profile
    jobs = watch_all(stub, first.job.job_id)
    assert jobs[-1].state == types_pb2.JOB_STATE_SUCCEEDED
    assert all(j.state != types_pb2.JOB_STATE_SUCCEEDED for j in jobs[:-1])
    got = stub.GetJob(trainer_pb2.GetJobRequest(job_id=first.job.job_id), timeout=TIMEOUT).job
    assert got == jobs[-1]
    assert got.person_version == 3 and dict(got.metrics.terms) == {"heldout_psnr_db": 29.5}
    assert got.progress.fraction == 1.0 and got.coverage.frames_usable == 28
    assert list(got.coverage.missing) == ["blink"] and got.coverage.yaw_min_deg == -30.0
    assert 0 < got.create_time.ToNanoseconds() <= got.update_time.ToNanoseconds()
    assert abs(got.create_time.ToSeconds() - time.time()) < 60


def test_failed_job_carries_the_rpc_code(stub):
    job = create(stub, person="failing-one").job
    final = watch_all(stub, job.job_id)[-1]
    assert final.state == types_pb2.JOB_STATE_FAILED
    assert final.error_code == grpc.StatusCode.NOT_FOUND.value[0] and final.error_message == "base checkpoint vanished"


def test_cancel_running_job(service, stub):
    job = create(stub, person="blocker-one").job
    assert service.run_fn.blocking.wait(TIMEOUT)
    resp = stub.CancelJob(trainer_pb2.CancelJobRequest(job_id=job.job_id), timeout=TIMEOUT)
    assert resp.job.state in (types_pb2.JOB_STATE_RUNNING, types_pb2.JOB_STATE_CANCELLED)
    assert watch_all(stub, job.job_id)[-1].state == types_pb2.JOB_STATE_CANCELLED


def test_watch_cancelled_by_client_releases_the_handler(service, stub):
    job = create(stub, person="blocker-one").job
    call = stub.WatchJob(trainer_pb2.WatchJobRequest(job_id=job.job_id), timeout=TIMEOUT)
    assert next(call).job.job_id == job.job_id
    assert service.tracker.count == 1
    call.cancel()
    deadline = time.monotonic() + 5
    while service.tracker.count and time.monotonic() < deadline:  # the handler ends on the callback
        time.sleep(0.01)
    assert service.tracker.count == 0
    assert service.manager.get(job.job_id).state == "RUNNING"  # only the stream ended, not the job


def test_list_jobs_pages_newest_first(stub):
    ids = [create(stub, rid=f"r{i}", owner="key-a" if i < 3 else "key-b").job.job_id for i in range(5)]
    seen, token = [], ""
    while True:
        resp = stub.ListJobs(trainer_pb2.ListJobsRequest(page_size=2, page_token=token), timeout=TIMEOUT)
        seen += [j.job_id for j in resp.jobs]
        token = resp.next_page_token
        if not token:
            break
    assert seen == ids[::-1]
    owned = stub.ListJobs(trainer_pb2.ListJobsRequest(owner="key-b"), timeout=TIMEOUT)
    assert [j.job_id for j in owned.jobs] == ids[:2:-1] and owned.next_page_token == ""


def test_errors_map_to_status_codes(stub):
    for rpc, req in [(stub.GetJob, trainer_pb2.GetJobRequest), (stub.CancelJob, trainer_pb2.CancelJobRequest)]:
        with pytest.raises(grpc.RpcError) as ei:
            rpc(req(job_id="job-" + "0" * 32), timeout=TIMEOUT)
        assert ei.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as ei:
        watch_all(stub, "job-does-not-exist")
    assert ei.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as ei:
        create(stub, scan_key="uploads/missing.mp4")
    assert ei.value.code() == grpc.StatusCode.NOT_FOUND
    create(stub, rid="same")
    with pytest.raises(grpc.RpcError) as ei:
        create(stub, rid="same", person="bob")
    assert ei.value.code() == grpc.StatusCode.ALREADY_EXISTS


def test_bad_person_id_is_invalid_argument_with_field_violations(stub):
    with pytest.raises(grpc.RpcError) as ei:
        create(stub, person="Not-Valid!", profile="tpu")
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = [f for f, _ in details_of(ei.value)["violations"]]
    assert fields == ["person_id", "profile"]
    with pytest.raises(grpc.RpcError) as ei:
        stub.ListJobs(trainer_pb2.ListJobsRequest(page_token="nope"), timeout=TIMEOUT)
    assert ei.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_jobs_metric_counts_states(service, stub):
    job = create(stub).job
    watch_all(stub, job.job_id)
    url = f"http://127.0.0.1:{service.metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=TIMEOUT).read().decode()
    assert 'reenact_trainer_jobs{state="succeeded"} 1.0' in text
    assert 'reenact_trainer_jobs{state="queued"} 0.0' in text
