"""How low CAN the expression error go? The floors the relative-motion target and the self-scan set.

The evaluation's expression error (docs/RESULTS.md, reenact.evaluation.metrics.expression_error) compares
the output's lips and eyes with the DRIVER's, each part centred and divided by its face's inter-ocular
distance: another person's lip shape counts as error. ours-relative never aims at the driver's lips. It
aims at the person's own lips moved by the driver's motion (reenact.optimize.retarget), and its
personalized generator draws the expressions its scan showed. This script prints, from an evaluation
bundle (`reenact eval prepare`; CPU, no generator), what each of those choices allows:

- target: the error of the retargeted target itself (per reference x opening_range k), i.e. of an
  optimizer that tracks its target perfectly;
- best scan frame: per driving frame, the scan frame (anchor) with the lowest error, chosen by the metric
  itself: the floor of any method that shows scan frames (nearest anchor is one, choosing by keypoints);
- best scan frame vs target: how far the target lies from every expression the scan showed (lips).

With `--outputs DIR[:METHOD]` (a produce folder; MediaPipe, as `reenact eval score` runs it), each
output's landmarks are also compared with the driver (what score reports) and with the target (matched,
k 0: the tracking error). `--noise` adds the landmark detector's own error: the scan frames detected again
(tracking mode, as score does for outputs) against the bundle's scan points.

    python benchmarks/expression_floor.py runs/results-jaw24/cross/bundle.npz \
        --outputs runs/results-jaw24/cross-baselines:nearest --outputs runs/results-jaw24/enroll1/cross-M --noise
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _parts(err: dict) -> dict:
    eyes = np.nanmean([np.nanmean(err["right_eye"]), np.nanmean(err["left_eye"])])
    return {"expression": float(np.nanmean(err["expression"])), "lips": float(np.nanmean(err["lips"])),
            "eyes": float(eyes)}


def _load(bundle: str) -> dict:
    """The arrays every row reads, loaded once: driving points of the face frames, scan anchors."""
    with np.load(bundle, allow_pickle=True) as b:
        if "scan_points" not in b.files:
            raise SystemExit(f"{bundle} has no self-scan (a --no-scan slice?): use the full bundle")
        has = b["drv_has_face"].astype(bool)
        scan = b["scan_has_face"].astype(bool)
        return {"path": bundle, "has": has, "driver": b["drv_raw_points"][has].astype(np.float64),
                "keypoints": b["drv_keypoints"][has].astype(np.float64),
                "anchors": b["scan_points"][scan].astype(np.float64)}


def _target(data: dict, reference: str = "matched", k: float = 0.0) -> np.ndarray:
    """The retargeted target of every face frame (memoized per reference and k)."""
    from reenact.optimize.retarget import Retargeter

    memo = data.setdefault("targets", {})
    if (reference, k) not in memo:
        rt = Retargeter(data["anchors"], reference=reference, opening_range=k)
        memo[reference, k] = np.array([rt(p) for p in data["keypoints"]])
    return memo[reference, k]


def floors(bundle: str | dict, ks: list[float], references=("matched", "neutral")) -> dict:
    """The rows of the module doc (no outputs): {"target": [...], "best_scan": {...}, "best_scan_vs_target"}."""
    from reenact.evaluation.metrics import expression_error

    data = _load(bundle) if isinstance(bundle, str) else bundle
    driver, anchors = data["driver"], data["anchors"]
    rows = [{"reference": ref, "k": k, **_parts(expression_error(driver, _target(data, ref, k)))}
            for ref in references for k in ks]

    def best(against: np.ndarray, part: str) -> float:
        per_anchor = np.stack([expression_error(against, np.repeat(a[None], len(against), 0))[part]
                               for a in anchors], axis=1)
        return float(np.nanmean(np.nanmin(per_anchor, axis=1)))

    return {"frames": int(len(driver)), "anchors": int(len(anchors)), "target": rows,
            "best_scan": {"expression": best(driver, "expression"), "lips": best(driver, "lips")},
            "best_scan_vs_target": {"lips": best(_target(data), "lips")}}


def output_rows(data: dict, outputs: list[str]) -> list[dict]:
    """Each output (DIR[:METHOD]) against the driver and against the matched k-0 target (MediaPipe)."""
    from reenact.evaluation import frames as frames_io
    from reenact.evaluation.metrics import expression_error
    from reenact.evaluation.score import output_landmarks

    has, driver, target = data["has"], data["driver"], _target(data)
    rows = []
    for spec in outputs:
        folder, _, method = spec.partition(":")
        if not method:
            produced = json.loads((pathlib.Path(folder) / "produce.json").read_text())["methods"]
            if len(produced) != 1:
                raise SystemExit(f"{folder} holds {sorted(produced)}: name one as {folder}:METHOD")
            method = next(iter(produced))
        frames = frames_io.load(pathlib.Path(folder) / f"{method}.npz")
        if len(frames) != len(has):
            raise SystemExit(f"{spec}: {len(frames)} frames, the bundle has {len(has)} driving frames")
        pts = output_landmarks(frames, frames.shape[1])[has]
        rows.append({"output": f"{folder}:{method}", "vs_driver": _parts(expression_error(driver, pts)),
                     "vs_target": _parts(expression_error(target, pts))})
    return rows


def detector_noise(bundle: str) -> dict:
    """The scan frames detected again (tracking mode, as score runs it) against the bundle's scan points."""
    from reenact.evaluation.metrics import expression_error
    from reenact.evaluation.score import output_landmarks

    with np.load(bundle, allow_pickle=True) as b:
        h = b["scan_has_face"].astype(bool)
        crops, points = b["scan_crops"][h], b["scan_points"][h].astype(np.float64)
    return _parts(expression_error(points, output_landmarks(crops, crops.shape[1])))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundle", help="an evaluation bundle (.npz from reenact eval prepare) with its scan")
    p.add_argument("--k", type=float, nargs="+", default=[0.0, 2.0], help="opening_range values of the target rows")
    p.add_argument("--outputs", action="append", default=[], help="a produce folder, DIR[:METHOD] (repeatable)")
    p.add_argument("--noise", action="store_true", help="also the landmark detector's error on the scan frames")
    ns = p.parse_args(argv)
    data = _load(ns.bundle)
    f = floors(data, ns.k)
    print(f"bundle {ns.bundle}: {f['frames']} driving frames with a face, {f['anchors']} scan frames")
    print("| what (against the driver unless said) | expr err | lips | eyes |")
    print("|---|---|---|---|")
    for r in f["target"]:
        print(f"| target, reference {r['reference']}, opening_range {r['k']:g} (perfect tracking) | "
              f"{r['expression']:.4f} | {r['lips']:.4f} | {r['eyes']:.4f} |")
    print(f"| best scan frame per driving frame (chosen by the metric) | {f['best_scan']['expression']:.4f} | "
          f"{f['best_scan']['lips']:.4f} | - |")
    print(f"| best scan frame vs the target (matched, k 0) | - | {f['best_scan_vs_target']['lips']:.4f} | - |")
    for r in output_rows(data, ns.outputs):
        d, t = r["vs_driver"], r["vs_target"]
        print(f"| {r['output']} (MediaPipe on the outputs) | {d['expression']:.4f} | {d['lips']:.4f} | "
              f"{d['eyes']:.4f} |")
        print(f"| {r['output']} vs the target | {t['expression']:.4f} | {t['lips']:.4f} | {t['eyes']:.4f} |")
    if ns.noise:
        n = detector_noise(ns.bundle)
        print(f"| detector: scan frames detected again vs the scan points | {n['expression']:.4f} | "
              f"{n['lips']:.4f} | {n['eyes']:.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
