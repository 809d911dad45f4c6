"""MediaPipe face-landmark networks (face mesh) as differentiable PyTorch modules.

``FaceLandmarkNet.from_mediapipe('attention' | 'basic')`` reads the ``.tflite`` shipped in the
installed ``mediapipe`` package (0.10.21) and re-executes it with :class:`~reenact.mpdiff.ops.TFLiteModule`.

Input: float tensor in [0, 1], RGB, 192 x 192, **[B, 3, 192, 192]** (NCHW, preferred) or
[B, 192, 192, 3] (NHWC, recognised by its last dimension being 3). This is exactly the tensor
MediaPipe's ``ImageToTensorCalculator`` feeds the model (``output_tensor_float_range {0, 1}``).

Output: ``(points [B, K, 3], presence_logit [B])``.

* points are in 192-crop pixels: x right, y down, in the coordinate frame MediaPipe uses for the
  crop (``x_norm * 192`` of its normalized landmarks before projection). z is the model's relative
  depth in the same pixel scale (MediaPipe divides it by 192 too; smaller = closer to the camera).
* 'basic' (``face_landmark.tflite``): K = 468.
* 'attention' (``face_landmark_with_attention.tflite``): K = 478, refined exactly like MediaPipe's
  ``TensorsToFaceLandmarksWithAttention`` graph: mesh 468 (x, y, z), lips 80 / eyes 71+71 replace
  the x, y of their mesh points (z kept), irises 5+5 appended (468..477) with z = mean z of the
  16 eye-contour points.
* presence logit: MediaPipe's face flag before the sigmoid (MediaPipe thresholds sigmoid(logit)).

``mediapipe_reference`` runs MediaPipe's own ``InferenceCalculator`` (TFLite runtime, XNNPACK or
the built-in kernels) on a 192 x 192 uint8 crop, for exactness tests.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import numpy as np
import torch
from torch import nn

from .ops import TFLiteModule
from .tflite_graph import TFLiteGraph, load_tflite, mediapipe_model_path

__all__ = [
    "FaceLandmarkNet",
    "MODEL_FILES",
    "LIPS_IDX",
    "LEFT_EYE_IDX",
    "RIGHT_EYE_IDX",
    "LEFT_IRIS_IDX",
    "RIGHT_IRIS_IDX",
    "LEFT_EYE_CONTOUR_IDX",
    "RIGHT_EYE_CONTOUR_IDX",
    "mediapipe_reference",
    "cuda_graphed",
]

INPUT_SIZE = 192
MODEL_FILES = {"basic": "face_landmark.tflite", "attention": "face_landmark_with_attention.tflite"}

# Refinement index maps of MediaPipe's tensors_to_face_landmarks_with_attention.pbtxt (data).
LIPS_IDX = (
    61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291,  # lower outer
    185, 40, 39, 37, 0, 267, 269, 270, 409,  # upper outer (no corners)
    78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308,  # lower inner
    191, 80, 81, 82, 13, 312, 311, 310, 415,  # upper inner
    76, 77, 90, 180, 85, 16, 315, 404, 320, 307, 306,  # lower semi-outer
    184, 74, 73, 72, 11, 302, 303, 304, 408,  # upper semi-outer
    62, 96, 89, 179, 86, 15, 316, 403, 319, 325, 292,  # lower semi-inner
    183, 42, 41, 38, 12, 268, 271, 272, 407,  # upper semi-inner
)  # fmt: skip
LEFT_EYE_IDX = (
    33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173,  # contour
    130, 25, 110, 24, 23, 22, 26, 112, 243, 247, 30, 29, 27, 28, 56, 190,  # halo x2
    226, 31, 228, 229, 230, 231, 232, 233, 244, 113, 225, 224, 223, 222, 221, 189,  # halo x3
    35, 124, 46, 53, 52, 65,  # halo x4 / brow inner
    143, 111, 117, 118, 119, 120, 121, 128, 245, 156, 70, 63, 105, 66, 107, 55, 193,  # halo x5 / brow
)  # fmt: skip
RIGHT_EYE_IDX = (
    263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398,
    359, 255, 339, 254, 253, 252, 256, 341, 463, 467, 260, 259, 257, 258, 286, 414,
    446, 261, 448, 449, 450, 451, 452, 453, 464, 342, 445, 444, 443, 442, 441, 413,
    265, 353, 276, 283, 282, 295,
    372, 340, 346, 347, 348, 349, 350, 357, 465, 383, 300, 293, 334, 296, 336, 285, 417,
)  # fmt: skip
LEFT_EYE_CONTOUR_IDX = LEFT_EYE_IDX[:16]
RIGHT_EYE_CONTOUR_IDX = RIGHT_EYE_IDX[:16]
LEFT_IRIS_IDX = (468, 469, 470, 471, 472)  # centre, right, top, left, bottom edge
RIGHT_IRIS_IDX = (473, 474, 475, 476, 477)

_OUTPUTS = {
    "basic": {"mesh": "conv2d_21", "presence": "conv2d_31"},
    "attention": {
        "mesh": "output_mesh_identity",
        "lips": "output_lips",
        "left_eye": "output_left_eye",
        "right_eye": "output_right_eye",
        "left_iris": "output_left_iris",
        "right_iris": "output_right_iris",
        "presence": "conv_faceflag",
    },
}


def _model_kind(model: str) -> str:
    kind = {
        "attention": "attention",
        "with_attention": "attention",
        "refine": "attention",
        "basic": "basic",
    }.get(model)
    if kind is None:
        raise ValueError(f"model must be 'attention' or 'basic', got {model!r}")
    return kind


class FaceLandmarkNet(nn.Module):
    """Differentiable MediaPipe face mesh network. See the module docstring for I/O conventions."""

    def __init__(self, graph: TFLiteGraph, model: str = "attention", exact_fp32: bool = True):
        super().__init__()
        self.model = _model_kind(model)
        # On CUDA, cuDNN's TF32 (on by default in PyTorch) moves points by ~1e-2 px; the forward pass
        # turns it off while it runs (gradients follow the global setting).
        self.exact_fp32 = exact_fp32
        self.net = TFLiteModule(graph)
        names = {t.name: t.index for t in graph.tensors}
        self._out_index = {k: names[v] for k, v in _OUTPUTS[self.model].items()}
        missing = [i for i in self._out_index.values() if i not in graph.outputs]
        if missing:
            raise ValueError(f"{graph.path}: unexpected graph outputs for model {self.model!r}")
        self.num_points = 478 if self.model == "attention" else 468
        for name, idx in (
            ("lips_idx", LIPS_IDX), ("left_eye_idx", LEFT_EYE_IDX), ("right_eye_idx", RIGHT_EYE_IDX),
            ("left_contour_idx", LEFT_EYE_CONTOUR_IDX), ("right_contour_idx", RIGHT_EYE_CONTOUR_IDX),
        ):  # fmt: skip
            self.register_buffer(name, torch.tensor(idx, dtype=torch.long), persistent=False)

    @classmethod
    def from_mediapipe(
        cls,
        model: str = "attention",
        device: str | torch.device | None = None,
        path: str | os.PathLike | None = None,
    ) -> FaceLandmarkNet:
        """Build from the model shipped in the installed mediapipe package (or ``path``); eval mode,
        weights frozen (requires_grad False: they are buffers), on ``device``."""
        kind = _model_kind(model)
        graph = load_tflite(path if path is not None else mediapipe_model_path(MODEL_FILES[kind]))
        net = cls(graph, kind).eval()
        if device is not None:
            net = net.to(device)
        return net

    @staticmethod
    def _as_nchw(image: torch.Tensor) -> torch.Tensor:
        if image.dim() != 4:
            raise ValueError(f"expected a 4-D batch, got shape {tuple(image.shape)}")
        if image.shape[1] == 3 and image.shape[2:] == (INPUT_SIZE, INPUT_SIZE):
            return image
        if image.shape[3] == 3 and image.shape[1:3] == (INPUT_SIZE, INPUT_SIZE):
            return image.permute(0, 3, 1, 2)
        raise ValueError(f"expected [B,3,192,192] or [B,192,192,3], got {tuple(image.shape)}")

    def forward_raw(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """All model outputs, flattened per sample: {'mesh': [B,1404], 'lips': [B,160], ...,
        'presence': [B]} (crop pixels)."""
        x = self._as_nchw(image)
        ctx = _no_tf32() if (self.exact_fp32 and x.is_cuda) else contextlib.nullcontext()
        with ctx:
            res = self.net.run([x], list(self._out_index.values()))
        out = {k: res[i].reshape(x.shape[0], -1) for k, i in self._out_index.items()}
        out["presence"] = out["presence"][:, 0]
        return out

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw = self.forward_raw(image)
        return self.points_from_raw(raw), raw["presence"]

    def points_from_raw(self, raw: dict[str, torch.Tensor]) -> torch.Tensor:
        b = raw["mesh"].shape[0]
        mesh = raw["mesh"].reshape(b, 468, 3)
        if self.model == "basic":
            return mesh
        xy = mesh[..., :2].clone()
        xy[:, self.lips_idx] = raw["lips"].reshape(b, -1, 2)
        xy[:, self.left_eye_idx] = raw["left_eye"].reshape(b, -1, 2)
        xy[:, self.right_eye_idx] = raw["right_eye"].reshape(b, -1, 2)
        z = mesh[..., 2:]
        pts = torch.cat([xy, z], -1)
        z_left = z[:, self.left_contour_idx].mean(1, keepdim=True).expand(b, 5, 1)
        z_right = z[:, self.right_contour_idx].mean(1, keepdim=True).expand(b, 5, 1)
        left_iris = torch.cat([raw["left_iris"].reshape(b, 5, 2), z_left], -1)
        right_iris = torch.cat([raw["right_iris"].reshape(b, 5, 2), z_right], -1)
        return torch.cat([pts, left_iris, right_iris], 1)


@contextlib.contextmanager
def _no_tf32():
    """cuDNN convolutions in full fp32 inside the block (the network has no matmuls)."""
    previous = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = previous


# ----------------------------------------------------------------------------------------------
# MediaPipe's own runtime on a given crop (reference for tests)
# ----------------------------------------------------------------------------------------------
def _reference_graph(n_outputs: int, delegate: str, refined_calc: str) -> str:
    split = " ".join(f'output_stream: "t{i}"' for i in range(n_outputs))
    ranges = " ".join(f"ranges {{ begin: {i} end: {i + 1} }}" for i in range(n_outputs))
    floats = "\n".join(
        f'node {{ calculator: "TensorsToFloatsCalculator" input_stream: "TENSORS:t{i}" output_stream: "FLOATS:f{i}" }}'
        for i in range(n_outputs)
    )
    infer = (
        'node {{ calculator: "InferenceCalculator" input_stream: "TENSORS:input_tensors" '
        'input_side_packet: "MODEL:model" input_side_packet: "OP_RESOLVER:op_resolver" '
        'output_stream: "TENSORS:{out}" options {{ [mediapipe.InferenceCalculatorOptions.ext] '
        "{{ delegate {{ {d} {{}} }} }} }} }}"
    )
    outs = "".join(f'output_stream: "f{i}"\n' for i in range(n_outputs))
    return f"""
input_stream: "image"
output_stream: "fin"
output_stream: "refined"
{outs}
node {{ calculator: "ImageToTensorCalculator" input_stream: "IMAGE:image" output_stream: "TENSORS:input_tensors"
  options {{ [mediapipe.ImageToTensorCalculatorOptions.ext] {{ output_tensor_width: 192 output_tensor_height: 192
    keep_aspect_ratio: false output_tensor_float_range {{ min: 0.0 max: 1.0 }} border_mode: BORDER_REPLICATE }} }} }}
node {{ calculator: "FaceLandmarksModelLoader" input_side_packet: "WITH_ATTENTION:with_attention"
  output_side_packet: "MODEL:model" }}
node {{ calculator: "TfLiteCustomOpResolverCalculator" output_side_packet: "OP_RESOLVER:op_resolver" }}
{infer.format(out="output_tensors", d=delegate)}
{infer.format(out="output_tensors2", d=delegate)}
node {{ calculator: "SplitTensorVectorCalculator" input_stream: "output_tensors" {split}
  options {{ [mediapipe.SplitVectorCalculatorOptions.ext] {{ {ranges} }} }} }}
{floats}
node {{ calculator: "TensorsToFloatsCalculator" input_stream: "TENSORS:input_tensors" output_stream: "FLOATS:fin" }}
node {{ calculator: "{refined_calc}" input_stream: "TENSORS:output_tensors2" output_stream: "LANDMARKS:refined" }}
"""


def mediapipe_reference(
    crop: np.ndarray, model: str = "attention", delegate: str = "xnnpack"
) -> dict[str, Any]:
    """Run MediaPipe's own TFLite inference (``InferenceCalculator``, custom-op resolver of the face
    mesh) on one 192x192x3 uint8 RGB crop.

    The crop goes through ``ImageToTensorCalculator`` with the ROI equal to the whole image (identity
    warp), so the model sees exactly ``crop / 255``. Returns a dict with numpy float32 arrays:
    'input' [192,192,3] (the tensor MediaPipe fed the model), the raw outputs by role ('mesh',
    'lips', ..., 'presence' as a scalar), and 'points' [K,3]: MediaPipe's own decoding/refinement
    (``TensorsToFaceLandmarks[WithAttention]``) scaled back from normalized to 192-pixel units.
    ``delegate``: 'xnnpack' (what the face mesh solution uses on CPU) or 'tflite' (built-in kernels).
    """
    import mediapipe as mp
    from mediapipe.python import packet_creator, packet_getter
    from mediapipe.python._framework_bindings import calculator_graph, resource_util

    kind = _model_kind(model)
    crop = np.ascontiguousarray(crop)
    if crop.shape != (INPUT_SIZE, INPUT_SIZE, 3) or crop.dtype != np.uint8:
        raise ValueError(f"crop must be uint8 [192,192,3], got {crop.dtype} {crop.shape}")
    root = os.path.dirname(os.path.dirname(mp.__file__))
    resource_util.set_resource_dir(root)  # model paths in the graphs are relative to site-packages
    roles = list(_OUTPUTS[kind].keys())  # graph output order == dict order (checked in tests)
    refined = "TensorsToFaceLandmarksWithAttention" if kind == "attention" else "TensorsToFaceLandmarks"
    graph = calculator_graph.CalculatorGraph(graph_config=_reference_graph(len(roles), delegate, refined))
    res: dict[str, Any] = {}

    def keep(name: str, getter):
        graph.observe_output_stream(name, lambda _s, p: res.__setitem__(name, getter(p)))

    for i in range(len(roles)):
        keep(f"f{i}", lambda p: np.asarray(packet_getter.get_float_list(p), np.float32))
    keep("fin", lambda p: np.asarray(packet_getter.get_float_list(p), np.float32))
    keep("refined", packet_getter.get_proto)
    graph.start_run(input_side_packets={"with_attention": packet_creator.create_bool(kind == "attention")})
    frame = packet_creator.create_image_frame(image_format=mp.ImageFormat.SRGB, data=crop)
    graph.add_packet_to_input_stream("image", frame.at(0))
    graph.close()
    out: dict[str, Any] = {"input": res["fin"].reshape(INPUT_SIZE, INPUT_SIZE, 3)}
    for i, role in enumerate(roles):
        out[role] = res[f"f{i}"]
    out["presence"] = float(out["presence"][0])
    lm = res["refined"].landmark
    out["points"] = np.array([[p.x, p.y, p.z] for p in lm], np.float32) * np.float32(INPUT_SIZE)
    return out


def cuda_graphed(net: FaceLandmarkNet, batch_size: int, requires_grad: bool = True):
    """Wrap ``net.forward`` in CUDA graphs (``torch.cuda.make_graphed_callables``) for a fixed batch
    size: removes the per-op launch overhead that dominates at small batches (hundreds of small
    kernels). The returned callable takes a contiguous CUDA [batch_size, 3, 192, 192] tensor and
    returns (points, presence_logit) like ``net``; with ``requires_grad`` the backward pass is graphed
    too (the input must then require grad). ``net`` itself is left unchanged."""
    dev = next(iter(net.buffers())).device
    if dev.type != "cuda":
        raise ValueError("cuda_graphed needs the network on a CUDA device")
    sample = torch.rand(batch_size, 3, INPUT_SIZE, INPUT_SIZE, device=dev, requires_grad=requires_grad)

    def run(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return net(image)

    return torch.cuda.make_graphed_callables(run, (sample,))
