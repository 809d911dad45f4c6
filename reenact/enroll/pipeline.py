"""run_enrollment: the named stages of an enrollment, each short, with progress, stop and resume."""

from __future__ import annotations

import io
import logging
import pathlib
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from reenact.enroll import evaluate, scan, select, train
from reenact.enroll.profiles import Profile
from reenact.errors import CancelledError

log = logging.getLogger("reenact.enroll")

STAGES = ("align", "select", "base", "anchors", "tune", "evaluate", "init", "export")
# Rough share of the total time per stage, for the overall fraction and ETA.
_WEIGHTS = {"align": 0.05, "select": 0.02, "base": 0.5, "anchors": 0.03, "tune": 0.25, "evaluate": 0.10,
            "init": 0.02, "export": 0.03}


class StageProgress:
    """Turns per-stage (step, total, losses) into overall fraction and ETA, then calls `sink`."""

    def __init__(self, sink: Callable[..., None]) -> None:
        self.sink = sink
        self.t0 = time.monotonic()

    def __call__(self, stage: str, step: int, total: int, losses: dict | None = None, message: str = "") -> None:
        done = sum(_WEIGHTS[s] for s in STAGES[: STAGES.index(stage)])
        frac = min(1.0, done + _WEIGHTS[stage] * (step / total if total else 0.0))
        elapsed = time.monotonic() - self.t0
        eta = elapsed * (1 - frac) / frac if frac > 0.02 else -1.0
        self.sink(stage=stage, step=step, total=total, fraction=frac, losses=losses or {}, eta_seconds=eta,
                  message=message)


@dataclass
class Checkpoints:
    """Training checkpoints of one job in the artifact store (resume after a restart)."""

    store: object
    prefix: str

    def save(self, stage: str, state: dict) -> None:
        buf = io.BytesIO()
        torch.save(state, buf)
        self.store.put_bytes(f"{self.prefix}{stage}.pt", buf.getvalue())

    def load(self, stage: str) -> dict | None:
        key = f"{self.prefix}{stage}.pt"
        if not self.store.exists(key):
            return None
        return torch.load(io.BytesIO(self.store.get_bytes(key)), map_location="cpu", weights_only=True)

    def clear(self) -> None:
        self.store.delete_prefix(self.prefix)


@dataclass
class EnrollResult:
    person_version: int
    metrics: dict
    coverage: dict
    anchors: list[int] = field(default_factory=list)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def run_enrollment(scan_path: str, *, person_id: str, profile: Profile, repo, ckpt: Checkpoints,
                   progress: StageProgress, should_stop: Callable[[], bool],
                   on_coverage: Callable[[dict], None] = lambda c: None, device: str = "auto",
                   base_checkpoint: str | None = None, export: Callable[[str, int, str], None] | None = None,
                   checkpoint_every_s: float = 120.0, aligned: scan.AlignedScan | None = None) -> EnrollResult:
    """Self-scan video -> a committed person version (generator, anchors, metrics) in `repo`.

    `aligned` skips the align stage with a scan aligned earlier (`scan.AlignedScan.load`).
    """
    dev = _device(device)
    torch.manual_seed(profile.seed)

    def stop() -> bool:
        return bool(should_stop())

    if base_checkpoint:  # a user-supplied base fixes the resolution (e.g. 1024 for FFHQ config-f)
        profile = _profile_for_base(profile, base_checkpoint)
    if aligned is None:
        aligned = scan.align_scan(scan_path, profile.resolution, should_stop=stop,
                                  progress=lambda i, n: progress("align", i, n))
    usable = select.quality_mask(aligned.crops, aligned.has_face)
    report = scan.coverage_report(aligned, usable)
    on_coverage(report)
    scan.check_usable(report, profile.min_frames)
    progress("align", 1, 1, message=f"{report['frames_usable']} usable frames; missing: {report['missing']}")

    from reenact.perceptual import PerceptualLoss

    perceptual = PerceptualLoss().to(dev)
    idx_usable = np.flatnonzero(usable)
    images_all = train.to_images(aligned.crops[idx_usable], dev)
    dist = perceptual.pairwise(images_all, images_all).cpu().numpy()
    start = select.most_neutral_frame(aligned.yaw[idx_usable], aligned.pitch[idx_usable],
                                      aligned.mouth_open[idx_usable])
    local_anchors, local_heldout = select.split_anchors_heldout(
        dist, start, profile.num_anchors, profile.num_heldout, profile.seed)
    anchors, heldout = idx_usable[local_anchors], idx_usable[local_heldout]
    progress("select", 1, 1, message=f"{len(anchors)} anchors, {len(heldout)} held out "
             f"({perceptual.backbone} distance)")
    images = images_all[local_anchors]

    G, anchor_w = _base_and_anchors(images, profile, perceptual, progress, stop, ckpt, base_checkpoint,
                                    checkpoint_every_s)
    anchor_ws = anchor_w[:, None, :].expand(-1, G.num_ws, -1).contiguous()
    tune_state = ckpt.load("tune")
    G = train.tune_generator(G, anchor_ws, images, profile, perceptual=perceptual,
                             progress=lambda s, n, t: progress("tune", s, n, t), should_stop=stop,
                             checkpoint=lambda st: ckpt.save("tune", st), checkpoint_every_s=checkpoint_every_s,
                             state=tune_state)
    G.eval()
    metrics = evaluate.evaluate_person(
        G, anchor_w, images, images_all[local_heldout], profile, perceptual=perceptual, should_stop=stop,
        progress=lambda s, n, t: progress("evaluate", s, n, t))
    metrics["perceptual_backbone_is_lpips"] = float(perceptual.backbone == "lpips-alex")
    initializer = _train_initializer(G, anchor_w, aligned.points[anchors], profile, dev, progress, stop, metrics)
    progress("export", 0, 1)
    version = _write_version(repo, person_id, G, anchor_w, aligned, anchors, heldout, profile, metrics,
                             report, perceptual.backbone, initializer)
    if export is not None:
        export(person_id, version, "generator.pt")
    ckpt.clear()
    progress("export", 1, 1, message=f"person {person_id} v{version} ready")
    return EnrollResult(version, metrics, report, [int(a) for a in anchors])


def _train_initializer(G, anchor_w, anchor_points: np.ndarray, profile: Profile, dev, progress, stop,
                       metrics: dict) -> bytes | None:
    """Stage 'init': the amortized initializer (keypoints -> P+ start), serialized; None when disabled."""
    if profile.init_steps <= 0:
        progress("init", 1, 1, message="no amortized initializer (profile init_steps 0)")
        return None
    from reenact.optimize.amortized import describe, train_regressor
    from reenact.optimize.engine import landmark_net

    model, stats = train_regressor(
        G, landmark_net(str(dev)), anchor_w.detach().float(), torch.from_numpy(np.asarray(anchor_points)).to(dev),
        samples=profile.init_samples, steps=profile.init_steps, seed=profile.seed, should_stop=stop,
        progress=lambda s, n: progress("init", s, n))
    metrics.update({"init_heldout_w_error": stats.heldout_w_error, "init_nearest_w_error": stats.nearest_w_error,
                    "init_seconds": stats.seconds})
    progress("init", profile.init_steps, profile.init_steps, message=describe(stats))
    return model.to_bytes(stats.as_dict())


def _profile_for_base(profile: Profile, base_checkpoint: str) -> Profile:
    import dataclasses

    from reenact.models.checkpoint import read_checkpoint

    kw = read_checkpoint(base_checkpoint)["networks"]["G"]["kwargs"]
    return dataclasses.replace(profile, resolution=int(kw["img_resolution"]), w_dim=int(kw["w_dim"]))


def _base_and_anchors(images, profile, perceptual, progress, stop, ckpt, base_checkpoint, every_s):
    from reenact.models.checkpoint import load_generator

    done = ckpt.load("anchors")
    if done is not None:  # resumed after the anchors stage
        G = (load_generator(base_checkpoint, device=images.device) if base_checkpoint
             else train.build_generator(profile).to(images.device))
        G.load_state_dict(done["G"])
        return G, done["anchor_w"].to(images.device)
    if base_checkpoint:
        G = load_generator(base_checkpoint, device=images.device)
        progress("base", 1, 1, message=f"base generator from {pathlib.Path(base_checkpoint).name}")
        anchor_w = train.project_w(G, images, perceptual=perceptual, steps=profile.project_steps,
                                   should_stop=stop, progress=lambda s, n, t: progress("anchors", s, n, t))
    else:
        G, anchor_w = train.train_base(
            images, profile, perceptual=perceptual, progress=lambda s, n, t: progress("base", s, n, t),
            should_stop=stop, checkpoint=lambda st: ckpt.save("base", st), checkpoint_every_s=every_s,
            state=ckpt.load("base"))
        progress("anchors", 1, 1, message="anchors = the auto-decoded codes of the selected frames")
    ckpt.save("anchors", {"G": G.state_dict(), "anchor_w": anchor_w.detach().cpu()})
    return G, anchor_w


def _write_version(repo, person_id, G, anchor_w, aligned, anchors, heldout, profile: Profile, metrics,
                   report, backbone, initializer: bytes | None = None) -> int:
    from reenact.models.checkpoint import save_generator

    meta = {"profile": profile.as_dict(), "resolution": profile.resolution, "num_anchors": len(anchors),
            "metrics": metrics, "coverage": report, "perceptual_backbone": backbone,
            "anchor_frames": [int(a) for a in anchors], "heldout_frames": [int(h) for h in heldout]}
    with repo.begin_version(person_id) as writer, tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "generator.pt"
        save_generator(path, G.cpu(), provenance={"person_id": person_id, "profile": profile.name,
                                                  "created_by": "reenact.enroll"})
        writer.put_file("generator.pt", path)
        buf = io.BytesIO()
        torch.save({"anchor_w": anchor_w.detach().cpu().float(),
                    "anchor_points": torch.from_numpy(aligned.points[anchors]),
                    "anchor_frames": torch.as_tensor(np.asarray(anchors, np.int64)),
                    "yaw": torch.from_numpy(aligned.yaw[anchors]), "pitch": torch.from_numpy(aligned.pitch[anchors]),
                    "mouth_open": torch.from_numpy(aligned.mouth_open[anchors]),
                    "eye_open": torch.from_numpy(aligned.eye_open[anchors])}, buf)
        writer.put_bytes("anchors.pt", buf.getvalue())
        if initializer is not None:
            from reenact.optimize.amortized import FILE_NAME

            writer.put_bytes(FILE_NAME, initializer)
        version = writer.commit(meta)
    if isinstance(version, int):
        return version
    return writer.version


def raise_if_cancelled(flag: bool) -> None:
    if flag:
        raise CancelledError("enrollment cancelled")
