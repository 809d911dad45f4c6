"""MediaPipe face-landmark networks re-executed in PyTorch (differentiable).

The networks are read at run time from the ``.tflite`` files shipped in the installed ``mediapipe``
package (0.10.21); no weights are committed.

    from reenact.mpdiff import FaceLandmarkNet, crop
    net = FaceLandmarkNet.from_mediapipe("attention", device)      # 478 points, or "basic": 468
    affine = crop.rect_to_affine(crop.roi_from_landmarks(points_px).detach())
    x = crop.crop_frame(frame, affine)                 # [B,3,H,W] in [-1,1] -> [B,3,192,192] in [0,1]
    pts, presence_logit = net(x)                       # [B,478,3] in 192-crop pixels, [B]
    pts_frame = crop.points_to_frame(pts, affine)      # back to frame pixels

Modules: ``tflite_graph`` (flatbuffer reader), ``ops`` (TFLite ops in torch + graph converter),
``face_landmark`` (the networks, MediaPipe's refinement, MediaPipe reference runner, CUDA graphs),
``crop`` (differentiable crop / ROI recipe / projection).
"""

from . import crop
from .face_landmark import FaceLandmarkNet, cuda_graphed, mediapipe_reference
from .ops import TFLiteModule, tflite_to_torch
from .tflite_graph import TFLiteGraph, load_tflite, mediapipe_model_path

__all__ = [
    "FaceLandmarkNet",
    "TFLiteGraph",
    "TFLiteModule",
    "crop",
    "cuda_graphed",
    "load_tflite",
    "mediapipe_model_path",
    "mediapipe_reference",
    "tflite_to_torch",
]
