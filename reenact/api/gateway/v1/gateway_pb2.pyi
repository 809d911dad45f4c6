from google.protobuf import timestamp_pb2 as _timestamp_pb2
from reenact.api.common.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OutputKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTPUT_KIND_UNSPECIFIED: _ClassVar[OutputKind]
    OUTPUT_KIND_FRAMES: _ClassVar[OutputKind]
    OUTPUT_KIND_VIDEO: _ClassVar[OutputKind]

class PersonState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PERSON_STATE_UNSPECIFIED: _ClassVar[PersonState]
    PERSON_STATE_ENROLLING: _ClassVar[PersonState]
    PERSON_STATE_READY: _ClassVar[PersonState]
    PERSON_STATE_FAILED: _ClassVar[PersonState]
OUTPUT_KIND_UNSPECIFIED: OutputKind
OUTPUT_KIND_FRAMES: OutputKind
OUTPUT_KIND_VIDEO: OutputKind
PERSON_STATE_UNSPECIFIED: PersonState
PERSON_STATE_ENROLLING: PersonState
PERSON_STATE_READY: PersonState
PERSON_STATE_FAILED: PersonState

class EnrollHeader(_message.Message):
    __slots__ = ("request_id", "person_id", "display_name", "profile", "options")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PERSON_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    person_id: str
    display_name: str
    profile: str
    options: _types_pb2.EnrollOptions
    def __init__(self, request_id: _Optional[str] = ..., person_id: _Optional[str] = ..., display_name: _Optional[str] = ..., profile: _Optional[str] = ..., options: _Optional[_Union[_types_pb2.EnrollOptions, _Mapping]] = ...) -> None: ...

class EnrollRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: EnrollHeader
    chunk: _types_pb2.VideoChunk
    def __init__(self, header: _Optional[_Union[EnrollHeader, _Mapping]] = ..., chunk: _Optional[_Union[_types_pb2.VideoChunk, _Mapping]] = ...) -> None: ...

class EnrollResponse(_message.Message):
    __slots__ = ("job", "created")
    JOB_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    job: _types_pb2.Job
    created: bool
    def __init__(self, job: _Optional[_Union[_types_pb2.Job, _Mapping]] = ..., created: bool = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class WatchJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: _types_pb2.Job
    def __init__(self, job: _Optional[_Union[_types_pb2.Job, _Mapping]] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class GetJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: _types_pb2.Job
    def __init__(self, job: _Optional[_Union[_types_pb2.Job, _Mapping]] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class CancelJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: _types_pb2.Job
    def __init__(self, job: _Optional[_Union[_types_pb2.Job, _Mapping]] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[_types_pb2.Job]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[_types_pb2.Job, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class Edit(_message.Message):
    __slots__ = ("semantic", "w_direction", "strength")
    SEMANTIC_FIELD_NUMBER: _ClassVar[int]
    W_DIRECTION_FIELD_NUMBER: _ClassVar[int]
    STRENGTH_FIELD_NUMBER: _ClassVar[int]
    semantic: str
    w_direction: _types_pb2.Tensor
    strength: float
    def __init__(self, semantic: _Optional[str] = ..., w_direction: _Optional[_Union[_types_pb2.Tensor, _Mapping]] = ..., strength: _Optional[float] = ...) -> None: ...

class ReenactHeader(_message.Message):
    __slots__ = ("person_id", "person_version", "output", "frame_encoding", "paste_back", "edits", "steps", "window", "fps", "motion", "smoothing_sigma", "opening_weight", "latent_sigma", "init", "opening_range", "mouth_starts", "delta_lr_scale", "lip_warp")
    PERSON_ID_FIELD_NUMBER: _ClassVar[int]
    PERSON_VERSION_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    FRAME_ENCODING_FIELD_NUMBER: _ClassVar[int]
    PASTE_BACK_FIELD_NUMBER: _ClassVar[int]
    EDITS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    MOTION_FIELD_NUMBER: _ClassVar[int]
    SMOOTHING_SIGMA_FIELD_NUMBER: _ClassVar[int]
    OPENING_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    LATENT_SIGMA_FIELD_NUMBER: _ClassVar[int]
    INIT_FIELD_NUMBER: _ClassVar[int]
    OPENING_RANGE_FIELD_NUMBER: _ClassVar[int]
    MOUTH_STARTS_FIELD_NUMBER: _ClassVar[int]
    DELTA_LR_SCALE_FIELD_NUMBER: _ClassVar[int]
    LIP_WARP_FIELD_NUMBER: _ClassVar[int]
    person_id: str
    person_version: int
    output: OutputKind
    frame_encoding: _types_pb2.ImageEncoding
    paste_back: bool
    edits: _containers.RepeatedCompositeFieldContainer[Edit]
    steps: int
    window: int
    fps: float
    motion: str
    smoothing_sigma: float
    opening_weight: float
    latent_sigma: float
    init: str
    opening_range: float
    mouth_starts: float
    delta_lr_scale: float
    lip_warp: float
    def __init__(self, person_id: _Optional[str] = ..., person_version: _Optional[int] = ..., output: _Optional[_Union[OutputKind, str]] = ..., frame_encoding: _Optional[_Union[_types_pb2.ImageEncoding, str]] = ..., paste_back: bool = ..., edits: _Optional[_Iterable[_Union[Edit, _Mapping]]] = ..., steps: _Optional[int] = ..., window: _Optional[int] = ..., fps: _Optional[float] = ..., motion: _Optional[str] = ..., smoothing_sigma: _Optional[float] = ..., opening_weight: _Optional[float] = ..., latent_sigma: _Optional[float] = ..., init: _Optional[str] = ..., opening_range: _Optional[float] = ..., mouth_starts: _Optional[float] = ..., delta_lr_scale: _Optional[float] = ..., lip_warp: _Optional[float] = ...) -> None: ...

class DrivingFrame(_message.Message):
    __slots__ = ("index", "image")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    index: int
    image: _types_pb2.Image
    def __init__(self, index: _Optional[int] = ..., image: _Optional[_Union[_types_pb2.Image, _Mapping]] = ...) -> None: ...

class ReenactRequest(_message.Message):
    __slots__ = ("header", "chunk", "frame")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    header: ReenactHeader
    chunk: _types_pb2.VideoChunk
    frame: DrivingFrame
    def __init__(self, header: _Optional[_Union[ReenactHeader, _Mapping]] = ..., chunk: _Optional[_Union[_types_pb2.VideoChunk, _Mapping]] = ..., frame: _Optional[_Union[DrivingFrame, _Mapping]] = ...) -> None: ...

class ReenactStarted(_message.Message):
    __slots__ = ("reenactment_id", "fps", "width", "height")
    REENACTMENT_ID_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    reenactment_id: str
    fps: float
    width: int
    height: int
    def __init__(self, reenactment_id: _Optional[str] = ..., fps: _Optional[float] = ..., width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class FrameMetrics(_message.Message):
    __slots__ = ("has_face", "keypoint_error", "losses", "optimizer_steps", "optimize_seconds", "render_seconds")
    HAS_FACE_FIELD_NUMBER: _ClassVar[int]
    KEYPOINT_ERROR_FIELD_NUMBER: _ClassVar[int]
    LOSSES_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_STEPS_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RENDER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    has_face: bool
    keypoint_error: float
    losses: _types_pb2.LossTerms
    optimizer_steps: int
    optimize_seconds: float
    render_seconds: float
    def __init__(self, has_face: bool = ..., keypoint_error: _Optional[float] = ..., losses: _Optional[_Union[_types_pb2.LossTerms, _Mapping]] = ..., optimizer_steps: _Optional[int] = ..., optimize_seconds: _Optional[float] = ..., render_seconds: _Optional[float] = ...) -> None: ...

class ReenactedFrame(_message.Message):
    __slots__ = ("index", "image", "metrics")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    index: int
    image: _types_pb2.Image
    metrics: FrameMetrics
    def __init__(self, index: _Optional[int] = ..., image: _Optional[_Union[_types_pb2.Image, _Mapping]] = ..., metrics: _Optional[_Union[FrameMetrics, _Mapping]] = ...) -> None: ...

class ReenactSummary(_message.Message):
    __slots__ = ("frames", "frames_without_face", "wall_seconds", "frames_per_second", "mean_keypoint_error")
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    FRAMES_WITHOUT_FACE_FIELD_NUMBER: _ClassVar[int]
    WALL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FRAMES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    MEAN_KEYPOINT_ERROR_FIELD_NUMBER: _ClassVar[int]
    frames: int
    frames_without_face: int
    wall_seconds: float
    frames_per_second: float
    mean_keypoint_error: float
    def __init__(self, frames: _Optional[int] = ..., frames_without_face: _Optional[int] = ..., wall_seconds: _Optional[float] = ..., frames_per_second: _Optional[float] = ..., mean_keypoint_error: _Optional[float] = ...) -> None: ...

class ReenactResponse(_message.Message):
    __slots__ = ("started", "frame", "video_chunk", "summary")
    STARTED_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    VIDEO_CHUNK_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    started: ReenactStarted
    frame: ReenactedFrame
    video_chunk: _types_pb2.VideoChunk
    summary: ReenactSummary
    def __init__(self, started: _Optional[_Union[ReenactStarted, _Mapping]] = ..., frame: _Optional[_Union[ReenactedFrame, _Mapping]] = ..., video_chunk: _Optional[_Union[_types_pb2.VideoChunk, _Mapping]] = ..., summary: _Optional[_Union[ReenactSummary, _Mapping]] = ...) -> None: ...

class RenderRequest(_message.Message):
    __slots__ = ("person_id", "reenactment_id", "edits", "output", "frame_encoding", "paste_back")
    PERSON_ID_FIELD_NUMBER: _ClassVar[int]
    REENACTMENT_ID_FIELD_NUMBER: _ClassVar[int]
    EDITS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    FRAME_ENCODING_FIELD_NUMBER: _ClassVar[int]
    PASTE_BACK_FIELD_NUMBER: _ClassVar[int]
    person_id: str
    reenactment_id: str
    edits: _containers.RepeatedCompositeFieldContainer[Edit]
    output: OutputKind
    frame_encoding: _types_pb2.ImageEncoding
    paste_back: bool
    def __init__(self, person_id: _Optional[str] = ..., reenactment_id: _Optional[str] = ..., edits: _Optional[_Iterable[_Union[Edit, _Mapping]]] = ..., output: _Optional[_Union[OutputKind, str]] = ..., frame_encoding: _Optional[_Union[_types_pb2.ImageEncoding, str]] = ..., paste_back: bool = ...) -> None: ...

class RenderResponse(_message.Message):
    __slots__ = ("frame", "video_chunk")
    FRAME_FIELD_NUMBER: _ClassVar[int]
    VIDEO_CHUNK_FIELD_NUMBER: _ClassVar[int]
    frame: ReenactedFrame
    video_chunk: _types_pb2.VideoChunk
    def __init__(self, frame: _Optional[_Union[ReenactedFrame, _Mapping]] = ..., video_chunk: _Optional[_Union[_types_pb2.VideoChunk, _Mapping]] = ...) -> None: ...

class EditDirection(_message.Message):
    __slots__ = ("name", "unit_change", "r2")
    NAME_FIELD_NUMBER: _ClassVar[int]
    UNIT_CHANGE_FIELD_NUMBER: _ClassVar[int]
    R2_FIELD_NUMBER: _ClassVar[int]
    name: str
    unit_change: float
    r2: float
    def __init__(self, name: _Optional[str] = ..., unit_change: _Optional[float] = ..., r2: _Optional[float] = ...) -> None: ...

class ListEditDirectionsRequest(_message.Message):
    __slots__ = ("person_id", "person_version")
    PERSON_ID_FIELD_NUMBER: _ClassVar[int]
    PERSON_VERSION_FIELD_NUMBER: _ClassVar[int]
    person_id: str
    person_version: int
    def __init__(self, person_id: _Optional[str] = ..., person_version: _Optional[int] = ...) -> None: ...

class ListEditDirectionsResponse(_message.Message):
    __slots__ = ("directions",)
    DIRECTIONS_FIELD_NUMBER: _ClassVar[int]
    directions: _containers.RepeatedCompositeFieldContainer[EditDirection]
    def __init__(self, directions: _Optional[_Iterable[_Union[EditDirection, _Mapping]]] = ...) -> None: ...

class Person(_message.Message):
    __slots__ = ("person_id", "display_name", "state", "versions", "create_time", "resolution", "num_anchors", "profile", "metrics")
    PERSON_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    NUM_ANCHORS_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    person_id: str
    display_name: str
    state: PersonState
    versions: _containers.RepeatedScalarFieldContainer[int]
    create_time: _timestamp_pb2.Timestamp
    resolution: int
    num_anchors: int
    profile: str
    metrics: _types_pb2.LossTerms
    def __init__(self, person_id: _Optional[str] = ..., display_name: _Optional[str] = ..., state: _Optional[_Union[PersonState, str]] = ..., versions: _Optional[_Iterable[int]] = ..., create_time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., resolution: _Optional[int] = ..., num_anchors: _Optional[int] = ..., profile: _Optional[str] = ..., metrics: _Optional[_Union[_types_pb2.LossTerms, _Mapping]] = ...) -> None: ...

class ListPersonsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListPersonsResponse(_message.Message):
    __slots__ = ("persons", "next_page_token")
    PERSONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    persons: _containers.RepeatedCompositeFieldContainer[Person]
    next_page_token: str
    def __init__(self, persons: _Optional[_Iterable[_Union[Person, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetPersonRequest(_message.Message):
    __slots__ = ("person_id",)
    PERSON_ID_FIELD_NUMBER: _ClassVar[int]
    person_id: str
    def __init__(self, person_id: _Optional[str] = ...) -> None: ...

class GetPersonResponse(_message.Message):
    __slots__ = ("person",)
    PERSON_FIELD_NUMBER: _ClassVar[int]
    person: Person
    def __init__(self, person: _Optional[_Union[Person, _Mapping]] = ...) -> None: ...

class DeletePersonRequest(_message.Message):
    __slots__ = ("person_id",)
    PERSON_ID_FIELD_NUMBER: _ClassVar[int]
    person_id: str
    def __init__(self, person_id: _Optional[str] = ...) -> None: ...

class DeletePersonResponse(_message.Message):
    __slots__ = ("objects_deleted",)
    OBJECTS_DELETED_FIELD_NUMBER: _ClassVar[int]
    objects_deleted: int
    def __init__(self, objects_deleted: _Optional[int] = ...) -> None: ...
