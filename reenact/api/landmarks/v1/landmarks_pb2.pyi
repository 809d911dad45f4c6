from reenact.api.common.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FaceStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FACE_STATUS_UNSPECIFIED: _ClassVar[FaceStatus]
    FACE_STATUS_OK: _ClassVar[FaceStatus]
    FACE_STATUS_NO_FACE: _ClassVar[FaceStatus]
    FACE_STATUS_MULTIPLE_FACES: _ClassVar[FaceStatus]
FACE_STATUS_UNSPECIFIED: FaceStatus
FACE_STATUS_OK: FaceStatus
FACE_STATUS_NO_FACE: FaceStatus
FACE_STATUS_MULTIPLE_FACES: FaceStatus

class TrackConfig(_message.Message):
    __slots__ = ("crop_size", "smoothing_sigma", "return_crop", "crop_encoding")
    CROP_SIZE_FIELD_NUMBER: _ClassVar[int]
    SMOOTHING_SIGMA_FIELD_NUMBER: _ClassVar[int]
    RETURN_CROP_FIELD_NUMBER: _ClassVar[int]
    CROP_ENCODING_FIELD_NUMBER: _ClassVar[int]
    crop_size: int
    smoothing_sigma: float
    return_crop: bool
    crop_encoding: _types_pb2.ImageEncoding
    def __init__(self, crop_size: _Optional[int] = ..., smoothing_sigma: _Optional[float] = ..., return_crop: bool = ..., crop_encoding: _Optional[_Union[_types_pb2.ImageEncoding, str]] = ...) -> None: ...

class TrackFramesRequest(_message.Message):
    __slots__ = ("config", "frame")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    config: TrackConfig
    frame: Frame
    def __init__(self, config: _Optional[_Union[TrackConfig, _Mapping]] = ..., frame: _Optional[_Union[Frame, _Mapping]] = ...) -> None: ...

class Frame(_message.Message):
    __slots__ = ("index", "image")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    index: int
    image: _types_pb2.Image
    def __init__(self, index: _Optional[int] = ..., image: _Optional[_Union[_types_pb2.Image, _Mapping]] = ...) -> None: ...

class FaceResult(_message.Message):
    __slots__ = ("status", "num_faces", "alignment", "landmarks", "crop")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    NUM_FACES_FIELD_NUMBER: _ClassVar[int]
    ALIGNMENT_FIELD_NUMBER: _ClassVar[int]
    LANDMARKS_FIELD_NUMBER: _ClassVar[int]
    CROP_FIELD_NUMBER: _ClassVar[int]
    status: FaceStatus
    num_faces: int
    alignment: _types_pb2.Alignment
    landmarks: _types_pb2.FaceLandmarks
    crop: _types_pb2.Image
    def __init__(self, status: _Optional[_Union[FaceStatus, str]] = ..., num_faces: _Optional[int] = ..., alignment: _Optional[_Union[_types_pb2.Alignment, _Mapping]] = ..., landmarks: _Optional[_Union[_types_pb2.FaceLandmarks, _Mapping]] = ..., crop: _Optional[_Union[_types_pb2.Image, _Mapping]] = ...) -> None: ...

class TrackFramesResponse(_message.Message):
    __slots__ = ("index", "result")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    index: int
    result: FaceResult
    def __init__(self, index: _Optional[int] = ..., result: _Optional[_Union[FaceResult, _Mapping]] = ...) -> None: ...

class DetectImageRequest(_message.Message):
    __slots__ = ("image", "crop_size", "return_crop")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    CROP_SIZE_FIELD_NUMBER: _ClassVar[int]
    RETURN_CROP_FIELD_NUMBER: _ClassVar[int]
    image: _types_pb2.Image
    crop_size: int
    return_crop: bool
    def __init__(self, image: _Optional[_Union[_types_pb2.Image, _Mapping]] = ..., crop_size: _Optional[int] = ..., return_crop: bool = ...) -> None: ...

class DetectImageResponse(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: FaceResult
    def __init__(self, result: _Optional[_Union[FaceResult, _Mapping]] = ...) -> None: ...
