"""Read a TensorFlow Lite flatbuffer into plain Python/NumPy objects.

Only what is needed to re-execute a float graph elsewhere (here: in PyTorch) is extracted:

* tensors: name, shape, dtype, constant data (fp16/fp32/int32 buffers), quantization parameters;
* operators: op name (``CONV_2D`` ..., or the custom code for ``CUSTOM`` ops), version,
  input/output tensor indices, builtin options as a dict, custom options decoded from FlexBuffers;
* graph inputs/outputs.

``TFLiteGraph.constant(i)`` returns the float32 value of a tensor, following a ``DEQUANTIZE`` of a
constant (fp16 weights are stored as FLOAT16 buffers behind DEQUANTIZE ops in MediaPipe's models).

The accessors come from the ``tflite`` package (generated flatbuffer bindings, no TensorFlow) and
``flatbuffers.flexbuffers`` for custom-op options.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

__all__ = ["TFLiteGraph", "TensorInfo", "OperatorInfo", "load_tflite", "mediapipe_model_path"]

# TensorType enum of the TFLite schema -> numpy dtype.
_DTYPES: dict[int, Any] = {
    0: np.float32,  # FLOAT32
    1: np.float16,  # FLOAT16
    2: np.int32,  # INT32
    3: np.uint8,  # UINT8
    4: np.int64,  # INT64
    6: np.bool_,  # BOOL
    7: np.int16,  # INT16
    9: np.int8,  # INT8
    10: np.float64,  # FLOAT64
}

_ACTIVATIONS = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}
_PADDINGS = {0: "SAME", 1: "VALID"}


@dataclass
class TensorInfo:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: Any
    data: np.ndarray | None = None  # constant buffer (already reshaped), None for activations
    scale: np.ndarray | None = None  # quantization scale(s), if any
    zero_point: np.ndarray | None = None
    quantized_dimension: int = 0


@dataclass
class OperatorInfo:
    index: int
    op: str  # builtin name, or the custom code of a CUSTOM op
    custom: bool
    version: int
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TFLiteGraph:
    tensors: list[TensorInfo]
    operators: list[OperatorInfo]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    description: str = ""
    path: str | None = None

    def op_counts(self) -> Counter:
        return Counter(o.op for o in self.operators)

    def tensor_index(self, name: str) -> int:
        for t in self.tensors:
            if t.name == name:
                return t.index
        raise KeyError(name)

    @cached_property
    def producers(self) -> dict[int, OperatorInfo]:
        """Map tensor index -> the operator that writes it."""
        return {out: o for o in self.operators for out in o.outputs}

    def is_constant(self, index: int) -> bool:
        """True when the tensor is a buffer, or a DEQUANTIZE of a buffer."""
        if index < 0:
            return False
        if self.tensors[index].data is not None:
            return True
        prod = self.producers.get(index)
        return prod is not None and prod.op == "DEQUANTIZE" and self.tensors[prod.inputs[0]].data is not None

    def constant(self, index: int) -> np.ndarray:
        """Float32 value of a constant tensor (dequantizing fp16/int8 buffers)."""
        t = self.tensors[index]
        if t.data is None:
            prod = self.producers.get(index)
            if prod is None or prod.op != "DEQUANTIZE":
                raise ValueError(f"tensor {index} ({t.name}) is not a constant")
            return self.constant(prod.inputs[0])
        return dequantize_array(t)


def dequantize_array(t: TensorInfo) -> np.ndarray:
    data = t.data
    assert data is not None
    if data.dtype in (np.float32, np.float16, np.float64):
        return data.astype(np.float32)
    if t.scale is not None and t.scale.size:
        shape = [1] * data.ndim
        if t.scale.size > 1:
            shape[t.quantized_dimension] = -1
        scale = t.scale.reshape(shape).astype(np.float32)
        zp = (t.zero_point if t.zero_point is not None and t.zero_point.size else np.zeros(1)).reshape(
            shape if t.scale.size > 1 else [1] * data.ndim
        )
        return ((data.astype(np.float32) - zp.astype(np.float32)) * scale).astype(np.float32)
    return data


def _read_options(op, cls) -> Any:
    table = op.BuiltinOptions()
    if table is None:
        return None
    opt = cls()
    opt.Init(table.Bytes, table.Pos)
    return opt


def _builtin_options(name: str, op) -> dict[str, Any]:  # noqa: C901 - a flat switch over op types
    import tflite

    if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        cls = tflite.Conv2DOptions if name == "CONV_2D" else tflite.DepthwiseConv2DOptions
        o = _read_options(op, cls)
        d = {
            "padding": _PADDINGS[o.Padding()],
            "stride": (o.StrideH(), o.StrideW()),
            "dilation": (o.DilationHFactor() or 1, o.DilationWFactor() or 1),
            "activation": _ACTIVATIONS[o.FusedActivationFunction()],
        }
        if name == "DEPTHWISE_CONV_2D":
            d["depth_multiplier"] = o.DepthMultiplier()
        return d
    if name in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
        o = _read_options(op, tflite.Pool2DOptions)
        return {
            "padding": _PADDINGS[o.Padding()],
            "stride": (o.StrideH(), o.StrideW()),
            "filter": (o.FilterHeight(), o.FilterWidth()),
            "activation": _ACTIVATIONS[o.FusedActivationFunction()],
        }
    if name in ("ADD", "MUL", "SUB", "DIV"):
        cls = {
            "ADD": tflite.AddOptions,
            "MUL": tflite.MulOptions,
            "SUB": tflite.SubOptions,
            "DIV": tflite.DivOptions,
        }
        o = _read_options(op, cls[name])
        return {"activation": _ACTIVATIONS[o.FusedActivationFunction()] if o is not None else "NONE"}
    if name == "CONCATENATION":
        o = _read_options(op, tflite.ConcatenationOptions)
        return {"axis": o.Axis(), "activation": _ACTIVATIONS[o.FusedActivationFunction()]}
    if name == "RESHAPE":
        o = _read_options(op, tflite.ReshapeOptions)
        if o is not None and o.NewShapeLength():
            return {"new_shape": tuple(int(v) for v in o.NewShapeAsNumpy())}
        return {}
    if name == "STRIDED_SLICE":
        o = _read_options(op, tflite.StridedSliceOptions)
        return {
            "begin_mask": o.BeginMask(),
            "end_mask": o.EndMask(),
            "ellipsis_mask": o.EllipsisMask(),
            "new_axis_mask": o.NewAxisMask(),
            "shrink_axis_mask": o.ShrinkAxisMask(),
            "offset": bool(o.Offset()),
        }
    return {}


def _custom_options(op) -> dict[str, Any]:
    if op.CustomOptionsLength() == 0:
        return {}
    from flatbuffers import flexbuffers

    raw = op.CustomOptionsAsNumpy().tobytes()
    val = flexbuffers.Loads(raw)
    return dict(val) if isinstance(val, dict) else {"value": val}


def _builtin_names() -> dict[int, str]:
    from tflite.BuiltinOperator import BuiltinOperator

    return {v: k for k, v in BuiltinOperator.__dict__.items() if not k.startswith("_") and isinstance(v, int)}


def load_tflite(source: str | os.PathLike | bytes, subgraph: int = 0) -> TFLiteGraph:
    """Parse a ``.tflite`` file (path or bytes) into a :class:`TFLiteGraph`."""
    import tflite

    path = None
    if isinstance(source, (bytes, bytearray)):
        buf = bytes(source)
    else:
        path = os.fspath(source)
        with open(path, "rb") as f:
            buf = f.read()
    model = tflite.Model.GetRootAsModel(buf, 0)
    g = model.Subgraphs(subgraph)
    names = _builtin_names()

    tensors: list[TensorInfo] = []
    for i in range(g.TensorsLength()):
        t = g.Tensors(i)
        shape = tuple(int(s) for s in t.ShapeAsNumpy()) if t.ShapeLength() else ()
        dtype = _DTYPES.get(t.Type())
        data = None
        b = model.Buffers(t.Buffer())
        if b is not None:
            raw = None
            if b.DataLength():
                raw = b.DataAsNumpy().tobytes()
            elif b.Offset() > 1 and b.Size():  # large models keep buffers after the flatbuffer
                raw = buf[b.Offset() : b.Offset() + b.Size()]
            if raw is not None:
                if dtype is None:
                    raise ValueError(f"unsupported dtype {t.Type()} for constant tensor {t.Name()!r}")
                data = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
        scale = zp = None
        qd = 0
        q = t.Quantization()
        if q is not None and q.ScaleLength():
            scale = q.ScaleAsNumpy().astype(np.float32)
            zp = q.ZeroPointAsNumpy().astype(np.int64) if q.ZeroPointLength() else None
            qd = q.QuantizedDimension()
        tensors.append(TensorInfo(i, t.Name().decode(), shape, dtype, data, scale, zp, qd))

    operators: list[OperatorInfo] = []
    for i in range(g.OperatorsLength()):
        op = g.Operators(i)
        oc = model.OperatorCodes(op.OpcodeIndex())
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        name = names.get(code, f"BUILTIN_{code}")
        custom = name == "CUSTOM"
        if custom:
            name = oc.CustomCode().decode()
            options = _custom_options(op)
        else:
            options = _builtin_options(name, op)
        operators.append(
            OperatorInfo(
                index=i,
                op=name,
                custom=custom,
                version=oc.Version(),
                inputs=tuple(int(v) for v in op.InputsAsNumpy()) if op.InputsLength() else (),
                outputs=tuple(int(v) for v in op.OutputsAsNumpy()) if op.OutputsLength() else (),
                options=options,
            )
        )
    desc = model.Description()
    return TFLiteGraph(
        tensors=tensors,
        operators=operators,
        inputs=tuple(int(v) for v in g.InputsAsNumpy()),
        outputs=tuple(int(v) for v in g.OutputsAsNumpy()),
        description=desc.decode() if desc else "",
        path=path,
    )


def mediapipe_model_path(filename: str, module: str = "face_landmark") -> str:
    """Path of a model file shipped inside the installed ``mediapipe`` package (0.10.21 ships them)."""
    import importlib.util

    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the mediapipe package is not installed")
    root = list(spec.submodule_search_locations)[0]
    path = os.path.join(root, "modules", module, filename)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} not found: mediapipe>=0.10.30 ships no face models; install mediapipe==0.10.21"
        )
    return path
