"""How well CAN the output's mouth opening follow the driver? The ceiling the relative-motion target sets.

The evaluation's mouth-opening correlation (docs/RESULTS.md) compares the driver's mouth ratio with the
output's. The optimizer never sees the driver's ratio: it matches the retargeted target
(reenact.optimize.retarget), and the generator can only produce openings its scan showed. This script
prints, per `opening_range` k (0 = off), from an evaluation bundle (`reenact eval prepare`, any driver and
scan; no GPU, no generator):

- target range: the smallest and largest mouth ratio the target asks for, against the scan's range
  (the anchors' smallest and largest; every scan frame with a face is taken as an anchor, as the gpu
  profile does at 90 scan frames);
- outside: the fraction of frames whose target lies outside the scan's range;
- r(target): the correlation of the target's mouth ratio with the driver's (MediaPipe points of the
  driving crops, what the evaluation scores);
- r(in range): the same for the target clipped to the scan's range: what an optimizer that follows the
  target perfectly, within what the generator can draw, would reach.

    python benchmarks/opening_ceiling.py runs/results-gpu96/cross/bundle.npz --k 0 1 2 3

The optimizer also smooths the keypoints over time (keypoint_sigma) before matching; this script uses the
bundle's tracked keypoints as they are.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def ceiling(bundle: str, ks: list[float]) -> list[dict]:
    from reenact.optimize.retarget import Retargeter, expression_features

    b = np.load(bundle, allow_pickle=True)
    anchors = b["scan_points"][b["scan_has_face"]].astype(np.float64)
    has = b["drv_has_face"].astype(bool)
    driver = expression_features(b["drv_raw_points"].astype(np.float64))[has, 0]
    rows = []
    for k in ks:
        rt = Retargeter(anchors, opening_range=k)
        target = np.array([expression_features(rt(p))[0] for p in b["drv_keypoints"][has].astype(np.float64)])
        lo, hi = rt.mouth_range
        rows.append({"k": k, "scan": (lo, hi), "target": (float(target.min()), float(target.max())),
                     "outside": float(np.mean((target < lo - 1e-9) | (target > hi + 1e-9))),
                     "r_target": float(np.corrcoef(target, driver)[0, 1]),
                     "r_in_range": float(np.corrcoef(np.clip(target, lo, hi), driver)[0, 1]),
                     "frames": int(has.sum())})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundle", help="an evaluation bundle (.npz from reenact eval prepare)")
    p.add_argument("--k", type=float, nargs="+", default=[0.0, 1.0, 2.0, 3.0], help="opening_range values")
    ns = p.parse_args(argv)
    rows = ceiling(ns.bundle, ns.k)
    print(f"bundle {ns.bundle}: {rows[0]['frames']} driving frames with a face; scan mouth ratio "
          f"[{rows[0]['scan'][0]:.3f}, {rows[0]['scan'][1]:.3f}]")
    print("| opening_range | target range | outside the scan's range | r(target, driver) | r(in range, driver) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['k']:g} | [{r['target'][0]:.3f}, {r['target'][1]:.3f}] | {100 * r['outside']:.0f} % | "
              f"{r['r_target']:.3f} | {r['r_in_range']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
