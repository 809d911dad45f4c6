"""TFLite operators in PyTorch, and a converter from a :class:`TFLiteGraph` to an ``nn.Module``.

Layout: TFLite tensors are NHWC. Inside :class:`TFLiteModule` every rank-4 tensor is kept in NCHW
(PyTorch's native conv layout); tensors of any other rank keep the TFLite layout. Ops whose semantics
depend on the layout (PAD, RESHAPE, CONCATENATION, STRIDED_SLICE, broadcasting of lower-rank operands,
the MediaPipe custom ops) translate axes accordingly, so results equal TFLite's up to float32
summation order.

Batch: TFLite graphs are built for batch 1. The module runs any batch B: dimension 0 of every
tensor is treated as the batch dimension (RESHAPE keeps it, STRIDED_SLICE keeps it whole), and the
custom ops are batched.

Padding: TFLite's SAME padding is asymmetric when the total padding is odd (the extra row/column
goes after, i.e. bottom/right); :func:`same_padding` reproduces it exactly. Max pooling ignores padded
cells (padded with -inf); average pooling divides by the number of valid cells.

Every op here is differentiable with respect to its activation inputs (constant weights are buffers).
The three MediaPipe custom ops (``Landmarks2TransformMatrix`` v2, ``TransformTensorBilinear`` v2,
``TransformLandmarks`` v2) follow ``mediapipe/util/tflite/operations/*.cc``:
the transform matrix is a differentiable function of the landmarks (atan2, rotation, min/max), and the
bilinear sampler is a gather with fractional weights, so gradients flow to both the feature map and
the landmarks (through the sampling positions).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .tflite_graph import OperatorInfo, TFLiteGraph

__all__ = [
    "same_padding",
    "conv2d",
    "pool2d",
    "activation",
    "landmarks_to_transform_matrix_v2",
    "transform_tensor_bilinear_v2",
    "transform_landmarks_v2",
    "TFLiteModule",
    "SUPPORTED_OPS",
]

_NHWC_TO_NCHW_AXIS = {0: 0, 1: 2, 2: 3, 3: 1}


# ----------------------------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------------------------
def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TFLite/TensorFlow SAME padding (before, after) for one spatial dimension."""
    out = (size + stride - 1) // stride
    eff = (kernel - 1) * dilation + 1
    total = max((out - 1) * stride + eff - size, 0)
    return total // 2, total - total // 2


def activation(x: torch.Tensor, name: str) -> torch.Tensor:
    """TFLite fused activation function."""
    if name == "NONE":
        return x
    if name == "RELU":
        return F.relu(x)
    if name == "RELU6":
        return torch.clamp(x, 0.0, 6.0)
    if name == "RELU_N1_TO_1":
        return torch.clamp(x, -1.0, 1.0)
    if name == "TANH":
        return torch.tanh(x)
    raise NotImplementedError(f"fused activation {name}")


def _spatial_pads(x: torch.Tensor, kernel, stride, dilation, padding: str):
    if padding == "VALID":
        return (0, 0), (0, 0)
    ph = same_padding(x.shape[2], kernel[0], stride[0], dilation[0])
    pw = same_padding(x.shape[3], kernel[1], stride[1], dilation[1])
    return ph, pw


def conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: Sequence[int] = (1, 1),
    dilation: Sequence[int] = (1, 1),
    padding: str = "SAME",
    groups: int = 1,
) -> torch.Tensor:
    """NCHW convolution with TFLite padding. ``weight`` in torch layout [O, I/groups, KH, KW]."""
    ph, pw = _spatial_pads(x, weight.shape[2:], stride, dilation, padding)
    if ph[0] == ph[1] and pw[0] == pw[1]:
        return F.conv2d(x, weight, bias, tuple(stride), (ph[0], pw[0]), tuple(dilation), groups)
    x = F.pad(x, (pw[0], pw[1], ph[0], ph[1]))
    return F.conv2d(x, weight, bias, tuple(stride), 0, tuple(dilation), groups)


def pool2d(x: torch.Tensor, kind: str, kernel, stride, padding: str) -> torch.Tensor:
    """NCHW MAX/AVERAGE pooling with TFLite padding (padded cells never win / never count)."""
    ph, pw = _spatial_pads(x, kernel, stride, (1, 1), padding)
    padded = any((ph[0], ph[1], pw[0], pw[1]))
    if kind == "MAX":
        if padded:
            x = F.pad(x, (pw[0], pw[1], ph[0], ph[1]), value=float("-inf"))
        return F.max_pool2d(x, tuple(kernel), tuple(stride))
    if not padded:
        return F.avg_pool2d(x, tuple(kernel), tuple(stride))
    ones = torch.ones_like(x[:1, :1])
    s = F.avg_pool2d(F.pad(x, (pw[0], pw[1], ph[0], ph[1])), tuple(kernel), tuple(stride), divisor_override=1)
    n = F.avg_pool2d(
        F.pad(ones, (pw[0], pw[1], ph[0], ph[1])), tuple(kernel), tuple(stride), divisor_override=1
    )
    return s / n


def landmarks_to_transform_matrix_v2(
    landmarks: torch.Tensor,
    left_rotation_idx: int,
    right_rotation_idx: int,
    subset_idxs: Sequence[int] | torch.Tensor,
    target_rotation_radians: float,
    output_width: int,
    output_height: int,
    scale_x: float,
    scale_y: float,
) -> torch.Tensor:
    """MediaPipe ``Landmarks2TransformMatrix`` v2. landmarks [B, N, >=2] -> matrix [B, 4, 4].

    The matrix maps (x, y) of an ``output_width x output_height`` crop to the landmarks' frame: the crop
    is centred on the (rotated) bounding box of ``subset_idxs``, rotated so that the left->right
    rotation landmarks are horizontal, and scaled by ``scale_x/y`` times the box size.
    """
    lm = landmarks[..., :2]
    left = lm[:, left_rotation_idx]
    right = lm[:, right_rotation_idx]
    rot = target_rotation_radians - torch.atan2(right[:, 1] - left[:, 1], right[:, 0] - left[:, 0])
    c, s = torch.cos(rot), torch.sin(rot)
    if isinstance(subset_idxs, torch.Tensor):
        idx = subset_idxs.to(device=lm.device, dtype=torch.long)
    else:
        idx = torch.as_tensor(list(subset_idxs), device=lm.device, dtype=torch.long)
    pts = lm.index_select(1, idx)
    px = c[:, None] * pts[..., 0] - s[:, None] * pts[..., 1]
    py = s[:, None] * pts[..., 0] + c[:, None] * pts[..., 1]
    max_x, min_x = px.amax(1), px.amin(1)
    max_y, min_y = py.amax(1), py.amin(1)
    crop_w, crop_h = max_x - min_x, max_y - min_y
    mx, my = (min_x + max_x) / 2, (min_y + max_y) / 2
    # back to the landmarks' frame: rotation by -rot
    cx = c * mx + s * my
    cy = -s * mx + c * my
    sx = scale_x * crop_w / output_width
    sy = scale_y * crop_h / output_height
    m00, m01 = c * sx, s * sy
    m10, m11 = -s * sx, c * sy
    hx, hy = -output_width / 2.0, -output_height / 2.0
    tx = m00 * hx + m01 * hy + cx
    ty = m10 * hx + m11 * hy + cy
    zero, one = torch.zeros_like(c), torch.ones_like(c)
    rows = [
        torch.stack([m00, m01, zero, tx], -1),
        torch.stack([m10, m11, zero, ty], -1),
        torch.stack([zero, zero, one, zero], -1),
        torch.stack([zero, zero, zero, one], -1),
    ]
    return torch.stack(rows, 1)


def transform_tensor_bilinear_v2(
    x: torch.Tensor, matrix: torch.Tensor, output_height: int, output_width: int
) -> torch.Tensor:
    """MediaPipe ``TransformTensorBilinear`` v2 on an NCHW tensor. matrix [B, 4, 4] maps output
    pixel (x, y) (with the v2 half-pixel correction) to input pixel coordinates; samples whose
    position falls outside [0, W-1] x [0, H-1] are 0; neighbours outside the tensor read 0."""
    b, ch, h, w = x.shape
    xt = matrix[:, 0]
    yt = matrix[:, 1]
    xt3 = xt[:, 3] + xt[:, 0] * 0.5 + xt[:, 1] * 0.5 - 0.5
    yt3 = yt[:, 3] + yt[:, 0] * 0.5 + yt[:, 1] * 0.5 - 0.5
    oy, ox = torch.meshgrid(
        torch.arange(output_height, device=x.device, dtype=x.dtype),
        torch.arange(output_width, device=x.device, dtype=x.dtype),
        indexing="ij",
    )
    tx = xt[:, 0, None, None] * ox + xt[:, 1, None, None] * oy + xt3[:, None, None]
    ty = yt[:, 0, None, None] * ox + yt[:, 1, None, None] * oy + yt3[:, None, None]
    inside = (tx >= 0) & (tx <= w - 1) & (ty >= 0) & (ty <= h - 1)
    x0 = torch.floor(tx)
    y0 = torch.floor(ty)
    fx = (tx - x0).reshape(b, 1, -1)
    fy = (ty - y0).reshape(b, 1, -1)
    x0 = x0.long()
    y0 = y0.long()
    flat = x.reshape(b, ch, h * w)

    def read(yi: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
        valid = ((yi >= 0) & (xi >= 0) & (yi < h) & (xi < w)).reshape(b, 1, -1)
        index = (yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)).reshape(b, 1, -1).expand(b, ch, -1)
        return torch.gather(flat, 2, index) * valid.to(x.dtype)

    q11 = read(y0, x0)
    q21 = read(y0, x0 + 1)
    q12 = read(y0 + 1, x0)
    q22 = read(y0 + 1, x0 + 1)
    upper = (1.0 - fx) * q11 + fx * q21
    lower = (1.0 - fx) * q12 + fx * q22
    out = fy * lower + (1.0 - fy) * upper
    out = out * inside.reshape(b, 1, -1).to(x.dtype)
    return out.reshape(b, ch, output_height, output_width)


def transform_landmarks_v2(landmarks: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """MediaPipe ``TransformLandmarks`` v2: (x, y) -> first two rows of ``matrix`` applied to
    (x, y, 0, 1); z (if present) is copied. landmarks [B, N, 2 or 3], matrix [B, 4, 4]."""
    x = landmarks[..., 0]
    y = landmarks[..., 1]
    m = matrix
    nx = m[:, 0, 0, None] * x + m[:, 0, 1, None] * y + m[:, 0, 3, None]
    ny = m[:, 1, 0, None] * x + m[:, 1, 1, None] * y + m[:, 1, 3, None]
    parts = [nx.unsqueeze(-1), ny.unsqueeze(-1)]
    if landmarks.shape[-1] > 2:
        parts.append(landmarks[..., 2:])
    return torch.cat(parts, -1)


# ----------------------------------------------------------------------------------------------
# Converter
# ----------------------------------------------------------------------------------------------
SUPPORTED_OPS = (
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "PRELU",
    "ADD",
    "SUB",
    "MUL",
    "DIV",
    "MAX_POOL_2D",
    "AVERAGE_POOL_2D",
    "PAD",
    "PADV2",
    "RESHAPE",
    "CONCATENATION",
    "DEQUANTIZE",
    "STRIDED_SLICE",
    "LOGISTIC",
    "RELU",
    "RELU6",
    "TANH",
    "Landmarks2TransformMatrix",
    "TransformTensorBilinear",
    "TransformLandmarks",
)


def _to_nhwc(t: torch.Tensor) -> torch.Tensor:
    return t.permute(0, 2, 3, 1)


def _to_nchw(t: torch.Tensor) -> torch.Tensor:
    return t.permute(0, 3, 1, 2)


def _broadcast_const_nchw(c: np.ndarray) -> np.ndarray:
    """A constant of TFLite rank <= 4 broadcast against a rank-4 NHWC tensor -> NCHW-broadcastable."""
    c4 = c.reshape((1,) * (4 - c.ndim) + c.shape)
    return np.ascontiguousarray(c4.transpose(0, 3, 1, 2))


class TFLiteModule(nn.Module):
    """Executes a float TFLite graph with PyTorch ops (differentiable).

    ``forward(*inputs)`` takes the graph inputs in order; rank-4 inputs in **NCHW** (TFLite NHWC
    permuted), any batch size. It returns the list of graph outputs in **TFLite layout** (rank-4
    outputs NHWC) with the batch dimension first. :meth:`run` can also return intermediate tensors.
    """

    def __init__(self, graph: TFLiteGraph):
        super().__init__()
        self.graph_inputs = tuple(graph.inputs)
        self.graph_outputs = tuple(graph.outputs)
        self.tensor_names = [t.name for t in graph.tensors]
        self.tensor_shapes = [t.shape for t in graph.tensors]
        self._const_names: dict[tuple[int, str], str] = {}
        self._steps: list[tuple[str, tuple[int, ...], tuple[int, ...], dict[str, Any]]] = []
        self._graph = graph  # kept for building only; dropped at the end of __init__
        for op in graph.operators:
            if op.op == "DEQUANTIZE" and graph.is_constant(op.inputs[0]):
                continue  # folded: consumers read the float32 constant directly
            builder = getattr(self, "_build_" + op.op, None)
            if builder is None:
                raise NotImplementedError(
                    f"TFLite op {op.op!r} (operator {op.index}) is not supported; supported: {SUPPORTED_OPS}"
                )
            builder(op)
        self._free_after = self._liveness()
        del self._graph

    # -- building helpers ------------------------------------------------------------------
    def _const(self, index: int, key: str = "raw", transform=None) -> str:
        name = self._const_names.get((index, key))
        if name is None:
            value = self._graph.constant(index)
            if transform is not None:
                value = transform(value)
            name = f"c{index}_{key}"
            self.register_buffer(name, torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)))
            self._const_names[(index, key)] = name
        return name

    def _index_buffer(self, key: int, values) -> str:
        name = f"idx{key}"
        self.register_buffer(name, torch.tensor([int(v) for v in values], dtype=torch.long), persistent=False)
        return name

    def _rank(self, index: int) -> int:
        return len(self.tensor_shapes[index])

    def _operand(self, index: int, out_rank: int) -> tuple[str, Any]:
        """('const', buffer name) prepared for broadcasting against an output of rank out_rank, or
        ('env', index) for an activation."""
        if self._graph.is_constant(index):
            if out_rank == 4:
                return "const", self._const(index, "nchw4", _broadcast_const_nchw)
            return "const", self._const(index)
        return "env", index

    def _add_step(self, kind: str, op: OperatorInfo, inputs: Sequence[int], **params: Any) -> None:
        self._steps.append((kind, tuple(inputs), tuple(op.outputs), params))

    def _build_CONV_2D(self, op: OperatorInfo) -> None:
        w = self._const(op.inputs[1], "oihw", lambda a: a.transpose(0, 3, 1, 2))
        b = self._const(op.inputs[2]) if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
        o = op.options
        self._add_step("conv", op, op.inputs[:1], w=w, b=b, groups=1, **_conv_params(o))

    def _build_DEPTHWISE_CONV_2D(self, op: OperatorInfo) -> None:
        # TFLite [1, KH, KW, C*M] -> torch [C*M, 1, KH, KW], groups = C
        w = self._const(op.inputs[1], "oihw", lambda a: a.transpose(3, 0, 1, 2))
        b = self._const(op.inputs[2]) if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
        in_ch = self.tensor_shapes[op.inputs[0]][3]
        self._add_step("conv", op, op.inputs[:1], w=w, b=b, groups=in_ch, **_conv_params(op.options))

    def _build_PRELU(self, op: OperatorInfo) -> None:
        alpha = self._graph.constant(op.inputs[1]) if self._graph.is_constant(op.inputs[1]) else None
        if alpha is not None and self._rank(op.inputs[0]) == 4 and alpha.size == alpha.shape[-1]:
            # per-channel alpha -> F.prelu on NCHW
            name = self._const(op.inputs[1], "vec", lambda a: a.reshape(-1))
            self._add_step("prelu_channel", op, op.inputs[:1], alpha=name)
        else:
            self._add_step(
                "prelu", op, op.inputs[:1], alpha=self._operand(op.inputs[1], self._rank(op.outputs[0]))
            )

    def _build_binary(self, op: OperatorInfo, fn: str) -> None:
        r = self._rank(op.outputs[0])
        a = self._operand(op.inputs[0], r)
        b = self._operand(op.inputs[1], r)
        self._add_step("binary", op, [], fn=fn, a=a, b=b, act=op.options.get("activation", "NONE"))

    def _build_ADD(self, op: OperatorInfo) -> None:
        self._build_binary(op, "add")

    def _build_SUB(self, op: OperatorInfo) -> None:
        self._build_binary(op, "sub")

    def _build_MUL(self, op: OperatorInfo) -> None:
        self._build_binary(op, "mul")

    def _build_DIV(self, op: OperatorInfo) -> None:
        self._build_binary(op, "div")

    def _build_pool(self, op: OperatorInfo, kind: str) -> None:
        o = op.options
        self._add_step(
            "pool", op, op.inputs[:1], pool=kind, kernel=o["filter"], stride=o["stride"],
            padding=o["padding"], act=o["activation"],
        )  # fmt: skip

    def _build_MAX_POOL_2D(self, op: OperatorInfo) -> None:
        self._build_pool(op, "MAX")

    def _build_AVERAGE_POOL_2D(self, op: OperatorInfo) -> None:
        self._build_pool(op, "AVG")

    def _build_PAD(self, op: OperatorInfo) -> None:
        pads = self._graph.constant(op.inputs[1]).astype(np.int64)
        if pads.shape[0] >= 1 and (pads[0] != 0).any():
            raise NotImplementedError("padding of the batch dimension")
        rank = pads.shape[0]
        if rank == 4:
            torch_pads = []
            for ax in (2, 1, 3):  # F.pad on NCHW starts with W, then H, then C (NHWC axes 2, 1, 3)
                torch_pads += [int(pads[ax, 0]), int(pads[ax, 1])]
        else:
            torch_pads = []
            for ax in range(rank - 1, 0, -1):
                torch_pads += [int(pads[ax, 0]), int(pads[ax, 1])]
        value = 0.0
        if op.op == "PADV2" and len(op.inputs) > 2:
            value = float(self._graph.constant(op.inputs[2]).reshape(-1)[0])
        self._add_step("pad", op, op.inputs[:1], pads=tuple(torch_pads), value=value)

    _build_PADV2 = _build_PAD

    def _build_RESHAPE(self, op: OperatorInfo) -> None:
        in_shape = self.tensor_shapes[op.inputs[0]]
        out_shape = self.tensor_shapes[op.outputs[0]]
        batched = len(in_shape) > 0 and len(out_shape) > 0 and in_shape[0] == 1 and out_shape[0] == 1
        self._add_step(
            "reshape", op, op.inputs[:1], in_rank=len(in_shape), out_shape=tuple(out_shape), batched=batched
        )

    def _build_CONCATENATION(self, op: OperatorInfo) -> None:
        r = self._rank(op.outputs[0])
        axis = op.options["axis"] % r
        if r == 4:
            axis = _NHWC_TO_NCHW_AXIS[axis]
        operands = [self._operand(i, r) if self._graph.is_constant(i) else ("env", i) for i in op.inputs]
        self._add_step("concat", op, [], operands=operands, axis=axis, act=op.options["activation"])

    def _build_STRIDED_SLICE(self, op: OperatorInfo) -> None:
        o = op.options
        if o["ellipsis_mask"] or o["new_axis_mask"] or o.get("offset"):
            raise NotImplementedError("STRIDED_SLICE with ellipsis/new-axis masks or offset")
        begin = self._graph.constant(op.inputs[1]).astype(np.int64).tolist()
        end = self._graph.constant(op.inputs[2]).astype(np.int64).tolist()
        strides = self._graph.constant(op.inputs[3]).astype(np.int64).tolist()
        shape = self.tensor_shapes[op.inputs[0]]
        slices: list[Any] = [slice(None)]  # dimension 0 is the batch: kept whole
        if not (
            (o["begin_mask"] & 1 or begin[0] == 0) and (o["end_mask"] & 1 or end[0] >= 1) and strides[0] == 1
        ):
            raise NotImplementedError("STRIDED_SLICE over the batch dimension")
        if o["shrink_axis_mask"] & 1:
            raise NotImplementedError("STRIDED_SLICE shrinking the batch dimension")
        for d in range(1, len(shape)):
            b = None if o["begin_mask"] >> d & 1 else begin[d]
            e = None if o["end_mask"] >> d & 1 else end[d]
            if o["shrink_axis_mask"] >> d & 1:
                slices.append(begin[d])
            else:
                slices.append(slice(b, e, strides[d]))
        self._add_step(
            "strided_slice", op, op.inputs[:1], slices=tuple(slices), in_rank=len(shape),
            out_rank=self._rank(op.outputs[0]),
        )  # fmt: skip

    def _build_LOGISTIC(self, op: OperatorInfo) -> None:
        self._add_step("unary", op, op.inputs[:1], fn="sigmoid")

    def _build_RELU(self, op: OperatorInfo) -> None:
        self._add_step("unary", op, op.inputs[:1], fn="RELU")

    def _build_RELU6(self, op: OperatorInfo) -> None:
        self._add_step("unary", op, op.inputs[:1], fn="RELU6")

    def _build_TANH(self, op: OperatorInfo) -> None:
        self._add_step("unary", op, op.inputs[:1], fn="TANH")

    def _build_Landmarks2TransformMatrix(self, op: OperatorInfo) -> None:
        if op.version != 2:
            raise NotImplementedError(f"Landmarks2TransformMatrix version {op.version}")
        o = op.options
        self._add_step(
            "lm2tm", op, op.inputs[:1],
            left=int(o["left_rotation_idx"]), right=int(o["right_rotation_idx"]),
            subset=self._index_buffer(op.index, o["subset_idxs"]),
            target=float(o.get("target_rotation_radians", 0.0)),
            out_w=int(o["output_width"]), out_h=int(o["output_height"]),
            scale_x=float(o["scale_x"]), scale_y=float(o["scale_y"]),
        )  # fmt: skip

    def _build_TransformTensorBilinear(self, op: OperatorInfo) -> None:
        if op.version != 2:
            raise NotImplementedError(f"TransformTensorBilinear version {op.version}")
        o = op.options
        self._add_step("ttb", op, op.inputs[:2], out_h=int(o["output_height"]), out_w=int(o["output_width"]))

    def _build_TransformLandmarks(self, op: OperatorInfo) -> None:
        if op.version != 2:
            raise NotImplementedError(f"TransformLandmarks version {op.version}")
        if self._rank(op.inputs[0]) != 3:
            raise NotImplementedError("TransformLandmarks v2 expects [1, N, D] landmarks")
        self._add_step("tlm", op, op.inputs[:2])

    def _liveness(self) -> list[tuple[int, ...]]:
        """For each step, the activations whose last use it is (freed after the step)."""
        uses: list[list[int]] = []
        for _, inputs, _, params in self._steps:
            used = list(inputs)
            for key in ("a", "b", "alpha"):
                v = params.get(key)
                if isinstance(v, tuple) and v[0] == "env":
                    used.append(v[1])
            for kind, v in params.get("operands", ()):
                if kind == "env":
                    used.append(v)
            uses.append(used)
        last: dict[int, int] = {}
        for si, used in enumerate(uses):
            for i in used:
                last[i] = si
        free: list[list[int]] = [[] for _ in self._steps]
        for i, si in last.items():
            free[si].append(i)
        return [tuple(f) for f in free]

    # -- execution ----------------------------------------------------------------------------
    def _get(self, env: dict[int, torch.Tensor], spec: tuple[str, Any]) -> torch.Tensor:
        kind, v = spec
        return getattr(self, v) if kind == "const" else env[v]

    def _align(self, t: torch.Tensor, index: int | None, out_rank: int) -> torch.Tensor:
        """Bring an activation of a different TFLite rank into broadcast position (rank-4 = NCHW)."""
        if index is None or out_rank != 4:
            return t
        r = self._rank(index)
        if r == 4:
            return t
        # lower-rank activation broadcast against NHWC (trailing dims) -> NCHW
        t4 = t.reshape((1,) * (4 - t.dim()) + tuple(t.shape))
        return _to_nchw(t4)

    def _exec(self, kind: str, inputs, outputs, p, env) -> torch.Tensor:  # noqa: C901 - op switch
        if kind == "conv":
            y = conv2d(env[inputs[0]], getattr(self, p["w"]), getattr(self, p["b"]) if p["b"] else None,
                       p["stride"], p["dilation"], p["padding"], p["groups"])  # fmt: skip
            return activation(y, p["act"])
        if kind == "prelu_channel":
            return F.prelu(env[inputs[0]], getattr(self, p["alpha"]))
        if kind == "prelu":
            x = env[inputs[0]]
            a = self._get(env, p["alpha"])
            return torch.where(x >= 0, x, a * x)
        if kind == "binary":
            r = self._rank(outputs[0])
            a = self._align(self._get(env, p["a"]), p["a"][1] if p["a"][0] == "env" else None, r)
            b = self._align(self._get(env, p["b"]), p["b"][1] if p["b"][0] == "env" else None, r)
            fn = p["fn"]
            y = a + b if fn == "add" else a - b if fn == "sub" else a * b if fn == "mul" else a / b
            return activation(y, p["act"])
        if kind == "pool":
            return activation(
                pool2d(env[inputs[0]], p["pool"], p["kernel"], p["stride"], p["padding"]), p["act"]
            )
        if kind == "pad":
            return F.pad(env[inputs[0]], p["pads"], value=p["value"])
        if kind == "reshape":
            x = env[inputs[0]]
            if p["in_rank"] == 4:
                x = _to_nhwc(x)
            out_shape = p["out_shape"]
            y = x.reshape((x.shape[0],) + out_shape[1:]) if p["batched"] else x.reshape(out_shape)
            return _to_nchw(y) if len(out_shape) == 4 else y
        if kind == "concat":
            r = self._rank(outputs[0])
            parts = [
                self._align(self._get(env, s), s[1] if s[0] == "env" else None, r) for s in p["operands"]
            ]
            b = max(t.shape[0] for t in parts)
            parts = [t.expand((b,) + tuple(t.shape[1:])) if t.shape[0] != b else t for t in parts]
            return activation(torch.cat(parts, p["axis"]), p["act"])
        if kind == "strided_slice":
            x = env[inputs[0]]
            if p["in_rank"] == 4:
                x = _to_nhwc(x)
            y = x[p["slices"]]
            return _to_nchw(y) if p["out_rank"] == 4 else y
        if kind == "unary":
            x = env[inputs[0]]
            return torch.sigmoid(x) if p["fn"] == "sigmoid" else activation(x, p["fn"])
        if kind == "lm2tm":
            lm = env[inputs[0]]
            return landmarks_to_transform_matrix_v2(
                lm,
                p["left"],
                p["right"],
                getattr(self, p["subset"]),
                p["target"],
                p["out_w"],
                p["out_h"],
                p["scale_x"],
                p["scale_y"],
            )
        if kind == "ttb":
            return transform_tensor_bilinear_v2(env[inputs[0]], env[inputs[1]], p["out_h"], p["out_w"])
        if kind == "tlm":
            return transform_landmarks_v2(env[inputs[0]], env[inputs[1]])
        raise AssertionError(kind)

    def run(
        self, inputs: Sequence[torch.Tensor], outputs: Sequence[int] | None = None
    ) -> dict[int, torch.Tensor]:
        """Execute; return {tensor index: value} for ``outputs`` (graph outputs by default), each in
        the internal layout (rank-4 tensors NCHW)."""
        want = tuple(self.graph_outputs if outputs is None else outputs)
        keep = set(want)
        env: dict[int, torch.Tensor] = {}
        for i, x in zip(self.graph_inputs, inputs, strict=True):
            env[i] = x
        for si, (kind, ins, outs, params) in enumerate(self._steps):
            env[outs[0]] = self._exec(kind, ins, outs, params, env)
            for i in self._free_after[si]:
                if i not in keep:
                    env.pop(i, None)
        missing = [i for i in want if i not in env]
        if missing:
            raise KeyError(f"tensors not computed: {[self.tensor_names[i] for i in missing]}")
        return {i: env[i] for i in want}

    def forward(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        res = self.run(inputs)
        outs = []
        for i in self.graph_outputs:
            t = res[i]
            outs.append(_to_nhwc(t) if self._rank(i) == 4 else t)
        return outs


def _conv_params(o: dict[str, Any]) -> dict[str, Any]:
    return {"stride": o["stride"], "dilation": o["dilation"], "padding": o["padding"], "act": o["activation"]}


def tflite_to_torch(graph_or_path) -> TFLiteModule:
    """Convenience: path/bytes/TFLiteGraph -> :class:`TFLiteModule`."""
    from .tflite_graph import load_tflite

    graph = graph_or_path if isinstance(graph_or_path, TFLiteGraph) else load_tflite(graph_or_path)
    return TFLiteModule(graph)
