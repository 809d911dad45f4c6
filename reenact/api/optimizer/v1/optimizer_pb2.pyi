from reenact.api.common.v1 import types_pb2 as _types_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OptimizerOptions(_message.Message):
    __slots__ = ("first_frame_steps", "steps", "learning_rate", "tolerance", "keypoint_weight", "mouth_weight", "eye_weight", "window", "beta", "keypoint_subset", "keypoint_sigma", "seed", "init", "delta_lr_scale", "lr_final", "motion", "opening_weight", "latent_sigma", "opening_range", "mouth_starts", "lip_warp")
    FIRST_FRAME_STEPS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    KEYPOINT_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    MOUTH_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    EYE_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    BETA_FIELD_NUMBER: _ClassVar[int]
    KEYPOINT_SUBSET_FIELD_NUMBER: _ClassVar[int]
    KEYPOINT_SIGMA_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    INIT_FIELD_NUMBER: _ClassVar[int]
    DELTA_LR_SCALE_FIELD_NUMBER: _ClassVar[int]
    LR_FINAL_FIELD_NUMBER: _ClassVar[int]
    MOTION_FIELD_NUMBER: _ClassVar[int]
    OPENING_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    LATENT_SIGMA_FIELD_NUMBER: _ClassVar[int]
    OPENING_RANGE_FIELD_NUMBER: _ClassVar[int]
    MOUTH_STARTS_FIELD_NUMBER: _ClassVar[int]
    LIP_WARP_FIELD_NUMBER: _ClassVar[int]
    first_frame_steps: int
    steps: int
    learning_rate: float
    tolerance: float
    keypoint_weight: float
    mouth_weight: float
    eye_weight: float
    window: int
    beta: float
    keypoint_subset: str
    keypoint_sigma: float
    seed: int
    init: str
    delta_lr_scale: float
    lr_final: float
    motion: str
    opening_weight: float
    latent_sigma: float
    opening_range: float
    mouth_starts: float
    lip_warp: float
    def __init__(self, first_frame_steps: _Optional[int] = ..., steps: _Optional[int] = ..., learning_rate: _Optional[float] = ..., tolerance: _Optional[float] = ..., keypoint_weight: _Optional[float] = ..., mouth_weight: _Optional[float] = ..., eye_weight: _Optional[float] = ..., window: _Optional[int] = ..., beta: _Optional[float] = ..., keypoint_subset: _Optional[str] = ..., keypoint_sigma: _Optional[float] = ..., seed: _Optional[int] = ..., init: _Optional[str] = ..., delta_lr_scale: _Optional[float] = ..., lr_final: _Optional[float] = ..., motion: _Optional[str] = ..., opening_weight: _Optional[float] = ..., latent_sigma: _Optional[float] = ..., opening_range: _Optional[float] = ..., mouth_starts: _Optional[float] = ..., lip_warp: _Optional[float] = ...) -> None: ...

class OptimizeConfig(_message.Message):
    __slots__ = ("person_id", "person_version", "options")
    PERSON_ID_FIELD_NUMBER: _ClassVar[int]
    PERSON_VERSION_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    person_id: str
    person_version: int
    options: OptimizerOptions
    def __init__(self, person_id: _Optional[str] = ..., person_version: _Optional[int] = ..., options: _Optional[_Union[OptimizerOptions, _Mapping]] = ...) -> None: ...

class OptimizeTarget(_message.Message):
    __slots__ = ("index", "keypoints", "crop_size", "crop", "no_face")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    KEYPOINTS_FIELD_NUMBER: _ClassVar[int]
    CROP_SIZE_FIELD_NUMBER: _ClassVar[int]
    CROP_FIELD_NUMBER: _ClassVar[int]
    NO_FACE_FIELD_NUMBER: _ClassVar[int]
    index: int
    keypoints: _types_pb2.Tensor
    crop_size: int
    crop: _types_pb2.Image
    no_face: bool
    def __init__(self, index: _Optional[int] = ..., keypoints: _Optional[_Union[_types_pb2.Tensor, _Mapping]] = ..., crop_size: _Optional[int] = ..., crop: _Optional[_Union[_types_pb2.Image, _Mapping]] = ..., no_face: bool = ...) -> None: ...

class OptimizeRequest(_message.Message):
    __slots__ = ("config", "target")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    config: OptimizeConfig
    target: OptimizeTarget
    def __init__(self, config: _Optional[_Union[OptimizeConfig, _Mapping]] = ..., target: _Optional[_Union[OptimizeTarget, _Mapping]] = ...) -> None: ...

class OptimizeResponse(_message.Message):
    __slots__ = ("index", "ws", "alpha", "delta", "losses", "steps", "keypoint_error", "lip_src", "lip_dst")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    WS_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    LOSSES_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    KEYPOINT_ERROR_FIELD_NUMBER: _ClassVar[int]
    LIP_SRC_FIELD_NUMBER: _ClassVar[int]
    LIP_DST_FIELD_NUMBER: _ClassVar[int]
    index: int
    ws: _types_pb2.Tensor
    alpha: _types_pb2.Tensor
    delta: _types_pb2.Tensor
    losses: _types_pb2.LossTerms
    steps: int
    keypoint_error: float
    lip_src: _types_pb2.Tensor
    lip_dst: _types_pb2.Tensor
    def __init__(self, index: _Optional[int] = ..., ws: _Optional[_Union[_types_pb2.Tensor, _Mapping]] = ..., alpha: _Optional[_Union[_types_pb2.Tensor, _Mapping]] = ..., delta: _Optional[_Union[_types_pb2.Tensor, _Mapping]] = ..., losses: _Optional[_Union[_types_pb2.LossTerms, _Mapping]] = ..., steps: _Optional[int] = ..., keypoint_error: _Optional[float] = ..., lip_src: _Optional[_Union[_types_pb2.Tensor, _Mapping]] = ..., lip_dst: _Optional[_Union[_types_pb2.Tensor, _Mapping]] = ...) -> None: ...
