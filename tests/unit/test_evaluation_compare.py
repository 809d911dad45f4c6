"""`reenact eval compare`: paired per-frame differences of two scored methods (reenact.evaluation.compare)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from reenact.evaluation.cli import main
from reenact.evaluation.compare import compare, paired_correlation_difference, paired_difference
from reenact.evaluation.metrics import correlation

DRIVER = {"driving": "drv.mp4", "max_frames": 40, "driving_frames": 40, "crop_size": 128}


def write_results(path, methods: dict[str, dict[str, list]], driver=DRIVER):
    path.mkdir(parents=True, exist_ok=True)
    doc = {"schema": "reenact.eval/1", "bundle": driver,
           "methods": {m: {"aggregate": {}, "per_frame": pf, "notes": []} for m, pf in methods.items()}}
    (path / "results.json").write_text(json.dumps(doc))
    return path


def test_a_constant_shift_gives_that_shift_with_a_zero_width_interval():
    b = np.linspace(0.02, 0.06, 40)
    r = paired_difference(b - 0.01, b, metric="m")
    assert r.mean == pytest.approx(-0.01) and r.low == pytest.approx(-0.01) and r.high == pytest.approx(-0.01)
    assert r.lower_fraction == 1.0 and r.frames == 40 and r.skipped == 0 and r.excludes_zero


def test_identical_series_do_not_exclude_zero():
    a = np.random.default_rng(1).random(50)
    r = paired_difference(a, a.copy())
    assert (r.mean, r.low, r.high, r.lower_fraction) == (0.0, 0.0, 0.0, 0.0) and not r.excludes_zero


def test_noise_around_a_known_shift_covers_it_and_a_null_difference_does_not_exclude_zero():
    rng = np.random.default_rng(2)
    b = rng.random(400)
    shifted = paired_difference(b - 0.05 + rng.normal(0, 0.02, 400), b)
    assert shifted.low < -0.05 < shifted.high and shifted.excludes_zero
    null = paired_difference(b + rng.normal(0, 0.02, 400), b)
    assert null.low < 0 < null.high and not null.excludes_zero


def test_frames_without_a_value_are_left_out_and_counted():
    a = np.array([0.1, np.nan, 0.3, 0.2, np.nan, 0.1] * 20)
    b = np.array([0.2, 0.1, np.nan, 0.3, 0.5, 0.2] * 20)
    r = paired_difference(a, b)
    assert (r.frames, r.skipped) == (60, 60) and r.mean == pytest.approx(-0.1)
    with pytest.raises(ValueError, match="no frame has a value"):
        paired_difference(np.full(5, np.nan), np.ones(5))


def test_blocks_widen_the_interval_of_an_autocorrelated_difference():
    """A slowly drifting difference (random walk): frame-by-frame resampling understates the uncertainty."""
    d = np.cumsum(np.random.default_rng(3).normal(0, 0.01, 300))
    iid = paired_difference(d, np.zeros_like(d))
    blocks = paired_difference(d, np.zeros_like(d), block=30)
    assert blocks.mean == iid.mean
    assert (blocks.high - blocks.low) > 2 * (iid.high - iid.low)


@pytest.mark.parametrize("kw, match", [({"resamples": 10}, "resamples"), ({"level": 1.0}, "level"),
                                       ({"block": 0}, "block")])
def test_bad_settings_are_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        paired_difference(np.ones(10), np.ones(10), **kw)


def test_compare_reads_two_scored_folders_and_refuses_what_cannot_be_paired(tmp_path):
    x = write_results(tmp_path / "x", {"ours": {"expression_error": [0.1] * 40, "expression_error_68": [None] + [0.2] * 39},
                                       "nearest": {"expression_error": [0.2] * 40, "expression_error_68": [0.3] * 40}})
    report = compare(f"{x}:ours", f"{x / 'results.json'}:nearest")
    rows = {r["metric"]: r for r in report["rows"]}
    assert rows["expression_error"]["mean"] == pytest.approx(-0.1)
    assert (rows["expression_error_68"]["frames"], rows["expression_error_68"]["skipped"]) == (39, 1)
    assert report["a"]["method"] == "ours" and report["b"]["method"] == "nearest"

    with pytest.raises(ValueError, match="name one"):
        compare(str(x), f"{x}:nearest")
    with pytest.raises(ValueError, match="no method 'paper'"):
        compare(f"{x}:paper", f"{x}:nearest")
    with pytest.raises(ValueError, match="no per-frame metric 'jitter'.*expression_error"):
        compare(f"{x}:ours", f"{x}:nearest", metrics=("jitter",))
    other = write_results(tmp_path / "y", {"ours": {"expression_error": [0.1] * 30}},
                          driver={**DRIVER, "max_frames": 30, "driving_frames": 30})
    with pytest.raises(ValueError, match="different driving frames"):
        compare(str(other), f"{x}:nearest")
    with pytest.raises(FileNotFoundError, match="score the folder first"):
        compare(str(tmp_path / "missing"), f"{x}:nearest")


def test_cli_prints_the_table_writes_json_and_exits_2_on_a_bad_request(tmp_path, capsys):
    x = write_results(tmp_path / "x", {"a": {"lips_error": [0.1, 0.2] * 20}, "b": {"lips_error": [0.2, 0.2] * 20}})
    out = tmp_path / "cmp.json"
    assert main(["compare", f"{x}:a", f"{x}:b", "--metric", "lips_error", "--block", "4", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| lips_error | 40 (0) | -0.0500 |" in text and "blocks of 4" in text and "50 %" in text
    saved = json.loads(out.read_text())
    assert saved["rows"][0]["block"] == 4 and saved["rows"][0]["lower_fraction"] == 0.5
    assert main(["compare", f"{x}:a", f"{x}:c"]) == 2
    assert "no method 'c'" in capsys.readouterr().err


def test_the_suite_markdown_pairs_every_method_with_nearest_anchor():
    from reenact.evaluation.suite import _paired_lines

    pf = {"nearest": {"expression_error": [0.2] * 40, "expression_error_68": [0.3] * 40},
          "ours": {"expression_error": [0.1] * 40, "expression_error_68": [None] * 40}}
    res = {"bundle": DRIVER, "driver": {"frames": 40},
           "methods": {m: {"per_frame": v} for m, v in pf.items()}}
    lines = _paired_lines(res)
    assert "blocks of 8 frames" in lines[0]
    row = next(line for line in lines if line.startswith("| ours |"))
    # no dlib values, no mouth-opening series: '-'
    assert row == "| ours | -0.1000 [-0.1000, -0.1000], lower on 100 % of 40 frames | - | - |"
    assert _paired_lines({**res, "methods": {"ours": res["methods"]["ours"]}}) == []  # no nearest: no table
    drv = list(np.sin(np.linspace(0, 6, 40)))
    pf["ours"]["mouth_open"] = drv                                   # follows the driver: r 1
    pf["nearest"]["mouth_open"] = list(np.cos(np.linspace(0, 6, 40)))  # does not
    with_mouth = {**res, "driver": {"frames": 40, "per_frame": {"mouth_open": drv}}}
    row = next(line for line in _paired_lines(with_mouth) if line.startswith("| ours |"))
    gain = 1.0 - correlation(drv, pf["nearest"]["mouth_open"])
    cell = row.split("|")[-2].strip()  # the mouth_open_corr column: r(driver, ours) - r(driver, nearest) [interval]
    assert cell.startswith(f"{gain:+.4f} [") and "lower on" not in cell


def test_correlation_difference_is_the_difference_of_the_two_correlations_with_the_driver():
    rng = np.random.default_rng(4)
    driver = np.sin(np.linspace(0, 12, 300)) + rng.normal(0, 0.1, 300)
    good = driver + rng.normal(0, 0.2, 300)   # follows the driver
    poor = driver + rng.normal(0, 2.0, 300)   # mostly noise
    r = paired_correlation_difference(driver, good, poor, metric="mouth_open_corr")
    assert r.mean == pytest.approx(correlation(driver, good) - correlation(driver, poor))
    assert r.mean > 0.3 and r.low > 0 and r.excludes_zero and np.isnan(r.lower_fraction)
    same = paired_correlation_difference(driver, good, good.copy())
    assert (same.mean, same.low, same.high) == (0.0, 0.0, 0.0) and not same.excludes_zero
    # a frame without a value on any side is left out of both correlations
    holes = good.copy()
    holes[::10] = np.nan
    r2 = paired_correlation_difference(driver, holes, poor)
    keep = np.isfinite(holes)
    assert (r2.frames, r2.skipped) == (270, 30)
    assert r2.mean == pytest.approx(correlation(driver[keep], good[keep]) - correlation(driver[keep], poor[keep]))
    with pytest.raises(ValueError, match="constant"):
        paired_correlation_difference(driver, np.ones(300), poor)
    with pytest.raises(ValueError, match="same driving frames"):
        paired_correlation_difference(driver[:-1], good, poor)


def test_one_event_correlation_gain_is_not_significant_with_blocks():
    """A gain that rests on one event (a single opening both follow, B flat elsewhere): frame-by-frame
    resampling calls it certain, blocks that can leave the event out do not."""
    rng = np.random.default_rng(5)
    t = np.arange(96)
    driver = 0.1 + 0.5 * np.exp(-0.5 * ((t - 60) / 3.0) ** 2) + rng.normal(0, 0.02, 96)
    a = 0.2 + 0.15 * np.exp(-0.5 * ((t - 60) / 3.0) ** 2) + rng.normal(0, 0.02, 96)
    b = 0.25 + rng.normal(0, 0.02, 96)
    one = paired_correlation_difference(driver, a, b)
    eight = paired_correlation_difference(driver, a, b, block=24)
    assert one.excludes_zero and eight.mean == one.mean
    assert eight.high - eight.low > one.high - one.low


def test_compare_reads_the_driver_series_for_correlation_metrics(tmp_path, capsys):
    rng = np.random.default_rng(6)
    drv = list(rng.random(40))
    doc = {"schema": "reenact.eval/1", "bundle": DRIVER, "driver": {"per_frame": {"mouth_open": drv}},
           "methods": {"x": {"aggregate": {}, "notes": [],
                             "per_frame": {"mouth_open": [v + 0.01 * i for i, v in enumerate(drv)]}},
                       "y": {"aggregate": {}, "notes": [], "per_frame": {"mouth_open": list(rng.random(40))}}}}
    (tmp_path / "results.json").write_text(json.dumps(doc))
    report = compare(f"{tmp_path}:x", f"{tmp_path}:y", metrics=("mouth_open_corr",))
    row = report["rows"][0]
    x, y = doc["methods"]["x"]["per_frame"]["mouth_open"], doc["methods"]["y"]["per_frame"]["mouth_open"]
    assert row["mean"] == pytest.approx(correlation(drv, x) - correlation(drv, y))
    assert main(["compare", f"{tmp_path}:x", f"{tmp_path}:y", "--metric", "mouth_open_corr"]) == 0
    out = capsys.readouterr().out
    assert "| mouth_open_corr | 40 (0) |" in out and "| - |" in out
    assert main(["compare", f"{tmp_path}:x", f"{tmp_path}:y", "--metric", "eye_open_corr"]) == 2  # no eye series
