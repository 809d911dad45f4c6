"""The HTML report renders from synthetic data, with matplotlib plots and with the SVG fallback."""

from __future__ import annotations

import base64
import re

import cv2
import numpy as np
import pytest

from reenact.report import (
    Plot,
    Report,
    Series,
    StripItem,
    enrollment_plots,
    frame_metric_plots,
    plot_svg,
    png_data_uri,
    render_html,
    write_html,
)


def _synthetic_report(n=12) -> Report:
    rng = np.random.default_rng(1)
    frames = [{"index": i, "has_face": i != 3, "keypoint_error": 0.05 + 0.01 * np.sin(i),
               "losses": {"kp": 0.1 / (i + 1), "delta": 0.001 * (i + 1)},
               "optimize_seconds": 0.2 + 0.01 * i, "render_seconds": 0.03} for i in range(n)]
    history = [{"t": 2.0 * i, "stage": "tune", "fraction": i / 10, "losses": {"mse": 0.1 / (i + 1)}}
               for i in range(11)]
    strip = [StripItem(i, [rng.integers(0, 255, (144, 176, 3), dtype=np.uint8),
                           rng.integers(0, 255, (32, 32, 3), dtype=np.uint8),
                           rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) if i % 8 == 0 else None])
             for i in range(0, n, 4)]
    return Report(title="reenact <demo>", subtitle="astronaut fixture", notices=["TEST FIXTURE & co"],
                  timings=[("enrollment", "123.4 s"), ("reenactment", "5.2 frames/s")],
                  facts=[("profile", "cpu-quick")], strip=strip,
                  strip_rows=["driver", "result", "edited smile=+1.5"], strip_caption="synthetic",
                  plots=frame_metric_plots(frames) + enrollment_plots(history),
                  sections=[("Landmarks", [("crop jitter raw", "1.2 px"), ("smoothed", "0.3 px")])],
                  outputs=[("result video", "result.mp4")])


@pytest.mark.parametrize("use_mpl", [True, False])
def test_report_is_self_contained_html_with_frames_plots_and_tables(tmp_path, use_mpl):
    report = _synthetic_report()
    path = write_html(report, tmp_path / "report.html", use_matplotlib=use_mpl)
    text = path.read_text()
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert "reenact &lt;demo&gt;" in text and "TEST FIXTURE &amp; co" in text   # escaped
    assert "123.4 s" in text and "1.2 px" in text and 'href="result.mp4"' in text
    # no external resources: every src is inline
    srcs = re.findall(r'src="([^"]*)"', text)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert len(re.findall(r'alt="driver \d+"', text)) == 3
    assert len(re.findall(r'alt="edited smile=\+1.5 \d+"', text)) == 2 and text.count('class="blank"') == 1
    n_plots = len(report.plots)
    assert n_plots == 5
    if use_mpl:
        assert len(re.findall(r'<img class="plot"', text)) == n_plots and "<svg" not in text
    else:
        assert text.count("<svg") == n_plots and "<polyline" in text
    # the strip images decode back to pictures
    data = base64.b64decode(srcs[0].split(",", 1)[1])
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (144, 176, 3)
    assert not list(tmp_path.glob("*.part"))


def test_png_data_uri_downscales_large_frames():
    uri = png_data_uri(np.zeros((1000, 500, 3), np.uint8), max_side=100)
    img = cv2.imdecode(np.frombuffer(base64.b64decode(uri.split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR)
    assert img.shape[:2] == (100, 50)


def test_svg_plot_handles_nan_single_points_log_scale_and_empty_data():
    svg = plot_svg(Plot("t", [Series("a", [0, 1, 2], [1.0, float("nan"), 3.0]), Series("b", [5], [2.0])],
                        xlabel="x", ylabel="y"))
    assert svg.startswith("<svg") and "<polyline" in svg and "<circle" in svg and ">a<" in svg
    log = plot_svg(Plot("log", [Series("l", [0, 1, 2], [1e-3, 1e-2, 0.0])], logy=True))
    assert "<polyline" in log and ">0.001<" in log
    assert "no data" in plot_svg(Plot("empty", [Series("e", [], [])]))
    flat = plot_svg(Plot("flat", [Series("f", [0, 1], [2.0, 2.0])]))
    assert "<polyline" in flat


def test_metric_plots_skip_frames_without_face():
    frames = [{"index": 0, "has_face": False, "keypoint_error": 9.0},
              {"index": 1, "has_face": True, "keypoint_error": 0.1}]
    plots = frame_metric_plots(frames)
    assert list(plots[0].series[0].x) == [1]
    assert frame_metric_plots([]) == [] and enrollment_plots([]) == []


def test_render_html_without_optional_sections():
    text = render_html(Report(title="bare"), use_matplotlib=False)
    assert "<h1>bare</h1>" in text and "Timings" not in text and "<svg" not in text
