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
    (short / "results.json").unlink()
    with pytest.raises(SystemExit, match="no results.json"):
        mod.analyse(short, "ours-relative")


def test_inherited_identity_follows_the_anchors_each_frame_is_made_of(mod, tmp_path, capsys):
    per = [0.2, 0.4, None, 0.3]
    alpha = np.array([[1.0, 0.0, 0.0, 0.0],     # anchor 0 alone
                      [0.5, 0.5, 0.0, 0.0],     # half 0, half 1
                      [-0.02, 0.0, 1.0, 0.02],  # anchor 2 has no face: only anchor 3's weight counts
                      [0.0, 0.0, 1.0, 0.0]])    # nothing known: NaN
    got = mod.inherited_identity(alpha, per)
    assert got[:3].tolist() == pytest.approx([0.2, 0.3, 0.3]) and np.isnan(got[3])
    with pytest.raises(SystemExit, match="3 anchors in the latents but 4"):
        mod.inherited_identity(alpha[:, :3], per)
    rng = np.random.default_rng(1)
    n = 30
    a = np.zeros((n, 4), np.float32)
    a[np.arange(n), rng.integers(0, 2, n)] = 1.0          # every frame one of anchors 0 and 1
    dist = np.where(a[:, 0] > 0, 0.25, 0.45) + rng.normal(0, 0.01, n)
    d = folder(tmp_path, "f", np.ones(n), dist)
    frames_io.save(d / "ours-relative.npz", np.zeros((n, 4, 4, 3), np.uint8), "npz",
                   anchors_eff=np.ones(n, np.float32), alpha=a)
    (d / "anchors.json").write_text(json.dumps({"per_anchor": {"render_to_refs": per}}))
    row = mod.analyse(d, "ours-relative")
    assert row["spearman_inherited"] > 0.8 and row["anchor_renders_median"] == pytest.approx(0.3)
    assert row["dominant_anchor"] in (0, 1) and row["dominant_share"] >= 0.5
    (d / "anchors.json").write_text(json.dumps({"anchors": 4}))
    with pytest.raises(SystemExit, match="no per-anchor identity"):
        mod.analyse(d, "ours-relative")
