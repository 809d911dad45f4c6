"""The optimizer service on a real gRPC server (port 0) with a REAL person and the REAL engine.

The person is made by a real cpu-quick enrollment (steps shrunk) of a self-scan fixture rendered from the
astronaut photo, into a LocalStore; the driving targets are real MediaPipe tracking results (crop points
and crops) of held-out fixture frames of the same person. The only wrapper is `RecordingFactory`, which
builds the real ReenactmentOptimizer and records each stream's `should_stop` so the test can see that a
client cancel stops the optimization loop.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import urllib.request

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from reenact.api.common.v1 import types_pb2
from reenact.api.optimizer.v1 import optimizer_pb2, optimizer_pb2_grpc
from reenact.enroll.pipeline import Checkpoints, StageProgress, run_enrollment
from reenact.enroll.profiles import get_profile
from reenact.face.tracker import FaceTracker
from reenact.fixtures import load_face, make_schedule, render_selfscan, write_selfscan
from reenact.optimize.engine import ReenactmentOptimizer
from reenact.runtime.status import details_of
from reenact.store import LocalStore, PersonRepository
from reenact.wire import image_to_proto, tensor_from_proto, tensor_to_proto
from services.optimizer.__main__ import SERVICE_NAME, build_server, start_when_store_ready
from services.optimizer.config import OptimizerConfig

PERSON = "astro"
CROP = 64
NUM_TARGETS = 6
TIMEOUT = 120
FAST = optimizer_pb2.OptimizerOptions(first_frame_steps=4, steps=2, window=2, keypoint_sigma=1.0)
# A first frame that would take hours: only a cancel ends it.
ENDLESS = optimizer_pb2.OptimizerOptions(first_frame_steps=100_000, window=1, keypoint_sigma=-1)


# ----------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def rig_photo():
    return load_face("astronaut")


@pytest.fixture(scope="module")
def person_store(tmp_path_factory, rig_photo):
    """A real cpu-quick enrollment (steps shrunk to keep it short) committed as astro v1."""
    root = tmp_path_factory.mktemp("optimizer")
    frames, truth = render_selfscan(rig_photo, make_schedule(40, seed=0), size=160)
    scan = write_selfscan(root / "selfscan.mp4", frames, fps=30, ground_truth=truth)
    profile = dataclasses.replace(get_profile("cpu-quick"), base_steps=10, tune_steps=2, eval_steps=1,
                                  num_anchors=6, num_heldout=1, base_batch=4, tune_batch=4, p0_samples=2)
    store = LocalStore(root / "store", fsync=False)
    result = run_enrollment(str(scan), person_id=PERSON, profile=profile, repo=PersonRepository(store),
                            ckpt=Checkpoints(store, "jobs/j1/ckpt/"), progress=StageProgress(lambda **kw: None),
                            should_stop=lambda: False, device="cpu", export=None, checkpoint_every_s=0.0)
    assert result.person_version == 1
    return store


@pytest.fixture(scope="module")
def tracked(rig_photo):
    """Real MediaPipe tracking of held-out fixture frames: (crop points [478, 3], crop) per frame."""
    frames, _ = render_selfscan(rig_photo, make_schedule(NUM_TARGETS, seed=1, held_out=True), size=160)
    with FaceTracker(crop_size=CROP, sigma=0.0, return_crop=True) as tracker:
        results = [r for i, f in enumerate(frames) for r in tracker.push(i, f)] + tracker.flush()
    assert [r.status for r in results] == ["ok"] * NUM_TARGETS
    return [(r.crop_points.astype(np.float32), r.crop) for r in results]


class StreamRecord:
    def __init__(self, should_stop):
        self.should_stop = should_stop
        self.polls = 0

    def poll(self) -> bool:
        self.polls += 1
        return self.should_stop()


class RecordingFactory:
    """Builds the REAL ReenactmentOptimizer; keeps each stream's should_stop (the servicer's stop event)
    and counts how often the engine polled it (once per optimization step)."""

    def __init__(self):
        self.streams: list[StreamRecord] = []

    def __call__(self, person, options, *, device, should_stop, **kw):
        rec = StreamRecord(should_stop)
        self.streams.append(rec)
        return ReenactmentOptimizer(person, options, device=device, should_stop=rec.poll, **kw)


@pytest.fixture(scope="module")
def service(person_store):
    cfg = OptimizerConfig(port=0, metrics_port=0, store_url="unused", device="cpu", max_streams=2, workers=6,
                          drain_seconds=1, grace_seconds=0, retry_after_s=2.5)
    factory = RecordingFactory()
    server = build_server(cfg, store=person_store, device="cpu", optimizer_factory=factory)
    server.start()
    assert start_when_store_ready(server, person_store, threading.Event())
    server.factory = factory
    yield server
    server.stop(drain_seconds=1, grace_seconds=0)


@pytest.fixture()
def stub(service):
    with grpc.insecure_channel(service.address) as ch:
        yield optimizer_pb2_grpc.OptimizerServiceStub(ch)


# ------------------------------------------------------------------------------------------------ helpers


def config(person=PERSON, version=0, options=FAST):
    return optimizer_pb2.OptimizeRequest(config=optimizer_pb2.OptimizeConfig(
        person_id=person, person_version=version, options=options))


def target(index, points, crop=None, *, has_face=True, encoding=types_pb2.IMAGE_ENCODING_RGB8, keypoints=None):
    msg = optimizer_pb2.OptimizeTarget(index=index, crop_size=CROP, no_face=not has_face)
    if has_face:
        msg.keypoints.CopyFrom(keypoints if keypoints is not None else tensor_to_proto(points, np.float32))
    if crop is not None:
        msg.crop.CopyFrom(image_to_proto(crop, encoding))
    return optimizer_pb2.OptimizeRequest(target=msg)


def sample(service, name, labels=None):
    return service.metrics.registry.get_sample_value(name, labels or {})


def wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def rpc_error(call_fn) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as ei:
        call_fn()
    return ei.value


# -------------------------------------------------------------------------------------------------- tests


def test_serving_after_store_and_landmark_net_ready(service):
    with grpc.insecure_channel(service.address) as ch:
        st = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=10)
    assert st.status == health_pb2.HealthCheckResponse.SERVING


def test_stream_returns_one_latent_per_target_in_order(service, stub, tracked):
    frames_before = sample(service, "reenact_optimizer_frames_total")
    reqs = [config()]
    for i, (points, crop) in enumerate(tracked):
        if i == 3:
            no_face = target(10 + i, None, has_face=False)  # the previous latent is repeated
            no_face.target.crop_size = 0  # unused without a face
            reqs.append(no_face)
        elif i % 2:
            reqs.append(target(10 + i, points, crop, encoding=types_pb2.IMAGE_ENCODING_PNG))
        else:
            reqs.append(target(10 + i, points))  # no crop: pixel losses off for this frame
    out = list(stub.Optimize(iter(reqs), timeout=TIMEOUT))

    person = service.cache.get(PERSON)
    num_ws, w_dim, n = person.G.num_ws, person.G.w_dim, person.anchor_w.shape[0]
    assert [r.index for r in out] == [10 + i for i in range(NUM_TARGETS)]
    for r in out:
        ws = tensor_from_proto(r.ws, shape=(num_ws, w_dim))
        alpha = tensor_from_proto(r.alpha, shape=(n,))
        delta = tensor_from_proto(r.delta, shape=(num_ws, n))
        assert ws.dtype == np.float32 and np.isfinite(ws).all() and np.isfinite(delta).all()
        assert np.isfinite(alpha).all()
    with_face = [r for i, r in enumerate(out) if i != 3]
    assert all(r.steps >= 1 and np.isfinite(r.keypoint_error) for r in with_face)
    assert set(with_face[0].losses.terms) == {"keypoint", "mouth", "eye", "delta", "sum", "entropy", "total"}
    assert out[0].steps <= FAST.first_frame_steps and all(r.steps <= FAST.steps for r in with_face[1:])
    assert out[3].steps == 0 and out[3].ws == out[2].ws  # repeated latent
    print("optimizer service: keypoint error per frame",
          [round(r.keypoint_error, 3) for r in with_face], "steps", [r.steps for r in out])

    assert sample(service, "reenact_optimizer_frames_total") - frames_before == NUM_TARGETS
    assert sample(service, "reenact_optimizer_queue_depth") == 0
    assert sample(service, "reenact_optimizer_active_streams") == 0
    assert sample(service, "reenact_optimizer_cache_misses_total") == 1  # loaded once, then cached


def test_unknown_person_or_version_is_not_found(stub):
    for req in (config(person="nobody"), config(version=9)):
        err = rpc_error(lambda req=req: list(stub.Optimize(iter([req]), timeout=TIMEOUT)))
        assert err.code() == grpc.StatusCode.NOT_FOUND, err.details()


def test_first_message_not_config_is_invalid(stub, tracked):
    err = rpc_error(lambda: list(stub.Optimize(iter([target(0, tracked[0][0])]), timeout=TIMEOUT)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in details_of(err)["violations"]] == ["config"]


def _keypoints(array, dtype=np.float32):
    return tensor_to_proto(np.asarray(array, dtype))


@pytest.mark.parametrize("case, field", [
    ("shape", "target.keypoints.shape"),
    ("dtype", "target.keypoints.dtype"),
    ("nan", "target.keypoints.data"),
    ("bytes", "target.keypoints.data"),
    ("missing", "target.keypoints"),
    ("crop_size", "target.crop_size"),
    ("crop_mismatch", "target.crop.size"),
    ("index_order", "target.index"),
])
def test_malformed_target_is_invalid_and_names_the_field(stub, tracked, case, field):
    points, crop = tracked[0]
    good = target(0, points)
    bad = optimizer_pb2.OptimizeRequest()
    bad.CopyFrom(target(1, points))
    t = bad.target
    if case == "shape":
        t.keypoints.CopyFrom(_keypoints(points[:468]))
    elif case == "dtype":
        t.keypoints.CopyFrom(_keypoints(points, np.float64))
    elif case == "nan":
        t.keypoints.CopyFrom(_keypoints(np.where(np.arange(478)[:, None] == 5, np.nan, points)))
    elif case == "bytes":
        t.keypoints.data = t.keypoints.data[:-4]
    elif case == "missing":
        t.ClearField("keypoints")
    elif case == "crop_size":
        t.crop_size = 8
    elif case == "crop_mismatch":
        t.crop.CopyFrom(image_to_proto(crop[:32, :32].copy()))
    elif case == "index_order":
        t.index = 0
    err = rpc_error(lambda: list(stub.Optimize(iter([config(), good, bad]), timeout=TIMEOUT)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert field in [f for f, _ in details_of(err)["violations"]], details_of(err)


def test_bad_options_are_invalid_with_one_violation_per_field(stub):
    opts = optimizer_pb2.OptimizerOptions(steps=-1, learning_rate=5.0, keypoint_subset="nose-only")
    err = rpc_error(lambda: list(stub.Optimize(iter([config(options=opts)]), timeout=TIMEOUT)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = {f for f, _ in details_of(err)["violations"]}
    assert fields == {"config.options.steps", "config.options.learning_rate", "config.options.keypoint_subset"}


class HeldOpen:
    """A client request stream: config + one target, then it stays open until released."""

    def __init__(self, reqs):
        self.reqs = reqs
        self.release = threading.Event()

    def __iter__(self):
        yield from self.reqs
        self.release.wait(60)


def _start_endless(stub, service, tracked, **kw):
    before = len(service.factory.streams)
    held = HeldOpen([config(options=ENDLESS), target(0, tracked[0][0], tracked[0][1])])
    call = stub.Optimize(iter(held), **kw)
    assert wait_for(lambda: len(service.factory.streams) > before and service.factory.streams[before].polls > 2)
    return call, held, service.factory.streams[before]


def test_client_cancel_stops_the_engine_and_frees_the_stream(service, stub, tracked):
    call, held, rec = _start_endless(stub, service, tracked, timeout=TIMEOUT)
    assert sample(service, "reenact_optimizer_active_streams") == 1
    assert sample(service, "reenact_optimizer_queue_depth") == 1
    call.cancel()
    t0 = time.monotonic()
    assert wait_for(rec.should_stop, timeout=5), "the servicer's stop event was not set by the cancel"
    assert wait_for(lambda: sample(service, "reenact_optimizer_active_streams") == 0, timeout=10)
    stopped_after = time.monotonic() - t0
    polls = rec.polls
    time.sleep(0.5)
    assert rec.polls == polls  # no optimization step after the stop
    assert sample(service, "reenact_optimizer_queue_depth") == 0
    held.release.set()
    with pytest.raises(grpc.RpcError) as ei:
        list(call)
    assert ei.value.code() == grpc.StatusCode.CANCELLED
    print(f"optimizer service: engine stopped {stopped_after:.2f} s after the client cancel ({polls} steps)")


def test_client_cancel_while_the_server_waits_for_targets(service, stub, tracked):
    opts = optimizer_pb2.OptimizerOptions(first_frame_steps=4, steps=2, window=4, keypoint_sigma=-1)
    held = HeldOpen([config(options=opts), target(0, tracked[0][0])])  # the window waits for 3 more
    cancelled_before = sample(service, "reenact_grpc_requests_total",
                              {"service": "optimizer", "method": "Optimize", "code": "CANCELLED"}) or 0
    call = stub.Optimize(iter(held), timeout=TIMEOUT)
    assert wait_for(lambda: sample(service, "reenact_optimizer_queue_depth") == 1)
    call.cancel()
    assert wait_for(lambda: sample(service, "reenact_optimizer_active_streams") == 0, timeout=10)
    assert sample(service, "reenact_optimizer_queue_depth") == 0
    assert wait_for(lambda: sample(service, "reenact_grpc_requests_total", {
        "service": "optimizer", "method": "Optimize", "code": "CANCELLED"}) == cancelled_before + 1)
    held.release.set()


def test_deadline_stops_the_engine(service, stub, tracked):
    call, held, rec = _start_endless(stub, service, tracked, timeout=3)
    with pytest.raises(grpc.RpcError) as ei:
        list(call)
    assert ei.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert wait_for(rec.should_stop, timeout=5)
    assert wait_for(lambda: sample(service, "reenact_optimizer_active_streams") == 0, timeout=10)
    held.release.set()


def test_too_many_streams_is_resource_exhausted_with_retry_info(service, stub, tracked):
    calls = [_start_endless(stub, service, tracked, timeout=TIMEOUT) for _ in range(2)]  # max_streams=2
    try:
        err = rpc_error(lambda: list(stub.Optimize(iter([config()]), timeout=TIMEOUT)))
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        info = details_of(err)
        assert info["retry_after_s"] == pytest.approx(2.5) and info["reason"] == "TOO_MANY_STREAMS"
    finally:
        for call, held, _ in calls:
            call.cancel()
            held.release.set()
    assert wait_for(lambda: sample(service, "reenact_optimizer_active_streams") == 0, timeout=10)


def test_metrics_exported_over_http(service, stub, tracked):
    list(stub.Optimize(iter([config(), target(0, tracked[0][0])]), timeout=TIMEOUT))
    with urllib.request.urlopen(f"http://127.0.0.1:{service.metrics_port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    for name in ("reenact_optimizer_frames_total", "reenact_optimizer_steps_per_frame_bucket",
                 "reenact_optimizer_frame_seconds_bucket", "reenact_optimizer_frame_latency_seconds_bucket",
                 "reenact_optimizer_queue_depth", "reenact_optimizer_active_streams",
                 "reenact_optimizer_cache_hits_total", "reenact_optimizer_cache_misses_total",
                 "reenact_optimizer_cache_evictions_total", "reenact_optimizer_cache_bytes",
                 'reenact_grpc_requests_total{code="OK",method="Optimize",service="optimizer"}'):
        assert name in text, name
    assert sample(service, "reenact_optimizer_cache_hits_total") >= 1
    assert sample(service, "reenact_optimizer_cache_bytes") > 0


def test_static_step_streams_with_fixed_steps(person_store, tracked):
    """static_step=on (the CUDA default for live settings; eager here on the CPU): a real stream returns
    every target once, in order, each optimized with exactly `steps` steps (no long first frame)."""
    cfg = OptimizerConfig(port=0, metrics_port=-1, store_url="unused", device="cpu", max_streams=1, workers=3,
                          drain_seconds=1, grace_seconds=0, static_step="on")
    server = build_server(cfg, store=person_store, device="cpu")
    server.start()
    try:
        assert start_when_store_ready(server, person_store, threading.Event())
        live = optimizer_pb2.OptimizerOptions(steps=2, window=2, keypoint_sigma=-1.0)  # no look-ahead
        reqs = [config(options=live)] + [target(i, p, c) for i, (p, c) in enumerate(tracked)]
        with grpc.insecure_channel(server.address) as ch:
            out = list(optimizer_pb2_grpc.OptimizerServiceStub(ch).Optimize(iter(reqs), timeout=TIMEOUT))
            # mouth_starts is eager-engine only: a stream this server runs as the static step refuses it
            mouth = optimizer_pb2.OptimizerOptions(steps=2, window=2, keypoint_sigma=-1.0, mouth_starts=1.0)
            err = rpc_error(lambda: list(optimizer_pb2_grpc.OptimizerServiceStub(ch).Optimize(
                iter([config(options=mouth), target(0, *tracked[0])]), timeout=TIMEOUT)))
    finally:
        server.stop(drain_seconds=1, grace_seconds=0)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in details_of(err)["violations"]] == ["config.options.mouth_starts"]
    assert "static step" in details_of(err)["violations"][0][1]
    assert [r.index for r in out] == list(range(NUM_TARGETS))
    assert [r.steps for r in out] == [2] * NUM_TARGETS
    assert all(np.isfinite(r.keypoint_error) for r in out)
