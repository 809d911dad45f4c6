"""The "prepare" phase (CPU, needs MediaPipe): everything the produce phase needs, in ONE .npz bundle.

The produce phase can then run on a machine with only torch + numpy (+ cv2 for the warp baseline) and
this repository: no MediaPipe, dlib, PyAV or tflite. Keys (T driving frames, C = crop size, R = the
profile's generator resolution):

  meta                       JSON string (paths, protocol, crop size, profile, timings, notes)
  drv_keypoints [T,478,3]    temporally smoothed MediaPipe points in aligned-crop pixels at C (what the
                             optimizer is fed, as the landmarks service gives them); NaN without a face
  drv_raw_points [T,478,3]   the same frame's UNSMOOTHED points in the same crop (what is scored)
  drv_crops [T,C,C,3]        aligned driving crops (uint8); zeros without a face
  drv_has_face [T]           bool
  gt_points [T,478,3]        optional: exact landmarks (fixture ground truth) in the same crops
  scan_* (AlignedScan)       optional: the self-scan aligned at R (enrollment skips its align stage)
  ref_image [C,C,3], ref_points [478,3]   the person's reference photo (most neutral scan frame) and
                             its points, for the 2-D warp baseline
  identity_refs [K,R,R,3]    reference frames of the person for the identity metric: scan frames, or
                             with identity_holdout H > 0 the scan's LAST H frames, which are then cut
                             from scan_* and from the reference photo's candidates, so no method (the
                             enrollment, nearest anchor, the warp) ever sees the frames identity is
                             measured against (the fair protocol for a real scan: meta identity_holdout)
  landmark_net uint8 bytes   torch.save of the differentiable MediaPipe landmark network (reenact.mpdiff)
                             so the optimizer runs without mediapipe/tflite installed
"""

from __future__ import annotations

import dataclasses
import io
import json
import time
from pathlib import Path

import numpy as np

NUM_IDENTITY_REFS = 16


def track_video(path: str, crop_size: int, *, max_frames: int | None = None,
                ground_truth: dict | None = None) -> dict[str, np.ndarray]:
    """Driving video -> drv_* arrays (and gt_points with a ground truth dict of reenact.fixtures)."""
    from reenact.face.align import transform_points
    from reenact.face.tracker import FaceTracker
    from reenact.video import read_frames

    results = []
    with FaceTracker(crop_size=crop_size, sigma=2.0, return_crop=True, max_faces=2) as tracker:
        for i, rgb in enumerate(read_frames(path, max_frames=max_frames)):
            results += tracker.push(i, rgb)
        results += tracker.flush()
    t = len(results)
    if t == 0:
        raise ValueError(f"{path}: no frames")
    kp = np.full((t, 478, 3), np.nan, np.float32)
    raw = np.full((t, 478, 3), np.nan, np.float32)
    gt = np.full((t, 478, 3), np.nan, np.float32)
    crops = np.zeros((t, crop_size, crop_size, 3), np.uint8)
    face = np.zeros(t, bool)
    for i, r in enumerate(results):
        if r.alignment is None:
            continue
        face[i] = True
        kp[i] = r.crop_points
        raw[i] = transform_points(np.asarray(r.raw_source_points, np.float64), r.alignment.source_to_crop)
        crops[i] = r.crop
        if ground_truth is not None and r.index < len(ground_truth["frames"]):
            lm = np.asarray(ground_truth["frames"][r.index]["landmarks_3d"], np.float64)
            gt[i] = transform_points(lm, r.alignment.source_to_crop)
    out = {"drv_keypoints": kp, "drv_raw_points": raw, "drv_crops": crops, "drv_has_face": face}
    if ground_truth is not None:
        out["gt_points"] = gt
    return out


def spread(idx: np.ndarray) -> np.ndarray:
    """At most NUM_IDENTITY_REFS of the sorted indices `idx`, evenly spread (first and last kept)."""
    return idx[np.unique(np.linspace(0, len(idx) - 1, min(NUM_IDENTITY_REFS, len(idx))).round().astype(int))]


def split_holdout(aligned, holdout: int, name: str = "scan"):
    """(the scan without its last `holdout` frames, the held-out frames with a face [K, R, R, 3]; at most
    NUM_IDENTITY_REFS of them, evenly spread). Refuses a split that leaves either side without a face."""
    n = len(aligned.has_face)
    if not 0 < holdout < n:
        raise ValueError(f"{name}: identity holdout {holdout} must be between 1 and the scan's frames - 1 ({n - 1})")
    keep = n - holdout
    faces = np.flatnonzero(aligned.has_face[keep:]) + keep
    if not len(faces):
        raise ValueError(f"{name}: no face in the last {holdout} scan frames held out for identity")
    if not aligned.has_face[:keep].any():
        raise ValueError(f"{name}: no face in the first {keep} scan frames left for enrollment")
    per_frame = {f.name: getattr(aligned, f.name)[:keep] for f in dataclasses.fields(aligned)
                 if isinstance(getattr(aligned, f.name), np.ndarray) and len(getattr(aligned, f.name)) == n}
    return dataclasses.replace(aligned, frames_total=keep, **per_frame), aligned.crops[spread(faces)]


def reference_photo(scan_path: str, frame_index: int, crop_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The scan frame `frame_index` aligned at crop_size: (crop, points [478, 3] in the crop)."""
    from reenact.face.tracker import detect_image
    from reenact.video import read_frames

    for i, rgb in enumerate(read_frames(scan_path)):
        if i == frame_index:
            res = detect_image(rgb, crop_size)
            if res.crop is None:
                raise ValueError(f"{scan_path}: no face in frame {frame_index}")
            return res.crop, np.asarray(res.crop_points, np.float32)
    raise ValueError(f"{scan_path}: no frame {frame_index}")


def landmark_net_bytes() -> np.ndarray:
    """The differentiable MediaPipe attention mesh, pickled with torch.save, as a uint8 array."""
    import torch

    from reenact.optimize import landmark_net

    buf = io.BytesIO()
    torch.save(landmark_net("cpu"), buf)
    return np.frombuffer(buf.getvalue(), np.uint8)


def prepare(out: str | Path, *, driving: str, crop_size: int = 128, max_frames: int | None = None,
            scan: str | None = None, resolution: int | None = None, ground_truth: str | None = None,
            protocol: str = "", notes: str = "", identity_holdout: int = 0) -> Path:
    """Write the bundle (module doc). `scan` + `resolution`: align the self-scan for enrollment at R;
    `identity_holdout` H > 0: the scan's last H frames are only identity references (module doc)."""
    from reenact.enroll import scan as scanmod
    from reenact.enroll.select import most_neutral_frame, quality_mask

    if identity_holdout < 0 or (identity_holdout and not scan):
        raise ValueError("identity_holdout needs a scan and must be >= 0")
    meta: dict = {"driving": str(driving), "crop_size": int(crop_size), "max_frames": max_frames,
                  "protocol": protocol, "notes": notes, "scan": str(scan) if scan else None,
                  "ground_truth": str(ground_truth) if ground_truth else None}
    gt = json.loads(Path(ground_truth).read_text()) if ground_truth else None
    t0 = time.perf_counter()
    arrays = track_video(driving, crop_size, max_frames=max_frames, ground_truth=gt)
    meta["driving_track_seconds"] = time.perf_counter() - t0
    meta["driving_frames"] = int(len(arrays["drv_has_face"]))
    meta["driving_frames_with_face"] = int(arrays["drv_has_face"].sum())
    from reenact.video import probe_video

    meta["fps"] = float(probe_video(driving).get("fps") or 30.0)
    if scan:
        if not resolution:
            raise ValueError("a scan needs the generator resolution (the profile's)")
        t0 = time.perf_counter()
        aligned = scanmod.align_scan(scan, int(resolution), should_stop=lambda: False, progress=lambda i, n: None)
        meta["scan_align_seconds"] = time.perf_counter() - t0
        meta["resolution"] = int(resolution)
        held = None
        if identity_holdout:
            aligned, held = split_holdout(aligned, identity_holdout, str(scan))
            meta["identity_holdout"] = int(identity_holdout)
        for k, v in vars(aligned).items():
            arrays[f"scan_{k}"] = np.asarray(v)
        usable = quality_mask(aligned.crops, aligned.has_face)
        idx = np.flatnonzero(usable if usable.any() else aligned.has_face)
        if not len(idx):
            raise ValueError(f"{scan}: no face in the self-scan")
        neutral = int(idx[most_neutral_frame(aligned.yaw[idx], aligned.pitch[idx], aligned.mouth_open[idx])])
        meta["reference_frame"] = neutral
        arrays["ref_image"], arrays["ref_points"] = reference_photo(scan, neutral, crop_size)
        if held is None:
            pick = spread(idx)
            arrays["identity_refs"] = aligned.crops[pick]
            meta["identity_reference"] = f"{len(pick)} self-scan frames aligned at {resolution} px"
        else:
            arrays["identity_refs"] = held
            meta["identity_reference"] = (f"{len(held)} held-out self-scan frames (the last {identity_holdout}, with "
                                          f"a face; seen by no method) aligned at {resolution} px")
    arrays["landmark_net"] = landmark_net_bytes()
    arrays["meta"] = np.array(json.dumps(meta))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    return out


def read_meta(path: str | Path) -> tuple[dict, int]:
    """(meta, number of driving frames) of a bundle, without loading its crops, scan and network."""
    with np.load(Path(path), allow_pickle=False) as z:
        return json.loads(str(z["meta"])), int(len(z["drv_has_face"]))


class Bundle:
    """A loaded bundle: arrays by key (module doc) and `meta`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        with np.load(self.path, allow_pickle=False) as z:
            self.arrays = {k: z[k] for k in z.files}
        self.meta = json.loads(str(self.arrays.pop("meta")))

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays[key]

    def get(self, key: str, default=None):
        return self.arrays.get(key, default)

    def __contains__(self, key: str) -> bool:
        return key in self.arrays

    @property
    def num_frames(self) -> int:
        return int(len(self.arrays["drv_has_face"]))

    @property
    def crop_size(self) -> int:
        return int(self.meta["crop_size"])

    def aligned_scan(self):
        """The self-scan as reenact.enroll.scan.AlignedScan, or None."""
        if "scan_crops" not in self.arrays:
            return None
        from reenact.enroll.scan import AlignedScan

        kw = {k[5:]: v for k, v in self.arrays.items() if k.startswith("scan_")}
        kw["frames_total"], kw["fps"] = int(kw["frames_total"]), float(kw["fps"])
        return AlignedScan(**kw)

    def landmark_net(self, device: str):
        """The pickled landmark network on `device` (falls back to building it from mediapipe)."""
        import torch

        if "landmark_net" in self.arrays:
            net = torch.load(io.BytesIO(self.arrays["landmark_net"].tobytes()), map_location=device,
                             weights_only=False)
            return net.to(device).eval().requires_grad_(False)
        from reenact.optimize import landmark_net

        return landmark_net(device)
