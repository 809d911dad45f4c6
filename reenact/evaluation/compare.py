"""Paired per-frame comparison of two scored methods on the same driving frames (`reenact eval compare`).

A table's aggregate (say expression error 0.037 vs 0.041) does not say whether one method is better or the
difference is noise. Both methods were scored on the same driving frames, so the per-frame differences
d_t = A_t - B_t are paired: this reports their mean, a bootstrap confidence interval of that mean and the
fraction of frames where A is lower. Frames where either side has no value (no face found) are left out
and counted.

Consecutive video frames are not independent, so an interval that resamples single frames (block 1) is
optimistic; `block` > 1 resamples runs of that many consecutive frames (moving-block bootstrap), which
keeps the autocorrelation inside a block and gives a more honest, wider interval.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

DEFAULT_METRICS = ("expression_error", "expression_error_68")
_SAME_DRIVER = ("driving", "max_frames", "driving_frames", "crop_size")
_CHUNK = 256  # bootstrap resamples drawn at a time (bounds memory on long videos)


@dataclass(frozen=True)
class PairedDifference:
    metric: str
    frames: int          # frames with a value on both sides
    skipped: int         # frames left out (no value on one side or both)
    mean: float          # mean of A - B over those frames
    low: float           # bootstrap interval of the mean
    high: float
    lower_fraction: float  # fraction of those frames where A < B
    level: float
    block: int
    resamples: int

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def paired_difference(a, b, *, metric: str = "", resamples: int = 2000, level: float = 0.95, block: int = 1,
                      seed: int = 0) -> PairedDifference:
    """Mean of a - b over the frames where both are finite, with a percentile bootstrap interval
    (moving blocks of `block` consecutive frames; block 1 = frames resampled one by one)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"{metric or 'series'}: the two methods have {a.shape[0] if a.ndim else 0} and "
                         f"{b.shape[0] if b.ndim else 0} frames: not scored on the same driving frames")
    if not (isinstance(resamples, int) and resamples >= 100):
        raise ValueError(f"resamples must be an integer >= 100, got {resamples!r}")
    if not (0 < level < 1):
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    if not (isinstance(block, int) and block >= 1):
        raise ValueError(f"block must be an integer >= 1, got {block!r}")
    d = a - b
    keep = np.isfinite(d)
    d = d[keep]
    n = d.size
    if n == 0:
        raise ValueError(f"{metric or 'series'}: no frame has a value for both methods")
    block = min(block, n)
    rng = np.random.default_rng(seed)
    per = math.ceil(n / block)
    means = []
    for start in range(0, resamples, _CHUNK):
        k = min(_CHUNK, resamples - start)
        starts = rng.integers(0, n - block + 1, size=(k, per))
        idx = (starts[:, :, None] + np.arange(block)).reshape(k, -1)[:, :n]
        means.append(d[idx].mean(axis=1))
    means = np.concatenate(means)
    tail = (1 - level) / 2 * 100
    return PairedDifference(metric=metric, frames=int(n), skipped=int((~keep).sum()), mean=float(d.mean()),
                            low=float(np.percentile(means, tail)), high=float(np.percentile(means, 100 - tail)),
                            lower_fraction=float((d < 0).mean()), level=level, block=block, resamples=resamples)


def parse_side(text: str) -> tuple[Path, str | None]:
    """'PATH[:METHOD]' -> (results.json path, method or None). PATH may be a scored folder."""
    path, method = text, None
    if ":" in text and not Path(text).exists():
        path, method = text.rsplit(":", 1)
        method = method or None
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no results.json (score the folder first: reenact eval score FOLDER)")
    return p, method


def _load(path: Path) -> dict:
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not a results.json ({err})") from None
    if not isinstance(results, dict) or "methods" not in results:
        raise ValueError(f"{path}: not a results.json of `reenact eval score` (no 'methods')")
    return results


def _method(results: dict, path: Path, method: str | None) -> tuple[str, dict]:
    names = sorted(results["methods"])
    if method is None:
        if len(names) != 1:
            raise ValueError(f"{path} holds methods {names}: name one as {path}:METHOD")
        method = names[0]
    if method not in results["methods"]:
        raise ValueError(f"{path}: no method {method!r}; it holds {names}")
    return method, results["methods"][method]["per_frame"]


def _series(per_frame: dict, metric: str, label: str) -> np.ndarray:
    if metric not in per_frame:
        numeric = sorted(k for k, v in per_frame.items()
                         if isinstance(v, list) and any(isinstance(x, int | float) for x in v))
        raise ValueError(f"{label}: no per-frame metric {metric!r}; per-frame metrics: {numeric}")
    return np.array([np.nan if x is None else x for x in per_frame[metric]], dtype=float)


def compare(a: str, b: str, *, metrics=DEFAULT_METRICS, resamples: int = 2000, level: float = 0.95,
            block: int = 1, seed: int = 0) -> dict:
    """Paired differences A - B of each per-frame metric; `a` and `b` are 'PATH[:METHOD]' (PATH: a
    results.json or a scored folder; METHOD may be left out when the file holds one method)."""
    (pa, ma), (pb, mb) = parse_side(a), parse_side(b)
    return compare_results(_load(pa), ma, _load(pb), mb, labels=(pa, pb), metrics=metrics, resamples=resamples,
                           level=level, block=block, seed=seed)


def compare_results(ra: dict, ma: str | None, rb: dict, mb: str | None, *, labels=("A", "B"),
                    metrics=DEFAULT_METRICS, resamples: int = 2000, level: float = 0.95, block: int = 1,
                    seed: int = 0) -> dict:
    """compare() on two loaded results.json documents (`labels` name them in messages and the report)."""
    pa, pb = labels
    da, db = ra.get("bundle", {}), rb.get("bundle", {})
    differ = [k for k in _SAME_DRIVER if da.get(k) != db.get(k)]
    if differ:
        raise ValueError(f"{pa} and {pb} were scored on different driving frames ({', '.join(differ)} differ): "
                         "a paired comparison needs the same frames")
    ma, fa = _method(ra, pa, ma)
    mb, fb = _method(rb, pb, mb)
    rows = [paired_difference(_series(fa, m, f"{pa}:{ma}"), _series(fb, m, f"{pb}:{mb}"), metric=m,
                              resamples=resamples, level=level, block=block, seed=seed) for m in metrics]
    return {"a": {"results": str(pa), "method": ma}, "b": {"results": str(pb), "method": mb},
            "rows": [asdict(r) | {"excludes_zero": r.excludes_zero} for r in rows]}


def markdown(report: dict) -> str:
    a, b = report["a"], report["b"]
    lines = [f"A = {a['method']} ({a['results']}), B = {b['method']} ({b['results']}); per frame A - B",
             "",
             "| metric | frames (left out) | mean A - B | interval | A lower on | excludes 0 |",
             "|---|---|---|---|---|---|"]
    for r in report["rows"]:
        how = f"{100 * r['level']:g} %, {r['resamples']} resamples" + (f", blocks of {r['block']}" if r["block"] > 1
                                                                       else ", frames resampled one by one")
        lines.append(f"| {r['metric']} | {r['frames']} ({r['skipped']}) | {r['mean']:+.4f} | "
                     f"[{r['low']:+.4f}, {r['high']:+.4f}] ({how}) | {100 * r['lower_fraction']:.0f} % | "
                     f"{'yes' if r['excludes_zero'] else 'no'} |")
    return "\n".join(lines)
