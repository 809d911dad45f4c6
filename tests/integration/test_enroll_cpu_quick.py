"""Enrollment end to end on the cpu-quick profile: a self-scan fixture video of a real photo ->
real MediaPipe alignment -> base generator -> MyStyle tuning -> evaluation -> a committed person version
-> exported as gen_<person> and rendered by the real tritonserver."""

import dataclasses
import pathlib

import numpy as np
import pytest
import torch

from reenact.enroll.pipeline import Checkpoints, StageProgress, run_enrollment
from reenact.enroll.profiles import get_profile
from reenact.errors import CancelledError, PreconditionError
from reenact.fixtures import load_face, make_schedule, render_selfscan, write_selfscan
from reenact.store import LocalStore, PersonRepository


@pytest.fixture(scope="module")
def scan_video(tmp_path_factory) -> pathlib.Path:
    """TEST FIXTURE: a 90-frame self-scan rendered from the astronaut photo (known pose/expression)."""
    out = tmp_path_factory.mktemp("scan") / "selfscan.mp4"
    frames, truth = render_selfscan(load_face("astronaut"), make_schedule(90, seed=0), size=192)
    write_selfscan(out, frames, fps=30, ground_truth=truth)
    return out


class Recorder:
    def __init__(self):
        self.events = []

    def __call__(self, **kw):
        self.events.append(kw)

    def stages(self):
        seen = []
        for e in self.events:
            if not seen or seen[-1] != e["stage"]:
                seen.append(e["stage"])
        return seen


def enroll(scan, store, profile, *, should_stop=lambda: False, export=None, prefix="jobs/j1/ckpt/", rec=None,
           base=None):
    rec = rec or Recorder()
    result = run_enrollment(
        str(scan), person_id="astro", profile=profile, repo=PersonRepository(store),
        ckpt=Checkpoints(store, prefix), progress=StageProgress(rec), should_stop=should_stop,
        device="cpu", export=export, checkpoint_every_s=0.0, base_checkpoint=base)
    return result, rec


@pytest.fixture(scope="module")
def enrolled(scan_video, tmp_path_factory):
    store = LocalStore(tmp_path_factory.mktemp("store"))
    result, rec = enroll(scan_video, store, get_profile("cpu-quick"))
    return store, result, rec


def test_enrollment_commits_a_person_version(enrolled):
    store, result, rec = enrolled
    repo = PersonRepository(store)
    assert result.person_version == 1 and repo.versions("astro") == [1]
    man = repo.manifest("astro", 1)
    assert {"generator.pt", "anchors.pt"} <= set(man.files)
    assert man.metadata["perceptual_backbone"] == "mobilenetv2-lpips"
    assert len(man.metadata["anchor_frames"]) == 16
    assert rec.stages() == ["align", "select", "base", "anchors", "tune", "evaluate", "init", "export"]
    fractions = [e["fraction"] for e in rec.events]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert not store.list("jobs/j1/ckpt")  # training checkpoints are removed on success


def test_training_frames_reconstructed_at_24_db(enrolled):
    _, result, _ = enrolled
    m = result.metrics
    print("cpu-quick enrollment metrics:", {k: round(v, 3) for k, v in m.items()})
    assert m["train_psnr_db"] >= 24.0
    assert np.isfinite(m["heldout_psnr_db"]) and np.isfinite(m["heldout_nearest_anchor_psnr_db"])


def test_coverage_report_of_the_fixture(enrolled):
    _, result, _ = enrolled
    cov = result.coverage
    assert cov["frames_total"] == 90 and cov["frames_with_face"] == 90
    assert cov["yaw_max_deg"] > 10 and cov["yaw_min_deg"] < -10  # the fixture turns +-30 degrees
    assert cov["missing"] == []
    assert cov["mouth_open_max"] > 0.25


def test_exported_generator_renders_in_real_triton(enrolled, tmp_path):
    from reenact.enroll.job import make_exporter
    from reenact.models.checkpoint import load_generator
    from reenact.tritonserve.client import TritonRenderer
    from reenact.tritonserve.server import TritonServer

    store, result, _ = enrolled
    cfg = type("Cfg", (), {"model_repository": str(tmp_path / "models"), "device": "cpu", "triton_url": ""})
    make_exporter(store, cfg)("astro", result.person_version, "generator.pt")
    repo = PersonRepository(store)
    G = load_generator(_tmp_file(tmp_path, repo.read("astro", 1, "generator.pt")))
    anchors = torch.load(_tmp_file(tmp_path, repo.read("astro", 1, "anchors.pt"), "a.pt"), weights_only=True)
    ws = anchors["anchor_w"][:3, None, :].expand(-1, G.num_ws, -1).contiguous()
    with torch.no_grad():
        local = ((G.synthesis(ws, noise_mode="const") + 1) * 127.5).round().clamp(0, 255).byte()
    local = local.permute(0, 2, 3, 1).numpy()
    with TritonServer(tmp_path / "models", workdir=tmp_path / "triton") as server:
        with TritonRenderer(server.grpc_url) as renderer:
            renderer.load_model("astro")
            remote = renderer.render("astro", ws.numpy())
    assert remote.shape == local.shape
    assert np.abs(remote.astype(int) - local.astype(int)).max() <= 1


def _tmp_file(tmp_path, data, name="g.pt"):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def tiny(profile_name="cpu-quick", **kw):
    base = dict(base_steps=30, tune_steps=6, eval_steps=3, num_anchors=8, num_heldout=2)
    return dataclasses.replace(get_profile(profile_name), **{**base, **kw})


def test_cancel_leaves_no_version(scan_video, tmp_path):
    store = LocalStore(tmp_path / "store")
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 80  # during base training

    with pytest.raises(CancelledError):
        enroll(scan_video, store, tiny(), should_stop=stop)
    repo = PersonRepository(store)
    assert repo.versions("astro") == [] and repo.list_persons() == []


def test_resume_after_interruption_continues_from_checkpoint(scan_video, tmp_path):
    store = LocalStore(tmp_path / "store")
    prof = tiny(base_steps=60)
    state = {"stop": False}
    rec = Recorder()

    def progress_stop():
        return state["stop"]

    # interrupt once base training has written a checkpoint
    def sink(**kw):
        rec(**kw)
        if kw["stage"] == "base" and kw["step"] >= 21:
            state["stop"] = True

    with pytest.raises(CancelledError):
        enroll(scan_video, store, prof, should_stop=progress_stop, rec=sink)
    assert store.exists("jobs/j1/ckpt/base.pt")
    saved = torch.load(_tmp_file(tmp_path, store.get_bytes("jobs/j1/ckpt/base.pt")), weights_only=True)
    assert saved["step"] >= 20
    state["stop"] = False
    rec2 = Recorder()
    result, _ = enroll(scan_video, store, prof, rec=rec2)
    base_steps = [e["step"] for e in rec2.events if e["stage"] == "base" and e["total"] == 60]
    assert base_steps[0] > saved["step"]  # continued, not restarted
    assert result.person_version == 1


def test_scan_without_a_face_is_rejected(tmp_path):
    from reenact import samples
    from reenact.video import encode_video

    coffee = samples.no_face_image()[:400, :400]
    path = tmp_path / "coffee.mp4"
    encode_video([coffee] * 20, 30, path)
    with pytest.raises(PreconditionError) as ei:
        enroll(path, LocalStore(tmp_path / "s"), tiny())
    assert ei.value.reason == "NO_FACE"


def test_too_short_scan_is_rejected(tmp_path):
    frames, _ = render_selfscan(load_face("astronaut"), make_schedule(6, seed=0), size=128)
    path = tmp_path / "short.mp4"
    write_selfscan(path, frames, fps=30)
    with pytest.raises(PreconditionError) as ei:
        enroll(path, LocalStore(tmp_path / "s"), tiny())
    assert ei.value.reason == "SCAN_TOO_SHORT"


def test_scan_without_variation_reports_what_is_missing(tmp_path):
    frames, _ = render_selfscan(load_face("astronaut"), make_schedule(1, seed=0), size=128)
    path = tmp_path / "still.mp4"
    write_selfscan(path, [frames[0]] * 20, fps=30)
    with pytest.raises(PreconditionError) as ei:
        enroll(path, LocalStore(tmp_path / "s"), tiny(min_frames=4))
    assert ei.value.reason == "SCAN_TOO_LITTLE_VARIATION"
    assert "yaw_left" in ei.value.message and "mouth_open" in ei.value.message


def test_user_supplied_base_checkpoint_sets_resolution_and_projects_anchors(scan_video, tmp_path):
    from reenact.models.checkpoint import load_generator, save_generator
    from reenact.models.stylegan2 import Generator

    torch.manual_seed(0)
    base = Generator(z_dim=32, w_dim=32, img_resolution=64, channel_base=1024, channel_max=32,
                     num_mapping_layers=2)
    path = tmp_path / "base.pt"
    save_generator(path, base, provenance={"source": "test: a random 64 px base"})
    store = LocalStore(tmp_path / "store")
    rec = Recorder()
    result, _ = enroll(scan_video, store, tiny(project_steps=5), base=str(path), rec=rec)
    assert "anchors" in rec.stages()
    repo = PersonRepository(store)
    assert repo.manifest("astro", result.person_version).metadata["resolution"] == 64
    g = tmp_path / "g.pt"
    g.write_bytes(repo.read("astro", result.person_version, "generator.pt"))
    assert load_generator(g).img_resolution == 64
