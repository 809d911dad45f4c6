"""`reenact demo` end to end with tiny settings: the real local stack (tritonserver, landmarks, trainer,
optimizer, gateway as their own processes), the astronaut self-scan TEST FIXTURE enrolled with a shrunk
cpu-quick profile, 4 frames of the real carphone clip reenacted through the gateway, the output video and
the HTML report checked, and the stack stopped afterwards.

It runs the console entry point in a subprocess, as a user (and scripts/demo.sh) would.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from reenact.video import probe_video

ROOT = Path(__file__).resolve().parents[2]
FRAMES = 4


@pytest.mark.slow
def test_reenact_demo_end_to_end_with_tiny_settings(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "reenact.cli", "demo", "--out", str(out), "--device", "cpu",
           "--profile", "cpu-quick", "--max-frames", str(FRAMES), "--scan-frames", "90", "--scan-size", "160",
           "--num-anchors", "12", "--tune-steps", "40", "--steps", "2", "--window", "2", "--json"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("REENACT_ADDRESS", None)
    proc = subprocess.run(cmd, cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-6000:]}"
    assert "Traceback" not in proc.stderr
    summary = json.loads(proc.stdout)

    # enrollment through the gateway succeeded; the driving frames were reenacted
    assert summary["enrollment"]["state"] == "SUCCEEDED"
    assert summary["reenactment"]["frames"] == FRAMES and summary["reenactment"]["reenactment_id"]
    assert summary["errors"] == [], summary["errors"]
    assert summary["motion"] == "relative"  # the bundled driver is another person: its motion is transferred
    assert (summary["opening_weight"], summary["latent_sigma"]) == (0.0, 0.0)  # the server's defaults
    assert summary["init"] == "auto"  # --init unset: the server's default
    assert summary["opening_range"] == 0.0  # --opening-range unset: off
    assert summary["mouth_starts"] == 0.0  # --mouth-starts unset: off
    assert summary["delta_lr_scale"] == 0.0  # --delta-lr-scale unset: the server's default
    assert summary["lip_warp"] == 0.0  # --lip-warp unset: off
    for key in ("fixture_seconds", "stack_seconds", "enrollment_seconds", "reenact_seconds", "total_seconds"):
        assert summary["timings_seconds"][key] > 0

    # the output video: FRAMES frames of the person's generator output (cpu-quick: 32 px crops)
    info = probe_video(out / "result.mp4")
    assert info["frames"] in (0, FRAMES) and info["width"] >= 32 and info["fps"] > 0
    from reenact.video import decode_video

    frames, _ = decode_video(out / "result.mp4")
    assert frames.shape[0] == FRAMES and frames.std() > 1.0       # not a blank video
    pasted, _ = decode_video(out / "result_pasted.mp4")
    assert pasted.shape[0] == FRAMES and pasted.shape[1:3] == (144, 176)   # the carphone frame size
    edited, _ = decode_video(out / "edited.mp4")
    assert edited.shape == frames.shape

    # the landmarks demo output is still written
    lm = json.loads((out / "landmarks.json").read_text())["summary"]
    assert lm["tracked"] > 0 and "crop_jitter_px_raw" in lm and (out / "aligned.mp4").is_file()

    # the report: self-contained, with the strip, plots and timings
    html = (out / "report.html").read_text()
    assert "Timings" in html and "enrollment (cpu-quick" in html and "frames/s" in html
    assert len(re.findall(r'alt="driver \d+"', html)) == FRAMES and len(re.findall(r'alt="result \d+"', html)) == FRAMES
    assert "Keypoint error per frame" in html and "Enrollment progress" in html and "crop jitter raw" in html
    assert all(s.startswith("data:") for s in re.findall(r'src="([^"]*)"', html))
    assert "TEST FIXTURE" in html

    # the stack is gone: no service process of this run is left
    state_logs = out / "stack" / "logs"
    assert state_logs.is_dir()
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert str(out / "stack") not in ps
