"""The evaluation harness end to end on a tiny setting (issue 6): `reenact eval suite` through the CLI
(fixture self-scan enrolled with a few training steps, 6 driving frames per protocol, every method),
the JSON schema, each baseline's output, the produce phase in a process where MediaPipe, dlib, tflite,
PyAV and grpc cannot be imported (the GPU machine's situation), and the scoring of an external output
video with frames that have no face. The numbers of a tiny person are not quality claims."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from reenact.cli import main as cli_main

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]

FRAMES = 6
PAPER_STEPS = 3
METHODS = ("nearest", "warp", "paper", "ours")
AGGREGATE_KEYS = ("frames", "output_faces_found", "identity_faces_found", "identity_distance", "identity_below_0_5",
                  "identity_below_0_6", "expression_error", "lips_error", "eyes_error", "mouth_open_corr",
                  "eye_open_corr", "pose_error_deg", "jitter", "jitter_ratio", "fps", "seconds",
                  "landmarks68_faces_found", "expression_error_68", "lips_error_68", "eyes_error_68",
                  "mouth_open_corr_68", "eye_open_corr_68")
TINY = ["--frames", str(FRAMES), "--scan-size", "192", "--profile-set", "base_steps=40", "--profile-set",
        "tune_steps=10", "--profile-set", "eval_steps=3", "--paper-steps", str(PAPER_STEPS),
        "--ours-set", "first_frame_steps=6", "--ours-set", "steps=3"]


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("eval") / "suite"
    assert cli_main(["eval", "suite", "--out", str(out), *TINY]) == 0
    return out


def load(out: Path, proto: str) -> dict:
    return json.loads((out / proto / "results.json").read_text())


def test_suite_writes_both_protocol_tables_and_reports(suite):
    md = (suite / "results.md").read_text()
    for proto in ("self", "cross"):
        assert f"## Protocol: {proto}" in md
        html = (suite / proto / "report.html").read_text()
        assert html.count("<img") >= 2 * (1 + len(METHODS))  # the strip: driver + 4 methods per column
        assert "data:image/png;base64" in html and "Identity distance" in html
        assert "dlib 68-point landmarks (second opinion)" in html
    assert "expr err (dlib68)" in md and "mouth r (dlib68)" in md
    for m in METHODS:  # one row per protocol table, and one per paired table (every method but nearest)
        assert md.count(f"| {m} |") == (2 if m == "nearest" else 4)
    assert md.count("Paired per-frame expression error and mouth-opening correlation vs nearest anchor") == 2
    assert md.count("| method | expression_error | expression_error_68 | mouth_open_corr |") == 2


def test_results_json_schema(suite):
    for proto in ("self", "cross"):
        res = load(suite, proto)
        assert res["schema"] == "reenact.eval/1" and res["protocol"] == proto
        assert res["identity"]["sface"] is None and "SFace" in res["identity"]["sface_note"]
        assert res["identity"]["references_with_face"] >= 1
        assert res["driver"]["frames"] == FRAMES and res["driver"]["frames_without_face"] == 0
        assert 0 < res["driver"]["landmarks68_faces_found"] <= FRAMES  # dlib 68-point second opinion
        assert len(res["driver"]["per_frame"]["mouth_open_68"]) == FRAMES
        assert set(res["methods"]) == set(METHODS)
        for name, m in res["methods"].items():
            agg = m["aggregate"]
            missing = [k for k in AGGREGATE_KEYS if k not in agg]
            assert not missing, (name, missing)
            assert agg["frames"] == FRAMES and agg["fps"] > 0
            assert set(agg["pose_error_deg"]) == {"yaw", "pitch", "roll"}
            for key in ("identity_distance", "expression_error", "yaw_error", "mouth_open"):
                assert len(m["per_frame"][key]) == FRAMES
            assert ("keypoint_error_gt" in agg) == (proto == "self")
            assert ("psnr_db" in agg) == (proto == "self")
            if name in ("paper", "ours"):
                assert agg["enroll_seconds"] > 0
        # the nearest anchor returns real scan frames: dlib finds the fixture face in most of them
        near = res["methods"]["nearest"]["aggregate"]
        assert near["output_faces_found"] == FRAMES
        assert near["expression_error"]["count"] == FRAMES


def test_each_baseline_output(suite):
    from reenact.evaluation.bundle import Bundle

    b = Bundle(suite / "self" / "bundle.npz")
    produced = json.loads((suite / "self" / "produce.json").read_text())
    r = produced["resolution"]
    frames = {m: np.load(suite / "self" / f"{m}.npz") for m in METHODS}
    for m in METHODS:
        assert frames[m]["frames"].shape == (FRAMES, r, r, 3) and frames[m]["frames"].dtype == np.uint8
    # (a) retrieval: every output frame is one of the self-scan's aligned frames, the anchor chosen
    scan = b["scan_crops"]
    for i, f in enumerate(frames["nearest"]["frames"]):
        assert any(np.array_equal(f, s) for s in scan), i
    assert (frames["nearest"]["anchor"] >= 0).all()
    # (b) warp: at the first driving frame the relative motion is zero -> the reference photo itself
    import cv2

    from reenact.metrics.identity import psnr

    ref = cv2.resize(b["ref_image"], (r, r), interpolation=cv2.INTER_AREA)
    assert psnr(frames["warp"]["frames"][0], ref) > 30
    assert psnr(frames["warp"]["frames"][-1], ref) < psnr(frames["warp"]["frames"][0], ref)
    # (c) the paper's procedure: every frame alone, the fixed step count, no early stop
    assert frames["paper"]["steps"].tolist() == [PAPER_STEPS] * FRAMES
    # (d) ours: the first frame's budget, then the warm-started windows' budget (early stop allowed)
    steps = frames["ours"]["steps"]
    assert steps[0] <= 6 and (steps[1:] <= 3).all() and (steps >= 1).all()
    # and how many anchors each frame's latent blends, with its mix (benchmarks/identity_spread.py)
    n = produced["num_anchors"]
    eff, alpha = frames["ours"]["anchors_eff"], frames["ours"]["alpha"]
    assert eff.shape == (FRAMES,) and ((eff >= 1) & (eff <= n)).all() and alpha.shape == (FRAMES, n)
    assert produced["methods"]["paper"]["options"]["window"] == 1


def test_produce_runs_without_mediapipe_dlib_tflite_av_grpc(suite, tmp_path):
    """The GPU machine has only torch + numpy (+ cv2): the produce phase must not import the others. Its
    outputs here are stored as JPEG (--frames-format jpg), and `eval score` reads them."""
    runner = ("import sys\n"
              "for m in ('mediapipe', 'dlib', 'tflite', 'av', 'grpc', 'face_recognition_models', 'skimage'):\n"
              "    sys.modules[m] = None\n"
              "from reenact.evaluation.cli import main\n"
              "sys.exit(main(sys.argv[1:]))\n")
    out = tmp_path / "produced"
    cmd = [sys.executable, "-c", runner, "produce", str(suite / "cross" / "bundle.npz"), "--out", str(out),
           "--profile-set", "base_steps=20", "--profile-set", "tune_steps=5", "--profile-set", "eval_steps=2",
           "--paper-steps", "2", "--ours-set", "first_frame_steps=3", "--ours-set", "steps=2",  # enrolls too
           "--frames-format", "jpg"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((out / "produce.json").read_text())
    assert set(info["methods"]) == set(METHODS)
    assert info["enroll_seconds"] > 0 and info["person"].startswith("enrolled here")
    from reenact.evaluation import frames as frames_io

    for m in METHODS:
        assert "frames" not in np.load(out / f"{m}.npz").files and info["methods"][m]["frames_format"] == "jpg"
        assert frames_io.load(out / f"{m}.npz").shape[0] == FRAMES
    assert cli_main(["eval", "score", str(out), "--bundle", str(suite / "cross" / "bundle.npz")]) == 0
    res = json.loads((out / "results.json").read_text())
    for m in METHODS:
        assert res["methods"][m]["aggregate"]["frames"] == FRAMES
        assert "JPEG quality 95" in res["methods"][m]["notes"]


def test_score_an_external_video_with_no_face_frames(suite, tmp_path):
    """`eval score --output VIDEO`: frames without a face are counted (not dropped) for method 'given'."""
    from reenact.samples import no_face_image
    from reenact.video import encode_video

    work = tmp_path / "given"
    work.mkdir()
    shutil.copy(suite / "self" / "produce.json", work / "produce.json")
    shutil.copy(suite / "self" / "nearest.npz", work / "nearest.npz")
    near = np.load(work / "nearest.npz")["frames"]
    import cv2

    blank = cv2.resize(no_face_image(), (near.shape[2], near.shape[1]))
    video = [cv2.resize(f, (64, 64), interpolation=cv2.INTER_CUBIC) for f in near]
    video[2] = video[4] = cv2.resize(blank, (64, 64))
    encode_video(video, 30.0, work / "given.mp4")
    assert cli_main(["eval", "score", str(work), "--bundle", str(suite / "self" / "bundle.npz"),
                     "--output", str(work / "given.mp4")]) == 0
    res = json.loads((work / "results.json").read_text())
    given = res["methods"]["given"]
    agg = given["aggregate"]
    assert agg["frames"] == FRAMES
    assert agg["output_faces_found"] <= FRAMES - 2
    assert given["per_frame"]["output_face"][2] is False and given["per_frame"]["output_face"][4] is False
    assert given["per_frame"]["expression_error"][2] is None
    assert agg["expression_error"]["of"] == FRAMES and agg["expression_error"]["count"] <= FRAMES - 2
    assert agg["identity_below_0_5"] <= (FRAMES - 2) / FRAMES  # a frame without a face is a failure


def test_rigid_fit_pose_on_real_mediapipe_points():
    """The canonical face (astronaut photo, frontalized) and the fixture's known yaw: a render turned by
    +20 degrees reads clearly positive, -20 clearly negative, the photo itself about 0."""
    from reenact.evaluation import metrics as M
    from reenact.evaluation.score import canonical
    from reenact.face.tracker import detect_image
    from reenact.fixtures import FrameParams, SelfScanRig, load_face

    rig = SelfScanRig(load_face("astronaut"), 256)
    yaws = {}
    for yaw in (-20.0, 0.0, 20.0):
        frame, _ = rig.render(FrameParams(yaw=yaw))
        pts = detect_image(frame, 256, return_crop=False).source_points
        yaws[yaw] = M.head_pose(np.asarray(pts, np.float64)[None], canonical())[0, 0]
    assert abs(yaws[0.0]) < 4.0
    assert yaws[20.0] > 8.0 and yaws[-20.0] < -8.0


def test_eval_run_with_a_stored_person(suite, tmp_path):
    """`reenact eval run` on any driving video with a person from a store (no scan): the identity references
    are the anchors' renders; retrieval falls back to anchor renders too."""
    out = tmp_path / "run"
    argv = ["eval", "run", "--driving", str(suite / "fixture" / "heldout" / "driving.mp4"), "--max-frames", "4",
            "--store", f"file://{(suite / 'self' / 'store').resolve()}", "--person", "person",
            "--methods", "nearest,warp", "--out", str(out)]
    assert cli_main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    assert set(res["methods"]) == {"nearest", "warp"} and res["driver"]["frames"] == 4
    assert (out / "identity_refs.npz").exists() and (out / "report.html").exists()
    assert "renders" in res["methods"]["nearest"]["notes"]


def test_produce_relative_only_options_reach_ours_relative_and_are_refused_for_ours(suite, tmp_path, capsys):
    """`--ours-set opening_range=2` is valid for ours-relative (motion relative) and recorded with its
    options; for ours (absolute motion) produce refuses it before producing anything."""
    store = ["--store", f"file://{(suite / 'self' / 'store').resolve()}", "--person", "person"]
    bundle = str(suite / "cross" / "bundle.npz")
    sets = ["--ours-set", "first_frame_steps=3", "--ours-set", "steps=2", "--ours-set", "opening_range=2",
            "--ours-set", "mouth_starts=1", "--ours-set", "init=anchor"]
    out = tmp_path / "rel"
    assert cli_main(["eval", "produce", bundle, "--out", str(out), "--methods", "ours-relative", *store, *sets]) == 0
    info = json.loads((out / "produce.json").read_text())["methods"]["ours-relative"]
    assert info["options"]["opening_range"] == 2.0 and info["options"]["mouth_starts"] == 1.0
    assert info["options"]["motion"] == "relative"
    assert info["starts"]["mouth_starts"] >= 0 and sum(info["starts"].values()) == FRAMES - 1
    bad = tmp_path / "abs"
    capsys.readouterr()
    assert cli_main(["eval", "produce", bundle, "--out", str(bad), "--methods", "ours", *store, *sets]) == 2
    err = capsys.readouterr().err
    assert "method ours" in err and "options.opening_range" in err and "relative" in err
    assert not (bad / "ours.npz").exists() and not (bad / "produce.json").exists()


def test_generator_free_baselines_need_no_enrollment(suite, tmp_path, capsys):
    """`eval produce --methods nearest,warp` without a stored person runs on the bundle's self-scan alone (no
    enrollment, no generator): nearest returns, per frame, the usable scan frame whose keypoints are closest
    (the optimizer's keypoint loss); the warp is the same as next to an enrolled person. A bundle without a
    scan is refused with a clear error."""
    import torch

    from reenact.enroll.select import quality_mask
    from reenact.evaluation.bundle import Bundle
    from reenact.optimize import get_subset, losses

    bundle_path = suite / "cross" / "bundle.npz"
    out = tmp_path / "baselines"
    assert cli_main(["eval", "produce", str(bundle_path), "--out", str(out), "--methods", "nearest,warp"]) == 0
    info = json.loads((out / "produce.json").read_text())
    assert "no generator" in info["person"] and not (out / "store").exists()
    assert set(info["methods"]) == {"nearest", "warp"}
    b = Bundle(bundle_path)
    usable = np.flatnonzero(quality_mask(b["scan_crops"], b["scan_has_face"]))
    assert info["num_anchors"] == len(usable) > 0
    near = np.load(out / "nearest.npz")
    r = b["scan_crops"].shape[1]
    anchors = torch.from_numpy(b["scan_points"][usable].astype(np.float32))
    for i, kp in enumerate(b["drv_keypoints"]):
        if not b["drv_has_face"][i]:
            continue
        t = torch.from_numpy(kp.astype(np.float32) * (r / b.crop_size)).expand_as(anchors)
        best = int(losses.keypoint_loss(anchors, t, get_subset("default")).argmin())
        assert near["anchor"][i] == best
        assert np.array_equal(near["frames"][i], b["scan_crops"][usable[best]])
    assert np.array_equal(np.load(out / "warp.npz")["frames"], np.load(suite / "cross" / "warp.npz")["frames"])
    assert cli_main(["eval", "score", str(out)]) == 0
    assert set(json.loads((out / "results.json").read_text())["methods"]) == {"nearest", "warp"}

    no_scan = tmp_path / "no_scan.npz"
    with np.load(bundle_path) as z:
        np.savez(no_scan, **{k: z[k] for k in z.files if not k.startswith("scan_")})
    capsys.readouterr()
    assert cli_main(["eval", "produce", str(no_scan), "--out", str(tmp_path / "x"), "--methods", "nearest"]) == 2
    assert "self-scan" in capsys.readouterr().err and not (tmp_path / "x" / "nearest.npz").exists()


def test_suite_fixture_videos_rerender_only_when_their_parameters_change(tmp_path):
    """`eval suite --fixture-jaw-drop J`: the fixture scan and held-out driver are rendered with that jaw
    drop (recorded in their ground truth); a second run with the same parameters reuses them, another J, frame
    count or size re-renders the videos it concerns (a held-out driver left by a shorter --frames run in the
    same --out is not reused)."""
    import argparse

    from reenact.evaluation.suite import _fixture_videos
    from reenact.fixtures.selfscan import JAW_DROP

    def run(jaw, frames=3, scan_frames=4, size=128):
        ns = argparse.Namespace(scan=None, self_driving=None, scan_frames=scan_frames, frames=frames,
                                scan_size=size, fixture_jaw_drop=jaw)
        paths = _fixture_videos(tmp_path, ns)
        truth = json.loads((Path(paths["scan"]).parent / "ground_truth.json").read_text())
        drv = json.loads(Path(paths["self_ground_truth"]).read_text())
        return ((truth["jaw_drop"], drv["jaw_drop"], truth["num_frames"], drv["num_frames"], drv["width"]),
                Path(paths["scan"]).stat().st_mtime_ns, Path(paths["self_driving"]).stat().st_mtime_ns)

    default = run(None)
    assert default[0] == (JAW_DROP, JAW_DROP, 4, 3, 128)
    wide = run(0.24)
    assert wide[0] == (0.24, 0.24, 4, 3, 128) and wide[1] != default[1] and wide[2] != default[2]
    assert run(0.24)[1:] == wide[1:]
    longer = run(0.24, frames=5)  # only the held-out driver changes
    assert longer[0] == (0.24, 0.24, 4, 5, 128) and longer[1] == wide[1] and longer[2] != wide[2]
    more_scan = run(0.24, frames=5, scan_frames=6)  # only the scan changes
    assert more_scan[0][2:4] == (6, 5) and more_scan[1] != longer[1] and more_scan[2] == longer[2]
    bigger = run(0.24, frames=5, scan_frames=6, size=160)
    assert bigger[0][4] == 160 and bigger[1] != more_scan[1] and bigger[2] != more_scan[2]


def test_suite_prepare_self_frames_sets_the_self_drivers_length_alone(tmp_path, capsys):
    """`eval suite --self-frames N`: the self protocol's held-out driver has N frames, the cross driver keeps
    --frames (a long cross driver with a short self check, as for the GPU runs of docs/RESULTS.md); a count
    below 1 is refused with exit 2 before anything is rendered."""
    from reenact.evaluation.bundle import read_meta

    out = tmp_path / "s"
    assert cli_main(["eval", "suite", "--out", str(out), "--phase", "prepare", "--frames", "4", "--self-frames",
                     "2", "--scan-frames", "6", "--scan-size", "160", "--crop-size", "64"]) == 0
    assert read_meta(out / "self" / "bundle.npz")[1] == 2
    assert read_meta(out / "cross" / "bundle.npz")[1] == 4
    assert json.loads((out / "fixture" / "heldout" / "ground_truth.json").read_text())["num_frames"] == 2
    bad = tmp_path / "bad"
    capsys.readouterr()
    assert cli_main(["eval", "suite", "--out", str(bad), "--phase", "prepare", "--self-frames", "0"]) == 2
    assert "--self-frames must be >= 1" in capsys.readouterr().err and not bad.exists()  # before any render


def test_slices_of_a_long_driver_merge_into_the_one_run_result(suite, tmp_path, capsys):
    """`eval slice` + `produce` per slice + `eval merge`: for the per-frame methods (nearest, paper) the
    merged outputs equal one run over the whole bundle, frame for frame, and score reads them against the
    full bundle; merge refuses methods that depend on earlier frames, and slices that leave a gap."""
    from reenact.evaluation import frames as frames_io

    bundle = suite / "cross" / "bundle.npz"
    store = ["--store", f"file://{(suite / 'self' / 'store').resolve()}", "--person", "person"]
    run = ["--methods", "nearest,paper", "--paper-steps", "2", *store]
    whole = tmp_path / "whole"
    assert cli_main(["eval", "produce", str(bundle), "--out", str(whole), *run]) == 0
    parts = []
    for s, e in ((3, FRAMES), (0, 3)):  # any order
        part = tmp_path / f"slice{s}.npz"
        assert cli_main(["eval", "slice", str(bundle), "--start", str(s), "--end", str(e), "-o", str(part)]) == 0
        assert cli_main(["eval", "produce", str(part), "--out", str(tmp_path / f"out{s}"), *run,
                         "--frames-format", "jpg" if s else "npz"]) == 0
        parts.append(str(tmp_path / f"out{s}"))
    capsys.readouterr()
    assert cli_main(["eval", "merge", str(tmp_path / "bad"), parts[0]]) == 2  # frames 0-2 missing
    assert "does not start" in capsys.readouterr().err
    # mixed formats are refused (jpg part + npz part); all-npz parts merge
    assert cli_main(["eval", "merge", str(tmp_path / "mixed"), *parts]) == 2
    assert "different arrays" in capsys.readouterr().err
    assert cli_main(["eval", "produce", str(tmp_path / "slice3.npz"), "--out", parts[0], *run]) == 0  # as npz
    merged = tmp_path / "merged"
    assert cli_main(["eval", "merge", str(merged), *parts]) == 0
    info = json.loads((merged / "produce.json").read_text())
    assert info["bundle"] == str(bundle.resolve()) and info["frames"] == FRAMES
    assert [p["slice"] for p in info["merged_from"]] == [[0, 3], [3, FRAMES]]
    for m in ("nearest", "paper"):
        assert np.array_equal(frames_io.load(merged / f"{m}.npz"), frames_io.load(whole / f"{m}.npz")), m
    assert np.array_equal(np.load(merged / "paper.npz")["steps"], [2] * FRAMES)
    assert np.array_equal(np.load(merged / "nearest.npz")["anchor"], np.load(whole / "nearest.npz")["anchor"])
    assert cli_main(["eval", "score", str(merged)]) == 0
    assert json.loads((merged / "results.json").read_text())["methods"]["paper"]["aggregate"]["frames"] == FRAMES

    # scripts/results.sh gpu-paper: the same in PARTS slices produced side by side, merged (DEVICE=cpu here)
    out = tmp_path / "script"
    out.mkdir()
    (out / "cross").symlink_to((suite / "cross").resolve())
    env = dict(os.environ, OUT=str(out), STORE=store[1], DEVICE="cpu", PAPER_STEPS="2", PARTS="3",
               PYTHON=sys.executable, PYTHONPATH=str(ROOT))
    done = subprocess.run(["bash", str(ROOT / "scripts" / "results.sh"), "gpu-paper"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    info = json.loads((out / "cross-paper" / "produce.json").read_text())
    assert [p["slice"] for p in info["merged_from"]] == [[0, 2], [2, 4], [4, FRAMES]]
    assert np.array_equal(frames_io.load(out / "cross-paper" / "paper.npz"), frames_io.load(whole / "paper.npz"))
    (out / "cross-paper").rename(out / "good")
    failed = subprocess.run(["bash", str(ROOT / "scripts" / "results.sh"), "gpu-paper"], cwd=ROOT, capture_output=True,
                            text=True, timeout=600, env=dict(env, STORE=f"file://{tmp_path / 'no-store'}"))
    assert failed.returncode != 0 and "a part failed" in failed.stderr  # a failed part fails the run: no merge
    assert not (out / "cross-paper").exists()

    # --no-scan (start/end default to the whole driver): the aligned scan left out, the same outputs from a
    # stored person; without one, the baselines that read the scan refuse it by name
    slim = tmp_path / "slim.npz"
    assert cli_main(["eval", "slice", str(bundle), "--no-scan", "-o", str(slim)]) == 0
    with np.load(bundle) as full, np.load(slim) as z:
        assert any(k.startswith("scan_") for k in full.files) and not any(k.startswith("scan_") for k in z.files)
        assert set(full.files) - set(z.files) == {k for k in full.files if k.startswith("scan_")}
        assert json.loads(str(z["meta"]))["slice"] == [0, FRAMES]
    assert slim.stat().st_size < bundle.stat().st_size
    assert cli_main(["eval", "produce", str(slim), "--out", str(tmp_path / "slim_out"), *run]) == 0
    assert np.array_equal(frames_io.load(tmp_path / "slim_out" / "paper.npz"), frames_io.load(whole / "paper.npz"))
    # nearest shows the generator's render of the anchor it picks (no real scan frame to show)
    assert np.array_equal(np.load(tmp_path / "slim_out" / "nearest.npz")["anchor"], np.load(whole / "nearest.npz")["anchor"])
    capsys.readouterr()
    assert cli_main(["eval", "produce", str(slim), "--out", str(tmp_path / "slim_bad"), "--methods", "nearest"]) == 2
    assert "self-scan" in capsys.readouterr().err

    warp_parts = []
    for s in (0, 3):
        out = tmp_path / f"warp{s}"
        assert cli_main(["eval", "produce", str(tmp_path / f"slice{s}.npz"), "--out", str(out),
                         "--methods", "warp", *store]) == 0
        warp_parts.append(str(out))
    capsys.readouterr()
    assert cli_main(["eval", "merge", str(tmp_path / "w"), *warp_parts]) == 2
    assert "depend on earlier driving frames" in capsys.readouterr().err

    # parts produced elsewhere (a GPU machine): their slice files are not here. produce.json records the
    # slice and the driver's fingerprint, so they merge against the full bundle given here, and only that one
    for s in (0, 3):
        (tmp_path / f"slice{s}.npz").rename(tmp_path / f"gone{s}.npz")
    away = tmp_path / "away"
    assert cli_main(["eval", "merge", str(away), *parts, "--bundle", str(bundle)]) == 0
    assert json.loads((away / "produce.json").read_text())["bundle"] == str(bundle.resolve())
    assert "slice" not in json.loads((away / "produce.json").read_text())  # the merged output is not a slice
    assert np.array_equal(frames_io.load(away / "paper.npz"), frames_io.load(whole / "paper.npz"))
    capsys.readouterr()
    assert cli_main(["eval", "merge", str(tmp_path / "other"), *parts,
                     "--bundle", str(suite / "self" / "bundle.npz")]) == 2
    assert "another driver" in capsys.readouterr().err
    old_style = json.loads((Path(parts[1]) / "produce.json").read_text())  # an older produce: no slice recorded
    for k in ("slice", "source_bundle", "source_digest"):
        old_style.pop(k)
    (Path(parts[1]) / "produce.json").write_text(json.dumps(old_style))
    assert cli_main(["eval", "merge", str(tmp_path / "old"), *parts, "--bundle", str(bundle)]) == 2
    assert "which is not here" in capsys.readouterr().err


def test_identity_holdout_keeps_the_reference_frames_away_from_every_method(suite, tmp_path, capsys):
    """`eval prepare --identity-holdout H` (the fair identity protocol for a real scan): the scan's last H
    frames are cut from the bundle's scan (what the enrollment, nearest anchor and the warp read) and are the
    identity references, nothing else is; the reference photo is picked from the kept frames. A split that
    leaves no frame for enrollment, a negative count, or a holdout without a scan is refused (exit 2) and
    writes nothing."""
    from reenact.evaluation.bundle import Bundle

    scan, drv = suite / "fixture" / "scan" / "selfscan.mp4", suite / "fixture" / "heldout" / "driving.mp4"
    common = ["eval", "prepare", "--driving", str(drv), "--scan", str(scan), "--max-frames", "2", "--crop-size", "64",
              "--profile-set", "resolution=64"]
    assert cli_main([*common, "-o", str(tmp_path / "all.npz")]) == 0
    assert cli_main([*common, "--identity-holdout", "3", "-o", str(tmp_path / "held.npz")]) == 0
    full, held = Bundle(tmp_path / "all.npz"), Bundle(tmp_path / "held.npz")
    n = len(full["scan_has_face"])
    assert len(held["scan_has_face"]) == n - 3 and int(held["scan_frames_total"]) == n - 3
    for key in ("scan_crops", "scan_points", "scan_has_face", "scan_yaw", "scan_mouth_open"):
        assert np.array_equal(held[key], full[key][: n - 3]), key
    tail = full["scan_crops"][n - 3:][full["scan_has_face"][n - 3:]]
    assert len(tail) and np.array_equal(held["identity_refs"], tail)
    assert not any(np.array_equal(r, c) for r in held["identity_refs"] for c in held["scan_crops"])
    assert held.meta["identity_holdout"] == 3 and "held-out" in held.meta["identity_reference"]
    assert held.meta["reference_frame"] < n - 3 and "identity_holdout" not in full.meta
    for bad, msg in ((str(n), "between 1 and"), ("-1", "must be >= 0")):
        capsys.readouterr()
        assert cli_main([*common, "--identity-holdout", bad, "-o", str(tmp_path / "bad.npz")]) == 2
        assert msg in capsys.readouterr().err and not (tmp_path / "bad.npz").exists()
    assert cli_main(["eval", "prepare", "--driving", str(drv), "--max-frames", "2", "--identity-holdout", "1",
                     "-o", str(tmp_path / "noscan.npz")]) == 2
    assert "needs a scan" in capsys.readouterr().err and not (tmp_path / "noscan.npz").exists()


def test_results_script_real_person_prepare_and_baselines(tmp_path):
    """`scripts/results.sh real-prepare` then `real-score` (docs/RESULTS.md "eleventh session"): the carphone
    clip (a real recording) is the person, its last 30 frames are only identity references, the driver is the
    astronaut fixture with ground truth; real-score runs and scores the generator-free baselines on it."""
    from reenact.evaluation.bundle import Bundle

    out = tmp_path / "real"
    env = dict(os.environ, OUT=str(out), FRAMES="3", PYTHON=sys.executable, PYTHONPATH=str(ROOT))
    for mode in ("real-prepare", "real-score"):
        done = subprocess.run(["bash", str(ROOT / "scripts" / "results.sh"), mode], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, (mode, done.stderr[-3000:])
    b = Bundle(out / "cross" / "bundle.npz")
    assert b.num_frames == 3 and b.meta["identity_holdout"] == 30 and "REAL person" in b.meta["notes"]
    assert len(b["scan_has_face"]) == 90 and len(b["identity_refs"]) == 16 and "gt_points" in b
    assert b["scan_crops"].shape[1:] == (256, 256, 3) and b.crop_size == 256
    res = json.loads((out / "baselines" / "results.json").read_text())
    assert set(res["methods"]) == {"nearest", "warp"} and res["identity"]["references"] == 16
    for m in ("nearest", "warp"):
        assert res["methods"][m]["aggregate"]["frames"] == 3


def test_anchor_identity_benchmark_renders_and_scores_the_stored_anchors(suite, tmp_path):
    """benchmarks/anchor_identity.py (docs/RESULTS.md, "twelfth session"): `render` draws every stored anchor's W
    with the person's generator, exactly as the evaluation renders latents; `score` puts each render beside the
    real scan frame it was tuned on (same index) and scores both against the bundle's identity references.
    A bundle whose scan the anchors do not index is refused."""
    import torch

    from reenact.evaluation import methods

    script = [sys.executable, str(ROOT / "benchmarks" / "anchor_identity.py")]
    store, bundle = f"file://{(suite / 'self' / 'store').resolve()}", suite / "self" / "bundle.npz"
    npz, js = tmp_path / "anchors.npz", tmp_path / "anchors.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for args in (["render", "--store", store, "--out", str(npz)],
                 ["score", "--renders", str(npz), "--bundle", str(bundle), "--json", str(js)]):
        done = subprocess.run([*script, *args], env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, (args, done.stderr[-3000:])
    assert "| render -> its own real frame |" in done.stdout
    person = methods.load_person(store, "person", "cpu")
    with np.load(npz) as z:
        renders, idx = z["renders"], z["anchor_frames"]
    m = person.model
    assert np.array_equal(idx, person.anchor_frames) and len(renders) == len(m.anchor_w)
    with torch.no_grad():
        want = methods.render(m.G, m.anchor_w[:3, None, :].expand(-1, m.G.num_ws, -1).numpy(), "cpu")
    # the same W rendered in another process: float rounding (thread count) may move a pixel by one level
    diff = np.abs(renders[:3].astype(np.int16) - want.astype(np.int16))
    assert renders[:3].shape == want.shape and diff.max() <= 2 and diff.mean() < 0.05
    table = json.loads(js.read_text())
    assert table["anchors"] == len(idx) and table["references"] > 0
    assert table["real_to_refs"]["count"] + table["real_to_refs"]["missing"] == len(idx)
    from reenact.evaluation.bundle import Bundle
    from reenact.evaluation.metrics import psnr_frames
    real = Bundle(bundle)["scan_crops"][idx]
    assert table["psnr_db"]["median"] == pytest.approx(float(np.median(psnr_frames(renders, real))))
    bad = tmp_path / "bad.npz"
    np.savez_compressed(bad, renders=renders, anchor_frames=idx + 10_000, info=np.array(json.dumps({})))
    done = subprocess.run([*script, "score", "--renders", str(bad), "--bundle", str(bundle)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode != 0 and "do not fit this bundle's scan" in done.stderr


def test_results_script_real_generators_enroll_variants_and_score_their_anchors(tmp_path):
    """`scripts/results.sh real-generators` (docs/RESULTS.md "twelfth session"): each GENERATORS entry enrolls the
    real person's scan with its profile fields into $OUT/g-<name> (the fields reach the stored profile), runs M and
    renders every anchor; `real-score` then scores the outputs and the anchors' identity. Here at 32 px on the CPU
    (RES, PROFILE, DEVICE) with a few training steps: the numbers of such a tiny person are not quality claims."""
    out = tmp_path / "real"
    tiny = "base_steps=20,tune_steps=3,init_steps=3,init_samples=8,eval_steps=2"
    env = dict(os.environ, OUT=str(out), FRAMES="3", RES="32", PROFILE="cpu-quick", DEVICE="cpu",
               GENERATORS=f"a:{tiny} b:{tiny},tune_steps=4", PYTHON=sys.executable, PYTHONPATH=str(ROOT),
               # real-enrollments on the CPU too: one enrollment with PROFILE_SET's fields, then a variant of
               # it (the alpha_entropy term) on the stored person
               ENROLLMENTS="1", PROFILE_SET=f"{tiny},seed=2", VARIANTS="M:opening_weight=4 ae:alpha_entropy=1")
    for mode in ("real-prepare", "real-generators", "real-enrollments", "real-score"):
        done = subprocess.run(["bash", str(ROOT / "scripts" / "results.sh"), mode], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, (mode, done.stdout[-2000:], done.stderr[-3000:])
    assert "| their renders -> references |" in done.stdout
    for name, tune in (("a", 3), ("b", 4)):
        g = out / f"g-{name}"
        produced = json.loads((g / "produce.json").read_text())
        assert produced["profile"]["tune_steps"] == tune and produced["profile"]["resolution"] == 32
        res = json.loads((g / "results.json").read_text())
        assert res["methods"]["ours-relative"]["aggregate"]["frames"] == 3
        anchors = json.loads((g / "anchors.json").read_text())
        assert anchors["anchors"] == produced["num_anchors"] and anchors["references"] == 16
        assert len(anchors["per_anchor"]["render_to_refs"]) == anchors["anchors"]
    e1 = json.loads((out / "e1" / "produce.json").read_text())
    assert e1["profile"]["seed"] == 2 and e1["profile"]["tune_steps"] == 3 and e1["profile"]["resolution"] == 32
    variant = json.loads((out / "e1-ae" / "produce.json").read_text())["methods"]["ours-relative"]["options"]
    assert variant["alpha_entropy"] == 1.0 and (out / "e1-ae" / "results.json").exists()
    # benchmarks/identity_spread.py on the scored folders (each with its anchors.json): the mechanics only; dlib
    # finds few faces at 32 px, and 3 frames say nothing
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "identity_spread.py"), str(out / "g-a"),
                           str(out / "g-b"), "--json", str(tmp_path / "spread.json")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads((tmp_path / "spread.json").read_text())
    found = [sum(v is not None for v in json.loads((out / g / "results.json").read_text())["methods"]["ours-relative"]
                 ["per_frame"]["identity_distance"]) for g in ("g-a", "g-b")]
    assert [r["frames"] for r in rows] == found and all("inherited_median" in r for r in rows)
    assert "too few frames" in done.stdout and "inherited from its anchors" in done.stdout
