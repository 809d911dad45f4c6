"""The "produce" phase: output frames of every method for one bundle, with timings.

Needs only torch, numpy, cv2 (warp baseline) and this repository: no MediaPipe, dlib, tflite or PyAV
(the landmark network comes pickled in the bundle). Runs on `cpu` or `cuda`.

Methods (all output aligned frames at the generator resolution R, one per driving frame, in order; a
driving frame without a face repeats the previous output, and counts):

- nearest: nearest-anchor retrieval. The anchor whose stored keypoints are closest to the frame's
  driving keypoints (the optimizer's per-part normalized keypoint loss, default subset) is returned: its
  real self-scan frame when the bundle has the scan, else the generator's render of that anchor.
  Identity-perfect by construction, expressions limited to what the anchors show.
- warp: a classic one-shot 2-D warp. The person's reference photo (the most neutral scan frame) is warped
  piecewise-affinely on a Delaunay triangulation of its MediaPipe points plus the crop border: each
  point moves by the driver's motion relative to the first driving frame with a face (FOMM-style
  "relative" transfer, scaled by the inter-ocular ratio); the border stays fixed. No inner mouth, no
  hidden surface: it shows what a one-image 2-D method gets.
- paper: the straightforward per-frame optimization as the paper describes it: every frame alone, a
  fresh optimizer started from the frame's nearest anchor, a fixed number of Adam steps (no early stop,
  no warm start, no temporal smoothing), sequentially.
- ours: the engine (reenact.optimize.ReenactmentOptimizer) with its defaults (warm starts, windows,
  keypoint smoothing, early stop), streaming.
- ours-relative: the same with motion="relative" (reenact.optimize.retarget: the person's own keypoints
  moved by the driver's motion since its first face frame, per facial part). Not in the default methods.

nearest and warp need no generator: asked for alone, without a stored person, they run on the bundle's
self-scan (`scan_anchors`: every usable scan frame is a candidate of nearest, the usable frames being
those the enrollment selects its anchors from) in seconds on a CPU, with no enrollment; any length of
driver. With a stored person (or next to the optimizing methods) nearest uses that person's anchors.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import time
from pathlib import Path

import numpy as np
import torch

from reenact.evaluation import frames as frames_io
from reenact.evaluation.bundle import Bundle

METHODS = ("nearest", "warp", "paper", "ours", "ours-relative")
DEFAULT_METHODS = ("nearest", "warp", "paper", "ours")
PAPER_DEFAULTS = {"learning_rate": 3e-2, "delta_lr_scale": 0.1, "lr_final": 0.1}  # optimizer_bench's best


@dataclasses.dataclass
class LoadedPerson:
    model: object                 # reenact.optimize.PersonModel
    anchor_frames: np.ndarray     # [N] scan frame index of each anchor (-1: unknown)
    enroll_seconds: float         # NaN for a person loaded from a store
    source: str
    profile: dict | None = None   # the enrollment profile the version's manifest records (None: no generator)


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def to_uint8(images: torch.Tensor) -> np.ndarray:
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def render(G, ws, device, batch: int = 16) -> np.ndarray:
    """uint8 [B, R, R, 3] frames of W+ latents [B, num_ws, w_dim]."""
    ws = torch.as_tensor(np.asarray(ws), dtype=torch.float32)
    out = [to_uint8(G.synthesis(ws[i:i + batch].to(device), noise_mode="const")) for i in range(0, len(ws), batch)]
    return np.concatenate(out) if out else np.zeros((0, G.img_resolution, G.img_resolution, 3), np.uint8)


# ---------------------------------------------------------------------------------------------- person

def enroll_from_bundle(bundle: Bundle, out_dir: Path, profile_name: str, overrides: dict, device: str,
                       person_id: str = "person") -> LoadedPerson:
    """Enroll the bundle's aligned self-scan (align stage skipped) into out_dir/store; timed."""
    from reenact.enroll.pipeline import Checkpoints, StageProgress, run_enrollment
    from reenact.enroll.profiles import get_profile
    from reenact.store import LocalStore, PersonRepository

    profile = dataclasses.replace(get_profile(profile_name), **overrides)
    try:
        import dlib  # noqa: F401  (the P0 identity check of the enrollment needs dlib)
    except ImportError:
        profile = dataclasses.replace(profile, p0_samples=0)
    aligned = bundle.aligned_scan()
    if aligned is None:
        raise ValueError("the bundle has no self-scan: pass a stored person (--store, --person)")
    if aligned.crops.shape[1] != profile.resolution:
        raise ValueError(f"the bundle's scan is aligned at {aligned.crops.shape[1]} px, profile {profile.name} "
                         f"needs {profile.resolution}: prepare it with that profile")
    repo = PersonRepository(LocalStore(out_dir / "store"))
    sync(device)
    t0 = time.perf_counter()
    with bundle_landmark_net(bundle):
        result = run_enrollment("", person_id=person_id, profile=profile, repo=repo,
                                ckpt=Checkpoints(repo.store, "jobs/eval/ckpt/"),
                                progress=StageProgress(lambda **kw: None), should_stop=lambda: False, device=device,
                                checkpoint_every_s=1e9, aligned=aligned)
    sync(device)
    seconds = time.perf_counter() - t0
    loaded = load_person(f"file://{(out_dir / 'store').resolve()}", person_id, device)
    loaded.enroll_seconds = seconds
    loaded.source = f"enrolled here ({profile.name}, v{result.person_version})"
    return loaded


@contextlib.contextmanager
def bundle_landmark_net(bundle: Bundle):
    """While active, reenact.optimize's `landmark_net(device)` returns the bundle's pickled network, so code
    that builds it from the installed mediapipe (e.g. an enrollment stage) runs where mediapipe is absent."""
    from reenact.optimize import engine

    nets: dict[str, torch.nn.Module] = {}

    def from_bundle(device: str = "cpu"):
        if str(device) not in nets:
            nets[str(device)] = bundle.landmark_net(str(device))
        return nets[str(device)]

    saved = engine.landmark_net
    import reenact.optimize as optimize_pkg

    saved_pkg = optimize_pkg.landmark_net
    engine.landmark_net = optimize_pkg.landmark_net = from_bundle
    try:
        yield
    finally:
        engine.landmark_net, optimize_pkg.landmark_net = saved, saved_pkg


def load_person(store_url: str, person_id: str, device: str, version: int | None = None) -> LoadedPerson:
    from reenact.optimize import PersonModel
    from reenact.store import PersonRepository, open_store

    repo = PersonRepository(open_store(store_url))
    model = PersonModel.load(repo, person_id, version, device=device)
    anchors = torch.load(io.BytesIO(repo.read(person_id, model.version, "anchors.pt")), map_location="cpu",
                         weights_only=True)
    frames = anchors.get("anchor_frames")
    frames = np.full(len(model.anchor_w), -1) if frames is None else np.asarray(frames)
    profile = repo.manifest(person_id, model.version).metadata.get("profile")
    return LoadedPerson(model, frames, float("nan"), f"{store_url} {person_id} v{model.version}", profile)


@dataclasses.dataclass
class ScanAnchors:
    """The part of a person the generator-free baselines (nearest, warp) read: the aligned scan's
    resolution and the keypoints of the candidate frames [N, 478, 3] at that resolution."""

    resolution: int
    anchor_points: torch.Tensor


def scan_anchors(bundle: Bundle) -> LoadedPerson:
    """A person for nearest and warp only, from the bundle's self-scan: every usable scan frame (a face and
    not blurred: reenact.enroll.select.quality_mask, as the enrollment filters its anchor candidates) is a
    nearest candidate. ValueError when the bundle has no scan or no usable frame."""
    from reenact.enroll import select

    aligned = bundle.aligned_scan()
    if aligned is None:
        raise ValueError("nearest and warp without a stored person need the bundle's self-scan (prepare the "
                         "bundle with --scan), or pass --store and --person")
    usable = np.flatnonzero(select.quality_mask(aligned.crops, aligned.has_face))
    if not len(usable):
        raise ValueError("the bundle's self-scan has no usable frame (no face, or every frame blurred)")
    points = torch.from_numpy(np.asarray(aligned.points[usable], np.float32))
    model = ScanAnchors(int(aligned.crops.shape[1]), points)
    return LoadedPerson(model, usable.astype(np.int64), float("nan"),
                        f"the bundle's self-scan, {len(usable)} usable frames (no generator)")


# --------------------------------------------------------------------------------------------- targets

def targets(bundle: Bundle):
    from reenact.optimize import Target

    kp, crops, face = bundle["drv_keypoints"], bundle["drv_crops"], bundle["drv_has_face"]
    c = bundle.crop_size
    out = []
    for i in range(bundle.num_frames):
        points = kp[i] if face[i] else np.zeros((478, 3), np.float32)
        out.append(Target(i, points.astype(np.float32), c, crops[i] if face[i] else None, bool(face[i])))
    return out


def nearest_anchor_indices(person, keypoints: np.ndarray, crop_size: int, subset: str = "default") -> np.ndarray:
    """[T] nearest anchor of each frame's keypoints [T, 478, 3] at crop_size (NaN rows -> -1)."""
    from reenact.optimize import get_subset, losses

    r = person.resolution
    anchors = person.anchor_points.float().cpu()
    out = np.full(len(keypoints), -1, np.int64)
    for i, kp in enumerate(keypoints):
        if not np.isfinite(kp).all():
            continue
        t = torch.from_numpy(np.asarray(kp, np.float32) * (r / crop_size))
        loss = losses.keypoint_loss(anchors, t.expand_as(anchors), get_subset(subset))
        out[i] = int(loss.argmin())
    return out


def _fill_missing(frames: list, fallback: np.ndarray) -> np.ndarray:
    """Frames without an output (None) repeat the previous one (the fallback before the first)."""
    out, last = [], fallback
    for f in frames:
        last = f if f is not None else last
        out.append(last)
    return np.stack(out)


# ---------------------------------------------------------------------------------------------- methods

def run_nearest(bundle: Bundle, person: LoadedPerson, device: str) -> dict:
    m = person.model
    sync(device)
    t0 = time.perf_counter()
    idx = nearest_anchor_indices(m, bundle["drv_keypoints"], bundle.crop_size)
    scan_crops = bundle.get("scan_crops")
    use_scan = scan_crops is not None and (person.anchor_frames >= 0).all() and \
        scan_crops.shape[1] == m.resolution
    if use_scan:
        images = scan_crops[person.anchor_frames]
    else:
        ws = m.anchor_w[:, None, :].expand(-1, m.G.num_ws, -1).cpu().numpy()
        images = render(m.G, ws, device)
    frames = [images[i] if i >= 0 else None for i in idx]
    out = _fill_missing(frames, images[0])
    sync(device)
    return {"frames": out, "seconds": time.perf_counter() - t0, "anchor": idx,
            "notes": "real self-scan anchor frames" if use_scan else "generator renders of the anchors"}


def run_warp(bundle: Bundle, person: LoadedPerson, device: str) -> dict:
    import cv2

    m = person.model
    c, r = bundle.crop_size, m.resolution
    if "ref_image" in bundle:
        ref, ref_pts = bundle["ref_image"], bundle["ref_points"].astype(np.float64)
        note = "reference photo: the most neutral self-scan frame"
    else:  # no scan: the first anchor's render and its keypoints
        ws = m.anchor_w[:1, None, :].expand(-1, m.G.num_ws, -1).cpu().numpy()
        ref = cv2.resize(render(m.G, ws, device)[0], (c, c), interpolation=cv2.INTER_CUBIC)
        ref_pts = m.anchor_points[0].cpu().numpy().astype(np.float64) * (c / r)
        note = "reference photo: the first anchor's render"
    t0 = time.perf_counter()
    warper = PiecewiseAffineWarp(ref, ref_pts[:468, :2])
    kp, face = bundle["drv_keypoints"].astype(np.float64), bundle["drv_has_face"]
    frames = []
    first = int(np.flatnonzero(face)[0]) if face.any() else -1
    for i in range(bundle.num_frames):
        if not face[i]:
            frames.append(None)
            continue
        scale = _iod(ref_pts) / _iod(kp[first])
        dst = ref_pts[:468, :2] + (kp[i, :468, :2] - kp[first, :468, :2]) * scale
        frames.append(cv2.resize(warper(dst), (r, r), interpolation=cv2.INTER_AREA))
    out = _fill_missing(frames, cv2.resize(ref, (r, r), interpolation=cv2.INTER_AREA))
    return {"frames": out, "seconds": time.perf_counter() - t0, "notes": note}


def _iod(points: np.ndarray) -> float:
    from reenact.evaluation.metrics import inter_ocular

    return float(inter_ocular(np.asarray(points)[None])[0])


class PiecewiseAffineWarp:
    """Backward piecewise-affine warp of one image, triangles = Delaunay of its points + 8 border points.

    __call__(dst [K, 2]) moves the K points to dst (border fixed) and returns the warped image: every
    output pixel inside a destination triangle samples the source at its barycentric position in the
    source triangle (triangles drawn far to near by their mean displacement order is not needed: a
    fold-over takes the later triangle). cv2 only (fillConvexPoly + remap)."""

    def __init__(self, image: np.ndarray, points: np.ndarray) -> None:
        import cv2

        self.image = np.ascontiguousarray(image)
        h, w = image.shape[:2]
        self.size = (h, w)
        border = np.array([[0, 0], [w / 2, 0], [w - 1e-3, 0], [w - 1e-3, h / 2], [w - 1e-3, h - 1e-3],
                           [w / 2, h - 1e-3], [0, h - 1e-3], [0, h / 2]], np.float64)
        self.border = border
        src = np.concatenate([np.clip(points, 0, [w - 1e-3, h - 1e-3]), border])
        self.src = src
        subdiv = cv2.Subdiv2D((0, 0, w, h))
        for p in src:
            subdiv.insert((float(p[0]), float(p[1])))
        tris = []
        for t in subdiv.getTriangleList().reshape(-1, 3, 2):
            ids = [int(np.argmin(np.linalg.norm(src - v, axis=1))) for v in t]
            if len(set(ids)) == 3 and all(np.linalg.norm(src[k] - v) < 1e-2 for k, v in zip(ids, t, strict=True)):
                tris.append(ids)
        self.triangles = np.array(tris, np.int64)

    def __call__(self, dst_points: np.ndarray) -> np.ndarray:
        import cv2

        h, w = self.size
        dst = np.concatenate([np.asarray(dst_points, np.float64), self.border])
        ids = np.full((h, w), -1, np.int32)
        for k, tri in enumerate(self.triangles):
            cv2.fillConvexPoly(ids, np.round(dst[tri] * 16).astype(np.int32), int(k), lineType=cv2.LINE_8, shift=4)
        # per triangle: affine mapping destination pixel centres -> source coordinates
        d = np.concatenate([dst[self.triangles], np.ones((len(self.triangles), 3, 1))], axis=2)  # [K, 3, 3]
        s = self.src[self.triangles]                                                         # [K, 3, 2]
        det_ok = np.abs(np.linalg.det(d)) > 1e-9
        mats = np.zeros((len(self.triangles), 3, 2))
        mats[det_ok] = np.linalg.solve(d[det_ok], s[det_ok])
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
        xy1 = np.stack([xs + 0.5, ys + 0.5, np.ones_like(xs)], axis=-1)
        k = np.where(ids >= 0, ids, 0)
        src_xy = np.einsum("hwi,hwij->hwj", xy1, mats[k])
        map_x = np.where(ids >= 0, src_xy[..., 0] - 0.5, xs).astype(np.float32)
        map_y = np.where(ids >= 0, src_xy[..., 1] - 0.5, ys).astype(np.float32)
        return cv2.remap(self.image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def paper_options(steps: int, **overrides):
    from reenact.optimize import OptimizerOptions

    kw = {**PAPER_DEFAULTS, **overrides}
    return OptimizerOptions(first_frame_steps=steps, steps=steps, window=1, keypoint_sigma=0.0, tolerance=0.0, **kw)


def run_paper(bundle: Bundle, person: LoadedPerson, device: str, net, steps: int) -> dict:
    from reenact.optimize import ReenactmentOptimizer, Target

    m = person.model
    opts = paper_options(steps)
    sync(device)
    t0 = time.perf_counter()
    ws, per_steps, kp_err = [], [], []
    for t in targets(bundle):
        if not t.has_face:
            ws.append(None)
            per_steps.append(0)
            kp_err.append(float("nan"))
            continue
        opt = ReenactmentOptimizer(m, opts, device=device, landmarks=net)
        res = opt.push(Target(0, t.keypoints, t.crop_size, t.crop)) + opt.flush()
        ws.append(res[0].ws)
        per_steps.append(res[0].steps)
        kp_err.append(res[0].keypoint_error)
    first = next((w for w in ws if w is not None), None)
    if first is None:
        first = m.anchor_w[:1].expand(m.G.num_ws, -1).cpu().numpy()
    frames = render(m.G, _fill_missing(ws, first), device)
    sync(device)
    return {"frames": frames, "seconds": time.perf_counter() - t0, "steps": np.array(per_steps),
            "engine_keypoint_error": np.array(kp_err), "options": dataclasses.asdict(opts)}


def apply_lip_warps(frames: np.ndarray, results) -> np.ndarray:
    """The engine's residual lip warps (FrameResult.lip_src / lip_dst, options.lip_warp > 0) applied to the
    frames rendered from its latents, as the gateway applies them (reenact.lipwarp); unchanged without."""
    from reenact.lipwarp import warp_lips

    for i, r in enumerate(results):
        if r.lip_src is not None:
            frames[i] = warp_lips(frames[i], r.lip_src, r.lip_dst)
    return frames


def run_ours(bundle: Bundle, person: LoadedPerson, device: str, net, options) -> dict:
    from reenact.optimize import ReenactmentOptimizer

    m = person.model
    sync(device)
    t0 = time.perf_counter()
    opt = ReenactmentOptimizer(m, options, device=device, landmarks=net)
    results = []
    for t in targets(bundle):
        results += opt.push(t)
    results += opt.flush()
    frames = apply_lip_warps(render(m.G, np.stack([r.ws for r in results]), device), results)
    sync(device)
    return {"frames": frames, "seconds": time.perf_counter() - t0, "steps": np.array([r.steps for r in results]),
            "engine_keypoint_error": np.array([r.keypoint_error for r in results]),
            # how many anchors each frame's latent blends, and its mix (benchmarks/identity_spread.py)
            "anchors_eff": np.array([r.anchors_eff for r in results], np.float32),
            "alpha": np.stack([r.alpha for r in results]).astype(np.float32),
            "options": dataclasses.asdict(options), "starts": dict(opt.stats),
            "reference_anchor": None if opt.retargeter is None else opt.retargeter.reference_anchor}


def warm_up(bundle: Bundle, person: LoadedPerson, device: str, net) -> None:
    """One short optimization and a render, so no method pays the first-call costs (CUDA init, kernels)."""
    from reenact.optimize import ReenactmentOptimizer, Target

    face = np.flatnonzero(bundle["drv_has_face"])
    if not len(face):
        return
    t = targets(bundle)[int(face[0])]
    opt = ReenactmentOptimizer(person.model, paper_options(2), device=device, landmarks=net)
    res = opt.push(Target(0, t.keypoints, t.crop_size, t.crop)) + opt.flush()
    render(person.model.G, np.stack([r.ws for r in res]), device)
    sync(device)


# ---------------------------------------------------------------------------------------------- produce

def produce(bundle_path: str | Path, out_dir: str | Path, *, methods=DEFAULT_METHODS, device: str = "cpu",
            store: str | None = None, person_id: str | None = None, profile: str = "cpu-quick",
            profile_overrides: dict | None = None, paper_steps: int = 200, ours_overrides: dict | None = None,
            enroll_seconds: float | None = None, frames_format: str = "npz", log=print) -> dict:
    """Run every method; write out_dir/<method>.npz (frames + per-frame data; frames_format 'npz' lossless or
    'jpg', reenact.evaluation.frames) and out_dir/produce.json."""

    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {METHODS}")
    if frames_format not in frames_io.FORMATS:
        raise ValueError(f"frames format {frames_format!r}: one of {frames_io.FORMATS}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    bundle = Bundle(bundle_path)
    torch.manual_seed(0)
    with bundle_landmark_net(bundle):  # nothing in produce builds the network from mediapipe
        return _produce(bundle, bundle_path, out_dir, methods, device, store, person_id, profile, profile_overrides,
                        paper_steps, ours_overrides, enroll_seconds, frames_format, log)


def _ours_options(methods, ours_overrides):
    """(ours, ours-relative) optimizer options, each validated when its method runs (opening_range is valid
    for ours-relative only); a bad value is a ValueError (the CLI's "error: ...", exit 2) before any work."""
    from reenact.errors import InvalidInputError
    from reenact.optimize import OptimizerOptions

    # dataclasses.replace, not override(): on the command line a 0 is a value (e.g. mouth_weight=0), not "unset"
    ours = dataclasses.replace(OptimizerOptions(), **(ours_overrides or {}))
    relative = dataclasses.replace(ours, motion="relative")
    for name, options in (("ours", ours), ("ours-relative", relative)):
        if name in methods:
            try:
                options.validate()
            except InvalidInputError as err:
                raise ValueError(f"optimizer options for method {name}: {err}") from err
    return ours, relative


def _person(bundle, out_dir, methods, device, store, person_id, profile, profile_overrides, enroll_seconds,
            log) -> LoadedPerson:
    """The stored person (--store, --person); else, for nearest/warp alone, the bundle's scan (no generator);
    else a person enrolled here from the bundle's scan."""
    if store and person_id:
        person = load_person(store, person_id, device)
        if enroll_seconds is not None:  # enrolled earlier by the caller (suite: once for both protocols)
            person.enroll_seconds = enroll_seconds
        return person
    if set(methods) <= {"nearest", "warp"}:
        person = scan_anchors(bundle)
        log(f"nearest/warp on {person.source}: no enrollment")
        return person
    log(f"enrolling the bundle's self-scan ({profile}) on {device} ...")
    person = enroll_from_bundle(bundle, out_dir, profile, profile_overrides or {}, device)
    log(f"  enrolled in {person.enroll_seconds:.1f} s")
    return person


def _produce(bundle, bundle_path, out_dir, methods, device, store, person_id, profile, profile_overrides,
             paper_steps, ours_overrides, enroll_seconds, frames_format, log) -> dict:
    ours_options, relative_options = _ours_options(methods, ours_overrides)
    person = _person(bundle, out_dir, methods, device, store, person_id, profile, profile_overrides,
                     enroll_seconds, log)
    net = None
    if not isinstance(person.model, ScanAnchors):
        if "identity_refs" not in bundle:  # no scan: the anchors' renders are the identity references
            m = person.model
            ws = m.anchor_w[:16, None, :].expand(-1, m.G.num_ws, -1).cpu().numpy()
            np.savez_compressed(out_dir / "identity_refs.npz", frames=render(m.G, ws, device))
        net = bundle.landmark_net(device)
        warm_up(bundle, person, device, net)
    info: dict = {"bundle": str(Path(bundle_path).resolve()), "device": device, "device_name": device_name(device),
                  "person": person.source, "resolution": person.model.resolution,
                  "num_anchors": int(len(person.model.anchor_points)), "enroll_seconds": person.enroll_seconds,
                  "profile": person.profile,
                  "scan_align_seconds": bundle.meta.get("scan_align_seconds"), "frames": bundle.num_frames,
                  "torch": torch.__version__, "methods": {}}
    if "slice" in bundle.meta:  # eval merge reads these, also where the slice file is not (another machine)
        info.update({k: bundle.meta.get(k) for k in ("slice", "source_bundle", "source_digest")})
    for name in methods:
        log(f"method {name} ...")
        if device != "cpu" and torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        if name == "nearest":
            res = run_nearest(bundle, person, device)
        elif name == "warp":
            res = run_warp(bundle, person, device)
        elif name == "paper":
            res = run_paper(bundle, person, device, net, paper_steps)
        elif name == "ours-relative":
            res = run_ours(bundle, person, device, net, relative_options)
        else:
            res = run_ours(bundle, person, device, net, ours_options)
        frames = res.pop("frames")
        arrays = {k: v for k, v in res.items() if isinstance(v, np.ndarray)}
        frames_io.save(out_dir / f"{name}.npz", frames, frames_format, **arrays)
        entry = {k: v for k, v in res.items() if not isinstance(v, np.ndarray)}
        entry["frames_format"] = frames_format
        if frames_format == "jpg":
            entry["notes"] = "; ".join(filter(None, [entry.get("notes"), f"output frames stored as JPEG "
                                                     f"quality {frames_io.JPEG_QUALITY} (lossy)"]))
        entry["fps"] = bundle.num_frames / res["seconds"] if res["seconds"] > 0 else float("inf")
        entry["mean_steps"] = float(np.mean(res["steps"])) if "steps" in res else None
        if device != "cpu" and torch.cuda.is_available():
            entry["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
        info["methods"][name] = entry
        log(f"  {name}: {res['seconds']:.1f} s, {entry['fps']:.2f} frames/s")
    from reenact.evaluation.metrics import nan_to_none

    info = _merge_previous(out_dir / "produce.json", info)
    (out_dir / "produce.json").write_text(json.dumps(nan_to_none(info), indent=1))
    return info


def _merge_previous(path: Path, info: dict) -> dict:
    """Methods produced earlier into the same folder for the same bundle and person are kept (a subset of
    methods can be run per call), and so is the enrollment time measured by the call that enrolled."""
    if not path.exists():
        return info
    old = json.loads(path.read_text())
    if old.get("bundle") != info["bundle"] or old.get("resolution") != info["resolution"]:
        return info
    info["methods"] = {**old.get("methods", {}), **info["methods"]}
    if (info.get("enroll_seconds") is None or not np.isfinite(info["enroll_seconds"])) and old.get("enroll_seconds"):
        info["enroll_seconds"] = old["enroll_seconds"]
    return info


def device_name(device: str) -> str:
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    import platform

    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
