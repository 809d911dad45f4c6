"""SDK tests against a FAKE gateway: a real gRPC server on loopback running `FakeGatewayServicer`.

The servicer below is a test double of reenact.api.gateway.v1.ReenactService defined here (scripted
job timelines, echoing reenactments, injected failures); it is NOT the real gateway, which the
end-to-end tests cover. What is real: the gRPC transport, the generated stubs, the status details
(`reenact.runtime.status.to_status`, the services' own error mapping) and the SDK under test.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field

import grpc
import numpy as np
import pytest
from grpc_status import rpc_status

from reenact.api.common.v1 import types_pb2
from reenact.api.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from reenact.client import (
    AsyncClient,
    Client,
    DeadlineExceededError,
    Edit,
    FieldViolation,
    Frame,
    InvalidArgumentError,
    Job,
    JobFailedError,
    JobState,
    NotFoundError,
    ReenactClientError,
    ResourceExhaustedError,
    RetryPolicy,
    Started,
    Summary,
    UnauthenticatedError,
    UnavailableError,
    VideoChunk,
)
from reenact.client.errors import parse_status_details
from reenact.errors import ExhaustedError, InvalidInputError, ReenactError
from reenact.errors import NotFoundError as DomainNotFound
from reenact.errors import UnavailableError as DomainUnavailable
from reenact.runtime.status import to_status
from reenact.wire import image_from_proto, image_to_proto

MiB = 1 << 20
FAST_RETRY = RetryPolicy(max_attempts=4, initial_backoff=0.01, max_backoff=0.05)


def _abort(context, err: ReenactError):
    context.abort_with_status(rpc_status.to_status(to_status(err)))


def job_proto(job_id: str, state: int, *, person_id="p", request_id="r", stage="", step=0, total=0,
              fraction=0.0, eta=-1.0, losses=None, error_code=0, error_message="", version=0) -> types_pb2.Job:
    return types_pb2.Job(
        job_id=job_id, request_id=request_id, person_id=person_id, state=state, profile="cpu-quick",
        progress=types_pb2.JobProgress(stage=stage, step=step, total_steps=total, fraction=fraction,
                                       eta_seconds=eta, losses=types_pb2.LossTerms(terms=losses or {})),
        error_code=error_code, error_message=error_message, person_version=version)


def default_timeline(job_id: str, person_id: str, request_id: str) -> list[types_pb2.Job]:
    kw = {"person_id": person_id, "request_id": request_id}
    return [job_proto(job_id, types_pb2.JOB_STATE_QUEUED, **kw),
            job_proto(job_id, types_pb2.JOB_STATE_RUNNING, stage="base", step=10, total=20, fraction=0.3,
                      eta=12.0, losses={"mse": 0.02}, **kw),
            job_proto(job_id, types_pb2.JOB_STATE_RUNNING, stage="tune", step=20, total=20, fraction=0.9,
                      eta=1.0, losses={"lpips": 0.1, "mse": 0.01}, **kw),
            job_proto(job_id, types_pb2.JOB_STATE_SUCCEEDED, stage="export", fraction=1.0, eta=0.0, version=1,
                      **kw)]


@dataclass
class FakeGatewayServicer(gateway_pb2_grpc.ReenactServiceServicer):
    """Test double of the gateway (see the module docstring). Knobs:

    failures[method]: errors (ReenactError) raised by the next calls of that method, one per call.
    delay[method]: seconds the next call of that method sleeps first (consumed per call when a list).
    watch_drop_after: WatchJob aborts UNAVAILABLE once after this many messages (reconnect test).
    api_key: when set, calls without "authorization: Bearer <api_key>" get UNAUTHENTICATED.
    """

    page_size: int = 2
    api_key: str | None = None
    failures: dict = field(default_factory=dict)
    delay: dict = field(default_factory=dict)
    watch_drop_after: int | None = None
    watch_interval: float = 0.01
    calls: dict = field(default_factory=dict)
    metadata: list = field(default_factory=list)
    enroll_chunks: list = field(default_factory=list)
    enroll_headers: list = field(default_factory=list)
    reenact_headers: list = field(default_factory=list)
    render_requests: list = field(default_factory=list)
    jobs: dict = field(default_factory=dict)        # job_id -> timeline (list of Job)
    persons: dict = field(default_factory=dict)     # person_id -> Person
    reenactments: dict = field(default_factory=dict)  # reenactment_id -> list of RGB frames
    video_chunk_bytes: int = 64 * 1024
    lock: threading.Lock = field(default_factory=threading.Lock)

    # helpers --------------------------------------------------------------------------------------
    def _enter(self, method: str, context) -> None:
        with self.lock:
            self.calls[method] = self.calls.get(method, 0) + 1
            self.metadata.append((method, dict(context.invocation_metadata())))
            fails = self.failures.get(method) or []
            err = fails.pop(0) if fails else None
            d = self.delay.get(method, 0.0)
            if isinstance(d, list):
                d = d.pop(0) if d else 0.0
        if self.api_key is not None:
            auth = dict(context.invocation_metadata()).get("authorization", "")
            if auth != f"Bearer {self.api_key}":
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid API key")
        if d:
            time.sleep(d)
        if err is not None:
            _abort(context, err)

    def add_person(self, person_id: str, *, state=gateway_pb2.PERSON_STATE_READY) -> None:
        self.persons[person_id] = gateway_pb2.Person(person_id=person_id, display_name=person_id.title(),
                                                     state=state, versions=[1], resolution=32, num_anchors=16,
                                                     profile="cpu-quick",
                                                     metrics=types_pb2.LossTerms(terms={"heldout_psnr_db": 30.0}))

    def add_job(self, job_id: str, timeline: list[types_pb2.Job]) -> None:
        self.jobs[job_id] = timeline

    # RPCs -----------------------------------------------------------------------------------------
    def Enroll(self, request_iterator, context):
        first = next(request_iterator)
        if first.WhichOneof("kind") != "header":
            _abort(context, InvalidInputError.for_field("header", "the first message must be the header"))
        h = first.header
        self.enroll_headers.append(h)
        sizes = [len(r.chunk.data) for r in request_iterator]
        self.enroll_chunks.append(sizes)
        self._enter("Enroll", context)  # injected failures after the upload, as a real server would
        if h.person_id and not h.person_id[0].isalpha():
            _abort(context, InvalidInputError(
                "bad enroll header", violations=[
                    *InvalidInputError.for_field("header.person_id", "must start with a letter").violations,
                    *InvalidInputError.for_field("header.profile", "unknown profile").violations]))
        if not sum(sizes):
            _abort(context, InvalidInputError.for_field("chunk", "the video is empty"))
        for tl in self.jobs.values():
            if tl[0].request_id == h.request_id:
                return gateway_pb2.EnrollResponse(job=tl[-1], created=False)
        jid = f"job-{len(self.jobs) + 1}"
        pid = h.person_id or f"person-{len(self.jobs) + 1}"
        self.jobs[jid] = default_timeline(jid, pid, h.request_id)
        self.add_person(pid, state=gateway_pb2.PERSON_STATE_READY)
        return gateway_pb2.EnrollResponse(job=self.jobs[jid][0], created=True)

    def _timeline(self, job_id, context):
        if job_id not in self.jobs:
            _abort(context, DomainNotFound(f"job {job_id!r} not found"))
        return self.jobs[job_id]

    def WatchJob(self, request, context):
        self._enter("WatchJob", context)
        tl = self._timeline(request.job_id, context)
        sent = 0
        start = getattr(self, "_watch_pos", {}).get(request.job_id, 0)
        for i, job in enumerate(tl[start:], start):
            if self.watch_drop_after is not None and sent >= self.watch_drop_after:
                self.watch_drop_after = None
                self.__dict__.setdefault("_watch_pos", {})[request.job_id] = i
                _abort(context, DomainUnavailable("trainer restarting"))
            yield gateway_pb2.WatchJobResponse(job=job)
            sent += 1
            time.sleep(self.watch_interval)

    def GetJob(self, request, context):
        self._enter("GetJob", context)
        return gateway_pb2.GetJobResponse(job=self._timeline(request.job_id, context)[-1])

    def CancelJob(self, request, context):
        self._enter("CancelJob", context)
        tl = self._timeline(request.job_id, context)
        cancelled = types_pb2.Job()
        cancelled.CopyFrom(tl[-1])
        cancelled.state = types_pb2.JOB_STATE_CANCELLED
        tl.append(cancelled)
        return gateway_pb2.CancelJobResponse(job=cancelled)

    def ListJobs(self, request, context):
        self._enter("ListJobs", context)
        ids = sorted(self.jobs)
        start = int(request.page_token or 0)
        size = request.page_size or self.page_size
        page = ids[start:start + size]
        nxt = str(start + size) if start + size < len(ids) else ""
        return gateway_pb2.ListJobsResponse(jobs=[self.jobs[i][-1] for i in page], next_page_token=nxt)

    def ListPersons(self, request, context):
        self._enter("ListPersons", context)
        ids = sorted(self.persons)
        start = int(request.page_token or 0)
        size = request.page_size or self.page_size
        nxt = str(start + size) if start + size < len(ids) else ""
        return gateway_pb2.ListPersonsResponse(persons=[self.persons[i] for i in ids[start:start + size]],
                                               next_page_token=nxt)

    def GetPerson(self, request, context):
        self._enter("GetPerson", context)
        if request.person_id not in self.persons:
            _abort(context, DomainNotFound(f"person {request.person_id!r} not found", reason="PERSON_NOT_FOUND"))
        return gateway_pb2.GetPersonResponse(person=self.persons[request.person_id])

    def DeletePerson(self, request, context):
        self._enter("DeletePerson", context)
        if self.persons.pop(request.person_id, None) is None:
            _abort(context, DomainNotFound(f"person {request.person_id!r} not found"))
        return gateway_pb2.DeletePersonResponse(objects_deleted=7)

    def ListEditDirections(self, request, context):
        self._enter("ListEditDirections", context)
        if request.person_id not in self.persons:
            _abort(context, DomainNotFound(f"person {request.person_id!r} not found"))
        return gateway_pb2.ListEditDirectionsResponse(directions=[
            gateway_pb2.EditDirection(name="smile", unit_change=0.1, r2=0.8),
            gateway_pb2.EditDirection(name="yaw", unit_change=5.0, r2=0.9)])

    def _driving_frames(self, request_iterator, context):
        first = next(request_iterator)
        if first.WhichOneof("kind") != "header":
            _abort(context, InvalidInputError.for_field("header", "the first message must be the header"))
        header = first.header
        self.reenact_headers.append(header)
        if header.person_id not in self.persons:
            _abort(context, DomainNotFound(f"person {header.person_id!r} not found"))
        data, frames = bytearray(), []
        for r in request_iterator:
            if r.WhichOneof("kind") == "chunk":
                data += r.chunk.data
            else:
                frames.append(image_from_proto(r.frame.image))
        fps = header.fps or 25.0
        if data:
            from reenact.video import decode_video

            arr, fps = decode_video(bytes(data))
            frames = list(arr)
        return header, frames, fps

    def _results(self, frames, header_like, reenactment_id):
        out = []
        for i, f in enumerate(frames):
            img = (255 - f).astype(np.uint8)
            enc = header_like.frame_encoding or types_pb2.IMAGE_ENCODING_PNG
            image = image_to_proto(img, enc) if header_like.output != gateway_pb2.OUTPUT_KIND_VIDEO \
                else types_pb2.Image()
            metrics = gateway_pb2.FrameMetrics(has_face=True, keypoint_error=0.05 + 0.001 * i, optimizer_steps=10,
                                               losses=types_pb2.LossTerms(terms={"kp": 0.1, "delta": 0.01}),
                                               optimize_seconds=0.02, render_seconds=0.01)
            out.append((img, gateway_pb2.ReenactedFrame(index=i, image=image, metrics=metrics)))
        return out

    def _video_chunks(self, images, fps):
        from reenact.video import encode_video

        data = encode_video(images, fps)
        n = self.video_chunk_bytes
        return [types_pb2.VideoChunk(data=data[i:i + n]) for i in range(0, len(data), n)]

    def Reenact(self, request_iterator, context):
        self._enter("Reenact", context)
        header, frames, fps = self._driving_frames(request_iterator, context)
        rid = f"re-{len(self.reenactments) + 1}"
        self.reenactments[rid] = frames
        h, w = frames[0].shape[:2]
        yield gateway_pb2.ReenactResponse(started=gateway_pb2.ReenactStarted(reenactment_id=rid, fps=fps,
                                                                             width=w, height=h))
        results = self._results(frames, header, rid)
        for _img, fr in results:
            yield gateway_pb2.ReenactResponse(frame=fr)
        if header.output == gateway_pb2.OUTPUT_KIND_VIDEO:
            for ch in self._video_chunks([img for img, _ in results], fps):
                yield gateway_pb2.ReenactResponse(video_chunk=ch)
        yield gateway_pb2.ReenactResponse(summary=gateway_pb2.ReenactSummary(
            frames=len(frames), wall_seconds=0.5, frames_per_second=len(frames) / 0.5, mean_keypoint_error=0.05))

    def Render(self, request, context):
        self._enter("Render", context)
        self.render_requests.append(request)
        if request.reenactment_id not in self.reenactments:
            _abort(context, DomainNotFound(f"reenactment {request.reenactment_id!r} not found"))
        results = self._results(self.reenactments[request.reenactment_id], request, request.reenactment_id)
        for _img, fr in results:
            yield gateway_pb2.RenderResponse(frame=fr)
        if request.output == gateway_pb2.OUTPUT_KIND_VIDEO:
            for ch in self._video_chunks([img for img, _ in results], 25.0):
                yield gateway_pb2.RenderResponse(video_chunk=ch)


class FakeGateway:
    """A real grpc server on 127.0.0.1:<free port> serving a FakeGatewayServicer."""

    def __init__(self, servicer: FakeGatewayServicer | None = None) -> None:
        self.servicer = servicer or FakeGatewayServicer()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8),
                                  options=[("grpc.max_receive_message_length", 16 * MiB)])
        gateway_pb2_grpc.add_ReenactServiceServicer_to_server(self.servicer, self.server)
        from grpc_health.v1 import health, health_pb2_grpc

        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{self.port}"

    def __enter__(self) -> FakeGateway:
        self.server.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.stop(grace=None)


@pytest.fixture
def fake_gateway():
    with FakeGateway() as gw:
        yield gw


@pytest.fixture
def client(fake_gateway):
    with Client(fake_gateway.address, retry=FAST_RETRY, timeout=5.0) as cl:
        yield cl


def _frames(n=3, h=32, w=48):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for _ in range(n)]


# ---- enroll -----------------------------------------------------------------------------------------


def test_enroll_streams_video_in_chunks_of_at_most_1mib_to_fake_gateway(client, fake_gateway, tmp_path):
    video = bytes(range(256)) * (10 * 1024 + 7)  # 2.5 MiB + a bit
    path = tmp_path / "scan.mp4"
    path.write_bytes(video)
    job = client.enroll(path, person_id="eileen", display_name="Eileen", profile="cpu-quick",
                        options={"num_anchors": 8, "seed": 3})
    sizes = fake_gateway.servicer.enroll_chunks[-1]
    assert sizes == [MiB, MiB, len(video) - 2 * MiB]
    h = fake_gateway.servicer.enroll_headers[-1]
    assert (h.person_id, h.display_name, h.profile, h.options.num_anchors, h.options.seed) == \
        ("eileen", "Eileen", "cpu-quick", 8, 3)
    assert h.request_id.startswith("enroll-")
    assert isinstance(job, Job) and job.state == JobState.QUEUED and job.created is True
    assert job.person_id == "eileen" and job.request_id == h.request_id
    # bytes input and a smaller chunk size; the same request_id returns the same job, created=False
    again = client.enroll(video, person_id="eileen", request_id=h.request_id, chunk_size=300_000)
    assert fake_gateway.servicer.enroll_chunks[-1][:-1] == [300_000] * (len(video) // 300_000)
    assert again.job_id == job.job_id and again.created is False


def test_enroll_rejects_bad_arguments_before_calling_fake_gateway(client, fake_gateway, tmp_path):
    with pytest.raises(FileNotFoundError):
        client.enroll(tmp_path / "missing.mp4", person_id="x")
    with pytest.raises(ValueError, match="empty"):
        client.enroll(b"", person_id="x")
    with pytest.raises(ValueError, match="chunk_size"):
        client.enroll(b"abc", chunk_size=2 * MiB)
    with pytest.raises(ValueError, match="bad enroll options"):
        client.enroll(b"abc", options={"no_such_option": 1})
    assert fake_gateway.servicer.calls.get("Enroll", 0) == 0


def test_invalid_argument_from_fake_gateway_carries_field_violations(client):
    with pytest.raises(InvalidArgumentError) as ei:
        client.enroll(b"video", person_id="9lives", profile="nope")
    err = ei.value
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT and err.method == "Enroll"
    assert err.violations == (FieldViolation("header.person_id", "must start with a letter"),
                              FieldViolation("header.profile", "unknown profile"))
    assert "header.person_id: must start with a letter" in str(err)
    assert err.to_dict()["violations"][1] == {"field": "header.profile", "description": "unknown profile"}


def test_enroll_is_retried_with_the_same_request_id_after_unavailable(client, fake_gateway):
    fake_gateway.servicer.failures["Enroll"] = [DomainUnavailable("trainer down"), DomainUnavailable("again")]
    job = client.enroll(b"x" * 1000, person_id="eileen", request_id="fixed-id")
    assert fake_gateway.servicer.calls["Enroll"] == 3
    assert [h.request_id for h in fake_gateway.servicer.enroll_headers] == ["fixed-id"] * 3
    assert fake_gateway.servicer.enroll_chunks == [[1000]] * 3   # the whole video re-sent each attempt
    assert job.request_id == "fixed-id"


# ---- retries, deadlines, errors ---------------------------------------------------------------------


def test_get_job_retries_unavailable_twice_then_succeeds_on_fake_gateway(fake_gateway):
    fake_gateway.servicer.add_job("job-1", default_timeline("job-1", "p", "r"))
    fake_gateway.servicer.failures["GetJob"] = [DomainUnavailable("down"), DomainUnavailable("down")]
    with Client(fake_gateway.address, retry=FAST_RETRY) as cl:
        delays = []
        cl._sleep = delays.append
        job = cl.get_job("job-1")
    assert job.state == JobState.SUCCEEDED and job.person_version == 1
    assert fake_gateway.servicer.calls["GetJob"] == 3
    assert len(delays) == 2 and all(0 < d <= FAST_RETRY.max_backoff for d in delays)
    # one x-request-id for all attempts of the call
    ids = {md["x-request-id"] for m, md in fake_gateway.servicer.metadata if m == "GetJob"}
    assert len(ids) == 1


def test_retries_give_up_after_max_attempts_on_fake_gateway(client, fake_gateway):
    fake_gateway.servicer.add_job("job-1", default_timeline("job-1", "p", "r"))
    fake_gateway.servicer.failures["GetJob"] = [DomainUnavailable("down")] * 10
    with pytest.raises(UnavailableError, match="down"):
        client.get_job("job-1")
    assert fake_gateway.servicer.calls["GetJob"] == FAST_RETRY.max_attempts


def test_reenact_is_not_retried_on_unavailable_from_fake_gateway(client, fake_gateway):
    fake_gateway.servicer.add_person("eileen")
    fake_gateway.servicer.failures["Reenact"] = [DomainUnavailable("optimizer died")]
    with pytest.raises(UnavailableError) as ei:
        list(client.reenact("eileen", frames=_frames(2), fps=25))
    assert ei.value.method == "Reenact" and "optimizer died" in ei.value.message
    assert fake_gateway.servicer.calls["Reenact"] == 1


def test_delete_person_is_not_retried_on_fake_gateway(client, fake_gateway):
    fake_gateway.servicer.add_person("eileen")
    fake_gateway.servicer.failures["DeletePerson"] = [DomainUnavailable("down")]
    with pytest.raises(UnavailableError):
        client.delete_person("eileen")
    assert fake_gateway.servicer.calls["DeletePerson"] == 1
    assert client.delete_person("eileen") == 7


def test_deadline_exceeded_is_raised_and_not_retried_when_the_budget_is_spent(fake_gateway):
    fake_gateway.servicer.add_person("eileen")
    fake_gateway.servicer.delay["GetPerson"] = 2.0
    with Client(fake_gateway.address, retry=FAST_RETRY) as cl:
        t0 = time.monotonic()
        with pytest.raises(DeadlineExceededError):
            cl.get_person("eileen", timeout=0.3)
        assert time.monotonic() - t0 < 1.5
    assert fake_gateway.servicer.calls["GetPerson"] == 1


def test_attempt_timeout_retries_a_slow_attempt_within_the_budget(fake_gateway):
    fake_gateway.servicer.add_person("eileen")
    fake_gateway.servicer.delay["GetPerson"] = [1.0]   # only the first call is slow
    policy = RetryPolicy(max_attempts=3, initial_backoff=0.01, attempt_timeout=0.3)
    with Client(fake_gateway.address, retry=policy) as cl:
        person = cl.get_person("eileen", timeout=5.0)
    assert person.person_id == "eileen" and fake_gateway.servicer.calls["GetPerson"] == 2


def test_not_found_and_resource_exhausted_map_to_typed_errors(client, fake_gateway):
    with pytest.raises(NotFoundError) as ei:
        client.get_person("nobody")
    assert ei.value.reason == "PERSON_NOT_FOUND" and "nobody" in ei.value.message
    fake_gateway.servicer.add_person("eileen")
    fake_gateway.servicer.failures["Reenact"] = [ExhaustedError("too many streams", retry_after_s=1.5)]
    with pytest.raises(ResourceExhaustedError) as ei:
        list(client.reenact("eileen", frames=_frames(1), fps=25))
    assert ei.value.retry_after == pytest.approx(1.5)
    assert isinstance(ei.value, ReenactClientError)


def test_parse_status_details_tolerates_missing_and_corrupt_details():
    assert parse_status_details(None) == ((), None, "", "")
    assert parse_status_details([("grpc-status-details-bin", b"\xff\xfe garbage")]) == ((), None, "", "")


def test_api_key_is_sent_as_bearer_token_to_fake_gateway(fake_gateway):
    fake_gateway.servicer.api_key = "s3cret"
    fake_gateway.servicer.add_person("eileen")
    with Client(fake_gateway.address, api_key="s3cret") as cl:
        assert cl.get_person("eileen").person_id == "eileen"
    with Client(fake_gateway.address, api_key="wrong") as cl, pytest.raises(UnauthenticatedError):
        cl.get_person("eileen")


def test_address_comes_from_the_environment(monkeypatch, fake_gateway):
    monkeypatch.setenv("REENACT_ADDRESS", fake_gateway.address)
    monkeypatch.setenv("REENACT_API_KEY", "k")
    fake_gateway.servicer.api_key = "k"
    with Client() as cl:
        assert cl.address == fake_gateway.address
        assert cl.list_persons() == []
    monkeypatch.delenv("REENACT_ADDRESS")
    with pytest.raises(ValueError, match="REENACT_ADDRESS"):
        Client()


# ---- jobs -------------------------------------------------------------------------------------------


def test_watch_job_yields_typed_states_until_terminal(client, fake_gateway):
    job = client.enroll(b"v" * 10, person_id="eileen")
    states = list(client.watch_job(job.job_id))
    assert [s.state for s in states] == [JobState.QUEUED, JobState.RUNNING, JobState.RUNNING, JobState.SUCCEEDED]
    run = states[1]
    assert (run.progress.stage, run.progress.step, run.progress.total_steps) == ("base", 10, 20)
    assert run.progress.eta_seconds == 12.0 and run.progress.losses == {"mse": 0.02}
    assert states[0].progress.eta_seconds is None   # < 0 on the wire = unknown
    assert states[-1].done and states[-1].succeeded and states[-1].person_version == 1


def test_watch_job_reconnects_after_the_fake_gateway_drops_the_stream(client, fake_gateway):
    job = client.enroll(b"v" * 10, person_id="eileen")
    fake_gateway.servicer.watch_drop_after = 2
    seen = []
    final = client.wait_job(job.job_id, on_update=seen.append)
    assert final.state == JobState.SUCCEEDED
    assert fake_gateway.servicer.calls["WatchJob"] == 2
    assert [s.state for s in seen] == [JobState.QUEUED, JobState.RUNNING, JobState.RUNNING, JobState.SUCCEEDED]


def test_wait_job_raises_job_failed_when_asked(client, fake_gateway):
    fake_gateway.servicer.add_job("job-f", [
        job_proto("job-f", types_pb2.JOB_STATE_RUNNING, stage="align"),
        job_proto("job-f", types_pb2.JOB_STATE_FAILED, error_code=9, error_message="scan lacks yaw_left")])
    final = client.wait_job("job-f")
    assert final.state == JobState.FAILED and final.error_code == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(JobFailedError) as ei:
        client.wait_job("job-f", raise_on_failure=True)
    assert ei.value.job.error_message == "scan lacks yaw_left"
    assert ei.value.code == grpc.StatusCode.FAILED_PRECONDITION


def test_watch_unknown_job_is_not_found_without_retry(client, fake_gateway):
    with pytest.raises(NotFoundError):
        list(client.watch_job("job-missing"))
    assert fake_gateway.servicer.calls["WatchJob"] == 1


def test_list_jobs_follows_pagination_of_fake_gateway(client, fake_gateway):
    for i in range(5):
        fake_gateway.servicer.add_job(f"job-{i}", default_timeline(f"job-{i}", "p", f"r{i}"))
    jobs = client.list_jobs()
    assert [j.job_id for j in jobs] == [f"job-{i}" for i in range(5)]
    assert fake_gateway.servicer.calls["ListJobs"] == 3          # pages of 2, 2, 1
    assert len(client.list_jobs(limit=3)) == 3


def test_cancel_job_returns_cancelled_state(client, fake_gateway):
    fake_gateway.servicer.add_job("job-c", [job_proto("job-c", types_pb2.JOB_STATE_RUNNING)])
    assert client.cancel_job("job-c").state == JobState.CANCELLED


# ---- reenact / render -------------------------------------------------------------------------------


def test_reenact_frames_yields_typed_events_in_order(client, fake_gateway):
    fake_gateway.servicer.add_person("eileen")
    frames = _frames(3)
    events = list(client.reenact("eileen", frames=frames, fps=24, paste_back=True,
                                 edits=["smile=1.5", ("yaw", -0.5), Edit(np.ones(4, np.float32), 0.25)],
                                 steps=12, window=4, motion="relative", smoothing_sigma=-1, opening_weight=4,
                                 latent_sigma=1.5, init="mixed", opening_range=2, mouth_starts=1,
                                 delta_lr_scale=0.1, lip_warp=0.75))
    assert isinstance(events[0], Started) and events[0].fps == 24 and (events[0].width, events[0].height) == (48, 32)
    assert isinstance(events[-1], Summary) and events[-1].frames == 3
    got = [e for e in events if isinstance(e, Frame)]
    assert [f.index for f in got] == [0, 1, 2]
    for f, src in zip(got, frames, strict=True):
        np.testing.assert_array_equal(f.image, 255 - src)   # PNG round trip is lossless
        assert f.metrics.has_face and f.metrics.losses == {"delta": 0.01, "kp": 0.1}
    h = fake_gateway.servicer.reenact_headers[-1]
    assert (h.person_id, h.paste_back, h.steps, h.window, h.fps) == ("eileen", True, 12, 4, 24.0)
    assert (h.motion, h.smoothing_sigma, h.opening_weight, h.latent_sigma) == ("relative", -1.0, 4.0, 1.5)
    assert (h.init, h.opening_range, h.mouth_starts, h.delta_lr_scale) == ("mixed", 2.0, 1.0, 0.1)
    assert h.lip_warp == 0.75
    assert h.output == gateway_pb2.OUTPUT_KIND_FRAMES and h.frame_encoding == types_pb2.IMAGE_ENCODING_PNG
    assert [(e.semantic, e.strength) for e in h.edits[:2]] == [("smile", 1.5), ("yaw", -0.5)]
    assert list(h.edits[2].w_direction.shape) == [4]


def test_reenact_rejects_bad_arguments_locally(client):
    with pytest.raises(ValueError, match="exactly one"):
        list(client.reenact("eileen"))
    with pytest.raises(ValueError, match="output"):
        list(client.reenact("eileen", frames=[], output="gif"))
    with pytest.raises(ValueError, match="NAME=STRENGTH"):
        list(client.reenact("eileen", frames=[], edits=["smile"]))
    with pytest.raises(ValueError, match="motion"):
        list(client.reenact("eileen", frames=[], motion="sideways"))
    with pytest.raises(ValueError, match="init"):
        list(client.reenact("eileen", frames=[], init="best"))
    for k in (-0.5, 10.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="opening_range"):
            list(client.reenact("eileen", frames=[], motion="relative", opening_range=k))
    for motion in ("", "absolute"):  # the map works around the person's reference: motion "relative" only
        with pytest.raises(ValueError, match="opening_range.*relative"):
            list(client.reenact("eileen", frames=[], motion=motion, opening_range=2))
    for s in (-0.5, 1.51, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="mouth_starts"):
            list(client.reenact("eileen", frames=[], mouth_starts=s))
    for v in (-1, 10.01, 11, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="delta_lr_scale"):
            list(client.reenact("eileen", frames=[], delta_lr_scale=v))
    for v in (-0.1, 1.01, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="lip_warp"):
            list(client.reenact("eileen", frames=[], lip_warp=v))


def test_reenact_unknown_person_is_not_found(client):
    with pytest.raises(NotFoundError, match="ghost"):
        list(client.reenact("ghost", frames=_frames(1), fps=25))


def test_reenact_to_file_writes_the_servers_video_chunks(client, fake_gateway, tmp_path):
    from reenact.video import decode_video, encode_video

    fake_gateway.servicer.add_person("eileen")
    fake_gateway.servicer.video_chunk_bytes = 1000
    driving = tmp_path / "driving.mp4"
    encode_video([np.full((32, 32, 3), 40 * i, np.uint8) for i in range(4)], 25.0, driving)
    seen = []
    res = client.reenact_to_file("eileen", tmp_path / "out" / "result.mp4", video=driving, on_event=seen.append)
    assert fake_gateway.servicer.reenact_headers[-1].output == gateway_pb2.OUTPUT_KIND_VIDEO
    assert res.summary.frames == 4 and res.started.reenactment_id == "re-1" and len(res.frames) == 4
    assert res.bytes_written == (tmp_path / "out" / "result.mp4").stat().st_size > 0
    assert sum(isinstance(e, VideoChunk) for e in seen) > 1
    out, fps = decode_video(tmp_path / "out" / "result.mp4")
    assert out.shape == (4, 32, 32, 3) and fps == pytest.approx(25.0)
    assert not list((tmp_path / "out").glob("*.part"))


def test_reenact_to_file_with_frames_dir_writes_pngs_and_encodes_locally(client, fake_gateway, tmp_path):
    from reenact.video import decode_video

    fake_gateway.servicer.add_person("eileen")
    res = client.reenact_to_file("eileen", tmp_path / "r.mp4", frames=_frames(3, 32, 32), fps=10,
                                 frames_dir=tmp_path / "frames")
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == ["000000.png", "000001.png", "000002.png"]
    out, fps = decode_video(tmp_path / "r.mp4")
    assert out.shape[0] == 3 and fps == pytest.approx(10.0) and res.summary.frames == 3


def test_render_with_edits_and_retry_before_first_result(client, fake_gateway):
    fake_gateway.servicer.add_person("eileen")
    started = next(e for e in client.reenact("eileen", frames=_frames(2), fps=25) if isinstance(e, Started))
    fake_gateway.servicer.failures["Render"] = [DomainUnavailable("triton restarting")]
    frames = list(client.render("eileen", started.reenactment_id, edits=["smile=-1"], frame_encoding="rgb8"))
    assert [f.index for f in frames] == [0, 1] and frames[0].image.shape == (32, 48, 3)
    assert fake_gateway.servicer.calls["Render"] == 2
    req = fake_gateway.servicer.render_requests[-1]
    assert req.edits[0].semantic == "smile" and req.edits[0].strength == -1.0
    assert req.frame_encoding == types_pb2.IMAGE_ENCODING_RGB8
    with pytest.raises(NotFoundError):
        list(client.render("eileen", "re-missing"))


# ---- registry ---------------------------------------------------------------------------------------


def test_persons_and_directions_are_typed(client, fake_gateway):
    for pid in ("amy", "bob", "cat"):
        fake_gateway.servicer.add_person(pid)
    persons = client.list_persons()
    assert [p.person_id for p in persons] == ["amy", "bob", "cat"]
    p = client.get_person("bob")
    assert p.state.value == "READY" and p.versions == (1,) and p.latest_version == 1
    assert p.metrics == {"heldout_psnr_db": 30.0}
    dirs = client.list_edit_directions("bob")
    assert [(d.name, d.r2) for d in dirs] == [("smile", 0.8), ("yaw", 0.9)]
    assert client.delete_person("bob") == 7
    with pytest.raises(NotFoundError):
        client.get_person("bob")


# ---- asyncio parity ---------------------------------------------------------------------------------


def test_async_client_parity_with_fake_gateway(fake_gateway, tmp_path):
    srv = fake_gateway.servicer

    async def main():
        async with AsyncClient(fake_gateway.address, retry=FAST_RETRY, timeout=5.0) as cl:
            await cl.wait_ready(5)
            # enroll: chunks <= 1 MiB, retried with the same request id
            srv.failures["Enroll"] = [DomainUnavailable("down")]
            job = await cl.enroll(b"z" * (MiB + 10), person_id="eileen", request_id="rid-1")
            assert srv.calls["Enroll"] == 2 and srv.enroll_chunks[-1] == [MiB, 10]
            assert job.created is True and job.state == JobState.QUEUED
            # watch with a dropped stream
            srv.watch_drop_after = 1
            states = [j.state async for j in cl.watch_job(job.job_id)]
            assert states[-1] == JobState.SUCCEEDED and srv.calls["WatchJob"] == 2
            final = await cl.wait_job(job.job_id)
            assert final.person_version == 1
            # unary retries
            srv.failures["GetJob"] = [DomainUnavailable("a"), DomainUnavailable("b")]
            assert (await cl.get_job(job.job_id)).succeeded and srv.calls["GetJob"] == 3
            # errors with details
            with pytest.raises(InvalidArgumentError) as ei:
                await cl.enroll(b"v", person_id="1x")
            assert ei.value.violations[0].field == "header.person_id"
            with pytest.raises(NotFoundError):
                await cl.get_person("nobody")
            srv.delay["GetPerson"] = [2.0]
            with pytest.raises(DeadlineExceededError):
                await cl.get_person("eileen", timeout=0.3)
            # reenact: async frames, typed events, not retried
            async def frames():
                for f in _frames(2):
                    yield f
            events = [e async for e in cl.reenact("eileen", frames=frames(), fps=25, edits=["smile=1"],
                                                  opening_weight=2, latent_sigma=0.5, init="anchor",
                                                  motion="relative", opening_range=1.5, mouth_starts=0.5,
                                                  delta_lr_scale=0.25, lip_warp=0.5)]
            assert isinstance(events[0], Started) and isinstance(events[-1], Summary)
            h = srv.reenact_headers[-1]
            assert (h.opening_weight, h.latent_sigma, h.init, h.opening_range) == (2.0, 0.5, "anchor", 1.5)
            assert (h.mouth_starts, h.delta_lr_scale, h.lip_warp) == (0.5, 0.25, 0.5)
            assert [e.index for e in events if isinstance(e, Frame)] == [0, 1]
            srv.failures["Reenact"] = [DomainUnavailable("gone")]
            n = srv.calls["Reenact"]
            with pytest.raises(UnavailableError):
                [e async for e in cl.reenact("eileen", frames=_frames(1), fps=25)]
            assert srv.calls["Reenact"] == n + 1
            res = await cl.reenact_to_file("eileen", tmp_path / "a.mp4", frames=_frames(2, 32, 32), fps=25)
            assert res.bytes_written > 0 and res.summary.frames == 2
            rendered = [f async for f in cl.render("eileen", events[0].reenactment_id, edits=["yaw=1"])]
            assert len(rendered) == 2
            # pagination and registry
            for i in range(4):
                srv.add_job(f"job-x{i}", default_timeline(f"job-x{i}", "p", f"x{i}"))
            assert len(await cl.list_jobs()) == 5
            assert [p.person_id for p in await cl.list_persons()] == ["eileen"]
            assert [d.name for d in await cl.list_edit_directions("eileen")] == ["smile", "yaw"]
            assert (await cl.cancel_job("job-x0")).state == JobState.CANCELLED
            assert await cl.delete_person("eileen") == 7

    asyncio.run(main())


def test_tls_channel_with_custom_root_certificate(tmp_path):
    """A TLS server (self-signed cert made here) serving the fake gateway; the client trusts that cert."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    (tmp_path / "ca.pem").write_bytes(cert_pem)
    servicer = FakeGatewayServicer()
    servicer.add_person("eileen")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    gateway_pb2_grpc.add_ReenactServiceServicer_to_server(servicer, server)
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key_pem, cert_pem)]))
    server.start()
    try:
        opts = [("grpc.ssl_target_name_override", "localhost")]
        with Client(f"127.0.0.1:{port}", root_certificates=tmp_path / "ca.pem", options=opts, api_key="k") as cl:
            assert cl.get_person("eileen").person_id == "eileen"
        assert dict(servicer.metadata[-1][1])["authorization"] == "Bearer k"
    finally:
        server.stop(None)


def test_an_error_in_the_callers_frames_is_raised_as_itself_not_as_cancelled(client, fake_gateway):
    fake_gateway.servicer.add_person("eileen")

    def frames():
        yield _frames(1)[0]
        raise ValueError("driving video is corrupt at frame 1")

    with pytest.raises(ValueError, match="corrupt at frame 1"):
        list(client.reenact("eileen", frames=frames(), fps=25))

    async def main():
        async def aframes():
            yield _frames(1)[0]
            raise ValueError("async source failed")

        async with AsyncClient(fake_gateway.address) as cl:
            with pytest.raises(ValueError, match="async source failed"):
                [e async for e in cl.reenact("eileen", frames=aframes(), fps=25)]

    asyncio.run(main())


def test_error_classes_also_match_the_builtin_families():
    from reenact.client.errors import DeadlineExceededError as D
    from reenact.client.errors import UnavailableError as U
    from reenact.client.errors import error_class

    assert issubclass(D, TimeoutError) and issubclass(U, ConnectionError)
    err = D("slow", method="GetJob")
    assert str(err) == "DEADLINE_EXCEEDED: slow" and err.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert error_class(grpc.StatusCode.NOT_FOUND) is NotFoundError


def test_async_reenact_reports_the_servers_status_when_it_ends_the_stream_early(fake_gateway):
    """grpc/grpc#36066: without reenact.client._aio_compat about a quarter of these calls end INTERNAL
    "Internal error from Core" instead of the status the (fake) gateway sent."""
    srv = fake_gateway.servicer
    srv.add_person("eileen")

    async def main():
        codes = []
        async with AsyncClient(fake_gateway.address) as cl:
            for _ in range(40):
                srv.failures["Reenact"] = [DomainNotFound("person 'eileen' was deleted")]
                try:
                    [e async for e in cl.reenact("eileen", frames=_frames(3), fps=25)]
                except ReenactClientError as exc:
                    codes.append((exc.code, exc.message))
        return codes

    codes = asyncio.run(main())
    assert codes == [(grpc.StatusCode.NOT_FOUND, "person 'eileen' was deleted")] * 40
