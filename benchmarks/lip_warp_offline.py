"""The residual lip warp (reenact.lipwarp) applied after the fact to a produce folder's frames, on the CPU.

`reenact eval produce ... --ours-set lip_warp=G` computes the warp inside the engine, at the latent it returns.
This script gives the same warp to outputs that were produced WITHOUT it (e.g. earlier GPU runs), so its effect
can be scored on the same frames (`reenact eval score`, `reenact eval compare`) without a GPU:

- the rendered lips: the bundle's differentiable landmark network (the engine's) run on each output frame
  (decoded from the folder: JPEG frames carry their compression, the engine sees the exact render);
- the target: the engine's, rebuilt from the bundle: motion "relative" (reenact.optimize.retarget, the
  reference chosen among the bundle's scan frames, not the enrolled person's anchors) and the keypoint
  smoothing sigma of the folder's produce.json;
- the warp: `lipwarp.lip_shift(points, target, gain)` then `lipwarp.warp_lips`, exactly as the gateway does.

    python benchmarks/lip_warp_offline.py runs/results-jaw24/cross/bundle.npz runs/x/cross-M --out runs/x/cross-M-lw
    reenact eval score runs/x/cross-M-lw --bundle runs/results-jaw24/cross/bundle.npz
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def targets(bundle: dict, resolution: int, sigma: float) -> list[np.ndarray | None]:
    """The engine's smoothed relative-motion target of every driving frame [478, 3] at `resolution` (None:
    no face)."""
    from reenact.optimize.keypoints import KeypointSmoother, scale_keypoints
    from reenact.optimize.retarget import Retargeter

    has = bundle["drv_has_face"].astype(bool)
    scan = bundle["scan_points"][bundle["scan_has_face"].astype(bool)]
    crop = int(bundle["drv_crops"].shape[1])
    rt = Retargeter(scale_keypoints(scan, crop, resolution))
    smoother, out = KeypointSmoother(sigma), []
    for i, kp in enumerate(bundle["drv_keypoints"]):
        goal = rt(scale_keypoints(kp, crop, resolution)) if has[i] else None
        out += [v for _, v in smoother.push(goal, i)]
    return out + [v for _, v in smoother.flush()]


def warp_folder(bundle_path: str, folder: str, out: str, gain: float, method: str | None = None) -> dict:
    import torch

    from reenact import lipwarp
    from reenact.evaluation import frames as frames_io
    from reenact.evaluation.bundle import Bundle
    from reenact.optimize import losses

    src = pathlib.Path(folder)
    produced = json.loads((src / "produce.json").read_text())
    method = method or next(iter(produced["methods"]))
    sigma = float(produced["methods"][method].get("options", {}).get("keypoint_sigma", 2.0))
    frames = frames_io.load(src / f"{method}.npz")
    bundle = Bundle(bundle_path)
    goals = targets(bundle, frames.shape[1], sigma)
    if len(goals) != len(frames):
        raise SystemExit(f"{folder}: {len(frames)} frames, the bundle has {len(goals)} driving frames")
    net = bundle.landmark_net("cpu")
    affine = losses.face_affine(frames.shape[1])
    warped, moved = frames.copy(), []
    with torch.no_grad():
        for i in range(0, len(frames), 16):
            x = torch.from_numpy(frames[i:i + 16]).permute(0, 3, 1, 2).float() / 127.5 - 1.0
            points = losses.generated_keypoints(net, x, affine).numpy()
            for j, p in enumerate(points):
                if goals[i + j] is not None:
                    a, b = lipwarp.lip_shift(p, goals[i + j], gain)
                    warped[i + j] = lipwarp.warp_lips(frames[i + j], a, b)
                    moved.append(float(np.linalg.norm(b - a, axis=1).mean()))
    dst = pathlib.Path(out)
    shutil.copytree(src, dst, dirs_exist_ok=True)
    fmt = produced["methods"][method].get("frames_format", "npz")
    with np.load(src / f"{method}.npz") as z:  # the per-frame arrays beside the frames stay
        extra = {k: z[k] for k in z.files if k != "frames" and not k.startswith("frames_")}
    frames_io.save(dst / f"{method}.npz", warped, fmt, **extra)
    produced["methods"][method]["lip_warp_offline"] = {"gain": gain, "source": str(src)}
    (dst / "produce.json").write_text(json.dumps(produced, indent=1))
    return {"frames": len(frames), "warped": len(moved), "mean_move_px": float(np.mean(moved)) if moved else 0.0}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundle", help="the evaluation bundle the folder was produced from (with its scan)")
    p.add_argument("folder", help="a produce folder (reenact eval produce --out)")
    p.add_argument("--out", required=True, help="the new produce folder")
    p.add_argument("--gain", type=float, default=1.0, help="lip_warp: the fraction of the way (0..1, default 1)")
    p.add_argument("--method", default=None, help="the folder's method (default: its only one)")
    ns = p.parse_args(argv)
    print(json.dumps(warp_folder(ns.bundle, ns.folder, ns.out, ns.gain, ns.method)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
