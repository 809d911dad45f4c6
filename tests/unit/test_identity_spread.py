"""benchmarks/identity_spread.py: identity distance against how many anchors each frame's latent blends, on
synthetic scored folders (the layout `reenact eval produce` + `score` write)."""

from __future__ import annotations

import importlib.util
import json
import pathlib

import numpy as np
import pytest

from reenact.evaluation import frames as frames_io


@pytest.fixture(scope="module")
def mod():
    path = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "identity_spread.py"
    spec = importlib.util.spec_from_file_location("identity_spread", path)
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m


def folder(tmp_path, name, eff, dist, with_eff=True):
    d = tmp_path / name
    d.mkdir()
    arrays = {"anchors_eff": np.asarray(eff, np.float32)} if with_eff else {}
    frames_io.save(d / "ours-relative.npz", np.zeros((len(eff), 4, 4, 3), np.uint8), "npz", **arrays)
    per = {"identity_distance": [None if not np.isfinite(v) else float(v) for v in dist]}
    (d / "results.json").write_text(json.dumps({"methods": {"ours-relative": {"per_frame": per}}}))
    return d


def test_spearman_matches_known_cases(mod):
    x = np.arange(10.0)
    assert mod.spearman(x, x ** 3) == pytest.approx(1.0)
    assert mod.spearman(x, -x) == pytest.approx(-1.0)
    assert mod.ranks(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [2.5, 0.0, 2.5, 1.0]


def test_wide_blends_losing_identity_show_as_a_positive_correlation(mod, tmp_path, capsys):
    rng = np.random.default_rng(0)
    eff = rng.uniform(1, 20, 60)
    dist = 0.25 + 0.01 * eff + rng.normal(0, 0.02, 60)
    dist[5] = np.nan                                   # a frame without a face: left out, not a zero
    linked = folder(tmp_path, "linked", eff, dist)
    unrelated = folder(tmp_path, "unrelated", eff, rng.permutation(np.nan_to_num(dist, nan=0.3)))
    assert mod.main([str(linked), str(unrelated), "--json", str(tmp_path / "rows.json")]) == 0
    rows = json.loads((tmp_path / "rows.json").read_text())
    a, b = rows
    assert a["frames"] == 59 and a["spearman"] > 0.8 and a["spearman_95"][0] > 0.5
    assert a["identity_by_third"][0] < a["identity_by_third"][1] < a["identity_by_third"][2]
    assert abs(b["spearman"]) < 0.4 and b["spearman_95"][0] < 0 < b["spearman_95"][1]
    out = capsys.readouterr().out
    assert "| anchors_eff (median) |" in out and str(linked) in out


def test_outputs_without_anchors_eff_or_of_another_length_are_refused(mod, tmp_path):
    old = folder(tmp_path, "old", [1.0] * 8, [0.3] * 8, with_eff=False)
    with pytest.raises(SystemExit, match="no anchors_eff"):
        mod.analyse(old, "ours-relative")
    short = folder(tmp_path, "short", [1.0] * 8, [0.3] * 8)
    (short / "results.json").write_text(json.dumps(
        {"methods": {"ours-relative": {"per_frame": {"identity_distance": [0.3] * 7}}}}))
    with pytest.raises(SystemExit, match="8 latents but 7"):
        mod.analyse(short, "ours-relative")
    with pytest.raises(SystemExit, match="no scored method"):
        mod.analyse(short, "paper")
