"""Paired per-frame comparison of two scored methods on the same driving frames (`reenact eval compare`).

A table's aggregate (say expression error 0.037 vs 0.041) does not say whether one method is better or the
difference is noise. Both methods were scored on the same driving frames, so the per-frame differences
d_t = A_t - B_t are paired: this reports their mean, a bootstrap confidence interval of that mean and the
fraction of frames where A is lower. Frames where either side has no value (no face found) are left out
and counted.

Consecutive video frames are not independent, so an interval that resamples single frames (block 1) is
optimistic; `block` > 1 resamples runs of that many consecutive frames (moving-block bootstrap), which
keeps the autocorrelation inside a block and gives a more honest, wider interval.

Correlation metrics (CORRELATIONS: mouth_open_corr, eye_open_corr and their _68 twins) are not per-frame
values but one statistic over the video: r(driver, A) - r(driver, B), the two correlations with the
driver's series computed on the same frames, with the same block bootstrap over those frames (each
resample recomputes both correlations on the resampled frames; resamples whose series are constant are
dropped). Higher is better there, so "A lower on" does not apply ('-').
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
# correlation metric -> the per-frame ratio series it correlates between the driver and the output
CORRELATIONS = {"mouth_open_corr": "mouth_open", "eye_open_corr": "eye_open",
                "mouth_open_corr_68": "mouth_open_68", "eye_open_corr_68": "eye_open_68"}


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
    _check(resamples, level, block)
    d = a - b
    keep = np.isfinite(d)
    d = d[keep]
    n = d.size
    if n == 0:
        raise ValueError(f"{metric or 'series'}: no frame has a value for both methods")
    block = min(block, n)
    means = np.concatenate([d[idx].mean(axis=1) for idx in _resamples(n, block, resamples, seed)])
    low, high = _interval(means, level)
    return PairedDifference(metric=metric, frames=int(n), skipped=int((~keep).sum()), mean=float(d.mean()),
                            low=low, high=high, lower_fraction=float((d < 0).mean()), level=level, block=block,
                            resamples=resamples)


def paired_correlation_difference(driver, a, b, *, metric: str = "", resamples: int = 2000, level: float = 0.95,
                                  block: int = 1, seed: int = 0) -> PairedDifference:
    """r(driver, a) - r(driver, b) over the frames where all three are finite, with a percentile bootstrap
    interval (the same moving blocks as paired_difference; both correlations on each resample's frames)."""
    driver, a, b = (np.asarray(x, dtype=float) for x in (driver, a, b))
    if not (driver.shape == a.shape == b.shape and a.ndim == 1):
        raise ValueError(f"{metric or 'series'}: the driver and the two methods have {driver.shape}, {a.shape} and "
                         f"{b.shape} frames: not scored on the same driving frames")
    _check(resamples, level, block)
    keep = np.isfinite(driver) & np.isfinite(a) & np.isfinite(b)
    x, ya, yb = driver[keep], a[keep], b[keep]
    n = int(keep.sum())
    if n < 3:
        raise ValueError(f"{metric or 'series'}: fewer than 3 frames have a value for the driver and both methods")
    full = _corr(x[None], ya[None])[0] - _corr(x[None], yb[None])[0]
    if not np.isfinite(full):
        raise ValueError(f"{metric or 'series'}: a constant series on these frames: no correlation")
    block = min(block, n)
    diffs = np.concatenate([_corr(x[idx], ya[idx]) - _corr(x[idx], yb[idx])
                            for idx in _resamples(n, block, resamples, seed)])
    low, high = _interval(diffs[np.isfinite(diffs)], level)
    return PairedDifference(metric=metric, frames=n, skipped=int((~keep).sum()), mean=float(full), low=low,
                            high=high, lower_fraction=float("nan"), level=level, block=block, resamples=resamples)


def _check(resamples, level, block) -> None:
    if not (isinstance(resamples, int) and resamples >= 100):
        raise ValueError(f"resamples must be an integer >= 100, got {resamples!r}")
    if not (0 < level < 1):
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    if not (isinstance(block, int) and block >= 1):
        raise ValueError(f"block must be an integer >= 1, got {block!r}")


def _resamples(n: int, block: int, resamples: int, seed: int):
    """Index matrices [k, n] of moving-block bootstrap resamples of n frames, _CHUNK resamples at a time."""
    rng = np.random.default_rng(seed)
    per = math.ceil(n / block)
    for start in range(0, resamples, _CHUNK):
        k = min(_CHUNK, resamples - start)
        starts = rng.integers(0, n - block + 1, size=(k, per))
        yield (starts[:, :, None] + np.arange(block)).reshape(k, -1)[:, :n]


def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2 * 100
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def _corr(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Row-wise Pearson correlation of [k, n] arrays (NaN for a constant row)."""
    x = x - x.mean(axis=1, keepdims=True)
    y = y - y.mean(axis=1, keepdims=True)
    den = np.sqrt((x * x).sum(axis=1) * (y * y).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 1e-12, (x * y).sum(axis=1) / den, np.nan)


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
    kw = {"resamples": resamples, "level": level, "block": block, "seed": seed}
    rows = []
    for m in metrics:
        if m in CORRELATIONS:
            series = CORRELATIONS[m]
            driver = _series(ra.get("driver", {}).get("per_frame", {}), series, f"{pa}: driver")
            rows.append(paired_correlation_difference(driver, _series(fa, series, f"{pa}:{ma}"),
                                                      _series(fb, series, f"{pb}:{mb}"), metric=m, **kw))
        else:
            rows.append(paired_difference(_series(fa, m, f"{pa}:{ma}"), _series(fb, m, f"{pb}:{mb}"), metric=m, **kw))
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
        lower = "-" if math.isnan(r["lower_fraction"]) else f"{100 * r['lower_fraction']:.0f} %"
        lines.append(f"| {r['metric']} | {r['frames']} ({r['skipped']}) | {r['mean']:+.4f} | "
                     f"[{r['low']:+.4f}, {r['high']:+.4f}] ({how}) | {lower} | "
                     f"{'yes' if r['excludes_zero'] else 'no'} |")
    return "\n".join(lines)
