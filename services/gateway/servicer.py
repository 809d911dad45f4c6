"""gRPC adapter of the gateway: the public ReenactService composed from the peers.

Validation happens before any work is queued: a bad header or a corrupt/empty/oversized video is
INVALID_ARGUMENT (BadRequest field violations) before the trainer sees a job or the optimizer a target.
Peer failures travel on with their status (services/gateway/peers.py). Domain errors travel up unchanged;
the service runtime maps them to status codes in one place.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import logging
import math
import shutil
import threading
import time
from collections.abc import Iterator

import grpc
import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from reenact.api.common.v1 import types_pb2
from reenact.api.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from reenact.api.landmarks.v1 import landmarks_pb2
from reenact.api.trainer.v1 import trainer_pb2
from reenact.errors import (
    AlreadyExistsError,
    ExhaustedError,
    FieldViolation,
    InvalidInputError,
    NotFoundError,
    PreconditionError,
    ReenactError,
    UnavailableError,
)
from reenact.runtime.auth import Principal, current_principal
from reenact.runtime.deadlines import deadline_var, time_left
from reenact.runtime.logs import request_id_var
from reenact.runtime.streams import StreamSlots, client_requests
from reenact.store import ArtifactStore
from reenact.wire import image_from_proto, image_to_proto
from services.gateway.auth import KeyStreams
from services.gateway.compose import lip_warped, paste_back
from services.gateway.config import GatewayConfig
from services.gateway.edits import AnchorCache, parse_edits, render_ws
from services.gateway.peers import Peers, peer_error
from services.gateway.pipeline import (
    INITS,
    MAX_DELTA_LR_SCALE,
    MAX_LATENT_SIGMA,
    MAX_LIP_WARP,
    MAX_MOUTH_STARTS,
    MAX_OPENING_RANGE,
    MAX_OPENING_WEIGHT,
    MAX_SMOOTHING_SIGMA,
    MOTIONS,
    DrivingSink,
    ReenactPipeline,
    StreamSpec,
    _wire_image,
    required_in_flight,
)
from services.gateway.reenactments import (
    ReenactmentWriter,
    new_reenactment_id,
    open_reenactment,
    read_meta,
)
from services.gateway.registry import (
    PersonRegistry,
    assigned_person_id,
    enroll_header_violations,
    person_not_found,
    upload_key,
    validate_person_id,
)

log = logging.getLogger("reenact.gateway")

MAX_CHUNK = 1 << 20
DEFAULT_FPS = 30.0
IMAGE_ENCODINGS = (types_pb2.IMAGE_ENCODING_PNG, types_pb2.IMAGE_ENCODING_JPEG, types_pb2.IMAGE_ENCODING_RGB8)
OUTPUTS = (gateway_pb2.OUTPUT_KIND_UNSPECIFIED, gateway_pb2.OUTPUT_KIND_FRAMES, gateway_pb2.OUTPUT_KIND_VIDEO)
MAX_STEPS = 100_000
FINAL_JOB_STATES = (types_pb2.JOB_STATE_SUCCEEDED, types_pb2.JOB_STATE_FAILED, types_pb2.JOB_STATE_CANCELLED)


# ---------------------------------------------------------------------------------------------- metrics


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.frames = Counter("reenact_gateway_frames", "Reenacted frames sent to clients", registry=r)
        self.frames_without_face = Counter("reenact_gateway_frames_without_face",
                                           "Driving frames without a face (previous latent repeated)", registry=r)
        self.rendered_frames = Counter("reenact_gateway_rendered_frames", "Frames re-rendered by Render", registry=r)
        self.active_streams = Gauge("reenact_gateway_active_streams", "Reenact/Render streams being served",
                                    registry=r)
        self.render_batch = Histogram("reenact_gateway_render_batch_frames", "Frames per Triton render request",
                                      buckets=(1, 2, 4, 8, 16, 32, 64), registry=r)
        self.upload_bytes = Counter("reenact_gateway_upload_bytes", "Video bytes received (Enroll and Reenact)",
                                    registry=r)
        self.enrollments = Counter("reenact_gateway_enrollments", "Enrollment jobs created", registry=r)
        self.peer_ready = Gauge("reenact_gateway_peer_ready", "1 when the peer answers SERVING", ["peer"],
                                registry=r)


# ---------------------------------------------------------------------------------------------- helpers


def _expect_kind(req, want: str) -> None:
    """After the header a Reenact stream carries only video chunks or only frames (`want`)."""
    kind = req.WhichOneof("kind")
    if kind == want:
        return
    if kind in ("chunk", "frame"):
        raise InvalidInputError.for_field(kind, "a stream carries either video chunks or frames, not both")
    raise InvalidInputError.for_field("header", "only the first message may carry the header")


def _bounded(field: str, value: float, hi: float, zero: str) -> list[FieldViolation]:
    """A violation on `field` when `value` is non-finite or outside 0..hi (`zero`: what 0 means)."""
    if math.isfinite(value) and 0 <= value <= hi:
        return []
    return [FieldViolation(field, f"{value} outside 0..{hi:g} (0 = {zero})")]


def _video_limits(cfg: GatewayConfig):
    from reenact.video import VideoLimits

    return VideoLimits(max_bytes=cfg.max_video_bytes, max_width=cfg.max_side, max_height=cfg.max_side,
                       max_frames=cfg.max_frames, max_duration_s=cfg.max_duration_s)


def _encode_token(last: str) -> str:
    return base64.urlsafe_b64encode(f"after:{last}".encode()).decode().rstrip("=")


def _decode_token(token: str) -> str:
    if not token:
        return ""
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        kind, _, value = text.partition(":")
        if kind == "after":
            return value
    except (ValueError, UnicodeDecodeError):
        pass
    raise InvalidInputError.for_field("page_token", "not a token from a previous ListPersons response")


def _timestamp(seconds: float):
    from google.protobuf import timestamp_pb2

    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(round(seconds * 1e9))
    return ts


class _Spool:
    """Video chunks of a request stream spooled to a temporary file (ChunkSpool) with their sha256."""

    def __init__(self, cfg: GatewayConfig, metrics: GatewayMetrics) -> None:
        from reenact.video import ChunkSpool

        self.spool = ChunkSpool(cfg.max_video_bytes, field="chunk")
        self.sha = hashlib.sha256()
        self.metrics = metrics
        self.chunks = 0

    def add(self, data: bytes) -> None:
        if len(data) > MAX_CHUNK:
            raise InvalidInputError.for_field(f"chunk[{self.chunks}].data", f"{len(data)} bytes; at most 1 MiB per chunk")
        self.spool.write(data)
        self.sha.update(data)
        self.chunks += 1
        self.metrics.upload_bytes.inc(len(data))

    @property
    def path(self):
        return self.spool.path

    def finish(self):
        """All chunks received: close the file for writing; returns its path."""
        return self.spool.finish()

    def close(self) -> None:
        self.spool.close()

    def __enter__(self) -> _Spool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------- servicer


class GatewayServicer(gateway_pb2_grpc.ReenactServiceServicer):
    def __init__(self, cfg: GatewayConfig, store: ArtifactStore, peers: Peers, metrics: GatewayMetrics) -> None:
        self.cfg = cfg
        self.store = store
        self.peers = peers
        self.metrics = metrics
        self.registry = PersonRegistry(store)
        self.anchors = AnchorCache(self.registry.repo)
        self._lock = threading.Lock()
        self._enroll_lock = threading.Lock()
        self._enroll_claims: dict[str, dict[str, int]] = {}  # person id -> {tenant: Enroll calls in flight}
        self._slots = StreamSlots("streams", lambda: self.cfg.max_streams, lambda: self.cfg.retry_after_s,
                                  self.metrics.active_streams)
        self._key_streams = KeyStreams(lambda: self.cfg.retry_after_s)
        self._model_locks: dict[str, threading.Lock] = {}

    # ------------------------------------------------------------------------------------ plumbing

    @contextlib.contextmanager
    def _slot(self):
        """One Reenact/Render stream: a slot of the API key's max_streams, then one of --max-streams."""
        principal = current_principal()
        took = self._key_streams.acquire(principal)
        try:
            with self._slots.take():
                yield
        finally:
            if took:
                self._key_streams.release(principal)

    # ------------------------------------------------------------------------------------ ownership
    #
    # A key sees only its tenant's persons (and their jobs and reenactments). Another tenant's person is
    # NOT_FOUND, exactly like a person that does not exist, so ids are not leaked by the status code. Keys
    # with sees_all (auth off, admin keys) skip the checks.

    def _check_owner(self, person_id: str) -> None:
        p = current_principal()
        if p.sees_all:
            return
        rec = self.registry.get(person_id)
        if rec is None or rec.owner != p.tenant:
            raise person_not_found(person_id)

    def _visible(self, person_id: str, p: Principal) -> bool:
        if p.sees_all:
            return True
        rec = self.registry.get(person_id)
        return rec is not None and rec.owner == p.tenant

    def _check_job(self, job: types_pb2.Job) -> types_pb2.Job:
        """The job as its owner sees it (request id without the tenant scope); NOT_FOUND for another tenant's."""
        p = current_principal()
        if not p.sees_all:
            rec = self.registry.get(job.person_id)
            if rec is None or rec.owner != p.tenant or not rec.has_job(job.job_id):
                raise NotFoundError(f"no job {job.job_id!r}", reason="JOB_NOT_FOUND")
        prefix = f"{p.tenant}." if p.tenant else ""
        if prefix and job.request_id.startswith(prefix):
            job = types_pb2.Job.FromString(job.SerializeToString())
            job.request_id = job.request_id[len(prefix):]
        return job

    def _scoped_request_id(self, request_id: str) -> str:
        """The trainer's idempotency key of a client's request id: per tenant, so tenants never collide."""
        p = current_principal()
        if not p.tenant:
            return request_id
        scoped = f"{p.tenant}.{request_id}"
        if len(scoped) > 128:
            raise InvalidInputError.for_field("header.request_id",
                                              f"at most {127 - len(p.tenant)} characters for this API key")
        return scoped

    @contextlib.contextmanager
    def _enroll_target(self, person_id: str):
        """Hold `person_id` as an enrollment target of the caller's tenant while its Enroll call runs.

        It must be new or this tenant's; a new one must fit the persons quota, counting the new persons of
        this tenant whose Enroll calls are still uploading (reserved here until their registry record is
        written), so that concurrent enrollments cannot pass the quota together, and two tenants cannot
        both claim one new id. The reservations are this gateway process's: with several gateway replicas
        the quota can still be passed by (replicas - 1) persons at most.
        """
        p = current_principal()
        with self._enroll_lock:
            rec = self.registry.get(person_id)
            exists = rec is not None or bool(self.registry.repo.versions(person_id))
            claims = self._enroll_claims.get(person_id, {})
            taken = (exists and (rec is None or rec.owner != p.tenant)) or any(t != p.tenant for t in claims)
            if taken and not p.sees_all:
                # person ids are one namespace for all tenants: the only place where another tenant's id shows
                raise AlreadyExistsError(f"person id {person_id!r} is taken; choose another",
                                         reason="PERSON_ID_TAKEN")
            if not exists and p.tenant not in claims and p.max_persons > 0:
                pending = {pid for pid, by in self._enroll_claims.items() if p.tenant in by}
                owned = set(self.registry.owned_by(p.tenant)) | pending
                if len(owned) >= p.max_persons:
                    raise ExhaustedError(f"tenant {p.tenant!r} has {len(owned)} persons (enrolled or being "
                                         f"enrolled), its API key allows {p.max_persons}; delete one first",
                                         reason="PERSON_QUOTA")
            by = self._enroll_claims.setdefault(person_id, {})
            by[p.tenant] = by.get(p.tenant, 0) + 1
        try:
            yield
        finally:
            with self._enroll_lock:
                by = self._enroll_claims.get(person_id, {})
                by[p.tenant] -= 1
                if by[p.tenant] <= 0:
                    del by[p.tenant]
                if not by:
                    self._enroll_claims.pop(person_id, None)

    def _md(self):
        rid = request_id_var.get()
        return (("x-request-id", rid),) if rid else None

    def _trainer(self, method: str, request):
        return self.peers.call("trainer", getattr(self.peers.trainer, method), request, metadata=self._md())

    def _ensure_model(self, person_id: str):
        """Make sure gen_<person> is loaded in Triton (load it when not); returns its ModelInfo."""
        from reenact.tritonserve.client import ModelNotFoundError

        with self._lock:
            lock = self._model_locks.setdefault(person_id, threading.Lock())
        r = self.peers.renderer
        with lock:
            try:
                if not r.is_model_ready(person_id):
                    log.info("loading model into triton", extra={"person_id": person_id})
                    r.load_model(person_id)
                return r.model_info(person_id)
            except ModelNotFoundError as exc:
                raise PreconditionError(f"gen_{person_id} is not in Triton's model repository: {exc.message}",
                                        reason="MODEL_NOT_EXPORTED") from None

    def _check_latest(self, person_id: str, version: int) -> None:
        latest = self.registry.repo.latest_version(person_id)
        if version != latest:
            raise PreconditionError(f"person {person_id!r} v{version} is not its latest version (v{latest}); Triton "
                                    "serves only the latest version of a person", reason="VERSION_NOT_SERVED")

    # ------------------------------------------------------------------------------------ enrollment

    def Enroll(self, request_iterator, context) -> gateway_pb2.EnrollResponse:
        reqs = client_requests(request_iterator, context)
        first = next(reqs, None)
        if first is None or first.WhichOneof("kind") != "header":
            raise InvalidInputError.for_field("header", "the first message of an Enroll stream must carry the header")
        h = first.header
        bad = enroll_header_violations(h.request_id, h.person_id, h.display_name, h.profile)
        bad += _option_violations(h.options)
        if bad:
            raise InvalidInputError("; ".join(f"{v.field}: {v.description}" for v in bad), violations=bad)
        trainer_request_id = self._scoped_request_id(h.request_id)
        person_id = h.person_id or assigned_person_id(trainer_request_id)
        with self._enroll_target(person_id):
            return self._enroll(h, reqs, person_id, trainer_request_id)

    def _enroll(self, h, reqs, person_id: str, trainer_request_id: str) -> gateway_pb2.EnrollResponse:
        from reenact.video import validate_video

        with _Spool(self.cfg, self.metrics) as spool:
            for req in reqs:
                if req.WhichOneof("kind") != "chunk":
                    raise InvalidInputError.for_field("chunk", "only video chunks may follow the header")
                spool.add(req.chunk.data)
            if spool.chunks == 0:
                raise InvalidInputError.for_field("chunk", "no video chunks after the header (the video is empty)")
            info = validate_video(spool.finish(), _video_limits(self.cfg), field="chunk")
            self._precheck_face(spool.path, info)
            key = upload_key(person_id, spool.sha.hexdigest())
            existed = self.store.exists(key)
            if not existed:
                self.store.put_file(key, spool.path)
        req = trainer_pb2.CreateJobRequest(request_id=trainer_request_id, person_id=person_id, scan_key=key,
                                           profile=h.profile or self.cfg.default_profile, options=h.options)
        try:
            resp = self._trainer("CreateJob", req)
        except ReenactError:
            if not existed:
                self.store.delete(key, missing_ok=True)
            raise
        self.registry.add_job(person_id, h.display_name, resp.job.job_id, h.request_id,
                              owner=current_principal().tenant)
        if resp.created:
            self.metrics.enrollments.inc()
        log.info("enrollment queued" if resp.created else "enrollment exists",
                 extra={"person_id": person_id, "job_id": resp.job.job_id, "frames": info.frames,
                        "width": info.width, "height": info.height})
        return gateway_pb2.EnrollResponse(job=self._check_job(resp.job), created=resp.created)

    def _precheck_face(self, path, info) -> None:
        """Refuse a scan in which the landmarks service finds no face in any of a few sampled frames."""
        from reenact.video import read_frames

        n = self.cfg.precheck_frames
        if n <= 0:
            return
        total = int(info.frames or 0)
        picks = sorted({int(round(x)) for x in np.linspace(0, max(total - 1, 0), n)}) if total else list(range(n))
        checked = 0
        for i, rgb in enumerate(read_frames(path)):
            if i > picks[-1]:
                break
            if i not in picks:
                continue
            checked += 1
            resp = self.peers.call("landmarks", self.peers.landmarks.DetectImage, landmarks_pb2.DetectImageRequest(
                image=_wire_image(rgb), crop_size=64), metadata=self._md())
            if resp.result.status != landmarks_pb2.FACE_STATUS_NO_FACE:
                return
        raise PreconditionError(f"no face found in {checked} frames sampled from the self-scan", reason="NO_FACE")

    def WatchJob(self, request, context) -> Iterator[gateway_pb2.WatchJobResponse]:
        if not current_principal().sees_all:
            self._check_job(self._trainer("GetJob", trainer_pb2.GetJobRequest(job_id=request.job_id)).job)
        call = self.peers.trainer.WatchJob(trainer_pb2.WatchJobRequest(job_id=request.job_id), metadata=self._md(),
                                           timeout=time_left())
        if not context.add_callback(call.cancel):
            call.cancel()
            return
        try:
            for msg in call:
                yield gateway_pb2.WatchJobResponse(job=self._check_job(msg.job))
        except grpc.RpcError as exc:
            if not context.is_active():
                return
            raise peer_error(exc, "trainer") from None

    def GetJob(self, request, context) -> gateway_pb2.GetJobResponse:
        job = self._trainer("GetJob", trainer_pb2.GetJobRequest(job_id=request.job_id)).job
        return gateway_pb2.GetJobResponse(job=self._check_job(job))

    def CancelJob(self, request, context) -> gateway_pb2.CancelJobResponse:
        if not current_principal().sees_all:
            self._check_job(self._trainer("GetJob", trainer_pb2.GetJobRequest(job_id=request.job_id)).job)
        resp = self._trainer("CancelJob", trainer_pb2.CancelJobRequest(job_id=request.job_id))
        return gateway_pb2.CancelJobResponse(job=self._check_job(resp.job))

    def ListJobs(self, request, context) -> gateway_pb2.ListJobsResponse:
        """The trainer's page, filtered to this key's jobs (a page may hold fewer than page_size jobs; the
        token still leads to the next one)."""
        resp = self._trainer("ListJobs", trainer_pb2.ListJobsRequest(page_size=request.page_size,
                                                                     page_token=request.page_token))
        jobs = []
        for job in resp.jobs:
            with contextlib.suppress(NotFoundError):
                jobs.append(self._check_job(job))
        return gateway_pb2.ListJobsResponse(jobs=jobs, next_page_token=resp.next_page_token)

    # ------------------------------------------------------------------------------------ reenactment

    def _spec(self, h: gateway_pb2.ReenactHeader) -> StreamSpec:
        validate_person_id(h.person_id, "header.person_id")
        self._check_owner(h.person_id)
        bad = []
        if h.output not in OUTPUTS:
            bad.append(FieldViolation("header.output", f"unknown output kind {h.output}"))
        encoding = h.frame_encoding or types_pb2.IMAGE_ENCODING_PNG
        if encoding not in IMAGE_ENCODINGS:
            bad.append(FieldViolation("header.frame_encoding", f"unknown image encoding {h.frame_encoding}"))
        bad += self._optimizer_violations(h)
        if h.fps and not 1 <= h.fps <= 240:
            bad.append(FieldViolation("header.fps", f"{h.fps} outside 1..240 (0 = {DEFAULT_FPS:g})"))
        if h.person_version < 0:
            bad.append(FieldViolation("header.person_version", "must be >= 0 (0 = latest)"))
        if bad:
            raise InvalidInputError("; ".join(f"{v.field}: {v.description}" for v in bad), violations=bad)
        version = self.registry.resolve_version(h.person_id, h.person_version)
        self._check_latest(h.person_id, version)
        anchors = self.anchors.get(h.person_id, version)
        edits = parse_edits(h.edits, anchors, "header.edits")
        info = self._ensure_model(h.person_id)
        if info.w_dim != anchors.w_dim:
            raise PreconditionError(f"gen_{h.person_id} in Triton has w_dim {info.w_dim}, the stored person "
                                    f"{anchors.w_dim}: re-export the model", reason="MODEL_MISMATCH")
        return StreamSpec(
            reenactment_id=new_reenactment_id(), person_id=h.person_id, version=version, anchors=anchors,
            edits=edits, output=h.output or gateway_pb2.OUTPUT_KIND_FRAMES, encoding=encoding,
            paste_back=h.paste_back, steps=h.steps, window=h.window, fps=h.fps or DEFAULT_FPS,
            resolution=info.height, num_ws=info.num_ws, w_dim=info.w_dim, crop_size=self.cfg.crop_size,
            motion=h.motion, smoothing_sigma=h.smoothing_sigma, opening_weight=h.opening_weight,
            latent_sigma=h.latent_sigma, init=h.init, opening_range=h.opening_range,
            mouth_starts=h.mouth_starts, delta_lr_scale=h.delta_lr_scale, lip_warp=h.lip_warp)

    def _optimizer_violations(self, h: gateway_pb2.ReenactHeader) -> list[FieldViolation]:
        """The header's optimizer settings out of what the optimizer (or the stream's in-flight bound)
        accepts."""
        bad = []
        if not 0 <= h.steps <= MAX_STEPS:
            bad.append(FieldViolation("header.steps", f"{h.steps} outside 0..{MAX_STEPS} (0 = default)"))
        bad += _bounded("header.opening_weight", h.opening_weight, MAX_OPENING_WEIGHT, "the server default, off")
        latent_ok = math.isfinite(h.latent_sigma) and 0 <= h.latent_sigma <= MAX_LATENT_SIGMA
        if not latent_ok:
            bad.append(FieldViolation("header.latent_sigma", f"{h.latent_sigma} outside 0..{MAX_LATENT_SIGMA:g} "
                                      "frames (0 = the server default, off)"))
        latent = h.latent_sigma if latent_ok else 0.0
        if not (math.isfinite(h.smoothing_sigma) and h.smoothing_sigma <= MAX_SMOOTHING_SIGMA):
            bad.append(FieldViolation("header.smoothing_sigma", f"{h.smoothing_sigma} above {MAX_SMOOTHING_SIGMA:g} "
                                      "frames (0 = defaults, negative = off)"))
        elif latent and self._max_window(h.smoothing_sigma, latent) < 1:
            bad.append(FieldViolation("header.latent_sigma", f"{h.latent_sigma}: with smoothing_sigma "
                                      f"{h.smoothing_sigma:g} the look-ahead needs more than the "
                                      f"{self.cfg.max_in_flight} frames a stream may have in flight"))
        elif h.window < 0 or required_in_flight(h.window, h.smoothing_sigma, latent) > self.cfg.max_in_flight:
            bad.append(FieldViolation("header.window", f"{h.window} outside "
                                      f"0..{self._max_window(h.smoothing_sigma, latent)} "
                                      "(0 = default) for this smoothing"))
        if h.motion and h.motion not in MOTIONS:
            bad.append(FieldViolation("header.motion", f"{h.motion!r}: one of {', '.join(MOTIONS)} (or empty)"))
        if h.init and h.init not in INITS:
            bad.append(FieldViolation("header.init", f"{h.init!r}: one of {', '.join(INITS)} (or empty = auto)"))
        if not (math.isfinite(h.opening_range) and 0 <= h.opening_range <= MAX_OPENING_RANGE):
            bad.append(FieldViolation("header.opening_range", f"{h.opening_range} outside "
                                      f"0..{MAX_OPENING_RANGE:g} (0 = the server default, off)"))
        elif h.opening_range > 0 and h.motion != "relative":
            bad.append(FieldViolation("header.opening_range", f"{h.opening_range:g} needs motion 'relative' (the "
                                      "scan's range is mapped around the person's reference)"))
        bad += _bounded("header.mouth_starts", h.mouth_starts, MAX_MOUTH_STARTS, "the server default, off")
        bad += _bounded("header.delta_lr_scale", h.delta_lr_scale, MAX_DELTA_LR_SCALE, "the server default, 0.02")
        bad += _bounded("header.lip_warp", h.lip_warp, MAX_LIP_WARP, "off")
        return bad

    def _max_window(self, sigma: float = 0.0, latent_sigma: float = 0.0) -> int:
        return self.cfg.max_in_flight - required_in_flight(1, sigma, latent_sigma) + 1

    def _driving_frames(self, first, reqs) -> Iterator[tuple[int, np.ndarray]]:
        """Validated driving frames of a frame-input stream (runs in the pipeline's source thread)."""
        last, size, count = -1, None, 0
        for req in itertools.chain([first], reqs):
            _expect_kind(req, "frame")
            f = req.frame
            field = f"frame[{f.index}]"
            if f.index <= last:
                raise InvalidInputError.for_field(f"{field}.index",
                                                  f"indices must be >= 0 and strictly increasing ({f.index} after {last})")
            rgb = image_from_proto(f.image, field=f"{field}.image", max_side=self.cfg.max_side)
            if size is not None and rgb.shape != size:
                raise InvalidInputError.for_field(
                    f"{field}.image", f"{rgb.shape[1]}x{rgb.shape[0]} differs from the first frame's {size[1]}x{size[0]}")
            count += 1
            if count > self.cfg.max_frames:
                raise InvalidInputError.for_field(field, f"more than {self.cfg.max_frames} frames in one stream")
            last, size = f.index, rgb.shape
            yield int(f.index), rgb

    def Reenact(self, request_iterator, context) -> Iterator[gateway_pb2.ReenactResponse]:
        with self._slot():
            reqs = client_requests(request_iterator, context)
            first = next(reqs, None)
            if first is None:
                return
            if first.WhichOneof("kind") != "header":
                raise InvalidInputError.for_field("header", "the first message of a Reenact stream must carry the header")
            spec = self._spec(first.header)
            second = next(reqs, None)
            if second is None:
                raise InvalidInputError.for_field("frame", "no frames or video chunks after the header")
            writer = ReenactmentWriter(self.store, spec.person_id, spec.reenactment_id,
                                       num_anchors=spec.anchors.num_anchors, num_ws=spec.num_ws, w_dim=spec.w_dim,
                                       lips=spec.lip_warp > 0)
            try:
                if second.WhichOneof("kind") == "chunk":
                    yield from self._reenact_video(spec, second, reqs, writer, context)
                else:
                    sink = DrivingSink(writer.tmp_dir / "driving.mp4", spec.fps) if self.cfg.store_driving else None
                    yield from self._run(spec, self._driving_frames(second, reqs), writer, context, driving_sink=sink)
            finally:
                if not writer.committed:
                    writer.abort()

    def _reenact_video(self, spec, second, reqs, writer, context):
        from reenact.video import read_frames, validate_video

        with _Spool(self.cfg, self.metrics) as spool:
            for req in itertools.chain([second], reqs):
                _expect_kind(req, "chunk")
                spool.add(req.chunk.data)
            info = validate_video(spool.finish(), _video_limits(self.cfg), field="chunk")
            spec.fps = float(info.fps) if info.fps and info.fps > 0 else DEFAULT_FPS
            spec.frame_size = (int(info.width), int(info.height))
            driving = None
            if self.cfg.store_driving:
                driving = writer.tmp_dir / "driving.video"
                shutil.copyfile(spool.path, driving)
            frames = enumerate(read_frames(spool.path, max_frames=self.cfg.max_frames))
            yield from self._run(spec, frames, writer, context, driving_file=driving)

    def _run(self, spec, frames, writer, context, *, driving_sink=None, driving_file=None):
        pipeline = ReenactPipeline(
            peers=self.peers, spec=spec, source=frames, writer=writer, queue_frames=self.cfg.queue_frames,
            max_in_flight=self.cfg.max_in_flight, render_batch=self.cfg.render_batch, driving_sink=driving_sink,
            driving_file=driving_file, metrics=self.metrics, request_id=request_id_var.get(),
            client_active=context.is_active, deadline=deadline_var.get())
        if not context.add_callback(pipeline.cancel):
            return
        log.info("reenactment started", extra={"person_id": spec.person_id, "reenactment_id": spec.reenactment_id,
                                               "edits": len(spec.edits), "paste_back": spec.paste_back})
        yield from pipeline.run()
        log.info("reenactment stored", extra={"person_id": spec.person_id, "reenactment_id": spec.reenactment_id,
                                              **pipeline.stats.as_log()})

    # ------------------------------------------------------------------------------------ render

    def Render(self, request, context) -> Iterator[gateway_pb2.RenderResponse]:
        with self._slot():
            meta, anchors, edits, info, encoding = self._render_request(request)
            with open_reenactment(self.store, request.person_id, request.reenactment_id,
                                  with_driving=request.paste_back) as rec:
                if rec.ws.shape[1:] != (info.num_ws, info.w_dim):
                    raise PreconditionError(f"stored latents {list(rec.ws.shape[1:])} do not fit gen_{request.person_id} "
                                            f"[{info.num_ws}, {info.w_dim}]", reason="MODEL_MISMATCH")
                yield from self._render_frames(request, meta, rec, anchors, edits, info, encoding)

    def _render_request(self, request):
        """Validation of a Render request: (meta, anchors, edits, model info, frame encoding)."""
        validate_person_id(request.person_id)
        bad = []
        if request.output not in OUTPUTS:
            bad.append(FieldViolation("output", f"unknown output kind {request.output}"))
        encoding = request.frame_encoding or types_pb2.IMAGE_ENCODING_PNG
        if encoding not in IMAGE_ENCODINGS:
            bad.append(FieldViolation("frame_encoding", f"unknown image encoding {request.frame_encoding}"))
        if bad:
            raise InvalidInputError("; ".join(f"{v.field}: {v.description}" for v in bad), violations=bad)
        if not self.registry.exists(request.person_id):
            raise person_not_found(request.person_id)
        self._check_owner(request.person_id)
        meta = read_meta(self.store, request.person_id, request.reenactment_id)
        version = int(meta["person_version"])
        self._check_latest(request.person_id, version)
        if request.paste_back and not meta.get("has_driving"):
            raise PreconditionError("this reenactment was stored without its driving video (gateway "
                                    "--store-driving=false): paste_back is not possible", reason="NO_DRIVING_VIDEO")
        anchors = self.anchors.get(request.person_id, version)
        edits = parse_edits(request.edits, anchors, "edits")
        info = self._ensure_model(request.person_id)
        return meta, anchors, edits, info, encoding

    def _render_frames(self, request, meta, rec, anchors, edits, info, encoding):
        from reenact.video import Mp4ChunkEncoder, read_frames

        n = int(rec.ws.shape[0])
        driving = read_frames(rec.driving_path) if request.paste_back else None
        size = (int(meta["driving_width"]), int(meta["driving_height"])) if driving is not None else (
            info.width, info.height)
        encoder = Mp4ChunkEncoder(float(meta["fps"]), *size) if request.output == gateway_pb2.OUTPUT_KIND_VIDEO \
            else None
        crop_size, prev_affine, batch = int(meta["crop_size"]), None, self.cfg.render_batch
        try:
            for start in range(0, n, batch):
                sl = slice(start, min(n, start + batch))
                t0 = time.perf_counter()
                images = self.peers.renderer.render(
                    request.person_id, render_ws(rec.alpha[sl], rec.delta[sl], rec.ws[sl], anchors, edits),
                    request_id=request_id_var.get())
                per = (time.perf_counter() - t0) / len(images)
                self.metrics.render_batch.observe(len(images))
                for j, image in enumerate(images):
                    i = start + j
                    has_face = bool(rec.has_face[i])
                    if rec.lip_src is not None and not edits:  # edits change the lips the warp was measured on
                        image = lip_warped(image, rec.lip_src[i], rec.lip_dst[i], int(meta["resolution"]))
                    if driving is not None:
                        prev_affine = np.asarray(rec.affines[i]) if has_face else prev_affine
                        frame = next(driving, None)
                        if frame is None:
                            raise PreconditionError("the stored driving video has fewer frames than latents",
                                                    reason="DRIVING_VIDEO_SHORT")
                        image = paste_back(frame, image, prev_affine, crop_size)
                    self.metrics.rendered_frames.inc()
                    out = gateway_pb2.ReenactedFrame(index=int(rec.index[i]), metrics=gateway_pb2.FrameMetrics(
                        has_face=has_face, render_seconds=per))
                    if encoder is None:
                        out.image.CopyFrom(image_to_proto(image, encoding))
                    yield gateway_pb2.RenderResponse(frame=out)
                    for chunk in encoder.add(image) if encoder is not None else ():
                        yield gateway_pb2.RenderResponse(video_chunk=types_pb2.VideoChunk(data=chunk))
            for chunk in encoder.finish() if encoder is not None else ():
                yield gateway_pb2.RenderResponse(video_chunk=types_pb2.VideoChunk(data=chunk))
        finally:
            if encoder is not None:
                encoder.close()
            if driving is not None:
                driving.close()

    # ------------------------------------------------------------------------------------ persons

    def ListEditDirections(self, request, context) -> gateway_pb2.ListEditDirectionsResponse:
        validate_person_id(request.person_id)
        self._check_owner(request.person_id)
        version = self.registry.resolve_version(request.person_id, request.person_version)
        anchors = self.anchors.get(request.person_id, version)
        return gateway_pb2.ListEditDirectionsResponse(directions=[
            gateway_pb2.EditDirection(name=d.name, unit_change=float(d.unit_change), r2=float(d.r2))
            for _, d in sorted(anchors.directions.items())])

    def _person(self, person_id: str) -> gateway_pb2.Person:
        rec = self.registry.get(person_id)
        versions = self.registry.repo.versions(person_id)
        if rec is None and not versions:
            raise person_not_found(person_id)
        p = gateway_pb2.Person(person_id=person_id, versions=versions,
                               display_name=rec.display_name if rec is not None else "")
        if rec is not None and rec.create_time:
            p.create_time.CopyFrom(_timestamp(rec.create_time))
        latest = self.registry.latest(person_id)
        if latest is not None:
            p.state = gateway_pb2.PERSON_STATE_READY
            p.resolution, p.num_anchors, p.profile = latest.resolution, latest.num_anchors, latest.profile
            p.metrics.CopyFrom(types_pb2.LossTerms(terms=latest.metrics))
            if rec is None or not rec.create_time:
                with contextlib.suppress(ValueError):
                    from datetime import datetime

                    p.create_time.CopyFrom(_timestamp(datetime.fromisoformat(latest.created_at).timestamp()))
            return p
        p.state = self._state_from_job(rec.latest_job_id if rec is not None else "")
        return p

    def _state_from_job(self, job_id: str) -> int:
        if not job_id:
            return gateway_pb2.PERSON_STATE_UNSPECIFIED
        try:
            job = self.peers.call("trainer", self.peers.trainer.GetJob, trainer_pb2.GetJobRequest(job_id=job_id),
                                  timeout=5.0).job
        except ReenactError:  # trainer down or job unknown: the state is not known
            return gateway_pb2.PERSON_STATE_UNSPECIFIED
        if job.state in (types_pb2.JOB_STATE_QUEUED, types_pb2.JOB_STATE_RUNNING, types_pb2.JOB_STATE_SUCCEEDED):
            return gateway_pb2.PERSON_STATE_ENROLLING
        return gateway_pb2.PERSON_STATE_FAILED

    def ListPersons(self, request, context) -> gateway_pb2.ListPersonsResponse:
        size = request.page_size or 100
        if not 1 <= size <= 1000:
            raise InvalidInputError.for_field("page_size", f"{request.page_size} outside 1..1000 (0 = 100)")
        after = _decode_token(request.page_token)
        p = current_principal()
        ids = [pid for pid in self.registry.ids() if pid > after and self._visible(pid, p)]
        page = ids[:size]
        persons = []
        for pid in page:
            with contextlib.suppress(NotFoundError):  # deleted meanwhile
                persons.append(self._person(pid))
        token = _encode_token(page[-1]) if len(ids) > size else ""
        return gateway_pb2.ListPersonsResponse(persons=persons, next_page_token=token)

    def GetPerson(self, request, context) -> gateway_pb2.GetPersonResponse:
        validate_person_id(request.person_id)
        self._check_owner(request.person_id)
        return gateway_pb2.GetPersonResponse(person=self._person(request.person_id))

    def DeletePerson(self, request, context) -> gateway_pb2.DeletePersonResponse:
        from reenact.tritonserve.client import ModelNotFoundError, RendererError

        pid = validate_person_id(request.person_id)
        if not self.registry.exists(pid):
            raise person_not_found(pid)
        self._check_owner(pid)
        rec = self.registry.get(pid)
        for job in (rec.jobs if rec is not None else []):
            self._cancel_and_wait(job["job_id"])
        try:
            self.peers.renderer.unload_model(pid, wait=True, timeout=30)
        except ModelNotFoundError:
            pass
        except RendererError as exc:  # Triton down: nothing is loaded there; the files still go
            log.warning("could not unload the model", extra={"person_id": pid, "error": exc.message})
        n = 0
        if self.cfg.model_repository:
            from pathlib import Path

            from reenact.tritonserve.repository import model_name, remove_generator_model

            model_dir = Path(self.cfg.model_repository) / model_name(pid)
            if model_dir.is_dir():
                n += sum(1 for p in model_dir.rglob("*") if p.is_file())
            remove_generator_model(self.cfg.model_repository, pid)
        n += self.registry.delete(pid)
        self.anchors.invalidate(pid)
        log.info("person deleted", extra={"person_id": pid, "objects_deleted": n})
        return gateway_pb2.DeletePersonResponse(objects_deleted=n)

    def _cancel_and_wait(self, job_id: str, timeout: float = 60.0) -> None:
        """Cancel an unfinished job of a person being deleted and wait for it to end (its writer aborts)."""
        try:
            job = self._trainer("GetJob", trainer_pb2.GetJobRequest(job_id=job_id)).job
            if job.state in FINAL_JOB_STATES:
                return
            job = self._trainer("CancelJob", trainer_pb2.CancelJobRequest(job_id=job_id)).job
            deadline = time.monotonic() + timeout
            while job.state not in FINAL_JOB_STATES:
                if time.monotonic() > deadline:
                    raise UnavailableError(f"job {job_id} did not stop within {timeout:.0f} s; try again",
                                           reason="JOB_STILL_RUNNING", retry_after_s=5.0)
                time.sleep(0.2)
                job = self._trainer("GetJob", trainer_pb2.GetJobRequest(job_id=job_id)).job
        except NotFoundError:
            return


def _option_violations(o: types_pb2.EnrollOptions) -> list[FieldViolation]:
    out = []
    r = o.resolution
    if r and not (32 <= r <= 1024 and r & (r - 1) == 0):
        out.append(FieldViolation("header.options.resolution", f"{r} is not a power of two in 32..1024 (or 0)"))
    if not 0 <= o.num_anchors <= 10_000:
        out.append(FieldViolation("header.options.num_anchors", f"{o.num_anchors} outside 0..10000"))
    if o.tune_steps < 0:
        out.append(FieldViolation("header.options.tune_steps", f"{o.tune_steps} is negative"))
    return out
