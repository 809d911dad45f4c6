"""HTML report (reenact.report: matplotlib plots, a strip of frames) and the markdown results table."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from reenact.report import Plot, Report, Series, StripItem, write_html

STRIP_FRAMES = 8

# (column, how to read it from a method's aggregate, format)
COLUMNS = (
    ("id dist (median)", lambda a: _get(a, "identity_distance", "median"), "{:.3f}"),
    ("id < 0.5", lambda a: a.get("identity_below_0_5"), "{:.0%}"),
    ("dlib face", lambda a: _ratio(a.get("identity_faces_found"), a.get("frames")), "{:.0%}"),
    ("expr err", lambda a: _get(a, "expression_error", "mean"), "{:.3f}"),
    ("lips", lambda a: _get(a, "lips_error", "mean"), "{:.3f}"),
    ("eyes", lambda a: _get(a, "eyes_error", "mean"), "{:.3f}"),
    ("mouth r", lambda a: a.get("mouth_open_corr"), "{:.2f}"),
    ("eye r", lambda a: a.get("eye_open_corr"), "{:.2f}"),
    ("expr err (dlib68)", lambda a: _get(a, "expression_error_68", "mean"), "{:.3f}"),
    ("mouth r (dlib68)", lambda a: a.get("mouth_open_corr_68"), "{:.2f}"),
    ("eye r (dlib68)", lambda a: a.get("eye_open_corr_68"), "{:.2f}"),
    ("yaw/pitch/roll err (deg)", lambda a: _pose(a), "{}"),
    ("jitter ratio", lambda a: a.get("jitter_ratio"), "{:.2f}"),
    ("kp err vs GT", lambda a: _get(a, "keypoint_error_gt", "mean"), "{:.3f}"),
    ("PSNR dB", lambda a: _get(a, "psnr_db", "mean"), "{:.1f}"),
    ("mesh face", lambda a: _ratio(a.get("output_faces_found"), a.get("frames")), "{:.0%}"),
    ("frames/s", lambda a: a.get("fps"), "{:.2f}"),
    ("enroll s", lambda a: a.get("enroll_seconds"), "{:.0f}"),
)


def _get(a: dict, key: str, stat: str):
    v = a.get(key)
    return None if not isinstance(v, dict) else v.get(stat)


def _ratio(n, d):
    return None if n is None or not d else n / d


def _pose(a: dict):
    p = a.get("pose_error_deg") or {}
    vals = [(p.get(k) or {}).get("mean") for k in ("yaw", "pitch", "roll")]
    return None if all(v is None for v in vals) else "/".join("-" if v is None else f"{v:.1f}" for v in vals)


def markdown_table(results: dict, methods=None) -> str:
    """One markdown table row per method of a results dict (score's output)."""
    methods = methods or list(results["methods"])
    head = "| method | " + " | ".join(c[0] for c in COLUMNS) + " |"
    sep = "|---|" + "---|" * len(COLUMNS)
    rows = [head, sep]
    for name in methods:
        a = results["methods"][name]["aggregate"]
        cells = []
        for _, get, fmt in COLUMNS:
            v = get(a)
            cells.append("-" if v is None else fmt.format(v))
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def write_report(path: str | Path, results: dict, bundle, outputs: dict[str, np.ndarray]) -> Path:
    import cv2

    names = list(outputs)
    t = bundle.num_frames
    rep = Report(title=f"reenact eval: {results.get('protocol') or 'run'}",
                 subtitle=f"driving {results['bundle'].get('driving')}")
    rep.notices.append(results["identity"]["sface_note"])
    if results["bundle"].get("notes"):
        rep.notices.append(results["bundle"]["notes"])
    r = next(iter(outputs.values())).shape[1]
    picks = np.unique(np.linspace(0, t - 1, min(STRIP_FRAMES, t)).round().astype(int))
    rep.strip_rows = ["driver (aligned crop)", *names]
    for i in picks:
        drv = cv2.resize(bundle["drv_crops"][i], (max(r, 96), max(r, 96)), interpolation=cv2.INTER_AREA)
        imgs = [drv] + [cv2.resize(outputs[n][i], (max(r, 96), max(r, 96)), interpolation=cv2.INTER_NEAREST)
                        for n in names]
        rep.strip.append(StripItem(int(i), imgs))
    rep.strip_caption = "Outputs are shown at their own resolution, enlarged."
    x = list(range(t))
    per = {n: results["methods"][n]["per_frame"] for n in names}
    drv = results["driver"]["per_frame"]

    def series(key):
        return [Series(n, x, _nan(per[n].get(key))) for n in names]

    rep.plots = [
        Plot("Identity distance to the nearest reference (dlib; < 0.6 same person)", series("identity_distance"),
             "frame", "distance"),
        Plot("Expression error (lips + eyes, inter-ocular normalized)", series("expression_error"), "frame", "error"),
        Plot("Mouth opening ratio", [Series("driver", x, _nan(drv["mouth_open"]))] + series("mouth_open"),
             "frame", "ratio"),
        Plot("Eye opening ratio", [Series("driver", x, _nan(drv["eye_open"]))] + series("eye_open"), "frame", "ratio"),
    ]
    if "mouth_open_68" in drv:  # results scored before the dlib 68-point second opinion have no such series
        rep.plots.append(Plot("Mouth opening ratio, dlib 68-point landmarks (second opinion)",
                              [Series("driver", x, _nan(drv["mouth_open_68"]))] + series("mouth_open_68"),
                              "frame", "ratio"))
    rep.plots += [
        Plot("Yaw (rigid fit)", [Series("driver", x, _nan(drv["yaw"]))] + series("yaw"), "frame", "degrees"),
    ]
    if any("keypoint_error_gt" in p for p in per.values()):
        rep.plots.append(Plot("Keypoint error vs ground truth", series("keypoint_error_gt"), "frame", "error"))
    rep.sections.append(("Summary (markdown)", [("table", markdown_table(results, names))]))
    for n in names:
        a = results["methods"][n]["aggregate"]
        rows = [(k, _fmt(v)) for k, v in a.items()]
        if results["methods"][n].get("notes"):
            rows.append(("notes", results["methods"][n]["notes"]))
        rep.sections.append((f"Method {n}", rows))
    d = results["driver"]
    rep.facts = [("driving frames", str(d["frames"])), ("driving frames without a face", str(d["frames_without_face"])),
                 ("driver jitter (IOD units)", _fmt(d["jitter"])),
                 ("identity references", f"{results['identity']['references_with_face']} of "
                                         f"{results['identity']['references']} with a dlib face"),
                 ("device", str((results.get("produce") or {}).get("device_name"))),
                 ("person", str((results.get("produce") or {}).get("person")))]
    return write_html(rep, path)


def _nan(values):
    return [float("nan") if v is None else float(v) for v in (values or [])]


def _fmt(v) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k} {_fmt(x)}" for k, x in v.items())
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)
