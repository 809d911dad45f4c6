"""gRPC adapter of the trainer's JobManager: proto <-> JobRecord, nothing else.

Domain errors raised by the manager travel up unchanged; the service runtime maps them to status codes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from google.protobuf import timestamp_pb2

from reenact.api.common.v1 import types_pb2
from reenact.api.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from services.trainer.jobs import JobManager, JobRecord

_STATES = {
    "QUEUED": types_pb2.JOB_STATE_QUEUED,
    "RUNNING": types_pb2.JOB_STATE_RUNNING,
    "SUCCEEDED": types_pb2.JOB_STATE_SUCCEEDED,
    "FAILED": types_pb2.JOB_STATE_FAILED,
    "CANCELLED": types_pb2.JOB_STATE_CANCELLED,
}
_COVERAGE_FIELDS = frozenset(types_pb2.CoverageReport.DESCRIPTOR.fields_by_name)


def timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(round(seconds * 1e9))
    return ts


def coverage_to_proto(coverage: dict[str, Any]) -> types_pb2.CoverageReport:
    """Coverage dict (CoverageReport field names; other keys ignored) -> message."""
    return types_pb2.CoverageReport(**{k: v for k, v in coverage.items() if k in _COVERAGE_FIELDS})


def job_to_proto(rec: JobRecord) -> types_pb2.Job:
    p = rec.progress
    job = types_pb2.Job(
        job_id=rec.job_id, request_id=rec.request_id, person_id=rec.person_id, state=_STATES[rec.state],
        profile=rec.profile, create_time=timestamp(rec.create_time), update_time=timestamp(rec.update_time),
        error_code=rec.error_code, error_message=rec.error_message, person_version=rec.person_version,
        progress=types_pb2.JobProgress(
            stage=p.stage, step=p.step, total_steps=p.total_steps, fraction=p.fraction,
            losses=types_pb2.LossTerms(terms=p.losses), eta_seconds=p.eta_seconds, message=p.message),
        metrics=types_pb2.LossTerms(terms=rec.metrics),
    )
    if rec.coverage:
        job.coverage.CopyFrom(coverage_to_proto(rec.coverage))
    return job


def options_from_proto(msg: types_pb2.EnrollOptions) -> dict[str, Any]:
    return {"num_anchors": msg.num_anchors, "resolution": msg.resolution, "base_checkpoint": msg.base_checkpoint,
            "tune_steps": msg.tune_steps, "seed": msg.seed}


class TrainerServicer(trainer_pb2_grpc.TrainerServiceServicer):
    def __init__(self, manager: JobManager) -> None:
        self.manager = manager

    def CreateJob(self, request, context) -> trainer_pb2.CreateJobResponse:
        rec, created = self.manager.create(
            request_id=request.request_id, person_id=request.person_id, scan_key=request.scan_key,
            profile=request.profile, options=options_from_proto(request.options), owner=request.owner)
        return trainer_pb2.CreateJobResponse(job=job_to_proto(rec), created=created)

    def WatchJob(self, request, context) -> Iterator[trainer_pb2.WatchJobResponse]:
        # The RPC's end (client cancel, deadline, normal end) sets `stop` and wakes the watcher, so the
        # handler thread never stays blocked after its client left.
        stop = threading.Event()

        def on_rpc_done() -> None:
            stop.set()
            self.manager.wake_watchers()

        if not context.add_callback(on_rpc_done):
            return
        for rec in self.manager.watch(request.job_id, stop=stop):
            yield trainer_pb2.WatchJobResponse(job=job_to_proto(rec))

    def GetJob(self, request, context) -> trainer_pb2.GetJobResponse:
        return trainer_pb2.GetJobResponse(job=job_to_proto(self.manager.get(request.job_id)))

    def CancelJob(self, request, context) -> trainer_pb2.CancelJobResponse:
        return trainer_pb2.CancelJobResponse(job=job_to_proto(self.manager.cancel(request.job_id)))

    def ListJobs(self, request, context) -> trainer_pb2.ListJobsResponse:
        page, token = self.manager.list(owner=request.owner or None, page_size=request.page_size,
                                        page_token=request.page_token)
        return trainer_pb2.ListJobsResponse(jobs=[job_to_proto(r) for r in page], next_page_token=token)
