"""Gateway auth, tenancy, quotas, limits and deadline propagation on a REAL gateway server (port 0).

The trainer is a small scripted TrainerService on a real gRPC server on loopback (jobs in a dict; GetJob
can be told to sleep, to see the deadline the gateway passes on); there is no landmarks precheck
(--precheck-frames 0), no optimizer and no Triton (a stub renderer that is never ready), so nothing here
needs a model: every path tested is decided in the gateway before any heavy work.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from reenact.api.common.v1 import types_pb2
from reenact.api.gateway.v1 import gateway_pb2 as g
from reenact.api.gateway.v1 import gateway_pb2_grpc
from reenact.api.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from reenact.launcher import free_port
from reenact.runtime.status import details_of
from reenact.store import LocalStore
from reenact.video import encode_video
from services.gateway import auth
from services.gateway.__main__ import build_auth
from services.gateway.__main__ import build_server as build_gateway
from services.gateway.config import GatewayConfig
from services.gateway.peers import Peers

KEYS = {  # key_id: (tenant, quotas)
    "acme-1": ("acme", {}),
    "acme-2": ("acme", {}),
    "globex-1": ("globex", {}),
    "admin-1": ("ops", {"admin": True}),
    "limited": ("small", {"max_persons": 1, "max_streams": 1}),
    "one-person": ("solo", {"max_persons": 1}),
    "initech-1": ("initech", {}),
    "acme-viewer": ("acme", {"read_only": True}),
    "slow": ("slow", {"requests_per_minute": 3}),
    "revoked": ("acme", {"disabled": True}),
}
SECRETS = {key_id: f"rk_test-secret-of-{key_id}" for key_id in KEYS}


class ScriptedTrainer(trainer_pb2_grpc.TrainerServiceServicer):
    def __init__(self) -> None:
        self.jobs: dict[str, types_pb2.Job] = {}
        self.by_request: dict[str, str] = {}
        self.get_delay = 0.0
        self.seen_remaining: list[float | None] = []
        self.lock = threading.Lock()

    def CreateJob(self, request, context):
        with self.lock:
            if request.request_id in self.by_request:
                return trainer_pb2.CreateJobResponse(job=self.jobs[self.by_request[request.request_id]], created=False)
            job = types_pb2.Job(job_id=f"job-{len(self.jobs) + 1}", request_id=request.request_id,
                                person_id=request.person_id, state=types_pb2.JOB_STATE_QUEUED, profile="cpu-quick")
            self.jobs[job.job_id] = job
            self.by_request[request.request_id] = job.job_id
            return trainer_pb2.CreateJobResponse(job=job, created=True)

    def _job(self, job_id, context):
        if job_id not in self.jobs:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no job {job_id!r}")
        return self.jobs[job_id]

    def GetJob(self, request, context):
        self.seen_remaining.append(context.time_remaining())
        if self.get_delay:
            time.sleep(self.get_delay)
        return trainer_pb2.GetJobResponse(job=self._job(request.job_id, context))

    def CancelJob(self, request, context):
        job = self._job(request.job_id, context)
        job.state = types_pb2.JOB_STATE_CANCELLED
        return trainer_pb2.CancelJobResponse(job=job)

    def ListJobs(self, request, context):
        return trainer_pb2.ListJobsResponse(jobs=list(self.jobs.values()))

    def WatchJob(self, request, context):
        yield trainer_pb2.WatchJobResponse(job=self._job(request.job_id, context))


class NeverReadyRenderer:
    def is_ready(self) -> bool:
        return False

    def close(self) -> None:
        pass


def write_keys(path, keys=KEYS) -> None:
    entries = [{"key_id": k, "tenant": tenant, "secret_sha256": auth.hash_secret(SECRETS[k]), **quotas}
               for k, (tenant, quotas) in keys.items()]
    path.write_text(json.dumps({"keys": entries}))


def start_gateway(root, trainer_address: str, **overrides):
    cfg = GatewayConfig(**{
        "port": 0, "store_url": "unused", "landmarks_address": f"127.0.0.1:{free_port()}",
        "trainer_address": trainer_address, "optimizer_address": f"127.0.0.1:{free_port()}",
        "triton_url": "127.0.0.1:1", "precheck_frames": 0, "max_frames": 20, "max_side": 200,
        "max_duration_s": 5.0, "max_message_mb": 2, "peer_timeout_s": 10, "drain_seconds": 0.5,
        "grace_seconds": 0, "api_keys_file": str(root / "keys.json"), "workers": 8, "max_streams": 4,
        **overrides})
    peers = Peers(cfg.landmarks_address, cfg.trainer_address, cfg.optimizer_address, cfg.triton_url,
                  renderer=NeverReadyRenderer(), timeout=cfg.peer_timeout_s)
    server = build_gateway(cfg, store=LocalStore(root / "store", fsync=False), peers=peers)
    server.start()
    return server


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    root = tmp_path_factory.mktemp("gateway-auth")
    write_keys(root / "keys.json")
    trainer = ScriptedTrainer()
    tserver = grpc.server(futures.ThreadPoolExecutor(8))
    trainer_pb2_grpc.add_TrainerServiceServicer_to_server(trainer, tserver)
    tport = tserver.add_insecure_port("127.0.0.1:0")
    tserver.start()
    gateway = start_gateway(root, f"127.0.0.1:{tport}")
    channel = grpc.insecure_channel(gateway.address, options=[("grpc.max_send_message_length", 8 << 20)])
    try:
        yield {"root": root, "trainer": trainer, "gateway": gateway, "channel": channel,
               "stub": gateway_pb2_grpc.ReenactServiceStub(channel), "trainer_address": f"127.0.0.1:{tport}"}
    finally:
        channel.close()
        gateway.stop(drain_seconds=0.5, grace_seconds=0)
        gateway.peers.close()
        tserver.stop(0)


def md(key_id: str | None, header: str = "authorization"):
    if key_id is None:
        return ()
    secret = SECRETS.get(key_id, key_id)
    return ((header, f"Bearer {secret}" if header == "authorization" else secret),)


def rpc_error(fn) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as ei:
        fn()
    return ei.value


@pytest.fixture(scope="module")
def small_video():
    import numpy as np

    rng = np.random.default_rng(0)
    return encode_video([rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(6)], 30)


def enroll(rig, key_id, video, *, request_id="req-1", person_id="", timeout=30):
    def requests():
        yield g.EnrollRequest(header=g.EnrollHeader(request_id=request_id, person_id=person_id))
        for i in range(0, len(video), 1 << 20):
            yield g.EnrollRequest(chunk=types_pb2.VideoChunk(data=video[i:i + (1 << 20)]))
    return rig["stub"].Enroll(requests(), metadata=md(key_id), timeout=timeout)


# ----------------------------------------------------------------------------------------------- authentication


def test_missing_unknown_malformed_and_revoked_keys_are_unauthenticated(rig):
    stub = rig["stub"]
    cases = [((), "API_KEY_MISSING"), (md("rk_nobody"), "API_KEY_INVALID"), (md("revoked"), "API_KEY_INVALID"),
             ((("authorization", "Basic abc"),), "API_KEY_MALFORMED"),
             ((("authorization", f"Bearer {SECRETS['acme-1']}"), ("x-api-key", SECRETS["globex-1"])),
              "API_KEY_MALFORMED")]
    for metadata, reason in cases:
        err = rpc_error(lambda m=metadata: stub.ListPersons(g.ListPersonsRequest(), metadata=m, timeout=10))
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED, (metadata, err)
        assert details_of(err)["reason"] == reason
    # streaming RPCs too, before any request message is read
    err = rpc_error(lambda: list(stub.Reenact(iter([g.ReenactRequest(header=g.ReenactHeader(person_id="x"))]),
                                              timeout=10)))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    # health and reflection need no key
    health = health_pb2_grpc.HealthStub(rig["channel"])
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == \
        health_pb2.HealthCheckResponse.NOT_SERVING  # (no real peers here)
    refl = reflection_pb2_grpc.ServerReflectionStub(rig["channel"])
    resp = next(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5))
    assert "reenact.api.gateway.v1.ReenactService" in {s.name for s in resp.list_services_response.service}


def test_bearer_and_x_api_key_and_the_sdk_work(rig):
    stub = rig["stub"]
    assert stub.ListPersons(g.ListPersonsRequest(), metadata=md("acme-1"), timeout=10) is not None
    assert stub.ListPersons(g.ListPersonsRequest(), metadata=md("acme-1", "x-api-key"), timeout=10) is not None
    from reenact.client import Client
    from reenact.client.errors import UnauthenticatedError

    with Client(rig["gateway"].address, api_key=SECRETS["acme-1"]) as cl:
        assert isinstance(cl.list_persons(), list)
    with Client(rig["gateway"].address, api_key="rk_wrong") as cl, pytest.raises(UnauthenticatedError):
        cl.list_persons()


# ----------------------------------------------------------------------------------------------- tenancy


def test_tenants_see_and_touch_only_their_own_persons_and_jobs(rig, small_video):
    stub, trainer = rig["stub"], rig["trainer"]
    first = enroll(rig, "acme-1", small_video, request_id="same-id", person_id="alice")
    assert first.created and first.job.request_id == "same-id"  # the tenant scope is not shown to the client
    assert trainer.jobs[first.job.job_id].request_id == "acme.same-id"  # but the trainer's key is per tenant
    # another tenant with the same request id and no person id gets its own job and its own person
    other = enroll(rig, "globex-1", small_video, request_id="same-id")
    assert other.created and other.job.job_id != first.job.job_id and other.job.person_id != "alice"

    store = LocalStore(rig["root"] / "store")
    from services.gateway.registry import PersonRegistry

    assert PersonRegistry(store).get("alice").owner == "acme"

    # the same tenant through another key sees it; another tenant gets NOT_FOUND everywhere
    assert stub.GetPerson(g.GetPersonRequest(person_id="alice"), metadata=md("acme-2"), timeout=10).person.person_id
    assert stub.GetJob(g.GetJobRequest(job_id=first.job.job_id), metadata=md("acme-2"), timeout=10).job.request_id \
        == "same-id"
    b = md("globex-1")
    not_found = [
        lambda: stub.GetPerson(g.GetPersonRequest(person_id="alice"), metadata=b, timeout=10),
        lambda: stub.DeletePerson(g.DeletePersonRequest(person_id="alice"), metadata=b, timeout=10),
        lambda: stub.ListEditDirections(g.ListEditDirectionsRequest(person_id="alice"), metadata=b, timeout=10),
        lambda: stub.GetJob(g.GetJobRequest(job_id=first.job.job_id), metadata=b, timeout=10),
        lambda: stub.CancelJob(g.CancelJobRequest(job_id=first.job.job_id), metadata=b, timeout=10),
        lambda: list(stub.WatchJob(g.WatchJobRequest(job_id=first.job.job_id), metadata=b, timeout=10)),
        lambda: list(stub.Render(g.RenderRequest(person_id="alice", reenactment_id="r1"), metadata=b, timeout=10)),
        lambda: list(stub.Reenact(iter([g.ReenactRequest(header=g.ReenactHeader(person_id="alice"))]),
                                  metadata=b, timeout=10)),
    ]
    for fn in not_found:
        err = rpc_error(fn)
        assert err.code() == grpc.StatusCode.NOT_FOUND, err
    # unknown persons answer exactly like another tenant's
    unknown = rpc_error(lambda: stub.GetPerson(g.GetPersonRequest(person_id="nobody"), metadata=b, timeout=10))
    theirs = rpc_error(lambda: stub.GetPerson(g.GetPersonRequest(person_id="alice"), metadata=b, timeout=10))
    assert details_of(unknown)["reason"] == details_of(theirs)["reason"] == "PERSON_NOT_FOUND"
    assert trainer.jobs[first.job.job_id].state == types_pb2.JOB_STATE_QUEUED  # the cancel did not go through

    def listed(key_id):
        persons = stub.ListPersons(g.ListPersonsRequest(), metadata=md(key_id), timeout=10).persons
        jobs = stub.ListJobs(g.ListJobsRequest(), metadata=md(key_id), timeout=10).jobs
        return {p.person_id for p in persons}, {j.job_id for j in jobs}

    assert listed("acme-1") == ({"alice"}, {first.job.job_id})
    assert listed("globex-1") == ({other.job.person_id}, {other.job.job_id})
    assert listed("admin-1") == ({"alice", other.job.person_id}, {first.job.job_id, other.job.job_id})
    # the person id is one namespace: enrolling another tenant's id is refused (ALREADY_EXISTS)
    err = rpc_error(lambda: enroll(rig, "globex-1", small_video, request_id="steal", person_id="alice"))
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS and details_of(err)["reason"] == "PERSON_ID_TAKEN"

    # ownership is in the store: a new gateway process over the same store keeps it
    restarted = start_gateway(rig["root"], rig["trainer_address"])
    try:
        with grpc.insecure_channel(restarted.address) as ch:
            stub2 = gateway_pb2_grpc.ReenactServiceStub(ch)
            assert [p.person_id for p in stub2.ListPersons(g.ListPersonsRequest(), metadata=md("acme-1"),
                                                           timeout=10).persons] == ["alice"]
            err = rpc_error(lambda: stub2.GetPerson(g.GetPersonRequest(person_id="alice"), metadata=b, timeout=10))
            assert err.code() == grpc.StatusCode.NOT_FOUND
    finally:
        restarted.stop(drain_seconds=0, grace_seconds=0)
        restarted.peers.close()
    # the owner can cancel its job
    assert stub.CancelJob(g.CancelJobRequest(job_id=first.job.job_id), metadata=md("acme-1"),
                          timeout=10).job.state == types_pb2.JOB_STATE_CANCELLED


def test_read_only_key_reads_but_writing_rpcs_are_permission_denied(rig, small_video):
    """UNAUTHENTICATED = who are you?; PERMISSION_DENIED = a valid key that may not do this."""
    stub = rig["stub"]
    enroll(rig, "acme-1", small_video, request_id="ro-setup", person_id="acme-ro-person")
    # reads work and see the tenant's persons
    persons = stub.ListPersons(g.ListPersonsRequest(), metadata=md("acme-viewer"), timeout=10).persons
    assert "acme-ro-person" in {p.person_id for p in persons}
    assert stub.GetPerson(g.GetPersonRequest(person_id="acme-ro-person"), metadata=md("acme-viewer"),
                          timeout=10).person.person_id == "acme-ro-person"
    jobs = [j for j in stub.ListJobs(g.ListJobsRequest(), metadata=md("acme-viewer"), timeout=10).jobs
            if j.person_id == "acme-ro-person"]
    assert len(jobs) == 1 and jobs[0].state == types_pb2.JOB_STATE_QUEUED
    header = g.ReenactHeader(person_id="acme-ro-person")
    writes = {
        "Enroll": lambda: enroll(rig, "acme-viewer", small_video, request_id="ro-1", person_id="acme-ro-2"),
        "DeletePerson": lambda: stub.DeletePerson(g.DeletePersonRequest(person_id="acme-ro-person"),
                                                  metadata=md("acme-viewer"), timeout=10),
        "CancelJob": lambda: stub.CancelJob(g.CancelJobRequest(job_id=jobs[0].job_id), metadata=md("acme-viewer"),
                                            timeout=10),
        "Reenact": lambda: list(stub.Reenact(iter([g.ReenactRequest(header=header)]), metadata=md("acme-viewer"),
                                             timeout=10)),
        "Render": lambda: list(stub.Render(g.RenderRequest(person_id="acme-ro-person"), metadata=md("acme-viewer"),
                                           timeout=10)),
    }
    for name, call in writes.items():
        err = rpc_error(call)
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED, (name, err.code(), err.details())
        assert details_of(err)["reason"] == "KEY_READ_ONLY" and name in err.details()
    # nothing changed: the person is still there, its job not cancelled, no second person
    assert stub.GetPerson(g.GetPersonRequest(person_id="acme-ro-person"), metadata=md("acme-1"), timeout=10)
    assert rig["trainer"].jobs[jobs[0].job_id].state == types_pb2.JOB_STATE_QUEUED
    ids = {p.person_id for p in stub.ListPersons(g.ListPersonsRequest(), metadata=md("acme-1"), timeout=10).persons}
    assert "acme-ro-2" not in ids and "acme-ro-person" in ids


# ----------------------------------------------------------------------------------------------- quotas


def test_person_quota(rig, small_video):
    enroll(rig, "limited", small_video, request_id="q1", person_id="quota-one")
    err = rpc_error(lambda: enroll(rig, "limited", small_video, request_id="q2", person_id="quota-two"))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and details_of(err)["reason"] == "PERSON_QUOTA"
    # a new version of an owned person is not a new person
    assert enroll(rig, "limited", small_video, request_id="q3", person_id="quota-one").created


def test_concurrent_enrollments_cannot_pass_the_person_quota_together(rig, small_video):
    """Two Enroll calls of one tenant (quota 1 person), the second while the first is still uploading:
    the second is refused (PERSON_QUOTA); once the first is recorded the tenant owns exactly one person.
    Also a new id being enrolled by one tenant is taken for another tenant meanwhile."""
    stub, gate = rig["stub"], threading.Event()

    def slow_requests():
        yield g.EnrollRequest(header=g.EnrollHeader(request_id="race-1", person_id="race-first"))
        assert gate.wait(20)  # the header is in: the gateway holds "race-first" while we wait here
        for i in range(0, len(small_video), 1 << 20):
            yield g.EnrollRequest(chunk=types_pb2.VideoChunk(data=small_video[i:i + (1 << 20)]))

    with futures.ThreadPoolExecutor(1) as pool:
        first = pool.submit(stub.Enroll, slow_requests(), metadata=md("one-person"), timeout=30)
        deadline = time.monotonic() + 10
        while "race-first" not in rig["gateway"].servicer._enroll_claims and time.monotonic() < deadline:
            time.sleep(0.02)
        try:
            err = rpc_error(lambda: enroll(rig, "one-person", small_video, request_id="race-2",
                                           person_id="race-second"))
            assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and details_of(err)["reason"] == "PERSON_QUOTA"
            err = rpc_error(lambda: enroll(rig, "initech-1", small_video, request_id="race-3",
                                           person_id="race-first"))
            assert err.code() == grpc.StatusCode.ALREADY_EXISTS and details_of(err)["reason"] == "PERSON_ID_TAKEN"
        finally:
            gate.set()
        assert first.result(timeout=30).created
    persons = stub.ListPersons(g.ListPersonsRequest(), metadata=md("one-person"), timeout=10).persons
    assert [p.person_id for p in persons] == ["race-first"]
    assert rig["gateway"].servicer._enroll_claims == {}  # reservations are released
    # a second version of the owned person is still fine, and the quota still holds after the race
    assert enroll(rig, "one-person", small_video, request_id="race-4", person_id="race-first").created
    err = rpc_error(lambda: enroll(rig, "one-person", small_video, request_id="race-5", person_id="race-second"))
    assert details_of(err)["reason"] == "PERSON_QUOTA"


def test_rate_limit_has_retry_info(rig):
    stub = rig["stub"]
    for _ in range(3):
        stub.ListPersons(g.ListPersonsRequest(), metadata=md("slow"), timeout=10)
    err = rpc_error(lambda: stub.ListPersons(g.ListPersonsRequest(), metadata=md("slow"), timeout=10))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    det = details_of(err)
    assert det["reason"] == "RATE_LIMITED" and 0 < det["retry_after_s"] <= 20
    stub.ListPersons(g.ListPersonsRequest(), metadata=md("acme-1"), timeout=10)  # other keys are not affected


def test_concurrent_streams_per_key(rig):
    stub, gw = rig["stub"], rig["gateway"]
    hold = threading.Event()

    def idle():  # a stream that sends nothing until released: it holds its slot
        hold.wait(30)
        return
        yield

    first = stub.Reenact(idle(), metadata=md("limited"), timeout=30)
    deadline = time.monotonic() + 10
    while gw.servicer._key_streams.active("limited") < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert gw.servicer._key_streams.active("limited") == 1
    err = rpc_error(lambda: list(stub.Reenact(idle(), metadata=md("limited"), timeout=10)))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    det = details_of(err)
    assert det["reason"] == "KEY_STREAM_QUOTA" and det["retry_after_s"] == pytest.approx(2.0)
    # another key is not limited by it
    err = rpc_error(lambda: list(stub.Reenact(iter([g.ReenactRequest(header=g.ReenactHeader(person_id="nobody"))]),
                                              metadata=md("acme-1"), timeout=10)))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    first.cancel()
    hold.set()
    deadline = time.monotonic() + 10
    while gw.servicer._key_streams.active("limited") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert gw.servicer._key_streams.active("limited") == 0


# ----------------------------------------------------------------------------------------------- limits


@pytest.mark.parametrize("case", ["frames", "resolution", "duration"])
def test_enroll_video_limits(rig, case):
    import numpy as np

    frames, fps = {"frames": ([np.zeros((64, 64, 3), np.uint8)] * 25, 30),       # max_frames 20
                   "resolution": ([np.zeros((240, 64, 3), np.uint8)] * 3, 30),   # max_side 200
                   "duration": ([np.zeros((64, 64, 3), np.uint8)] * 8, 1)}[case]  # max_duration_s 5
    err = rpc_error(lambda: enroll(rig, "acme-1", encode_video(frames, fps), request_id=f"lim-{case}"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    text = " ".join(d for _, d in details_of(err)["violations"])
    assert {"frames": "frames", "resolution": "resolution", "duration": "duration"}[case] in text


def test_oversized_message_is_resource_exhausted(rig):
    big = g.EnrollRequest(chunk=types_pb2.VideoChunk(data=b"\0" * (3 << 20)))  # max_message_mb 2
    err = rpc_error(lambda: rig["stub"].Enroll(iter([big]), metadata=md("acme-1"), timeout=10))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_malformed_request_bytes_are_invalid_argument(rig):
    raw = rig["channel"].unary_unary("/reenact.api.gateway.v1.ReenactService/GetPerson")
    err = rpc_error(lambda: raw(b"\xff\xff\xff\xff", metadata=md("acme-1"), timeout=10))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details_of(err)["reason"] == "MALFORMED_REQUEST"


# ----------------------------------------------------------------------------------------------- deadlines


def test_client_deadline_is_passed_to_the_peer(rig, small_video):
    stub, trainer = rig["stub"], rig["trainer"]
    job = enroll(rig, "acme-1", small_video, request_id="dl-1", person_id="deadline").job
    trainer.seen_remaining.clear()
    assert stub.GetJob(g.GetJobRequest(job_id=job.job_id), metadata=md("acme-1")).job.job_id == job.job_id
    assert 5 < trainer.seen_remaining[-1] <= 10.5  # no client deadline: the gateway's --peer-timeout-s
    trainer.get_delay = 2.0
    try:
        t0 = time.monotonic()
        err = rpc_error(lambda: stub.GetJob(g.GetJobRequest(job_id=job.job_id), metadata=md("acme-1"), timeout=0.8))
        assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - t0 < 1.8
        assert trainer.seen_remaining[-1] is not None and trainer.seen_remaining[-1] <= 0.85
    finally:
        time.sleep(trainer.get_delay)
        trainer.get_delay = 0.0


# ----------------------------------------------------------------------------------------------- config


def test_keys_file_rules_and_reload(tmp_path, monkeypatch):
    bad = [{"keys": [{"key_id": "a", "tenant": "t", "secret": "plain"}]},
           {"keys": [{"key_id": "a", "tenant": "T!", "secret_sha256": "0" * 64}]},
           {"keys": [{"key_id": "a", "tenant": "t", "secret_sha256": "xyz"}]},
           {"keys": [{"key_id": "a", "tenant": "t", "secret_sha256": "0" * 64, "max_streams": -1}]},
           {"keys": [{"key_id": "a", "tenant": "t", "secret_sha256": "0" * 64, "read_only": "yes"}]},
           {"keys": [{"key_id": "a", "tenant": "t", "secret_sha256": "0" * 64},
                     {"key_id": "a", "tenant": "t", "secret_sha256": "1" * 64}]},
           {"nokeys": []}]
    for doc in bad:
        with pytest.raises(ValueError):
            auth.parse_keys(json.dumps(doc))
    path = tmp_path / "keys.json"
    assert auth.main(["new-key", "--key-id", "k1", "--tenant", "t1", "--max-streams", "2",
                      "--append-to", str(path)]) == 0
    keys = auth.parse_keys(path.read_text())
    assert [k.key_id for k in keys.values()] == ["k1"] and "rk_" not in path.read_text()
    assert auth.main(["new-key", "--key-id", "k2", "--tenant", "t1", "--read-only", "--append-to", str(path)]) == 0
    assert {k.key_id: k.read_only for k in auth.parse_keys(path.read_text()).values()} == {"k1": False, "k2": True}
    write_keys(path, {"acme-1": ("acme", {})})
    kf = auth.KeysFile(path)
    gate = auth.GatewayAuth(kf)
    assert gate.authenticate("/m", {"x-api-key": SECRETS["acme-1"]}).tenant == "acme"
    monkeypatch.setattr(auth, "RELOAD_CHECK_S", 0.0)
    write_keys(path, {"acme-1": ("acme", {"disabled": True})})
    import os

    os.utime(path, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    from reenact.errors import UnauthenticatedError

    with pytest.raises(UnauthenticatedError):
        gate.authenticate("/m", {"x-api-key": SECRETS["acme-1"]})
    path.write_text("{broken")  # a broken file keeps the previous keys
    os.utime(path, ns=(time.time_ns() + 2 * 10**9, time.time_ns() + 2 * 10**9))
    with pytest.raises(UnauthenticatedError):
        gate.authenticate("/m", {"x-api-key": SECRETS["acme-1"]})
    assert len(kf) == 1


def test_auth_off_is_logged_loudly_off_loopback(caplog):
    base = {"store_url": "unused"}
    with caplog.at_level(logging.WARNING, logger="reenact.gateway"):
        assert build_auth(GatewayConfig(host="0.0.0.0", **base)) is None
    assert sum("SECURITY" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records) == 3
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="reenact.gateway"):
        assert build_auth(GatewayConfig(host="127.0.0.1", **base)) is None
    assert not any(r.levelno >= logging.ERROR for r in caplog.records)
    assert any("auth is OFF" in r.getMessage() for r in caplog.records)
    assert auth.is_loopback("::1") and auth.is_loopback("localhost") and not auth.is_loopback("10.0.0.1")
