import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from reenact.api.common.v1 import types_pb2
from reenact.errors import InvalidInputError
from reenact.wire import (
    affine_from_proto,
    affine_to_proto,
    image_from_proto,
    image_to_proto,
    tensor_from_proto,
    tensor_to_proto,
)

DTYPES = [np.float32, np.float16, np.float64, np.uint8, np.int32, np.int64]


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(DTYPES).flatmap(
    lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=4, max_side=5))))
def test_tensor_round_trip(arr):
    msg = tensor_to_proto(arr)
    back = tensor_from_proto(msg)
    assert back.dtype == arr.dtype and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)


def test_tensor_is_little_endian_c_order():
    arr = np.arange(6, dtype=">i4").reshape(2, 3)  # big-endian input
    msg = tensor_to_proto(arr)
    assert msg.data[:4] == (0).to_bytes(4, "little") and msg.data[4:8] == (1).to_bytes(4, "little")
    assert list(msg.shape) == [2, 3] and msg.dtype == types_pb2.DATA_TYPE_INT32


def test_torch_tensor_accepted():
    torch = pytest.importorskip("torch")
    msg = tensor_to_proto(torch.ones(2, 2))
    assert tensor_from_proto(msg).sum() == 4


@pytest.mark.parametrize("msg,field", [
    (types_pb2.Tensor(dtype=0, shape=[1], data=b"\0" * 4), "kp.dtype"),
    (types_pb2.Tensor(dtype=types_pb2.DATA_TYPE_FLOAT32, shape=[2], data=b"\0" * 4), "kp.data"),
    (types_pb2.Tensor(dtype=types_pb2.DATA_TYPE_FLOAT32, shape=[-1], data=b""), "kp.shape"),
])
def test_tensor_rejects_malformed(msg, field):
    with pytest.raises(InvalidInputError) as ei:
        tensor_from_proto(msg, field="kp")
    assert ei.value.violations[0].field == field


def test_tensor_shape_constraint():
    msg = tensor_to_proto(np.zeros((478, 3), np.float32))
    assert tensor_from_proto(msg, shape=(None, 3)).shape == (478, 3)
    with pytest.raises(InvalidInputError):
        tensor_from_proto(msg, shape=(468, 3))


@pytest.mark.parametrize("enc", [types_pb2.IMAGE_ENCODING_RGB8, types_pb2.IMAGE_ENCODING_PNG])
def test_image_round_trip_lossless(enc):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (20, 31, 3), dtype=np.uint8)
    back = image_from_proto(image_to_proto(img, enc))
    np.testing.assert_array_equal(back, img)


def test_image_jpeg_close():
    img = np.full((32, 32, 3), (200, 30, 90), np.uint8)
    back = image_from_proto(image_to_proto(img, types_pb2.IMAGE_ENCODING_JPEG))
    assert np.abs(back.astype(int) - img).max() < 8


@pytest.mark.parametrize("msg", [
    types_pb2.Image(encoding=types_pb2.IMAGE_ENCODING_PNG, data=b"not a png"),
    types_pb2.Image(encoding=types_pb2.IMAGE_ENCODING_PNG, data=b""),
    types_pb2.Image(encoding=types_pb2.IMAGE_ENCODING_RGB8, width=20, height=20, data=b"\0" * 10),
    types_pb2.Image(encoding=types_pb2.IMAGE_ENCODING_RGB8, width=8, height=8, data=b"\0" * 192),
    types_pb2.Image(encoding=types_pb2.IMAGE_ENCODING_RGB8, width=9000, height=20, data=b""),
    types_pb2.Image(encoding=0, data=b"x"),
])
def test_image_rejects_corrupt_and_bad_sizes(msg):
    with pytest.raises(InvalidInputError):
        image_from_proto(msg)


def test_affine_round_trip():
    m = np.array([[1.5, 0.1, -3], [0.2, 0.9, 4]])
    np.testing.assert_array_equal(affine_from_proto(affine_to_proto(m)), m)
    with pytest.raises(InvalidInputError):
        affine_from_proto(types_pb2.Affine2D(matrix=[1, 2]))
