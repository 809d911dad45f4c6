"""Helpers of streaming RPCs: a bounded count of concurrent streams (over the limit a new one is refused
with RESOURCE_EXHAUSTED) and a reader of the client's requests that ends quietly on cancel."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator

import grpc
from prometheus_client import Gauge

from reenact.errors import ExhaustedError


class StreamSlots:
    """`with slots.take(): ...` holds one of `limit()` slots for a stream and mirrors the count in `gauge`.

    `limit` and `retry_after_s` are read at each call, so a config object can own them."""

    def __init__(self, what: str, limit: Callable[[], int], retry_after_s: Callable[[], float],
                 gauge: Gauge) -> None:
        self.what, self._limit, self._retry, self.gauge = what, limit, retry_after_s, gauge
        self._lock = threading.Lock()
        self.active = 0

    @contextlib.contextmanager
    def take(self) -> Iterator[None]:
        with self._lock:
            limit = self._limit()
            if self.active >= limit:
                raise ExhaustedError(f"{self.active} {self.what} running (max {limit})",
                                     retry_after_s=self._retry(), reason="TOO_MANY_STREAMS")
            self.active += 1
            self.gauge.inc()
        try:
            yield
        finally:
            with self._lock:
                self.active -= 1
                self.gauge.dec()


def client_requests(request_iterator: Iterable, context: grpc.ServicerContext) -> Iterator:
    """The client's requests, read one at a time; ends quietly when the RPC already ended (cancel)."""
    it = iter(request_iterator)
    while True:
        try:
            req = next(it)
        except StopIteration:
            return
        except grpc.RpcError:
            if not context.is_active():  # the client cancelled or the deadline passed: nobody is listening
                return
            raise
        yield req
