"""How `produce` stores a method's output frames for `score` (numpy and OpenCV only: both phases read it).

"npz" (default): the uint8 frames, lossless (np.savez_compressed), about 0.15 MB per 256 px frame.
"jpg": each frame JPEG-encoded at quality JPEG_QUALITY inside the same .npz (about 0.02 MB per 256 px
frame, ~8x smaller): for moving the outputs of a long driving video from a GPU machine to the scoring
machine. Lossy: scoring the same 96 outputs (256 px) both ways gave identity distance 0.329 / 0.326, the
same expression error and mouth correlation at the tables' precision (0.038, 0.61), eye correlation 0.67
/ 0.66 and jitter ratio 0.25 / 0.26 (docs/RESULTS.md, fourth session).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

FORMATS = ("npz", "jpg")
JPEG_QUALITY = 95


def save(path: str | Path, frames: np.ndarray, fmt: str = "npz", **arrays) -> None:
    """Write frames [T, H, W, 3] uint8 RGB (and any per-frame arrays) to `path` (.npz) in format `fmt`."""
    if fmt not in FORMATS:
        raise ValueError(f"frames format {fmt!r}: one of {FORMATS}")
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    if fmt == "npz":
        np.savez_compressed(path, frames=frames, **arrays)
        return
    blobs = []
    for frame in frames:
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(frame[:, :, ::-1]),
                               [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise ValueError(f"JPEG encoding failed for a frame of shape {frame.shape}")
        blobs.append(buf.tobytes())
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    np.savez(path, frames_jpg=np.frombuffer(b"".join(blobs), np.uint8), frames_jpg_offsets=offsets,
             frames_shape=np.array(frames.shape, np.int64), **arrays)


def load(path: str | Path) -> np.ndarray:
    """The frames [T, H, W, 3] uint8 RGB of a file written by `save` (either format)."""
    with np.load(path) as z:
        if "frames" in z.files:
            return z["frames"]
        if "frames_jpg" not in z.files:
            raise ValueError(f"{path}: no output frames (neither 'frames' nor 'frames_jpg')")
        data, offsets, shape = z["frames_jpg"], z["frames_jpg_offsets"], tuple(z["frames_shape"])
    out = np.empty(shape, np.uint8)
    for i in range(shape[0]):
        img = cv2.imdecode(data[offsets[i]:offsets[i + 1]], cv2.IMREAD_COLOR)
        if img is None or img.shape != shape[1:]:
            raise ValueError(f"{path}: frame {i} does not decode to {shape[1:]}")
        out[i] = img[:, :, ::-1]
    return out


def count(arrays) -> int:
    """Number of frames of the arrays of a file written by `save` (either format)."""
    return int(arrays["frames"].shape[0]) if "frames" in arrays else int(arrays["frames_shape"][0])


def concat(paths, out: str | Path) -> int:
    """Join files written by `save` (one format, the same per-frame arrays) along the frames into `out`: JPEG
    blobs are joined as they are (no re-encoding), every other array row by row. Returns the frame count."""
    loaded = []
    for p in paths:
        with np.load(p) as z:
            loaded.append({k: z[k] for k in z.files})
    keys = set(loaded[0])
    if any(set(x) != keys for x in loaded):
        raise ValueError(f"{Path(paths[0]).name}: the files store different arrays (formats or per-frame data)")
    counts = [count(x) for x in loaded]
    out_arrays = {}
    if "frames_jpg" in keys:
        bases = np.cumsum([0] + [int(x["frames_jpg_offsets"][-1]) for x in loaded])
        shape = loaded[0]["frames_shape"].copy()
        shape[0] = sum(counts)
        out_arrays = {"frames_jpg": np.concatenate([x["frames_jpg"] for x in loaded]),
                      "frames_jpg_offsets": np.concatenate(
                          [np.zeros(1, np.int64)] + [x["frames_jpg_offsets"][1:] + b for x, b in zip(loaded, bases[:-1], strict=True)]),
                      "frames_shape": shape}
        keys -= set(out_arrays)
    for k in sorted(keys):
        if not all(x[k].ndim >= 1 and len(x[k]) == c for x, c in zip(loaded, counts, strict=True)):
            raise ValueError(f"{Path(paths[0]).name}: array {k!r} is not one row per frame in every file")
        out_arrays[k] = np.concatenate([x[k] for x in loaded])
    (np.savez_compressed if "frames" in out_arrays else np.savez)(out, **out_arrays)
    return sum(counts)

