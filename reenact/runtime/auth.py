"""Authentication hook of the service runtime (the gateway's API keys live in services/gateway/auth.py).

A service that authenticates its callers gives `ServiceServer(..., authenticator=...)` an object with
`authenticate(method, metadata) -> Principal`. The runtime calls it at the start of every RPC of the
service's own methods (never for grpc.health.v1 or reflection), inside the one error mapping, so a
ReenactError it raises (UnauthenticatedError, ExhaustedError for a rate limit, ...) becomes the RPC's
status and is counted in the metrics. The principal is then `current_principal()` for the servicer
(a context variable of the RPC's thread; pipeline threads get it passed explicitly).
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Principal:
    """Who is calling. `tenant` owns what it creates; `sees_all` skips ownership checks (auth off, admin keys).

    Quotas: 0 = unlimited."""

    key_id: str = ""
    tenant: str = ""
    sees_all: bool = True
    max_streams: int = 0
    max_persons: int = 0
    requests_per_minute: int = 0

    @property
    def authenticated(self) -> bool:
        return bool(self.key_id)


ANONYMOUS = Principal()  # auth disabled: one owner-less tenant that sees everything

principal_var: contextvars.ContextVar[Principal] = contextvars.ContextVar("principal", default=ANONYMOUS)


def current_principal() -> Principal:
    return principal_var.get()


class Authenticator(Protocol):
    def authenticate(self, method: str, metadata: Mapping[str, str]) -> Principal:
        """The caller of `method` (full name "/pkg.Service/Method") from its invocation metadata; raises a
        ReenactError (UNAUTHENTICATED, RESOURCE_EXHAUSTED, ...) to refuse the call."""
        ...
