from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DataType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DATA_TYPE_UNSPECIFIED: _ClassVar[DataType]
    DATA_TYPE_FLOAT32: _ClassVar[DataType]
    DATA_TYPE_FLOAT16: _ClassVar[DataType]
    DATA_TYPE_FLOAT64: _ClassVar[DataType]
    DATA_TYPE_UINT8: _ClassVar[DataType]
    DATA_TYPE_INT32: _ClassVar[DataType]
    DATA_TYPE_INT64: _ClassVar[DataType]

class ImageEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IMAGE_ENCODING_UNSPECIFIED: _ClassVar[ImageEncoding]
    IMAGE_ENCODING_PNG: _ClassVar[ImageEncoding]
    IMAGE_ENCODING_JPEG: _ClassVar[ImageEncoding]
    IMAGE_ENCODING_RGB8: _ClassVar[ImageEncoding]

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]
DATA_TYPE_UNSPECIFIED: DataType
DATA_TYPE_FLOAT32: DataType
DATA_TYPE_FLOAT16: DataType
DATA_TYPE_FLOAT64: DataType
DATA_TYPE_UINT8: DataType
DATA_TYPE_INT32: DataType
DATA_TYPE_INT64: DataType
IMAGE_ENCODING_UNSPECIFIED: ImageEncoding
IMAGE_ENCODING_PNG: ImageEncoding
IMAGE_ENCODING_JPEG: ImageEncoding
IMAGE_ENCODING_RGB8: ImageEncoding
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState

class Tensor(_message.Message):
    __slots__ = ("dtype", "shape", "data")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    dtype: DataType
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, dtype: _Optional[_Union[DataType, str]] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class Image(_message.Message):
    __slots__ = ("encoding", "width", "height", "data")
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    encoding: ImageEncoding
    width: int
    height: int
    data: bytes
    def __init__(self, encoding: _Optional[_Union[ImageEncoding, str]] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class Affine2D(_message.Message):
    __slots__ = ("matrix",)
    MATRIX_FIELD_NUMBER: _ClassVar[int]
    matrix: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, matrix: _Optional[_Iterable[float]] = ...) -> None: ...

class Alignment(_message.Message):
    __slots__ = ("quad", "center", "x_axis", "y_axis", "source_to_crop", "crop_to_source", "crop_size")
    QUAD_FIELD_NUMBER: _ClassVar[int]
    CENTER_FIELD_NUMBER: _ClassVar[int]
    X_AXIS_FIELD_NUMBER: _ClassVar[int]
    Y_AXIS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_TO_CROP_FIELD_NUMBER: _ClassVar[int]
    CROP_TO_SOURCE_FIELD_NUMBER: _ClassVar[int]
    CROP_SIZE_FIELD_NUMBER: _ClassVar[int]
    quad: _containers.RepeatedScalarFieldContainer[float]
    center: _containers.RepeatedScalarFieldContainer[float]
    x_axis: _containers.RepeatedScalarFieldContainer[float]
    y_axis: _containers.RepeatedScalarFieldContainer[float]
    source_to_crop: Affine2D
    crop_to_source: Affine2D
    crop_size: int
    def __init__(self, quad: _Optional[_Iterable[float]] = ..., center: _Optional[_Iterable[float]] = ..., x_axis: _Optional[_Iterable[float]] = ..., y_axis: _Optional[_Iterable[float]] = ..., source_to_crop: _Optional[_Union[Affine2D, _Mapping]] = ..., crop_to_source: _Optional[_Union[Affine2D, _Mapping]] = ..., crop_size: _Optional[int] = ...) -> None: ...

class FaceLandmarks(_message.Message):
    __slots__ = ("source_points", "crop_points", "presence")
    SOURCE_POINTS_FIELD_NUMBER: _ClassVar[int]
    CROP_POINTS_FIELD_NUMBER: _ClassVar[int]
    PRESENCE_FIELD_NUMBER: _ClassVar[int]
    source_points: Tensor
    crop_points: Tensor
    presence: float
    def __init__(self, source_points: _Optional[_Union[Tensor, _Mapping]] = ..., crop_points: _Optional[_Union[Tensor, _Mapping]] = ..., presence: _Optional[float] = ...) -> None: ...

class VideoChunk(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class LossTerms(_message.Message):
    __slots__ = ("terms",)
    class TermsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    TERMS_FIELD_NUMBER: _ClassVar[int]
    terms: _containers.ScalarMap[str, float]
    def __init__(self, terms: _Optional[_Mapping[str, float]] = ...) -> None: ...

class JobProgress(_message.Message):
    __slots__ = ("stage", "step", "total_steps", "fraction", "losses", "eta_seconds", "message")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    FRACTION_FIELD_NUMBER: _ClassVar[int]
    LOSSES_FIELD_NUMBER: _ClassVar[int]
    ETA_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    stage: str
    step: int
    total_steps: int
    fraction: float
    losses: LossTerms
    eta_seconds: float
    message: str
    def __init__(self, stage: _Optional[str] = ..., step: _Optional[int] = ..., total_steps: _Optional[int] = ..., fraction: _Optional[float] = ..., losses: _Optional[_Union[LossTerms, _Mapping]] = ..., eta_seconds: _Optional[float] = ..., message: _Optional[str] = ...) -> None: ...

class CoverageReport(_message.Message):
    __slots__ = ("frames_total", "frames_with_face", "frames_usable", "yaw_min_deg", "yaw_max_deg", "pitch_min_deg", "pitch_max_deg", "mouth_open_max", "eye_open_min", "missing")
    FRAMES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    FRAMES_WITH_FACE_FIELD_NUMBER: _ClassVar[int]
    FRAMES_USABLE_FIELD_NUMBER: _ClassVar[int]
    YAW_MIN_DEG_FIELD_NUMBER: _ClassVar[int]
    YAW_MAX_DEG_FIELD_NUMBER: _ClassVar[int]
    PITCH_MIN_DEG_FIELD_NUMBER: _ClassVar[int]
    PITCH_MAX_DEG_FIELD_NUMBER: _ClassVar[int]
    MOUTH_OPEN_MAX_FIELD_NUMBER: _ClassVar[int]
    EYE_OPEN_MIN_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    frames_total: int
    frames_with_face: int
    frames_usable: int
    yaw_min_deg: float
    yaw_max_deg: float
    pitch_min_deg: float
    pitch_max_deg: float
    mouth_open_max: float
    eye_open_min: float
    missing: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, frames_total: _Optional[int] = ..., frames_with_face: _Optional[int] = ..., frames_usable: _Optional[int] = ..., yaw_min_deg: _Optional[float] = ..., yaw_max_deg: _Optional[float] = ..., pitch_min_deg: _Optional[float] = ..., pitch_max_deg: _Optional[float] = ..., mouth_open_max: _Optional[float] = ..., eye_open_min: _Optional[float] = ..., missing: _Optional[_Iterable[str]] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("job_id", "request_id", "person_id", "state", "progress", "profile", "create_time", "update_time", "error_code", "error_message", "coverage", "person_version", "metrics")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PERSON_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_FIELD_NUMBER: _ClassVar[int]
    PERSON_VERSION_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    request_id: str
    person_id: str
    state: JobState
    progress: JobProgress
    profile: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    error_code: int
    error_message: str
    coverage: CoverageReport
    person_version: int
    metrics: LossTerms
    def __init__(self, job_id: _Optional[str] = ..., request_id: _Optional[str] = ..., person_id: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., progress: _Optional[_Union[JobProgress, _Mapping]] = ..., profile: _Optional[str] = ..., create_time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., error_code: _Optional[int] = ..., error_message: _Optional[str] = ..., coverage: _Optional[_Union[CoverageReport, _Mapping]] = ..., person_version: _Optional[int] = ..., metrics: _Optional[_Union[LossTerms, _Mapping]] = ...) -> None: ...

class EnrollOptions(_message.Message):
    __slots__ = ("num_anchors", "resolution", "base_checkpoint", "tune_steps", "seed")
    NUM_ANCHORS_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    BASE_CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    TUNE_STEPS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    num_anchors: int
    resolution: int
    base_checkpoint: str
    tune_steps: int
    seed: int
    def __init__(self, num_anchors: _Optional[int] = ..., resolution: _Optional[int] = ..., base_checkpoint: _Optional[str] = ..., tune_steps: _Optional[int] = ..., seed: _Optional[int] = ...) -> None: ...
