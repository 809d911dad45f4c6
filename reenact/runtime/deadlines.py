"""The client's deadline of the current RPC, for calls a service makes on its behalf (deadline propagation).

The runtime sets `deadline_var` (time.monotonic() seconds, None = no deadline) at the start of every RPC
from `context.time_remaining()`; `time_left(cap)` is what a peer call made for this RPC may take: the
client's remaining time, at most `cap`. Threads the RPC starts get the absolute deadline passed explicitly.
"""

from __future__ import annotations

import contextvars
import time

from reenact.errors import DeadlineError

deadline_var: contextvars.ContextVar[float | None] = contextvars.ContextVar("deadline", default=None)

MIN_TIMEOUT_S = 0.001  # a peer call with no time left still gets a (tiny) deadline, never an unbounded one


def deadline_from_context(context) -> float | None:
    try:
        remaining = context.time_remaining()
    except (AttributeError, NotImplementedError):
        return None
    if remaining is None or remaining > 10 * 365 * 86400:  # grpc reports "no deadline" as a huge number
        return None
    return time.monotonic() + max(0.0, float(remaining))


def time_left(cap: float | None = None, deadline: float | None = ...) -> float | None:  # type: ignore[assignment]
    """Seconds a call made now may take: min(cap, client deadline - now); None = unbounded.

    `deadline`: an absolute monotonic deadline (default: the current RPC's)."""
    dl = deadline_var.get() if deadline is ... else deadline
    if dl is None:
        return cap
    left = max(MIN_TIMEOUT_S, dl - time.monotonic())
    return left if cap is None else min(cap, left)


def check_deadline(deadline: float | None = ...) -> None:  # type: ignore[assignment]
    """DeadlineError when the client's deadline has passed."""
    dl = deadline_var.get() if deadline is ... else deadline
    if dl is not None and time.monotonic() >= dl:
        raise DeadlineError("the client's deadline passed", reason="DEADLINE_PASSED")
