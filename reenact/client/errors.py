"""Errors of the reenact SDK: one exception class per canonical gRPC status code.

Every failed call raises a subclass of `ReenactClientError` carrying the status code, the server's
message and the structured `google.rpc.Status` details the gateway attaches (trailing metadata
`grpc-status-details-bin`): BadRequest field violations, RetryInfo (`retry_after`, seconds) and
ErrorInfo (`reason`). Nothing here imports the generated stubs.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2, status_pb2

STATUS_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request (google.rpc.BadRequest.FieldViolation)."""

    field: str
    description: str


class ReenactClientError(Exception):
    """A call to the reenact gateway failed.

    Attributes: `code` (grpc.StatusCode), `message` (the server's text), `violations` (tuple of
    FieldViolation), `retry_after` (seconds the server asks to wait, or None), `reason` (ErrorInfo
    reason, machine-readable, or ""), `method` (the RPC, e.g. "GetPerson"), `request_id` (the
    x-request-id sent with the call, for matching server logs).
    """

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, *, code: grpc.StatusCode | None = None,
                 violations: tuple[FieldViolation, ...] | list[FieldViolation] = (),
                 retry_after: float | None = None, reason: str = "", method: str = "",
                 request_id: str = "") -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message
        self.violations = tuple(violations)
        self.retry_after = retry_after
        self.reason = reason
        self.method = method
        self.request_id = request_id

    @property
    def code_name(self) -> str:
        return self.code.name

    def __str__(self) -> str:
        parts = [f"{self.code.name}: {self.message}" if self.message else self.code.name]
        parts += [f"{v.field}: {v.description}" for v in self.violations]
        if self.retry_after is not None:
            parts.append(f"retry after {self.retry_after:g} s")
        return "; ".join(parts)

    def to_dict(self) -> dict:
        return {"code": self.code.name, "message": self.message, "method": self.method,
                "violations": [{"field": v.field, "description": v.description} for v in self.violations],
                "retry_after": self.retry_after, "reason": self.reason, "request_id": self.request_id}


class CancelledError(ReenactClientError):
    code = grpc.StatusCode.CANCELLED


class UnknownError(ReenactClientError):
    code = grpc.StatusCode.UNKNOWN


class InvalidArgumentError(ReenactClientError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceededError(ReenactClientError, TimeoutError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFoundError(ReenactClientError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExistsError(ReenactClientError):
    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDeniedError(ReenactClientError):
    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhaustedError(ReenactClientError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPreconditionError(ReenactClientError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class AbortedError(ReenactClientError):
    code = grpc.StatusCode.ABORTED


class OutOfRangeError(ReenactClientError):
    code = grpc.StatusCode.OUT_OF_RANGE


class UnimplementedError(ReenactClientError):
    code = grpc.StatusCode.UNIMPLEMENTED


class InternalError(ReenactClientError):
    code = grpc.StatusCode.INTERNAL


class UnavailableError(ReenactClientError, ConnectionError):
    code = grpc.StatusCode.UNAVAILABLE


class DataLossError(ReenactClientError):
    code = grpc.StatusCode.DATA_LOSS


class UnauthenticatedError(ReenactClientError):
    code = grpc.StatusCode.UNAUTHENTICATED


class JobFailedError(ReenactClientError):
    """`wait_job(..., raise_on_failure=True)`: the job ended FAILED or CANCELLED. `.job` is its last state."""

    def __init__(self, message: str, *, job, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message, code=code or grpc.StatusCode.UNKNOWN)
        self.job = job


_BY_CODE: dict[grpc.StatusCode, type[ReenactClientError]] = {
    cls.code: cls for cls in (
        CancelledError, UnknownError, InvalidArgumentError, DeadlineExceededError, NotFoundError,
        AlreadyExistsError, PermissionDeniedError, ResourceExhaustedError, FailedPreconditionError,
        AbortedError, OutOfRangeError, UnimplementedError, InternalError, UnavailableError, DataLossError,
        UnauthenticatedError)
}


def error_class(code: grpc.StatusCode) -> type[ReenactClientError]:
    return _BY_CODE.get(code, ReenactClientError)


def parse_status_details(trailing_metadata) -> tuple[tuple[FieldViolation, ...], float | None, str, str]:
    """(violations, retry_after, reason, status message) from `grpc-status-details-bin`, if present.

    Accepts what grpc returns as trailing metadata on both APIs: a sequence of (key, value) pairs
    (sync) or grpc.aio.Metadata; None or a missing/corrupt entry gives empty details.
    """
    violations: list[FieldViolation] = []
    retry_after: float | None = None
    reason = ""
    message = ""
    raw = None
    for key, value in trailing_metadata or ():
        if key == STATUS_DETAILS_KEY:
            raw = value
    if not raw:
        return (), None, "", ""
    st = status_pb2.Status()
    try:
        st.ParseFromString(raw if isinstance(raw, bytes) else bytes(raw))
    except Exception:  # noqa: BLE001 - corrupt details must not hide the original error
        return (), None, "", ""
    message = st.message
    for d in st.details:
        if d.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            br = error_details_pb2.BadRequest()
            d.Unpack(br)
            violations += [FieldViolation(v.field, v.description) for v in br.field_violations]
        elif d.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            ri = error_details_pb2.RetryInfo()
            d.Unpack(ri)
            retry_after = ri.retry_delay.seconds + ri.retry_delay.nanos / 1e9
        elif d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            ei = error_details_pb2.ErrorInfo()
            d.Unpack(ei)
            reason = ei.reason
    return tuple(violations), retry_after, reason, message


def from_rpc_error(exc: grpc.RpcError, *, method: str = "", request_id: str = "") -> ReenactClientError:
    """grpc.RpcError (sync) or grpc.aio.AioRpcError -> the matching ReenactClientError subclass."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    try:
        trailing = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    except Exception:  # noqa: BLE001
        trailing = None
    violations, retry_after, reason, st_message = parse_status_details(trailing)
    cls = error_class(code)
    return cls(details or st_message or "", code=code, violations=violations, retry_after=retry_after,
               reason=reason, method=method, request_id=request_id)
