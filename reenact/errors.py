"""Domain errors shared by every core module (no grpc import here).

Cores raise these; the service runtime maps them to gRPC status codes in exactly one place
(`reenact.runtime.status`). Each carries optional structured details:
field violations (bad input), a retry delay (quota/backpressure) and a machine-readable reason.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class ReenactError(Exception):
    """Base of all domain errors. `kind` names the canonical status it maps to."""

    kind = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        violations: list[FieldViolation] | None = None,
        retry_after_s: float | None = None,
        reason: str = "",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.violations = list(violations or [])
        self.retry_after_s = retry_after_s
        self.reason = reason


class InvalidInputError(ReenactError):
    kind = "INVALID_ARGUMENT"

    @classmethod
    def for_field(cls, field: str, description: str, **kw) -> InvalidInputError:
        return cls(f"{field}: {description}", violations=[FieldViolation(field, description)], **kw)


class NotFoundError(ReenactError):
    kind = "NOT_FOUND"


class AlreadyExistsError(ReenactError):
    kind = "ALREADY_EXISTS"


class PreconditionError(ReenactError):
    kind = "FAILED_PRECONDITION"


class ExhaustedError(ReenactError):
    kind = "RESOURCE_EXHAUSTED"


class UnavailableError(ReenactError):
    kind = "UNAVAILABLE"


class AbortedError(ReenactError):
    kind = "ABORTED"


class CancelledError(ReenactError):
    kind = "CANCELLED"


class DeadlineError(ReenactError):
    kind = "DEADLINE_EXCEEDED"


class PermissionDeniedError(ReenactError):
    kind = "PERMISSION_DENIED"


class UnauthenticatedError(ReenactError):
    kind = "UNAUTHENTICATED"


class InternalError(ReenactError):
    kind = "INTERNAL"
