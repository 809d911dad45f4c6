"""Python SDK of reenact: `Client` (blocking) and `AsyncClient` (asyncio) for the public gateway API.

    from reenact.client import Client

    with Client("127.0.0.1:50050", api_key=None) as client:
        job = client.enroll("selfscan.mp4", person_id="eileen", profile="cpu-quick")
        job = client.wait_job(job.job_id, on_update=print)
        for ev in client.reenact("eileen", video="driving.mp4", edits=["smile=1.0"]):
            ...   # Started, Frame(index, image, metrics), Summary
        client.reenact_to_file("eileen", "out.mp4", video="driving.mp4", paste_back=True)

Results are frozen dataclasses (`reenact.client.types`), failures `ReenactClientError` subclasses
(`reenact.client.errors`) with the status code, message, field violations and retry delay.
"""

from reenact.client._common import (
    ADDRESS_ENV,
    API_KEY_ENV,
    CHUNK_BYTES,
    DEFAULT_TIMEOUT,
    NO_RETRY,
    RetryPolicy,
)
from reenact.client.aio import AsyncClient
from reenact.client.errors import (
    AbortedError,
    AlreadyExistsError,
    CancelledError,
    DeadlineExceededError,
    FailedPreconditionError,
    FieldViolation,
    InternalError,
    InvalidArgumentError,
    JobFailedError,
    NotFoundError,
    PermissionDeniedError,
    ReenactClientError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
    UnimplementedError,
)
from reenact.client.sync import Client
from reenact.client.types import (
    Coverage,
    Edit,
    EditDirection,
    Frame,
    FrameMetrics,
    Job,
    JobProgress,
    JobState,
    Person,
    PersonState,
    ReenactEvent,
    ReenactResult,
    Started,
    Summary,
    VideoChunk,
    to_jsonable,
)

__all__ = [
    "ADDRESS_ENV", "API_KEY_ENV", "CHUNK_BYTES", "DEFAULT_TIMEOUT", "NO_RETRY", "AbortedError",
    "AlreadyExistsError", "AsyncClient", "CancelledError", "Client", "Coverage", "DeadlineExceededError",
    "Edit", "EditDirection", "FailedPreconditionError", "FieldViolation", "Frame", "FrameMetrics",
    "InternalError", "InvalidArgumentError", "Job", "JobFailedError", "JobProgress", "JobState",
    "NotFoundError", "PermissionDeniedError", "Person", "PersonState", "ReenactClientError", "ReenactEvent",
    "ReenactResult", "ResourceExhaustedError", "RetryPolicy", "Started", "Summary", "UnauthenticatedError",
    "UnavailableError", "UnimplementedError", "VideoChunk", "to_jsonable",
]
