"""Self-contained HTML report of a reenactment run (used by `reenact demo`).

One file, no external resources: frames are inline base64 PNGs, plots are inline PNGs drawn with
matplotlib (object API, Agg canvas; no pyplot state) when it is installed, otherwise inline SVG drawn
here. Inputs are plain Python values (see `Report`), so the report can be rendered from synthetic data.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")


@dataclass
class Series:
    label: str
    x: Sequence[float]
    y: Sequence[float]


@dataclass
class Plot:
    title: str
    series: list[Series]
    xlabel: str = ""
    ylabel: str = ""
    logy: bool = False


@dataclass
class StripItem:
    """One column of the frame strip: one RGB uint8 image per row of `Report.strip_rows` (None = blank)."""

    index: int
    images: list[np.ndarray | None]


@dataclass
class Report:
    title: str = "reenact demo"
    subtitle: str = ""
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"))
    notices: list[str] = field(default_factory=list)
    timings: list[tuple[str, str]] = field(default_factory=list)     # (what, value with unit)
    facts: list[tuple[str, str]] = field(default_factory=list)       # run parameters
    strip: list[StripItem] = field(default_factory=list)
    strip_rows: list[str] = field(default_factory=lambda: ["driver", "result"])
    strip_caption: str = ""
    plots: list[Plot] = field(default_factory=list)
    sections: list[tuple[str, list[tuple[str, str]]]] = field(default_factory=list)  # (heading, key/values)
    outputs: list[tuple[str, str]] = field(default_factory=list)     # (label, relative path)


# ---- images -----------------------------------------------------------------------------------------


def png_data_uri(rgb: np.ndarray, max_side: int = 256) -> str:
    """RGB uint8 [H, W, 3] -> data:image/png;base64 URI (downscaled so the longer side <= max_side)."""
    import cv2

    rgb = np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))
    h, w = rgb.shape[:2]
    scale = max_side / max(h, w)
    if scale < 1:
        rgb = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".png", rgb[:, :, ::-1])
    if not ok:
        raise ValueError("PNG encoding failed")
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


# ---- plots ------------------------------------------------------------------------------------------


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _finite(series: Series) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(series.x, dtype=float)
    y = np.asarray(series.y, dtype=float)
    n = min(len(x), len(y))
    x, y = x[:n], y[:n]
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def plot_png_uri(plot: Plot, width_in: float = 6.4, height_in: float = 2.8) -> str:
    """The plot as an inline PNG drawn with matplotlib."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for i, s in enumerate(plot.series):
        x, y = _finite(s)
        if plot.logy:
            keep = y > 0
            x, y = x[keep], y[keep]
        ax.plot(x, y, label=s.label, color=PALETTE[i % len(PALETTE)], linewidth=1.4,
                marker="o" if len(x) < 12 else None, markersize=3)
    if plot.logy:
        ax.set_yscale("log")
    ax.set_title(plot.title, fontsize=10)
    ax.set_xlabel(plot.xlabel, fontsize=9)
    ax.set_ylabel(plot.ylabel, fontsize=9)
    ax.tick_params(labelsize=8)
    ax.grid(True, alpha=0.3)
    if len(plot.series) > 1:
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not math.isfinite(lo) or not math.isfinite(hi):
        return []
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(1, n - 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step) * step
    ticks = []
    t = start
    while t <= hi + 1e-12 * abs(hi) and len(ticks) < 20:
        ticks.append(round(t, 12))
        t += step
    return ticks


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1000 or abs(v) < 0.01:
        return f"{v:.2g}"
    return f"{v:.3g}"


def _svg_data(plot: Plot) -> list[tuple[str, np.ndarray, np.ndarray]]:
    data = []
    for s in plot.series:
        x, y = _finite(s)
        if plot.logy:
            keep = y > 0
            x, y = x[keep], np.log10(y[keep])
        data.append((s.label, x, y))
    return data


def _svg_range(xs: np.ndarray, ys: np.ndarray) -> tuple[float, float, float, float]:
    x0, x1 = float(xs.min()), float(xs.max())
    y0, y1 = float(ys.min()), float(ys.max())
    if x1 == x0:
        x0, x1 = x0 - 0.5, x1 + 0.5
    pad = (abs(y0) * 0.1 or 0.5) if y1 == y0 else (y1 - y0) * 0.05
    return x0, x1, y0 - pad, y1 + pad


def plot_svg(plot: Plot, width: int = 640, height: int = 280) -> str:
    """The plot as inline SVG (no dependencies): axes, ticks, grid, one polyline per series, legend."""
    left, right, top, bottom = 60, 12, 26, 40
    pw, ph = width - left - right, height - top - bottom
    data = _svg_data(plot)
    xs = np.concatenate([d[1] for d in data]) if data else np.array([])
    ys = np.concatenate([d[2] for d in data]) if data else np.array([])
    esc = html.escape
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" class="plot" role="img" aria-label="{esc(plot.title)}">',
           f'<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2:.0f}" y="16" text-anchor="middle" font-size="13">{esc(plot.title)}</text>']
    if xs.size == 0:
        out.append(f'<text x="{width / 2:.0f}" y="{height / 2:.0f}" text-anchor="middle" font-size="12" '
                   'fill="#888">no data</text></svg>')
        return "".join(out)
    x0, x1, y0, y1 = _svg_range(xs, ys)

    def px(v):
        return left + (v - x0) / (x1 - x0) * pw

    def py(v):
        return top + ph - (v - y0) / (y1 - y0) * ph

    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>')
    for t in _nice_ticks(y0, y1):
        label = _fmt(10 ** t) if plot.logy else _fmt(t)
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{py(t):.1f}" y2="{py(t):.1f}" stroke="#eee"/>'
                   f'<text x="{left - 4}" y="{py(t) + 4:.1f}" text-anchor="end" font-size="10">{label}</text>')
    for t in _nice_ticks(x0, x1):
        out.append(f'<line x1="{px(t):.1f}" x2="{px(t):.1f}" y1="{top + ph}" y2="{top + ph + 4}" stroke="#999"/>'
                   f'<text x="{px(t):.1f}" y="{top + ph + 16}" text-anchor="middle" font-size="10">{_fmt(t)}</text>')
    if plot.xlabel:
        out.append(f'<text x="{left + pw / 2:.0f}" y="{height - 6}" text-anchor="middle" font-size="11">'
                   f'{esc(plot.xlabel)}</text>')
    if plot.ylabel:
        out.append(f'<text x="12" y="{top + ph / 2:.0f}" text-anchor="middle" font-size="11" '
                   f'transform="rotate(-90 12 {top + ph / 2:.0f})">'
                   f'{esc(plot.ylabel + (" (log10)" if plot.logy else ""))}</text>')
    for i, (label, x, y) in enumerate(data):
        color = PALETTE[i % len(PALETTE)]
        if len(x) == 1:
            out.append(f'<circle cx="{px(x[0]):.1f}" cy="{py(y[0]):.1f}" r="3" fill="{color}"/>')
        elif len(x):
            pts = " ".join(f"{px(a):.1f},{py(b):.1f}" for a, b in zip(x, y, strict=True))
            out.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{pts}"/>')
        if len(data) > 1:
            ly = top + 12 + 14 * i
            out.append(f'<line x1="{left + pw - 120}" x2="{left + pw - 104}" y1="{ly - 4}" y2="{ly - 4}" '
                       f'stroke="{color}" stroke-width="2"/><text x="{left + pw - 100}" y="{ly}" font-size="10">'
                       f'{esc(label)}</text>')
    out.append("</svg>")
    return "".join(out)


def render_plot(plot: Plot, use_matplotlib: bool | None = None) -> str:
    """HTML for one plot: <img> with a matplotlib PNG, or inline <svg>."""
    if use_matplotlib is None:
        use_matplotlib = have_matplotlib()
    if use_matplotlib:
        return f'<img class="plot" alt="{html.escape(plot.title)}" src="{plot_png_uri(plot)}">'
    return plot_svg(plot)


# ---- the page ---------------------------------------------------------------------------------------

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1100px;
color:#222;padding:0 16px}
h1{margin-bottom:0}h2{margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}
.sub{color:#666;margin-top:4px}
.notice{background:#fff8e1;border-left:4px solid #f0b400;padding:8px 12px;margin:8px 0;font-size:14px}
table{border-collapse:collapse;font-size:14px}td,th{padding:4px 12px;border-bottom:1px solid #eee;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.strip{display:flex;overflow-x:auto;gap:6px;padding-bottom:8px}
.strip figure{margin:0;text-align:center;font-size:12px;color:#555}
.strip img{display:block;width:128px;height:auto;image-rendering:pixelated;border:1px solid #ccc;margin-bottom:3px}
.blank{width:128px;height:128px;background:#f3f3f3;border:1px dashed #ccc;margin-bottom:3px}
.plots{display:flex;flex-wrap:wrap;gap:12px}.plot{max-width:100%}
"""


def _table(rows: Sequence[tuple[str, str]]) -> str:
    esc = html.escape
    return "<table>" + "".join(f"<tr><th>{esc(str(k))}</th><td class=\"num\">{esc(str(v))}</td></tr>"
                               for k, v in rows) + "</table>"


def render_html(report: Report, *, use_matplotlib: bool | None = None) -> str:
    """The whole report as one HTML string."""
    esc = html.escape
    parts = ["<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
             f"<title>{esc(report.title)}</title><style>{CSS}</style></head><body>",
             f"<h1>{esc(report.title)}</h1>",
             f"<p class=\"sub\">{esc(report.subtitle)}{' - ' if report.subtitle else ''}{esc(report.created)}</p>"]
    parts += [f'<div class="notice">{esc(n)}</div>' for n in report.notices]
    if report.timings:
        parts += ["<h2>Timings</h2>", _table(report.timings)]
    if report.strip:
        parts.append("<h2>Driver | result</h2>")
        rows = " / ".join(f"{i + 1}. {r}" for i, r in enumerate(report.strip_rows))
        parts.append(f"<p>Rows, top to bottom: {esc(rows)}. {esc(report.strip_caption)}</p>")
        parts.append('<div class="strip">')
        for item in report.strip:
            imgs = []
            for label, img in zip(report.strip_rows, item.images, strict=False):
                if img is None:
                    imgs.append(f'<div class="blank" title="{esc(label)}: none"></div>')
                else:
                    imgs.append(f'<img alt="{esc(label)} {item.index}" title="{esc(label)}" '
                                f'src="{png_data_uri(img)}">')
            parts.append(f"<figure>{''.join(imgs)}<figcaption>frame {item.index}</figcaption></figure>")
        parts.append("</div>")
    if report.plots:
        parts.append("<h2>Metrics over time</h2><div class=\"plots\">")
        parts += [render_plot(p, use_matplotlib) for p in report.plots]
        parts.append("</div>")
    for heading, rows in report.sections:
        parts += [f"<h2>{esc(heading)}</h2>", _table(rows)]
    if report.facts:
        parts += ["<h2>Run</h2>", _table(report.facts)]
    if report.outputs:
        parts.append("<h2>Files</h2><ul>")
        parts += [f'<li><a href="{esc(path)}">{esc(label)}</a> <code>{esc(path)}</code></li>'
                  for label, path in report.outputs]
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_html(report: Report, path: str | Path, *, use_matplotlib: bool | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(render_html(report, use_matplotlib=use_matplotlib), encoding="utf-8")
    tmp.replace(path)
    return path


# ---- building blocks used by the demo ---------------------------------------------------------------


def frame_metric_plots(frames: Sequence[dict]) -> list[Plot]:
    """Plots of per-frame metrics: keypoint error, optimizer loss terms, optimize/render seconds.

    frames: dicts with "index", "keypoint_error", "losses" (dict), "optimize_seconds", "render_seconds"
    and optionally "has_face" (frames without a face are left out of the error plot).
    """
    if not frames:
        return []
    idx = [f["index"] for f in frames]
    with_face = [f for f in frames if f.get("has_face", True)]
    plots = [Plot("Keypoint error per frame (inter-ocular normalized)",
                  [Series("keypoint error", [f["index"] for f in with_face],
                          [f.get("keypoint_error", float("nan")) for f in with_face])],
                  xlabel="frame", ylabel="error")]
    names = sorted({k for f in frames for k in (f.get("losses") or {})})
    if names:
        plots.append(Plot("Optimizer loss terms per frame",
                          [Series(n, idx, [(f.get("losses") or {}).get(n, float("nan")) for f in frames])
                           for n in names], xlabel="frame", ylabel="loss", logy=True))
    plots.append(Plot("Time per frame",
                      [Series("optimize", idx, [f.get("optimize_seconds", float("nan")) for f in frames]),
                       Series("render", idx, [f.get("render_seconds", float("nan")) for f in frames])],
                      xlabel="frame", ylabel="seconds"))
    return plots


def enrollment_plots(history: Sequence[dict]) -> list[Plot]:
    """Plots of the enrollment job's progress stream: each loss over wall time, overall fraction.

    history: dicts with "t" (seconds since the job started), "fraction", "stage" and "losses" (dict).
    """
    if not history:
        return []
    t = [h["t"] for h in history]
    plots = [Plot("Enrollment progress", [Series("fraction done", t, [h.get("fraction", 0.0) for h in history])],
                  xlabel="seconds", ylabel="fraction")]
    names = sorted({k for h in history for k in (h.get("losses") or {})})
    if names:
        series = []
        for n in names:
            pts = [(h["t"], h["losses"][n]) for h in history if n in (h.get("losses") or {})]
            series.append(Series(n, [p[0] for p in pts], [p[1] for p in pts]))
        plots.append(Plot("Enrollment losses (as streamed by the job)", series, xlabel="seconds", ylabel="value",
                          logy=all(v > 0 for s in series for v in s.y)))
    return plots
