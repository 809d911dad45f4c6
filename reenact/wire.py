"""The one conversion module between wire messages and numpy arrays / images.

Tensors travel as raw little-endian bytes in C order plus shape and dtype (common.v1.Tensor);
images as PNG/JPEG bytes or raw RGB8 (common.v1.Image).
"""

from __future__ import annotations

import numpy as np

from reenact.api.common.v1 import types_pb2
from reenact.errors import InvalidInputError

_TO_NP = {
    types_pb2.DATA_TYPE_FLOAT32: np.dtype("<f4"),
    types_pb2.DATA_TYPE_FLOAT16: np.dtype("<f2"),
    types_pb2.DATA_TYPE_FLOAT64: np.dtype("<f8"),
    types_pb2.DATA_TYPE_UINT8: np.dtype("u1"),
    types_pb2.DATA_TYPE_INT32: np.dtype("<i4"),
    types_pb2.DATA_TYPE_INT64: np.dtype("<i8"),
}
_FROM_NP = {v.newbyteorder("<") if v.itemsize > 1 else v: k for k, v in _TO_NP.items()}

MAX_IMAGE_SIDE = 8192


def tensor_to_proto(array, dtype=None) -> types_pb2.Tensor:
    """numpy array (or torch tensor) -> Tensor message (little-endian, C order)."""
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    arr = np.asarray(array, dtype=dtype)
    le = arr.dtype.newbyteorder("<") if arr.dtype.itemsize > 1 else arr.dtype
    code = _FROM_NP.get(le)
    if code is None:
        raise TypeError(f"dtype {arr.dtype} has no wire type")
    arr = arr.astype(le, order="C", copy=False)
    return types_pb2.Tensor(dtype=code, shape=list(arr.shape), data=arr.tobytes())


def tensor_from_proto(msg: types_pb2.Tensor, *, field: str = "tensor", shape=None) -> np.ndarray:
    """Tensor message -> numpy array; validates dtype, shape and byte length.

    `shape` optionally constrains the result: a tuple where None matches any size.
    """
    dt = _TO_NP.get(msg.dtype)
    if dt is None:
        raise InvalidInputError.for_field(f"{field}.dtype", "unspecified or unknown data type")
    dims = list(msg.shape)
    if any(d < 0 for d in dims):
        raise InvalidInputError.for_field(f"{field}.shape", f"negative dimension in {dims}")
    count = int(np.prod(dims, dtype=np.int64)) if dims else 1
    if count * dt.itemsize != len(msg.data):
        raise InvalidInputError.for_field(
            f"{field}.data", f"{len(msg.data)} bytes do not match shape {dims} of {dt.name}"
        )
    if shape is not None:
        ok = len(shape) == len(dims) and all(s is None or s == d for s, d in zip(shape, dims, strict=True))
        if not ok:
            raise InvalidInputError.for_field(f"{field}.shape", f"expected {shape}, got {dims}")
    return np.frombuffer(msg.data, dtype=dt).reshape(tuple(dims)).astype(dt.newbyteorder("="), copy=True)


def image_to_proto(rgb: np.ndarray, encoding: int = types_pb2.IMAGE_ENCODING_RGB8, quality: int = 95):
    """RGB uint8 [H, W, 3] -> Image message."""
    import cv2

    rgb = np.ascontiguousarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected uint8 [H, W, 3], got {rgb.dtype} {rgb.shape}")
    h, w = rgb.shape[:2]
    if encoding in (types_pb2.IMAGE_ENCODING_RGB8, types_pb2.IMAGE_ENCODING_UNSPECIFIED):
        return types_pb2.Image(encoding=types_pb2.IMAGE_ENCODING_RGB8, width=w, height=h, data=rgb.tobytes())
    ext, params = (".png", []) if encoding == types_pb2.IMAGE_ENCODING_PNG else (
        ".jpg", [cv2.IMWRITE_JPEG_QUALITY, quality])
    ok, buf = cv2.imencode(ext, rgb[:, :, ::-1], params)
    if not ok:
        raise ValueError("image encoding failed")
    return types_pb2.Image(encoding=encoding, width=w, height=h, data=buf.tobytes())


def image_from_proto(msg: types_pb2.Image, *, field: str = "image", min_side: int = 16,
                     max_side: int = MAX_IMAGE_SIDE) -> np.ndarray:
    """Image message -> RGB uint8 [H, W, 3]; INVALID_ARGUMENT on corrupt data or bad size."""
    import cv2

    if msg.encoding == types_pb2.IMAGE_ENCODING_RGB8:
        w, h = msg.width, msg.height
        _check_size(field, w, h, min_side, max_side)
        if len(msg.data) != w * h * 3:
            raise InvalidInputError.for_field(f"{field}.data", f"{len(msg.data)} bytes, expected {w}x{h}x3")
        return np.frombuffer(msg.data, np.uint8).reshape(h, w, 3).copy()
    if msg.encoding not in (types_pb2.IMAGE_ENCODING_PNG, types_pb2.IMAGE_ENCODING_JPEG):
        raise InvalidInputError.for_field(f"{field}.encoding", "unspecified or unknown image encoding")
    if not msg.data:
        raise InvalidInputError.for_field(f"{field}.data", "empty image")
    # The declared size is read from the header first, so a decompression bomb (a tiny PNG of zeros that
    # declares 30000x30000) is refused before anything is allocated; bytes of another format than the
    # declared encoding are refused too (cv2.imdecode would decode any format it knows).
    declared = _declared_size(msg.encoding, msg.data, field)
    _check_size(field, declared[0], declared[1], min_side, max_side)
    buf = np.frombuffer(msg.data, np.uint8)
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if bgr is None:
        raise InvalidInputError.for_field(f"{field}.data", "corrupt or unsupported image bytes")
    h, w = bgr.shape[:2]
    _check_size(field, w, h, min_side, max_side)
    if (msg.width and msg.width != w) or (msg.height and msg.height != h):
        raise InvalidInputError.for_field(field, f"declared {msg.width}x{msg.height}, decoded {w}x{h}")
    return np.ascontiguousarray(bgr[:, :, ::-1])


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _declared_size(encoding: int, data: bytes, field: str) -> tuple[int, int]:
    """(width, height) from a PNG IHDR or a JPEG SOF header; INVALID_ARGUMENT when there is none."""
    if encoding == types_pb2.IMAGE_ENCODING_PNG:
        if data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR" or len(data) < 24:
            raise InvalidInputError.for_field(f"{field}.data", "not a PNG image")
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:2] != b"\xff\xd8":
        raise InvalidInputError.for_field(f"{field}.data", "not a JPEG image")
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker == 0xFF or marker == 0x01 or 0xD0 <= marker <= 0xD8:  # fill byte, standalone markers
            i += 1 if marker == 0xFF else 2
            continue
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if marker in _JPEG_SOF and i + 9 <= n:
            return int.from_bytes(data[i + 7:i + 9], "big"), int.from_bytes(data[i + 5:i + 7], "big")
        if marker == 0xDA or length < 2:  # scan data before any frame header, or a broken segment
            break
        i += 2 + length
    raise InvalidInputError.for_field(f"{field}.data", "corrupt JPEG image (no frame header)")


def _check_size(field: str, w: int, h: int, lo: int, hi: int) -> None:
    if not (lo <= w <= hi and lo <= h <= hi):
        raise InvalidInputError.for_field(f"{field}.size", f"{w}x{h} outside {lo}..{hi} pixels per side")


def affine_to_proto(m: np.ndarray) -> types_pb2.Affine2D:
    m = np.asarray(m, dtype=np.float64)
    if m.shape != (2, 3):
        raise ValueError(f"affine must be 2x3, got {m.shape}")
    return types_pb2.Affine2D(matrix=m.ravel().tolist())


def affine_from_proto(msg: types_pb2.Affine2D, *, field: str = "affine") -> np.ndarray:
    if len(msg.matrix) != 6:
        raise InvalidInputError.for_field(f"{field}.matrix", f"expected 6 values, got {len(msg.matrix)}")
    return np.asarray(msg.matrix, dtype=np.float64).reshape(2, 3)
