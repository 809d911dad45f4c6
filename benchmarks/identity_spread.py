"""Does identity go where the optimizer blends many anchors?

The anchors' own renders are as close to the person as the real frames (docs/RESULTS.md, thirteenth
session: 0.242 vs 0.248), the optimizer's frames are not (0.303-0.310). A frame's latent is a mix of the
anchors; this script relates, frame by frame, how many anchors that mix blends (`anchors_eff`, exp of the
mix's entropy, which `reenact eval produce` stores beside the ours methods' frames) to the frame's identity
distance (from `reenact eval score`'s results.json), for one or more scored output folders:

    python benchmarks/identity_spread.py runs/real/g-bp1 runs/real/g-bp1s1 [--method ours-relative] [--json out.json]

Prints per folder: frames with a face, median anchors_eff, Spearman's rank correlation between anchors_eff
and identity distance (with a 95 % interval from a block bootstrap: frames are not independent), and the
median identity distance in the thirds of the frames by anchors_eff. A positive correlation with an
interval above 0 says wide blends lose identity (the `alpha_entropy` option is the lever then); one near 0
says the loss is elsewhere.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank), 0-based."""
    order = np.argsort(x, kind="mergesort")
    r = np.empty(len(x), np.float64)
    r[order] = np.arange(len(x), dtype=np.float64)
    for v in np.unique(x):
        tied = x == v
        if tied.sum() > 1:
            r[tied] = r[tied].mean()
    return r


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    rx, ry = ranks(x), ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = float(np.sqrt((rx ** 2).sum() * (ry ** 2).sum()))
    return float((rx * ry).sum() / den) if den > 0 else float("nan")


def block_interval(x: np.ndarray, y: np.ndarray, block: int = 8, reps: int = 2000,
                   seed: int = 0) -> tuple[float, float]:
    """95 % interval of spearman(x, y) from resampling blocks of `block` consecutive frames."""
    n = len(x)
    starts = np.arange(0, max(1, n - block + 1))
    rng = np.random.default_rng(seed)
    k = int(np.ceil(n / block))
    stats = []
    for _ in range(reps):
        idx = np.concatenate([np.arange(s, min(n, s + block)) for s in rng.choice(starts, k)])[:n]
        stats.append(spearman(x[idx], y[idx]))
    lo, hi = np.nanpercentile(stats, [2.5, 97.5])
    return float(lo), float(hi)


def analyse(folder: Path, method: str) -> dict:
    results = json.loads((folder / "results.json").read_text())
    if method not in results["methods"]:
        raise SystemExit(f"{folder}: no scored method {method!r} (have {sorted(results['methods'])})")
    dist = np.array([np.nan if v is None else v for v in results["methods"][method]["per_frame"]["identity_distance"]],
                    np.float64)
    with np.load(folder / f"{method}.npz") as z:
        if "anchors_eff" not in z.files:
            raise SystemExit(f"{folder / (method + '.npz')}: no anchors_eff (produced before it was stored)")
        eff = z["anchors_eff"].astype(np.float64)
    if len(eff) != len(dist):
        raise SystemExit(f"{folder}: {len(eff)} latents but {len(dist)} scored frames")
    ok = np.isfinite(dist) & np.isfinite(eff)
    x, y = eff[ok], dist[ok]
    out = {"folder": str(folder), "method": method, "frames": int(ok.sum()), "anchors_eff_median": float(np.median(x)),
           "identity_median": float(np.median(y))}
    if ok.sum() >= 6:
        out["spearman"] = spearman(x, y)
        out["spearman_95"] = block_interval(x, y)
        cut = np.quantile(x, [1 / 3, 2 / 3])
        thirds = [y[x <= cut[0]], y[(x > cut[0]) & (x <= cut[1])], y[x > cut[1]]]
        out["identity_by_third"] = [float(np.median(t)) if len(t) else None for t in thirds]
        out["anchors_eff_cuts"] = [float(c) for c in cut]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="+", type=Path, help="scored `reenact eval produce` output folders")
    ap.add_argument("--method", default="ours-relative")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    ns = ap.parse_args(argv)
    rows = [analyse(f, ns.method) for f in ns.folders]
    print("| folder | frames | anchors_eff (median) | id dist (median) | Spearman (anchors_eff, id) [95 %] "
          "| id dist by anchors_eff third (low / mid / high) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if "spearman" in r:
            lo, hi = r["spearman_95"]
            rho = f"{r['spearman']:+.2f} [{lo:+.2f}, {hi:+.2f}]"
            thirds = " / ".join("-" if t is None else f"{t:.3f}" for t in r["identity_by_third"])
        else:
            rho, thirds = "too few frames", "-"
        print(f"| {r['folder']} | {r['frames']} | {r['anchors_eff_median']:.2f} | {r['identity_median']:.3f} "
              f"| {rho} | {thirds} |")
    if ns.json:
        ns.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
