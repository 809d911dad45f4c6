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

With the anchors' own identity (`benchmarks/anchor_identity.py score --json`, per anchor; `--anchors
FILE`, default FOLDER/anchors.json where it exists) it also prints what each frame inherits: the identity
distance of the renders of the anchors its mix is made of (weighted by the mix's positive part), the
anchor most frames are dominated by, and the per-frame Spearman correlation of frame and inherited
identity. A frame identity close to the inherited one says the optimizer's frames are as good as the
anchors they use, and the question is which anchors it uses; a frame identity well above it says the
blend (or the motion away from the anchors) loses identity.
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
    stats = np.asarray(stats)
    if not np.isfinite(stats).any():   # a constant series: no rank correlation to speak of
        return float("nan"), float("nan")
    lo, hi = np.nanpercentile(stats, [2.5, 97.5])
    return float(lo), float(hi)


def _finite_median(values: list) -> float | None:
    v = np.array([np.nan if x is None else x for x in values], np.float64)
    return float(np.median(v[np.isfinite(v)])) if np.isfinite(v).any() else None


def inherited_identity(alpha: np.ndarray, per_anchor: list) -> np.ndarray:
    """[T] identity distance of the anchors' renders each frame's mix is made of: sum_i w_i d_i over the mix's
    positive weights w (renormalized) and the anchors with a face (d_i known)."""
    d = np.array([np.nan if v is None else v for v in per_anchor], np.float64)
    if alpha.shape[1] != len(d):
        raise SystemExit(f"{alpha.shape[1]} anchors in the latents but {len(d)} in the anchors' identity file")
    w = np.clip(alpha.astype(np.float64), 0, None) * np.isfinite(d)
    total = w.sum(1)
    return np.where(total > 0, (w * np.nan_to_num(d)).sum(1) / np.where(total > 0, total, 1), np.nan)


def analyse(folder: Path, method: str, anchors: Path | None = None) -> dict:
    if not (folder / "results.json").exists():
        raise SystemExit(f"{folder}: no results.json (score it first: reenact eval score {folder} --bundle ...)")
    results = json.loads((folder / "results.json").read_text())
    if method not in results["methods"]:
        raise SystemExit(f"{folder}: no scored method {method!r} (have {sorted(results['methods'])})")
    dist = np.array([np.nan if v is None else v for v in results["methods"][method]["per_frame"]["identity_distance"]],
                    np.float64)
    with np.load(folder / f"{method}.npz") as z:
        if "anchors_eff" not in z.files:
            raise SystemExit(f"{folder / (method + '.npz')}: no anchors_eff (produced before it was stored)")
        eff = z["anchors_eff"].astype(np.float64)
        alpha = z["alpha"] if "alpha" in z.files else None
    if len(eff) != len(dist):
        raise SystemExit(f"{folder}: {len(eff)} latents but {len(dist)} scored frames")
    ok = np.isfinite(dist) & np.isfinite(eff)
    x, y = eff[ok], dist[ok]
    out = {"folder": str(folder), "method": method, "frames": int(ok.sum()),
           "anchors_eff_median": float(np.median(x)) if len(x) else None,
           "identity_median": float(np.median(y)) if len(y) else None}
    if ok.sum() >= 6:
        out["spearman"] = spearman(x, y)
        out["spearman_95"] = block_interval(x, y)
        cut = np.quantile(x, [1 / 3, 2 / 3])
        thirds = [y[x <= cut[0]], y[(x > cut[0]) & (x <= cut[1])], y[x > cut[1]]]
        out["identity_by_third"] = [float(np.median(t)) if len(t) else None for t in thirds]
        out["anchors_eff_cuts"] = [float(c) for c in cut]
    anchors = anchors if anchors is not None else (folder / "anchors.json" if (folder / "anchors.json").exists() else None)
    if anchors is not None and alpha is not None:
        per = json.loads(Path(anchors).read_text()).get("per_anchor")
        if per is None:
            raise SystemExit(f"{anchors}: no per-anchor identity (score it again with benchmarks/anchor_identity.py)")
        inh = inherited_identity(alpha, per["render_to_refs"])
        both = np.isfinite(inh) & np.isfinite(dist)
        counts = np.bincount(alpha.argmax(1), minlength=alpha.shape[1])
        top = int(counts.argmax())
        out.update({"anchors_file": str(anchors), "inherited_median": float(np.median(inh[both])) if both.any() else None,
                    "anchor_renders_median": _finite_median(per["render_to_refs"]),
                    "dominant_anchor": top, "dominant_share": float(counts[top] / len(alpha)),
                    "dominant_render_id": per["render_to_refs"][top],
                    "spearman_inherited": spearman(inh[both], dist[both]) if both.sum() >= 6 else None})
    return out


def _num(v: float | None, digits: int = 3) -> str:
    return "-" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="+", type=Path, help="scored `reenact eval produce` output folders")
    ap.add_argument("--method", default="ours-relative")
    ap.add_argument("--anchors", type=Path, default=None,
                    help="anchor_identity.py's --json for the person of every folder (default FOLDER/anchors.json)")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    ns = ap.parse_args(argv)
    rows = [analyse(f, ns.method, ns.anchors) for f in ns.folders]
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
        print(f"| {r['folder']} | {r['frames']} | {_num(r['anchors_eff_median'], 2)} | {_num(r['identity_median'])} "
              f"| {rho} | {thirds} |")
    inherited = [r for r in rows if "inherited_median" in r]
    if inherited:
        print("\n| folder | id dist (median) | inherited from its anchors (median) | all anchors' renders (median) "
              "| dominant anchor: share of frames, its render's id | Spearman (inherited, id) |")
        print("|---|---|---|---|---|---|")
        for r in inherited:
            dom = r["dominant_render_id"]
            rho = "-" if r["spearman_inherited"] is None else f"{r['spearman_inherited']:+.2f}"
            print(f"| {r['folder']} | {_num(r['identity_median'])} | {_num(r['inherited_median'])} | "
                  f"{_num(r['anchor_renders_median'])} | {r['dominant_anchor']}: {r['dominant_share']:.0%}, "
                  f"{_num(dom)} | {rho} |")
    if ns.json:
        ns.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
