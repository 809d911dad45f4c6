"""Typed results of the reenact SDK: frozen dataclasses built from the gateway's messages.

Callers never see protobuf messages. Enums are `StrEnum`s (their value is the short name, e.g.
"RUNNING"), timestamps are timezone-aware `datetime`s (None when unset), loss/metric maps are plain
dicts, images are RGB uint8 numpy arrays [H, W, 3]. `to_jsonable` turns any of them into JSON values.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np

from reenact.api.common.v1 import types_pb2
from reenact.api.gateway.v1 import gateway_pb2


class JobState(enum.StrEnum):
    UNSPECIFIED = "UNSPECIFIED"
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class PersonState(enum.StrEnum):
    UNSPECIFIED = "UNSPECIFIED"
    ENROLLING = "ENROLLING"
    READY = "READY"
    FAILED = "FAILED"


def _enum_from(cls, proto_enum, value: int, prefix: str):
    try:
        name = proto_enum.Name(value)
    except ValueError:
        return cls.UNSPECIFIED
    return cls(name.removeprefix(prefix)) if name.removeprefix(prefix) in cls.__members__ else cls.UNSPECIFIED


def _time(ts) -> _dt.datetime | None:
    if ts is None or (ts.seconds == 0 and ts.nanos == 0):
        return None
    return ts.ToDatetime(tzinfo=_dt.UTC)


def _terms(msg) -> dict[str, float]:
    return dict(sorted(msg.terms.items())) if msg is not None else {}


@dataclass(frozen=True)
class JobProgress:
    stage: str = ""
    step: int = 0
    total_steps: int = 0          # 0 = unknown
    fraction: float = 0.0         # overall, 0..1
    losses: dict[str, float] = field(default_factory=dict)
    eta_seconds: float | None = None   # None = unknown
    message: str = ""

    @classmethod
    def from_proto(cls, p: types_pb2.JobProgress) -> JobProgress:
        return cls(stage=p.stage, step=int(p.step), total_steps=int(p.total_steps), fraction=float(p.fraction),
                   losses=_terms(p.losses), eta_seconds=float(p.eta_seconds) if p.eta_seconds >= 0 else None,
                   message=p.message)


@dataclass(frozen=True)
class Coverage:
    frames_total: int
    frames_with_face: int
    frames_usable: int
    yaw_range_deg: tuple[float, float]
    pitch_range_deg: tuple[float, float]
    mouth_open_max: float
    eye_open_min: float
    missing: tuple[str, ...]

    @classmethod
    def from_proto(cls, c: types_pb2.CoverageReport) -> Coverage:
        return cls(frames_total=c.frames_total, frames_with_face=c.frames_with_face,
                   frames_usable=c.frames_usable, yaw_range_deg=(c.yaw_min_deg, c.yaw_max_deg),
                   pitch_range_deg=(c.pitch_min_deg, c.pitch_max_deg), mouth_open_max=c.mouth_open_max,
                   eye_open_min=c.eye_open_min, missing=tuple(c.missing))


@dataclass(frozen=True)
class Job:
    """An enrollment job as the gateway last reported it."""

    job_id: str
    request_id: str
    person_id: str
    state: JobState
    progress: JobProgress
    profile: str = ""
    create_time: _dt.datetime | None = None
    update_time: _dt.datetime | None = None
    error_code: grpc.StatusCode | None = None    # on FAILED
    error_message: str = ""
    coverage: Coverage | None = None
    person_version: int = 0                      # on SUCCEEDED
    metrics: dict[str, float] = field(default_factory=dict)
    created: bool | None = None                  # Enroll only: False when request_id matched an old job

    @property
    def done(self) -> bool:
        return self.state.terminal

    @property
    def succeeded(self) -> bool:
        return self.state == JobState.SUCCEEDED

    @classmethod
    def from_proto(cls, j: types_pb2.Job, *, created: bool | None = None) -> Job:
        code = None
        if j.error_code:
            code = next((c for c in grpc.StatusCode if c.value[0] == j.error_code), grpc.StatusCode.UNKNOWN)
        return cls(job_id=j.job_id, request_id=j.request_id, person_id=j.person_id,
                   state=_enum_from(JobState, types_pb2.JobState, j.state, "JOB_STATE_"),
                   progress=JobProgress.from_proto(j.progress), profile=j.profile,
                   create_time=_time(j.create_time), update_time=_time(j.update_time), error_code=code,
                   error_message=j.error_message,
                   coverage=Coverage.from_proto(j.coverage) if j.HasField("coverage") else None,
                   person_version=j.person_version, metrics=_terms(j.metrics), created=created)


@dataclass(frozen=True)
class Person:
    person_id: str
    display_name: str
    state: PersonState
    versions: tuple[int, ...]
    create_time: _dt.datetime | None
    resolution: int
    num_anchors: int
    profile: str
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def latest_version(self) -> int | None:
        return self.versions[-1] if self.versions else None

    @classmethod
    def from_proto(cls, p: gateway_pb2.Person) -> Person:
        return cls(person_id=p.person_id, display_name=p.display_name,
                   state=_enum_from(PersonState, gateway_pb2.PersonState, p.state, "PERSON_STATE_"),
                   versions=tuple(p.versions), create_time=_time(p.create_time), resolution=p.resolution,
                   num_anchors=p.num_anchors, profile=p.profile, metrics=_terms(p.metrics))


@dataclass(frozen=True)
class EditDirection:
    name: str
    unit_change: float   # attribute change per unit strength (ratio or degrees)
    r2: float            # how well the direction explains the attribute on the anchors, 0..1

    @classmethod
    def from_proto(cls, d: gateway_pb2.EditDirection) -> EditDirection:
        return cls(name=d.name, unit_change=d.unit_change, r2=d.r2)


@dataclass(frozen=True)
class Edit:
    """An edit applied to every frame: a named semantic direction or a user W direction (float32 [w_dim])."""

    direction: str | np.ndarray
    strength: float

    @classmethod
    def parse(cls, text: str) -> Edit:
        """"smile=1.5" -> Edit("smile", 1.5)."""
        name, sep, value = text.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"edit {text!r}: expected NAME=STRENGTH, e.g. smile=1.5")
        try:
            strength = float(value)
        except ValueError:
            raise ValueError(f"edit {text!r}: strength {value!r} is not a number") from None
        return cls(name, strength)

    @classmethod
    def coerce(cls, value: Edit | str | tuple) -> Edit:
        if isinstance(value, Edit):
            return value
        if isinstance(value, str):
            return cls.parse(value)
        direction, strength = value
        return cls(direction, float(strength))

    def to_proto(self) -> gateway_pb2.Edit:
        from reenact.wire import tensor_to_proto

        if isinstance(self.direction, str):
            return gateway_pb2.Edit(semantic=self.direction, strength=float(self.strength))
        return gateway_pb2.Edit(w_direction=tensor_to_proto(np.asarray(self.direction, np.float32)),
                                strength=float(self.strength))


@dataclass(frozen=True)
class FrameMetrics:
    has_face: bool
    keypoint_error: float
    losses: dict[str, float]
    optimizer_steps: int
    optimize_seconds: float
    render_seconds: float

    @classmethod
    def from_proto(cls, m: gateway_pb2.FrameMetrics) -> FrameMetrics:
        return cls(has_face=m.has_face, keypoint_error=m.keypoint_error, losses=_terms(m.losses),
                   optimizer_steps=m.optimizer_steps, optimize_seconds=m.optimize_seconds,
                   render_seconds=m.render_seconds)


# Events of a Reenact / Render stream ----------------------------------------------------------------


@dataclass(frozen=True)
class Started:
    """First event of a reenactment: its id (for `render`), output fps and frame size."""

    reenactment_id: str
    fps: float
    width: int
    height: int


@dataclass(frozen=True)
class Frame:
    """One result frame. `image` is RGB uint8 [H, W, 3], or None in video output (metrics only)."""

    index: int
    image: np.ndarray | None
    metrics: FrameMetrics | None

    @classmethod
    def from_proto(cls, f: gateway_pb2.ReenactedFrame, *, decode: bool = True) -> Frame:
        image = None
        if decode and f.image.data:
            from reenact.wire import image_from_proto

            image = image_from_proto(f.image, field="frame.image", min_side=1)
        return cls(index=int(f.index), image=image,
                   metrics=FrameMetrics.from_proto(f.metrics) if f.HasField("metrics") else None)


@dataclass(frozen=True)
class VideoChunk:
    """A piece of the H.264 mp4 output (video output); concatenate in order."""

    data: bytes


@dataclass(frozen=True)
class Summary:
    """Last event of a reenactment."""

    frames: int
    frames_without_face: int
    wall_seconds: float
    frames_per_second: float
    mean_keypoint_error: float

    @classmethod
    def from_proto(cls, s: gateway_pb2.ReenactSummary) -> Summary:
        return cls(frames=int(s.frames), frames_without_face=int(s.frames_without_face),
                   wall_seconds=s.wall_seconds, frames_per_second=s.frames_per_second,
                   mean_keypoint_error=s.mean_keypoint_error)


ReenactEvent = Started | Frame | VideoChunk | Summary


@dataclass(frozen=True)
class ReenactResult:
    """What `reenact_to_file` / `render_to_file` return: the events without images or video bytes."""

    output: str
    started: Started | None
    summary: Summary | None
    frames: tuple[Frame, ...]        # metrics per frame, image=None
    bytes_written: int


def event_from_reenact_response(r: gateway_pb2.ReenactResponse, *, decode: bool = True) -> ReenactEvent | None:
    kind = r.WhichOneof("kind")
    if kind == "started":
        s = r.started
        return Started(reenactment_id=s.reenactment_id, fps=s.fps, width=s.width, height=s.height)
    if kind == "frame":
        return Frame.from_proto(r.frame, decode=decode)
    if kind == "video_chunk":
        return VideoChunk(bytes(r.video_chunk.data))
    if kind == "summary":
        return Summary.from_proto(r.summary)
    return None


def event_from_render_response(r: gateway_pb2.RenderResponse, *, decode: bool = True) -> ReenactEvent | None:
    kind = r.WhichOneof("kind")
    if kind == "frame":
        return Frame.from_proto(r.frame, decode=decode)
    if kind == "video_chunk":
        return VideoChunk(bytes(r.video_chunk.data))
    return None


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, enums, datetimes, arrays, status codes -> JSON-serializable values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, enum.Enum) and not isinstance(obj, grpc.StatusCode):
        return obj.value
    if isinstance(obj, grpc.StatusCode):
        return obj.name
    if isinstance(obj, _dt.datetime):
        return obj.isoformat()
    if isinstance(obj, np.ndarray):
        return {"shape": list(obj.shape), "dtype": str(obj.dtype)}
    if isinstance(obj, bytes):
        return {"bytes": len(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
