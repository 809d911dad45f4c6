"""Faults (issue 9, part 3): peers crashing in the middle of work, failing saves, a gateway that comes back.

The real stack (`start_local_stack`: tritonserver, landmarks, trainer with a checkpoint every 0.5 s,
optimizer, gateway) is shared by the module; `LocalStack.kill` / `LocalStack.restart` crash (SIGKILL, with
the process's children: for Triton the tritonserver binary and its Python stubs) and restart one process
on its own ports. In file order:

1. the trainer is SIGKILLed while the module's enrollment is training -> the job stays RUNNING in the store,
   no person version and no half-written file exist, the stored checkpoint loads; after the restart the job
   resumes from that checkpoint (the base stage continues from its step instead of step 1) and succeeds; the
   SDK's WatchJob reconnects with backoff across the outage and sees the whole job;
2. landmarks, then 3. Triton, killed in the middle of a Reenact stream -> the client gets UNAVAILABLE naming
   the peer (reason PEER_UNAVAILABLE / TRITON_UNAVAILABLE), nothing of the reenactment is stored, the
   optimizer's stream is freed, the gateway reports NOT_SERVING; after the restart its health is SERVING
   again and a new reenactment works;
4. the gateway killed: the SDK's idempotent calls retry with backoff until it is back;
5. (no stack) a failure in the middle of saving a person version through the enrollment pipeline's own save
   (`reenact.enroll.pipeline._write_version`, real generator files): local store with ENOSPC injected while
   a file is being written (a real full filesystem needs root), S3 (a real moto_server) with error responses
   injected into botocore -> the previous version still loads bit-identically, the failed one is invisible,
   nothing is left behind, and the next save works.
"""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import pathlib
import threading
import time
import types
import urllib.request

import grpc
import numpy as np
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc

from reenact.api.common.v1 import types_pb2
from reenact.api.gateway.v1 import gateway_pb2 as g
from reenact.api.gateway.v1 import gateway_pb2_grpc
from reenact.client import Client
from reenact.client._common import RetryPolicy
from reenact.fixtures import load_face, make_schedule, render_selfscan, write_selfscan
from reenact.launcher import start_local_stack
from reenact.runtime.status import details_of
from reenact.samples import carphone_video_path
from reenact.store import LocalStore, PersonRepository, StoreError, get_json
from reenact.video import decode_video
from reenact.wire import image_to_proto

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

PERSON = "faulty"
TINY = {"num_anchors": 12, "tune_steps": 40}
FAST = {"steps": 2, "window": 2}
PATIENT = RetryPolicy(max_attempts=60, initial_backoff=0.2, max_backoff=1.0)
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


# ----------------------------------------------------------------------------------------------- helpers


def gateway_health(address: str) -> int:
    with grpc.insecure_channel(address) as ch:
        try:
            return health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=3).status
        except grpc.RpcError:
            return -1


def wait_health(address: str, want: int, timeout: float) -> float:
    """Poll the gateway's health until `want`; returns the seconds it took (AssertionError on timeout)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if gateway_health(address) == want:
            return time.monotonic() - t0
        time.sleep(0.2)
    raise AssertionError(f"gateway health not {want} after {timeout:.0f} s (is {gateway_health(address)})")


def metric(url: str, name: str) -> float:
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def temp_files(root: pathlib.Path) -> list[str]:
    """Half-written files of the local store (its temporary names contain '~')."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if "~" in p.name)


def reenactment_keys(store, reenactment_id: str) -> list[str]:
    return [k for k in store.list(f"reenactments/{PERSON}") if f"/{reenactment_id}/" in k]


def rpc_error(fn) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as ei:
        fn()
    return ei.value


def slow_requests(frames, fps, stop: threading.Event):
    """A header, then driving frames until `stop`; every frame costs the optimizer very many steps."""
    yield g.ReenactRequest(header=g.ReenactHeader(person_id=PERSON, fps=fps, steps=100_000, window=1))
    i = 0
    while not stop.is_set() and i < 50:
        yield g.ReenactRequest(frame=g.DrivingFrame(index=i, image=image_to_proto(frames[i % len(frames)],
                                                                                  types_pb2.IMAGE_ENCODING_RGB8)))
        i += 1
    stop.wait(120)


def streaming_requests(frames, fps, stop: threading.Event, n: int = 400):
    """A header, then up to `n` cheap frames, as fast as the gateway takes them, until `stop`."""
    yield g.ReenactRequest(header=g.ReenactHeader(person_id=PERSON, fps=fps, **FAST))
    for i in range(n):
        if stop.is_set():
            break
        yield g.ReenactRequest(frame=g.DrivingFrame(index=i, image=image_to_proto(frames[i % len(frames)],
                                                                                  types_pb2.IMAGE_ENCODING_RGB8)))
    stop.wait(120)


def small_reenactment(stub, frames, fps, n: int = 2) -> list:
    reqs = [g.ReenactRequest(header=g.ReenactHeader(person_id=PERSON, fps=fps, **FAST))]
    reqs += [g.ReenactRequest(frame=g.DrivingFrame(index=i, image=image_to_proto(frames[i],
                                                                                 types_pb2.IMAGE_ENCODING_PNG)))
             for i in range(n)]
    return list(stub.Reenact(iter(reqs), timeout=120))


# ----------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    st = start_local_stack(root / "stack", device="cpu", profile="cpu-quick", timeout=240,
                           extra_args={"trainer": ["--checkpoint-every-s", "0.5"]})
    try:
        yield st
    finally:
        st.stop()


@pytest.fixture(scope="module")
def stub(stack):
    with grpc.insecure_channel(stack.gateway_address) as ch:
        yield gateway_pb2_grpc.ReenactServiceStub(ch)


@pytest.fixture(scope="module")
def store(stack):
    return LocalStore(stack.store_url)


@pytest.fixture(scope="module")
def driving():
    return decode_video(carphone_video_path(), max_frames=8)


@pytest.fixture(scope="module")
def scan_bytes(tmp_path_factory):
    frames, _ = render_selfscan(load_face("astronaut"), make_schedule(90, seed=0), size=160)
    path = tmp_path_factory.mktemp("scan") / "scan.mp4"
    write_selfscan(path, frames, fps=30)
    return path.read_bytes()


@pytest.fixture(scope="module")
def crashed_enrollment(stack, store, scan_bytes):
    """The module's person, enrolled through the gateway with the trainer SIGKILLed mid-training.

    Returns what the test checks: the state right after the crash, every job update the SDK saw (its
    WatchJob reconnecting across the outage), the index of the first update after the kill, timings.
    """
    out: dict = {"updates": []}
    client = Client(stack.gateway_address, retry=PATIENT)
    job = client.enroll(scan_bytes, person_id=PERSON, options=TINY, request_id="faults-enroll-1", timeout=120)
    out["job_id"] = job.job_id
    watcher = threading.Thread(target=lambda: out.update(final=client.wait_job(
        job.job_id, timeout=600, on_update=out["updates"].append)), daemon=True)
    watcher.start()
    ckpt_key = f"jobs/{job.job_id}/ckpt/base.pt"
    deadline = time.monotonic() + 240
    step = 0
    while time.monotonic() < deadline:  # a base-stage checkpoint a good way into training
        if store.exists(ckpt_key):
            step = int(torch.load(io.BytesIO(store.get_bytes(ckpt_key)), weights_only=True)["step"])
            if step >= 150:
                break
        time.sleep(0.2)
    assert step >= 150, f"no base checkpoint past step 150 (last {step})"
    out["n_before_kill"] = len(out["updates"])
    t0 = time.monotonic()
    out["kill_code"] = stack.kill("trainer")
    # right after the crash: what is on disk
    out["record"] = get_json(store, f"jobs/{job.job_id}.json")
    out["versions_after_crash"] = PersonRepository(store).versions(PERSON)
    out["person_keys_after_crash"] = store.list(f"persons/{PERSON}")
    out["temp_after_crash"] = temp_files(pathlib.Path(stack.store_url))
    out["ckpt_step"] = int(torch.load(io.BytesIO(store.get_bytes(ckpt_key)), weights_only=True)["step"])
    out["health_down_s"] = wait_health(stack.gateway_address, NOT_SERVING, 15)
    time.sleep(1.0)  # the SDK's WatchJob is failing and backing off meanwhile
    stack.restart("trainer", timeout=120)
    out["health_up_s"] = wait_health(stack.gateway_address, SERVING, 30)
    out["restart_s"] = time.monotonic() - t0
    watcher.join(600)
    assert not watcher.is_alive(), "the job did not end"
    client.close()
    return out


# ----------------------------------------------------------------------------------------------- tests


def test_trainer_killed_mid_job_resumes_from_its_checkpoint(stack, store, crashed_enrollment):
    r = crashed_enrollment
    assert r["kill_code"] == -9
    # the crash left the job RUNNING (to resume), no person version, no half-written file; the checkpoint loads
    assert r["record"]["state"] == "RUNNING" and r["record"]["progress"]["stage"] in ("base", "select", "align")
    assert r["versions_after_crash"] == [] and r["person_keys_after_crash"] == []
    assert r["temp_after_crash"] == []
    assert r["ckpt_step"] >= 150
    # after the restart: the align/select stages run again (cheap), then base continues from the checkpoint.
    # The watch reconnects while the new attempt starts, so its (short) align updates may come before the
    # client is back: the rerun is seen from its first align OR select update (CI saw 'select' first once).
    after = r["updates"][r["n_before_kill"]:]
    stages = [u.progress.stage for u in after]
    starts = [i for i, s in enumerate(stages) if s in ("align", "select")]
    assert starts, stages
    rerun = after[starts[0]:]
    first_base = next(u for u in rerun if u.progress.stage == "base")
    assert first_base.progress.step > r["ckpt_step"], (first_base.progress, r["ckpt_step"])
    final = r["final"]
    assert final.succeeded and final.person_version == 1, final.error_message
    record = get_json(store, f"jobs/{r['job_id']}.json")
    assert record["state"] == "SUCCEEDED" and record["attempt"] == 2
    # one committed version, no writer claim or temporary file left, the checkpoints dropped
    repo = PersonRepository(store)
    assert repo.versions(PERSON) == [1]
    assert not any(k.endswith("_WRITER.json") for k in store.list(f"persons/{PERSON}"))
    assert temp_files(pathlib.Path(stack.store_url)) == []
    assert store.list(f"jobs/{r['job_id']}") == []
    assert sorted(repo.manifest(PERSON, 1).files) == ["anchors.pt", "generator.pt", "init.pt"]
    print(f"trainer crash at base step {r['ckpt_step']}: gateway NOT_SERVING after {r['health_down_s']:.1f} s, "
          f"trainer back and gateway SERVING {r['restart_s']:.1f} s after the kill; resumed at base step "
          f"{first_base.progress.step}")


def test_landmarks_killed_mid_stream(stack, stub, store, crashed_enrollment, driving):
    frames, fps = driving
    opt_url = f"http://127.0.0.1:{stack.process('optimizer').metrics_port}/metrics"
    stop = threading.Event()
    call = stub.Reenact(slow_requests(frames, fps, stop), timeout=300)
    started = next(call).started
    deadline = time.monotonic() + 60
    while metric(opt_url, "reenact_optimizer_active_streams") < 1 and time.monotonic() < deadline:
        time.sleep(0.1)  # frames went through landmarks to the optimizer: the landmarks stream is live
    assert stack.kill("landmarks") == -9
    try:
        err = rpc_error(lambda: list(call))
    finally:
        stop.set()
    assert err.code() == grpc.StatusCode.UNAVAILABLE, err
    assert "landmarks" in err.details()
    assert details_of(err)["reason"] == "PEER_UNAVAILABLE" and details_of(err)["retry_after_s"] > 0
    assert reenactment_keys(store, started.reenactment_id) == []  # nothing partial stored
    deadline = time.monotonic() + 20  # the gateway cancelled the optimizer's stream
    while metric(opt_url, "reenact_optimizer_active_streams") > 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert metric(opt_url, "reenact_optimizer_active_streams") == 0
    wait_health(stack.gateway_address, NOT_SERVING, 15)
    t0 = time.monotonic()
    stack.restart("landmarks")
    up = wait_health(stack.gateway_address, SERVING, 30)
    out = small_reenactment(stub, frames, fps)
    assert [m.WhichOneof("kind") for m in out] == ["started", "frame", "frame", "summary"]
    assert all(m.frame.metrics.has_face for m in out[1:-1])
    assert reenactment_keys(store, out[0].started.reenactment_id)  # a complete one is stored
    print(f"landmarks restart: gateway SERVING {time.monotonic() - t0 - up:.1f}+{up:.1f} s after the restart")


def test_triton_killed_mid_stream(stack, stub, store, crashed_enrollment, driving):
    frames, fps = driving
    stop = threading.Event()
    call = stub.Reenact(streaming_requests(frames, fps, stop), timeout=300)
    started = next(call).started
    got = 0
    for m in call:  # rendered frames arrive: Triton is in use
        got += m.WhichOneof("kind") == "frame"
        if got >= 2:
            break
    assert stack.kill("triton") == -9
    try:
        err = rpc_error(lambda: list(call))
    finally:
        stop.set()
    assert err.code() == grpc.StatusCode.UNAVAILABLE, err
    reason = details_of(err)["reason"]
    assert reason == "TRITON_UNAVAILABLE", (reason, err.details())
    assert f"gen_{PERSON}" in err.details()
    assert reenactment_keys(store, started.reenactment_id) == []
    wait_health(stack.gateway_address, NOT_SERVING, 15)
    t0 = time.monotonic()
    stack.restart("triton", timeout=120)
    wait_health(stack.gateway_address, SERVING, 30)
    up = time.monotonic() - t0
    out = small_reenactment(stub, frames, fps)  # the renderer loads gen_<person> again on first use
    assert [m.WhichOneof("kind") for m in out] == ["started", "frame", "frame", "summary"]
    assert reenactment_keys(store, out[0].started.reenactment_id)
    print(f"triton killed after {got} frames ({err.details()[:120]!r}); SERVING again {up:.1f} s after restart")


def test_idempotent_calls_retry_until_the_gateway_is_back(stack, crashed_enrollment, caplog):
    caplog.set_level(logging.INFO, logger="reenact.client")
    assert stack.kill("gateway") == -9
    result: dict = {}
    client = Client(stack.gateway_address, retry=PATIENT)

    def calls():
        try:
            result["person"] = client.get_person(PERSON, timeout=120)
            result["jobs"] = client.list_jobs(timeout=60)
        except Exception as exc:  # noqa: BLE001 - reported below
            result["error"] = exc

    t = threading.Thread(target=calls, daemon=True)
    t.start()
    time.sleep(2.5)  # the gateway is down: the calls fail with UNAVAILABLE and back off
    assert "person" not in result and "error" not in result
    stack.restart("gateway")
    t.join(120)
    client.close()
    assert "error" not in result, result.get("error")
    assert result["person"].person_id == PERSON and [j.person_id for j in result["jobs"]] == [PERSON]
    retries = [r.getMessage() for r in caplog.records if r.getMessage().startswith("retrying GetPerson after")]
    assert len(retries) >= 3 and all("UNAVAILABLE" in m for m in retries), retries
    print(f"GetPerson succeeded after {len(retries)} retries with backoff")


# ------------------------------------------------------------------------------ failing saves (no stack)


def _version_inputs(seed: int):
    """What the pipeline's save gets: a real (tiny) generator, anchors, an initializer blob, metadata."""
    from reenact.enroll import train
    from reenact.enroll.profiles import get_profile

    torch.manual_seed(seed)
    profile = get_profile("cpu-quick")
    G = train.build_generator(profile)
    n, rng = 8, np.random.default_rng(seed)
    aligned = types.SimpleNamespace(points=rng.random((n, 478, 2), dtype=np.float32),
                                    yaw=rng.random(n, dtype=np.float32), pitch=rng.random(n, dtype=np.float32),
                                    mouth_open=rng.random(n, dtype=np.float32),
                                    eye_open=rng.random(n, dtype=np.float32))
    anchor_w = torch.randn(6, profile.w_dim)
    return dict(G=G, anchor_w=anchor_w, aligned=aligned, anchors=np.arange(6), heldout=np.arange(6, 8),
                profile=profile, metrics={"train_psnr_db": 20.0 + seed}, report={"frames_usable": n},
                backbone="test", initializer=rng.bytes(4096))


def save_version(repo: PersonRepository, person: str, seed: int) -> int:
    from reenact.enroll.pipeline import _write_version

    kw = _version_inputs(seed)
    return _write_version(repo, person, kw["G"], kw["anchor_w"], kw["aligned"], kw["anchors"], kw["heldout"],
                          kw["profile"], kw["metrics"], kw["report"], kw["backbone"], kw["initializer"])


def snapshot(repo: PersonRepository, person: str, version: int, tmp: pathlib.Path) -> dict[str, str]:
    """sha256 of every file of a committed version, downloaded and verified against its manifest."""
    dest = tmp / f"v{version}-{time.monotonic_ns()}"
    repo.fetch_version(person, version, dest)
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(dest.iterdir())}


def check_previous_intact(repo, person, before: dict, G1_state: dict, tmp: pathlib.Path) -> None:
    from reenact.models.checkpoint import load_generator

    assert repo.versions(person) == [1] and repo.latest_version(person) == 1
    assert snapshot(repo, person, 1, tmp) == before  # bit-identical, manifest included
    path = tmp / "g1.pt"
    path.write_bytes(repo.read(person, 1, "generator.pt"))
    G = load_generator(path)
    assert all(torch.equal(G.state_dict()[k], v) for k, v in G1_state.items())
    assert repo.store.list(f"persons/{person}/v2") == []  # the aborted writer removed what it wrote


SAVE_FILES = ["generator.pt", "anchors.pt", "MANIFEST.json"]


@pytest.mark.parametrize("failing", SAVE_FILES)
def test_local_store_disk_full_injected_mid_save_keeps_previous_version(tmp_path, monkeypatch, failing):
    """ENOSPC raised by the local store's write of `failing` after half its bytes reached the temporary file."""
    import reenact.store.local as local

    store = LocalStore(tmp_path / "store")
    repo = PersonRepository(store)
    assert save_version(repo, "eve", seed=1) == 1
    before = snapshot(repo, "eve", 1, tmp_path)
    G1_state = {k: v.clone() for k, v in _version_inputs(1)["G"].state_dict().items()}
    real_write, seen = local.atomic_write_file, []

    def full_disk(target, fill, **kw):
        if target.name != failing or store.root not in target.parents:  # only the store's own writes
            return real_write(target, fill, **kw)

        def half_then_enospc(f):
            buf = io.BytesIO()
            fill(buf)
            data = buf.getvalue()
            f.write(data[: len(data) // 2])
            f.flush()
            seen.append(len(data))
            raise OSError(errno.ENOSPC, "No space left on device (injected)")

        return real_write(target, half_then_enospc, **kw)

    monkeypatch.setattr(local, "atomic_write_file", full_disk)
    with pytest.raises(StoreError) as info:
        save_version(repo, "eve", seed=2)
    assert seen and "No space left on device" in str(info.value) and info.value.reason == "LOCAL_IO"
    assert temp_files(store.root) == []  # the half-written temporary file is gone
    check_previous_intact(repo, "eve", before, G1_state, tmp_path)
    monkeypatch.undo()  # space again: the next save is version 2, version 1 unchanged
    assert save_version(repo, "eve", seed=2) == 2
    assert repo.versions("eve") == [1, 2] and snapshot(repo, "eve", 1, tmp_path) == before


@pytest.fixture(scope="module")
def boto_session(aws_env):
    import boto3

    return boto3.session.Session()


@pytest.fixture
def s3_store(moto_endpoint, boto_session):
    from tests.integration.test_store_s3 import make_store

    return make_store(moto_endpoint, "faults", session=boto_session)


class S3Outage:
    """While `on`, S3 requests of `operation` whose URL contains `match` get an error response (botocore parses
    and retries it as it would a real one). Counts the requests it failed."""

    def __init__(self, store, operation: str, *, match: str = "", status: int = 500, code: str = "InternalError"):
        from tests.integration.test_store_s3 import ERROR_XML, _Raw

        self.on, self.failed = True, 0
        body = ERROR_XML.format(code=code).encode()

        def before_send(request, **_kw):
            if not self.on or match not in request.url:
                return None
            from botocore.awsrequest import AWSResponse

            self.failed += 1
            return AWSResponse(request.url, status, {"Content-Type": "application/xml"}, _Raw(body))

        store.client.meta.events.register(f"before-send.s3.{operation}", before_send)


@pytest.mark.parametrize("failing", SAVE_FILES)
def test_s3_errors_mid_save_keep_previous_version(tmp_path, s3_store, failing):
    """A real S3 API (moto_server); every PutObject of `failing` answered 500 InternalError."""
    repo = PersonRepository(s3_store)
    assert save_version(repo, "eve", seed=1) == 1
    before = snapshot(repo, "eve", 1, tmp_path)
    G1_state = {k: v.clone() for k, v in _version_inputs(1)["G"].state_dict().items()}
    outage = S3Outage(s3_store, "PutObject", match=f"v2/{failing}")
    with pytest.raises(StoreError) as info:
        save_version(repo, "eve", seed=2)
    assert outage.failed >= 2 and "InternalError" in str(info.value)  # botocore retried, then gave up
    check_previous_intact(repo, "eve", before, G1_state, tmp_path)
    outage.on = False  # S3 answers again: the next save works
    assert save_version(repo, "eve", seed=2) == 2
    assert repo.versions("eve") == [1, 2] and snapshot(repo, "eve", 1, tmp_path) == before


def test_s3_outage_through_the_abort_leaves_only_an_invisible_version(tmp_path, s3_store):
    """The outage also fails the writer's cleanup: v2's files stay, but without a manifest nobody sees them;
    `gc_uncommitted` removes them once S3 is back."""
    repo = PersonRepository(s3_store)
    save_version(repo, "eve", seed=1)
    before = snapshot(repo, "eve", 1, tmp_path)
    puts = S3Outage(s3_store, "PutObject", match="v2/MANIFEST.json", status=503, code="ServiceUnavailable")
    deletes = S3Outage(s3_store, "DeleteObject", status=503, code="ServiceUnavailable")
    with pytest.raises(StoreError):
        save_version(repo, "eve", seed=2)
    assert puts.failed >= 1 and deletes.failed >= 1
    left = s3_store.list("persons/eve/v2")
    assert "persons/eve/v2/generator.pt" in left and "persons/eve/v2/MANIFEST.json" not in left
    assert repo.versions("eve") == [1] and repo.list_persons() == ["eve"]
    assert snapshot(repo, "eve", 1, tmp_path) == before
    puts.on = deletes.on = False  # S3 is back
    assert repo.gc_uncommitted("eve") == [2] and s3_store.list("persons/eve/v2") == []
    assert repo.versions("eve") == [1] and snapshot(repo, "eve", 1, tmp_path) == before
