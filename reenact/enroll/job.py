"""The trainer service's run function: one enrollment job from the store to a committed person version."""

from __future__ import annotations

import logging
import pathlib
import tempfile

from reenact.enroll.pipeline import Checkpoints, StageProgress, run_enrollment
from reenact.enroll.profiles import get_profile

log = logging.getLogger("reenact.enroll.job")


def _base_checkpoint(store, key: str, tmp: pathlib.Path) -> str | None:
    """Fetch a user-supplied base checkpoint; convert official formats to ours."""
    if not key:
        return None
    from reenact.models.checkpoint import CheckpointError, read_checkpoint, save_generator
    from reenact.models.convert import convert

    src = tmp / pathlib.Path(key).name
    store.get_file(key, src)
    try:
        read_checkpoint(src)
        return str(src)
    except CheckpointError:
        nets = convert(src, include_D=False, source=key)  # NVlabs .pkl or rosinality .pt
        out = tmp / "base_converted.pt"
        save_generator(out, nets.G, provenance=nets.provenance)
        return str(out)


def make_exporter(store, cfg):
    """Writes gen_<person> into the Triton model repository and loads it when a Triton URL is set."""

    def export(person_id: str, version: int, name: str) -> None:
        from reenact.store import PersonRepository
        from reenact.tritonserve.repository import publish_generator_model

        with tempfile.TemporaryDirectory() as tmp:
            path = pathlib.Path(tmp) / name
            path.write_bytes(PersonRepository(store).read(person_id, version, name))
            # a local directory, or a store/S3 URL (staged, then published by one config.pbtxt put)
            publish_generator_model(cfg.model_repository, person_id, path, person_version=version,
                                    device="gpu" if cfg.device == "cuda" else "cpu")
        if cfg.triton_url:
            from reenact.tritonserve.client import TritonRenderer, TritonTLS

            with TritonRenderer(cfg.triton_url, tls=TritonTLS.from_config(cfg)) as renderer:  # dns:/// URL: every replica
                renderer.load_model(person_id, everywhere=True)
        log.info("exported to triton", extra={"person_id": person_id, "version": version})

    return export


def run_enrollment_job(job, ctx, cfg) -> dict:
    """JobManager run_fn: fetch the scan, enroll, export; returns person_version and metrics."""
    from reenact.store import PersonRepository

    opts = job.options or {}
    profile = get_profile(job.profile).override(
        num_anchors=opts.get("num_anchors"), resolution=opts.get("resolution"),
        tune_steps=opts.get("tune_steps"), seed=opts.get("seed"))

    def sink(*, stage, step, total, fraction, losses, eta_seconds, message):
        ctx.progress(stage, step, total, losses, message, fraction=fraction, eta_seconds=eta_seconds)

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = pathlib.Path(tmp_dir)
        scan_path = tmp / "scan.mp4"
        ctx.store.get_file(job.scan_key, scan_path)
        base = _base_checkpoint(ctx.store, opts.get("base_checkpoint", ""), tmp)
        result = run_enrollment(
            str(scan_path), person_id=job.person_id, profile=profile, repo=PersonRepository(ctx.store),
            ckpt=Checkpoints(ctx.store, ctx.checkpoint_prefix), progress=StageProgress(sink),
            should_stop=ctx.should_stop, on_coverage=ctx.set_coverage, device=cfg.device,
            base_checkpoint=base, export=make_exporter(ctx.store, cfg),
            checkpoint_every_s=cfg.checkpoint_every_s)
    return {"person_version": result.person_version, "metrics": result.metrics}
