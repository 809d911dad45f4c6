"""The trainer service as its own process (python -m services.trainer) running a REAL enrollment job:
upload a self-scan fixture to the store, CreateJob, WatchJob to SUCCEEDED, person version + Triton model."""

import grpc
import pytest

from reenact.api.common.v1 import types_pb2
from reenact.api.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from reenact.fixtures import load_face, make_schedule, render_selfscan, write_selfscan
from reenact.launcher import Stack
from reenact.store import LocalStore, PersonRepository


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    root = tmp_path_factory.mktemp("trainer")
    with Stack(root / "logs") as stack:
        svc = stack.start("trainer", "--store-url", str(root / "store"), "--model-repository",
                          str(root / "models"), "--device", "cpu", "--checkpoint-every-s", "30")
        with grpc.insecure_channel(svc.address) as ch:
            yield trainer_pb2_grpc.TrainerServiceStub(ch), root


def test_real_enrollment_job_through_the_service(trainer):
    stub, root = trainer
    frames, truth = render_selfscan(load_face("astronaut"), make_schedule(90, seed=0), size=160)
    scan = root / "scan.mp4"
    write_selfscan(scan, frames, fps=30)
    store = LocalStore(root / "store")
    store.put_file("uploads/scan-1.mp4", scan)
    req = trainer_pb2.CreateJobRequest(
        request_id="enroll-astro-1", person_id="astro", scan_key="uploads/scan-1.mp4", profile="cpu-quick",
        options=types_pb2.EnrollOptions(num_anchors=12, tune_steps=40))
    first = stub.CreateJob(req, timeout=30)
    again = stub.CreateJob(req, timeout=30)
    assert first.created and not again.created and again.job.job_id == first.job.job_id
    stages, last = [], None
    for msg in stub.WatchJob(trainer_pb2.WatchJobRequest(job_id=first.job.job_id), timeout=900):
        last = msg.job
        if last.progress.stage and (not stages or stages[-1] != last.progress.stage):
            stages.append(last.progress.stage)
    assert last.state == types_pb2.JOB_STATE_SUCCEEDED, last.error_message
    assert last.person_version == 1 and last.coverage.frames_with_face == 90
    assert last.metrics.terms["train_psnr_db"] > 20
    assert stages[0] == "align" and stages[-1] == "export"
    assert PersonRepository(store).versions("astro") == [1]
    assert (root / "models" / "gen_astro" / "config.pbtxt").is_file()


def test_unknown_scan_is_not_found(trainer):
    stub, _ = trainer
    with pytest.raises(grpc.RpcError) as ei:
        stub.CreateJob(trainer_pb2.CreateJobRequest(request_id="x1", person_id="bob", scan_key="uploads/none.mp4",
                                                    profile="cpu-quick"), timeout=30)
    assert ei.value.code() == grpc.StatusCode.NOT_FOUND
