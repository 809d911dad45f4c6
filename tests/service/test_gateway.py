"""The gateway on a real gRPC server (port 0) with REAL peers: landmarks, trainer and optimizer servers in this
process, and a real tritonserver (from the nvidia-pytriton wheel) on loopback.

Fast paths only (no enrollment runs here; tests/integration/test_gateway_e2e.py does the whole flow):
readiness follows the peers, bad headers and bad videos are INVALID_ARGUMENT before any job exists,
a scan without a face is FAILED_PRECONDITION, unknown persons are NOT_FOUND, a peer's own errors and
a dead peer reach the client with their status, nothing partial stays in the store.
"""

from __future__ import annotations

import threading
import time
import urllib.request

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from reenact.api.common.v1 import types_pb2
from reenact.api.gateway.v1 import gateway_pb2 as g
from reenact.api.gateway.v1 import gateway_pb2_grpc
from reenact.launcher import free_port
from reenact.runtime.status import details_of
from reenact.samples import no_face_image
from reenact.store import LocalStore
from reenact.tritonserve.server import TritonServer
from reenact.video import encode_video
from services.gateway.__main__ import build_server as build_gateway
from services.gateway.config import GatewayConfig

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
MIB = 1 << 20


def wait_for(predicate, timeout=30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def start_optimizer(port: int, store):
    from services.optimizer.__main__ import build_server, start_when_store_ready
    from services.optimizer.config import OptimizerConfig

    cfg = OptimizerConfig(port=port, store_url="unused", device="cpu", drain_seconds=1, grace_seconds=0)
    server = build_server(cfg, store=store, device="cpu")
    server.start()
    assert start_when_store_ready(server, store, threading.Event())
    return server


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    from services.landmarks.__main__ import build_server as build_landmarks
    from services.landmarks.config import LandmarksConfig
    from services.trainer.__main__ import build_manager, start_when_store_ready
    from services.trainer.__main__ import build_server as build_trainer
    from services.trainer.config import TrainerConfig

    root = tmp_path_factory.mktemp("gateway")
    store = LocalStore(root / "store", fsync=False)
    repo = root / "model_repository"
    repo.mkdir()
    servers = []
    triton = TritonServer(repo, workdir=root / "triton", http_port=-1, metrics_port=-1).start()
    try:
        landmarks = build_landmarks(LandmarksConfig(port=0, workers=4, drain_seconds=1, grace_seconds=0))
        landmarks.start()
        servers.append(landmarks)
        landmarks.servicer.warm_up()
        landmarks.set_ready(True)
        tcfg = TrainerConfig(port=0, store_url=str(root / "store"), model_repository=str(repo), device="cpu",
                             drain_seconds=1, grace_seconds=0)
        manager = build_manager(tcfg, store=store)
        trainer = build_trainer(tcfg, manager)
        trainer.start()
        servers.append(trainer)
        assert start_when_store_ready(trainer, manager, threading.Event())
        optimizer_port = free_port()
        cfg = GatewayConfig(port=0, metrics_port=0, store_url="unused", landmarks_address=landmarks.address,
                            trainer_address=trainer.address, optimizer_address=f"127.0.0.1:{optimizer_port}",
                            triton_url=triton.grpc_url, model_repository=str(repo), health_poll_s=0.1,
                            max_video_mb=2, precheck_frames=3, drain_seconds=1, grace_seconds=0)
        gateway = build_gateway(cfg, store=store)
        gateway.start()
        servers.append(gateway)
        gateway.poller.start()
        with grpc.insecure_channel(gateway.address) as ch:
            yield {"gateway": gateway, "stub": gateway_pb2_grpc.ReenactServiceStub(ch),
                   "health": health_pb2_grpc.HealthStub(ch), "store": store, "trainer": trainer,
                   "manager": manager, "optimizer_port": optimizer_port, "root": root}
        gateway.poller.stop()
    finally:
        for s in reversed(servers):
            s.stop(drain_seconds=0.5, grace_seconds=0)
        triton.stop()


def health(rig) -> int:
    return rig["health"].Check(health_pb2.HealthCheckRequest(), timeout=5).status


def rpc_error(fn) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as ei:
        fn()
    return ei.value


def enroll(rig, header: g.EnrollHeader | None, chunks=(), timeout=60):
    def requests():
        if header is not None:
            yield g.EnrollRequest(header=header)
        for c in chunks:
            yield g.EnrollRequest(chunk=types_pb2.VideoChunk(data=c))
    return rig["stub"].Enroll(requests(), timeout=timeout)


def good_header(**kw) -> g.EnrollHeader:
    return g.EnrollHeader(**{"request_id": "req-1", "person_id": "alice", **kw})


def assert_nothing_queued(rig) -> None:
    assert rig["stub"].ListJobs(g.ListJobsRequest(), timeout=30).jobs == []
    assert rig["store"].list("uploads") == [] and rig["store"].list("gateway") == []


@pytest.fixture(scope="module")
def face_video():
    from reenact.fixtures import load_face, make_schedule, render_selfscan

    frames, _ = render_selfscan(load_face("astronaut"), make_schedule(12, seed=0), size=128)
    return encode_video(frames, 30)


# ------------------------------------------------------------------------------------------------- tests


def test_health_follows_the_peers(rig):
    """NOT_SERVING while the optimizer is missing, SERVING once it is up, NOT_SERVING again when it goes."""
    assert not wait_for(lambda: health(rig) == SERVING, timeout=1.0)
    optimizer = start_optimizer(rig["optimizer_port"], rig["store"])
    try:
        assert wait_for(lambda: health(rig) == SERVING, timeout=20)
        states = rig["gateway"].poller.states
        assert states == {"landmarks": True, "trainer": True, "optimizer": True, "triton": True}
    finally:
        optimizer.stop(drain_seconds=0.5, grace_seconds=0)
    assert wait_for(lambda: health(rig) == NOT_SERVING, timeout=20)
    assert rig["gateway"].poller.states["optimizer"] is False


def test_enroll_bad_header_lists_every_field(rig):
    header = g.EnrollHeader(request_id="bad id!", person_id="Alice", profile="tpu", display_name="x" * 300,
                            options=types_pb2.EnrollOptions(resolution=48))
    err = rpc_error(lambda: enroll(rig, header, [b"x"]))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {f for f, _ in details_of(err)["violations"]} == {
        "header.request_id", "header.person_id", "header.profile", "header.display_name", "header.options.resolution"}
    err = rpc_error(lambda: enroll(rig, None, [b"data"]))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and details_of(err)["violations"][0][0] == "header"
    assert_nothing_queued(rig)


@pytest.mark.parametrize("case", ["empty", "corrupt", "truncated", "oversized", "big_chunk"])
def test_enroll_bad_video_is_refused_before_any_job(rig, face_video, case):
    chunks = {
        "empty": [],
        "corrupt": [np.random.default_rng(0).bytes(50_000)],
        "truncated": [face_video[: len(face_video) // 2]],
        "oversized": [b"\0" * MIB] * 3,  # the limit is 2 MiB: refused at the third chunk
        "big_chunk": [b"\0" * (MIB + 1)],
    }[case]
    err = rpc_error(lambda: enroll(rig, good_header(), chunks))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    fields = [f for f, _ in details_of(err)["violations"]]
    assert fields and fields[0].startswith("chunk"), (case, fields, err.details())
    assert_nothing_queued(rig)


def test_enroll_without_a_face_is_failed_precondition(rig):
    coffee = np.ascontiguousarray(no_face_image()[:400, :400])
    video = encode_video([coffee] * 10, 30)
    err = rpc_error(lambda: enroll(rig, good_header(), [video]))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details_of(err)["reason"] == "NO_FACE"
    assert_nothing_queued(rig)


def test_unknown_person_is_not_found(rig):
    stub = rig["stub"]
    calls = {
        "GetPerson": lambda: stub.GetPerson(g.GetPersonRequest(person_id="nobody"), timeout=30),
        "DeletePerson": lambda: stub.DeletePerson(g.DeletePersonRequest(person_id="nobody"), timeout=30),
        "ListEditDirections": lambda: stub.ListEditDirections(g.ListEditDirectionsRequest(person_id="nobody"),
                                                              timeout=30),
        "Render": lambda: list(stub.Render(g.RenderRequest(person_id="nobody", reenactment_id="re-" + "0" * 32),
                                           timeout=30)),
        "Reenact": lambda: list(stub.Reenact(iter([g.ReenactRequest(header=g.ReenactHeader(person_id="nobody"))]),
                                             timeout=30)),
    }
    for name, call in calls.items():
        err = rpc_error(call)
        assert err.code() == grpc.StatusCode.NOT_FOUND, name
        assert "nobody" in err.details() and details_of(err)["reason"] == "PERSON_NOT_FOUND", name


def _check_bounded_header_field(stub, field: str, bad, good) -> None:
    """Each bad value of the ReenactHeader field alone: INVALID_ARGUMENT naming only header.<field>; each good
    value passes the checks and meets the unknown person (NOT_FOUND)."""
    def call(v):
        header = g.ReenactHeader(person_id="nobody", **{field: v})
        return rpc_error(lambda: list(stub.Reenact(iter([g.ReenactRequest(header=header)]), timeout=30)))

    for v in bad:
        err = call(v)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (field, v)
        assert {f for f, _ in details_of(err)["violations"]} == {f"header.{field}"}, (field, v)
    for v in good:
        assert call(v).code() == grpc.StatusCode.NOT_FOUND, (field, v)


def test_reenact_bad_header(rig):
    stub = rig["stub"]
    err = rpc_error(lambda: list(stub.Reenact(iter([g.ReenactRequest(header=g.ReenactHeader(
        person_id="Bad_Id"))]), timeout=30)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details_of(err)["violations"][0][0] == "header.person_id"
    err = rpc_error(lambda: list(stub.Reenact(iter([g.ReenactRequest(header=g.ReenactHeader(
        person_id="nobody", fps=500, window=10_000, output=9, person_version=-1))]), timeout=30)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {f for f, _ in details_of(err)["violations"]} == {
        "header.fps", "header.window", "header.output", "header.person_version"}
    err = rpc_error(lambda: list(stub.Reenact(iter([g.ReenactRequest(frame=g.DrivingFrame(index=0))]), timeout=30)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and details_of(err)["violations"][0][0] == "header"
    err = rpc_error(lambda: list(stub.Reenact(iter([g.ReenactRequest(header=g.ReenactHeader(
        person_id="nobody", motion="sideways", smoothing_sigma=50))]), timeout=30)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {f for f, _ in details_of(err)["violations"]} == {"header.motion", "header.smoothing_sigma"}
    for ow, ls in ((-1.0, float("nan")), (float("nan"), 11.0), (1e7, -0.5), (float("inf"), float("inf"))):
        err = rpc_error(lambda ow=ow, ls=ls: list(stub.Reenact(iter([g.ReenactRequest(header=g.ReenactHeader(
            person_id="nobody", opening_weight=ow, latent_sigma=ls))]), timeout=30)))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (ow, ls)
        assert {f for f, _ in details_of(err)["violations"]} == {"header.opening_weight", "header.latent_sigma"}
    for bad_init in ("sideways", "AUTO", " mixed"):
        err = rpc_error(lambda bad_init=bad_init: list(stub.Reenact(iter([g.ReenactRequest(header=g.ReenactHeader(
            person_id="nobody", init=bad_init))]), timeout=30)))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, bad_init
        assert {f for f, _ in details_of(err)["violations"]} == {"header.init"}, bad_init
    err = rpc_error(lambda: list(stub.Reenact(iter([g.ReenactRequest(header=g.ReenactHeader(
        person_id="nobody", init="mixed"))]), timeout=30)))
    assert err.code() == grpc.StatusCode.NOT_FOUND  # a valid init; the person is unknown
    # opening_range: finite, 0..10, and > 0 only with motion "relative" (the optimizer maps around its reference)
    for motion, k in (("relative", -0.5), ("relative", 10.5), ("relative", float("nan")), ("relative", float("inf")),
                      ("absolute", 2.0), ("", 2.0)):
        err = rpc_error(lambda motion=motion, k=k: list(stub.Reenact(iter([g.ReenactRequest(header=g.ReenactHeader(
            person_id="nobody", motion=motion, opening_range=k))]), timeout=30)))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (motion, k)
        assert {f for f, _ in details_of(err)["violations"]} == {"header.opening_range"}, (motion, k)
    assert "relative" in dict(details_of(err)["violations"])["header.opening_range"]
    for k in (0.5, 10.0):
        err = rpc_error(lambda k=k: list(stub.Reenact(iter([g.ReenactRequest(header=g.ReenactHeader(
            person_id="nobody", motion="relative", opening_range=k))]), timeout=30)))
        assert err.code() == grpc.StatusCode.NOT_FOUND, k  # a valid opening_range; the person is unknown
    # mouth_starts: finite, 0..1.5 (any motion); delta_lr_scale: finite, 0..10 (0 = the optimizer's default, 0.02)
    _check_bounded_header_field(stub, "mouth_starts", bad=(-0.5, 1.51, float("nan"), float("inf")), good=(0.5, 1.5))
    _check_bounded_header_field(stub, "delta_lr_scale", bad=(-1.0, 10.01, 11.0, float("nan"), float("inf")),
                                good=(0.1, 10.0))
    # lip_warp: finite, 0..1 (0 = off)
    _check_bounded_header_field(stub, "lip_warp", bad=(-0.1, 1.01, float("nan"), float("inf")), good=(0.5, 1.0))
    # the gateway checks what the optimizer accepts (it must not import the torch engine: the lists and bounds are kept
    # in step here), and the SDK refuses the same values locally
    from reenact.client._common import INITS as SDK_INITS
    from reenact.client._common import MAX_DELTA_LR_SCALE as SDK_MAX_DELTA_LR_SCALE
    from reenact.client._common import MAX_LIP_WARP as SDK_MAX_LIP_WARP
    from reenact.client._common import MAX_MOUTH_STARTS as SDK_MAX_MOUTH_STARTS
    from reenact.client._common import MAX_OPENING_RANGE as SDK_MAX_OPENING_RANGE
    from reenact.client._common import MOTIONS as SDK_MOTIONS
    from reenact.errors import InvalidInputError
    from reenact.lipwarp import MAX_GAIN as ENGINE_MAX_LIP_WARP
    from reenact.optimize.engine import INITS as ENGINE_INITS
    from reenact.optimize.engine import MAX_MOUTH_STEP as ENGINE_MAX_MOUTH_STEP
    from reenact.optimize.engine import MOTIONS as ENGINE_MOTIONS
    from reenact.optimize.engine import OptimizerOptions
    from reenact.optimize.retarget import MAX_OPENING_RANGE as ENGINE_MAX_OPENING_RANGE
    from services.gateway.pipeline import (
        INITS,
        MAX_DELTA_LR_SCALE,
        MAX_LATENT_SIGMA,
        MAX_LIP_WARP,
        MAX_MOUTH_STARTS,
        MAX_OPENING_RANGE,
        MAX_OPENING_WEIGHT,
        MOTIONS,
        required_in_flight,
    )

    assert MOTIONS == ENGINE_MOTIONS and set(SDK_MOTIONS) == {"", *ENGINE_MOTIONS}
    assert INITS == ENGINE_INITS and set(SDK_INITS) == {"", *ENGINE_INITS}
    assert MAX_OPENING_RANGE == ENGINE_MAX_OPENING_RANGE == SDK_MAX_OPENING_RANGE
    assert MAX_MOUTH_STARTS == ENGINE_MAX_MOUTH_STEP == SDK_MAX_MOUTH_STARTS
    assert MAX_DELTA_LR_SCALE == SDK_MAX_DELTA_LR_SCALE
    assert MAX_LIP_WARP == SDK_MAX_LIP_WARP == ENGINE_MAX_LIP_WARP
    OptimizerOptions(opening_weight=MAX_OPENING_WEIGHT, latent_sigma=MAX_LATENT_SIGMA, motion="relative",
                     opening_range=MAX_OPENING_RANGE, mouth_starts=MAX_MOUTH_STARTS,
                     delta_lr_scale=MAX_DELTA_LR_SCALE, lip_warp=MAX_LIP_WARP).validate()
    for bad in ({"opening_weight": MAX_OPENING_WEIGHT * 1.01}, {"latent_sigma": MAX_LATENT_SIGMA + 0.01},
                {"opening_range": MAX_OPENING_RANGE + 0.01, "motion": "relative"}, {"opening_range": 1.0},
                {"mouth_starts": MAX_MOUTH_STARTS + 0.01}, {"delta_lr_scale": MAX_DELTA_LR_SCALE + 0.01},
                {"lip_warp": MAX_LIP_WARP + 0.01}):
        with pytest.raises(InvalidInputError, match=next(iter(bad))):
            OptimizerOptions(**bad).validate()
    # smoothing off frees the look-ahead: a window too large with the default smoothing fits without it
    cfg = rig["gateway"].servicer.cfg

    w = cfg.max_in_flight - required_in_flight(1, -1.0) + 1
    assert required_in_flight(w, 0.0) > cfg.max_in_flight
    err = rpc_error(lambda: list(stub.Reenact(iter([g.ReenactRequest(header=g.ReenactHeader(
        person_id="nobody", window=w))]), timeout=30)))
    assert {f for f, _ in details_of(err)["violations"]} == {"header.window"}
    err = rpc_error(lambda: list(stub.Reenact(iter([g.ReenactRequest(header=g.ReenactHeader(
        person_id="nobody", window=w, smoothing_sigma=-1))]), timeout=30)))
    assert err.code() == grpc.StatusCode.NOT_FOUND  # the header is valid; the person is unknown
    # latent smoothing adds ceil(3 latent_sigma) frames of look-ahead: the same window no longer fits
    assert required_in_flight(w, -1.0, 1.0) == required_in_flight(w, -1.0) + 3
    err = rpc_error(lambda: list(stub.Reenact(iter([g.ReenactRequest(header=g.ReenactHeader(
        person_id="nobody", window=w, smoothing_sigma=-1, latent_sigma=1))]), timeout=30)))
    assert {f for f, _ in details_of(err)["violations"]} == {"header.window"}
    # all smoothing at its maximum leaves no room for any window: the violation names latent_sigma
    assert required_in_flight(1, MAX_LATENT_SIGMA, MAX_LATENT_SIGMA) > cfg.max_in_flight
    err = rpc_error(lambda: list(stub.Reenact(iter([g.ReenactRequest(header=g.ReenactHeader(
        person_id="nobody", smoothing_sigma=MAX_LATENT_SIGMA, latent_sigma=MAX_LATENT_SIGMA))]), timeout=30)))
    assert {f for f, _ in details_of(err)["violations"]} == {"header.latent_sigma"}


def test_jobs_and_persons_pass_through(rig):
    stub = rig["stub"]
    err = rpc_error(lambda: stub.GetJob(g.GetJobRequest(job_id="job-" + "0" * 32), timeout=30))
    assert err.code() == grpc.StatusCode.NOT_FOUND and err.details().startswith("trainer:")
    assert details_of(err)["reason"] == "JOB_NOT_FOUND"
    err = rpc_error(lambda: stub.ListJobs(g.ListJobsRequest(page_size=5000), timeout=30))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    resp = stub.ListPersons(g.ListPersonsRequest(), timeout=30)
    assert list(resp.persons) == [] and resp.next_page_token == ""
    for bad in (g.ListPersonsRequest(page_token="garbage"), g.ListPersonsRequest(page_size=5000)):
        err = rpc_error(lambda bad=bad: stub.ListPersons(bad, timeout=30))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_metrics_endpoint(rig):
    text = urllib.request.urlopen(f"http://127.0.0.1:{rig['gateway'].metrics_port}/metrics", timeout=5).read().decode()
    assert 'reenact_gateway_peer_ready{peer="triton"} 1.0' in text
    assert 'reenact_grpc_errors_total{code="INVALID_ARGUMENT",method="Enroll",service="gateway"}' in text
    assert "reenact_gateway_upload_bytes_total" in text


# ------------------------------------------------------------------- Reenact: driving video limits

LIMITED = "limited"  # a committed person version (anchors only) + a tiny gen_limited in Triton: passes the header


class PeerSpy:
    """Wraps a peer stub; records every method called on it (the pipeline's TrackFrames / Optimize) and, for
    request streams, their first message (the stream's config) in `firsts`."""

    firsts: dict = {}

    def __init__(self, stub, name: str, calls: list) -> None:
        self._stub, self._name, self._calls = stub, name, calls

    def __getattr__(self, attr):
        import itertools

        method = getattr(self._stub, attr)

        def call(*args, **kw):
            self._calls.append(f"{self._name}.{attr}")
            if args and hasattr(args[0], "__next__"):
                first = next(args[0])
                PeerSpy.firsts[f"{self._name}.{attr}"] = first
                args = (itertools.chain([first], args[0]), *args[1:])
            return method(*args, **kw)

        return call


@pytest.fixture(scope="module")
def limited_person(rig):
    """A person the Reenact header accepts without an enrollment: v1 with anchors.pt (w_dim 32) and a tiny
    generator exported as gen_limited into the rig's model repository (the gateway loads it on use)."""
    import io

    import torch

    from reenact.models.checkpoint import save_generator
    from reenact.store import PersonRepository
    from reenact.tritonserve.repository import export_generator_model
    from tests.integration.test_triton import tiny_generator

    G = tiny_generator(0)
    buf = io.BytesIO()
    torch.save({"anchor_w": torch.randn(6, G.w_dim)}, buf)
    writer = PersonRepository(rig["store"]).begin_version(LIMITED)
    writer.put_bytes("anchors.pt", buf.getvalue())
    writer.commit({"resolution": 32})
    ckpt = save_generator(rig["root"] / "limited_g.pt", G, provenance={"source": "test_gateway"})
    export_generator_model(rig["root"] / "model_repository", LIMITED, ckpt, max_batch_size=4, device="cpu")
    return LIMITED


@pytest.fixture()
def spied_peers(rig, monkeypatch):
    peers, calls = rig["gateway"].servicer.peers, []
    for name in ("landmarks", "optimizer"):
        monkeypatch.setattr(peers, name, PeerSpy(getattr(peers, name), name, calls))
    return calls


def reenact_video(rig, person_id: str, chunks, timeout=60, **header):
    def requests():
        yield g.ReenactRequest(header=g.ReenactHeader(person_id=person_id, **header))
        for c in chunks:
            yield g.ReenactRequest(chunk=types_pb2.VideoChunk(data=c))
    return list(rig["stub"].Reenact(requests(), timeout=timeout))


def _frames(n: int, side: int) -> list[np.ndarray]:
    rng = np.random.default_rng(n)
    return [rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for _ in range(n)]


@pytest.mark.parametrize("case", ["oversized", "too-large-frames", "too-many-frames", "too-long"])
def test_reenact_driving_video_over_the_limits_is_refused_before_any_work(rig, limited_person, spied_peers,
                                                                           monkeypatch, case):
    """The driving video of Reenact goes through the same validate_video as a self-scan: INVALID_ARGUMENT
    (field `chunk`) before the landmarks or optimizer stream starts; nothing is stored."""
    import dataclasses

    servicer = rig["gateway"].servicer
    limits = {"too-large-frames": {"max_side": 48}, "too-many-frames": {"max_frames": 5},
              "too-long": {"max_duration_s": 2.0}}.get(case, {})
    monkeypatch.setattr(servicer, "cfg", dataclasses.replace(servicer.cfg, **limits))
    if case == "oversized":  # the rig's --max-video-mb is 2: refused while the third MiB arrives
        chunks = [bytes(MIB)] * 3
    else:
        video = {"too-large-frames": lambda: encode_video(_frames(4, 64), 30),
                 "too-many-frames": lambda: encode_video(_frames(8, 32), 30),
                 "too-long": lambda: encode_video(_frames(6, 32), 2)}[case]()
        chunks = [video]
    err = rpc_error(lambda: reenact_video(rig, limited_person, chunks))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert details_of(err)["violations"][0][0] == "chunk"
    want = {"oversized": "exceeds the limit of 2097152 bytes", "too-large-frames": "64x64 exceeds the limit of 48x48",
            "too-many-frames": "the limit of 5", "too-long": "exceeds the limit of 2 s"}[case]
    assert want in err.details(), err.details()
    assert spied_peers == []  # no TrackFrames, no Optimize
    assert rig["store"].list("reenactments") == []


def test_reenact_driving_video_within_the_limits_reaches_the_peers(rig, limited_person, spied_peers):
    """Control for the test above: a valid driving video does start the landmarks and optimizer streams (the
    optimizer is down at this point: UNAVAILABLE), and a failed stream stores nothing either."""
    err = rpc_error(lambda: reenact_video(rig, limited_person, [encode_video(_frames(3, 32), 30)]))
    assert err.code() == grpc.StatusCode.UNAVAILABLE and "optimizer" in err.details()
    assert {"landmarks.TrackFrames", "optimizer.Optimize"} <= set(spied_peers)
    assert rig["store"].list("reenactments") == []


def test_reenact_motion_and_smoothing_reach_the_landmarks_and_optimizer_streams(rig, limited_person, spied_peers):
    """The header's live settings configure both peers: TrackConfig.smoothing_sigma and the optimizer's
    keypoint_sigma / motion / window / opening_weight / latent_sigma / init / opening_range / mouth_starts /
    delta_lr_scale / lip_warp (defaults stay 0 / "" = each service's own default)."""
    PeerSpy.firsts.clear()
    video = [encode_video(_frames(3, 32), 30)]
    err = rpc_error(lambda: reenact_video(rig, limited_person, video, motion="relative", smoothing_sigma=-1, window=1,
                                          opening_weight=4, latent_sigma=1, init="mixed", opening_range=2,
                                          mouth_starts=1, delta_lr_scale=0.1, lip_warp=0.5))
    assert err.code() == grpc.StatusCode.UNAVAILABLE  # the optimizer is down at this point
    track = PeerSpy.firsts["landmarks.TrackFrames"].config
    opts = PeerSpy.firsts["optimizer.Optimize"].config.options
    assert track.smoothing_sigma == -1.0
    assert (opts.motion, opts.keypoint_sigma, opts.window) == ("relative", -1.0, 1)
    assert (opts.opening_weight, opts.latent_sigma, opts.init, opts.opening_range) == (4.0, 1.0, "mixed", 2.0)
    assert (opts.mouth_starts, opts.delta_lr_scale, opts.lip_warp) == (1.0, 0.1, 0.5)
    PeerSpy.firsts.clear()
    rpc_error(lambda: reenact_video(rig, limited_person, video))
    assert PeerSpy.firsts["landmarks.TrackFrames"].config.smoothing_sigma == 0.0
    opts = PeerSpy.firsts["optimizer.Optimize"].config.options
    assert (opts.motion, opts.keypoint_sigma, opts.window) == ("", 0.0, 0)
    assert (opts.opening_weight, opts.latent_sigma, opts.init, opts.opening_range) == (0.0, 0.0, "", 0.0)
    assert (opts.mouth_starts, opts.delta_lr_scale) == (0.0, 0.0)  # 0: the optimizer's default (0.02)
    assert opts.lip_warp == 0.0  # off


def test_trainer_down_is_unavailable_and_leaves_no_upload(rig, face_video):
    """Last: stops the trainer. A valid scan passes every check, then CreateJob fails: the upload is removed."""
    rig["trainer"].stop(drain_seconds=0.5, grace_seconds=0)
    rig["manager"].close(timeout=5)
    err = rpc_error(lambda: enroll(rig, good_header(request_id="req-down"), [face_video]))
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert "trainer" in err.details() and details_of(err)["reason"] == "PEER_UNAVAILABLE"
    assert rig["store"].list("uploads") == [] and rig["store"].list("gateway") == []
    assert wait_for(lambda: rig["gateway"].poller.states.get("trainer") is False, timeout=10)
