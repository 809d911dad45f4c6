"""Workaround for grpc/grpc#36066 in grpc.aio request streams (Enroll, Reenact of AsyncClient).

When the server ends a request-streaming call early (aborts with NOT_FOUND, RESOURCE_EXHAUSTED, ... while
the client is still sending), a client write that fails because the stream is closed makes grpc.aio
(`_StreamRequestMixin._write`) call `set_internal_error` unconditionally, which replaces the status the
server already sent with INTERNAL "Internal error from Core" - about one call in four on loopback here
(grpcio 1.85.1). The sync API reports the server's status. Upstream fix: grpc/grpc#43486 (open).

`keep_server_status(call)` swaps that one method on ONE call object (not the class) for a copy that,
when a send fails, first waits a moment for the status Core delivers and keeps it; only when none comes
(Core rejected the batch without a status, the hang #34148 guarded against) does it set INTERNAL like
grpc does. When the call lacks the private attributes this relies on (another grpcio), it leaves the
call alone, so behaviour falls back to grpc's own.
"""

from __future__ import annotations

import asyncio
import types

STATUS_WAIT_S = 5.0
_REQUIRED = ("_cython_call", "_metadata_sent", "_done_writing_flag", "_request_serializer", "_raise_for_status",
             "_write", "done")


async def _write_keeping_status(self, request) -> None:
    from grpc import _common
    from grpc._cython import cygrpc

    if self.done():
        raise asyncio.InvalidStateError("RPC already finished.")
    if self._done_writing_flag:
        raise asyncio.InvalidStateError("RPC is half closed after calling \"done_writing\".")
    if not self._metadata_sent.is_set():
        await self._metadata_sent.wait()
        if self.done():
            await self._raise_for_status()
    serialized = _common.serialize(request, self._request_serializer)
    try:
        await self._cython_call.send_serialized_message(serialized)
    except cygrpc.InternalError as err:
        try:  # the server's status, if Core has it or gets it shortly
            await asyncio.wait_for(asyncio.shield(self._cython_call.status()), STATUS_WAIT_S)
        except TimeoutError:
            self._cython_call.set_internal_error(str(err))
        await self._raise_for_status()
    except asyncio.CancelledError:
        if not self.cancelled():
            self.cancel()
        raise


def keep_server_status(call):
    """Patch one grpc.aio stream-request call object in place (see the module docstring); returns it.

    Must run right after the call is created, before the event loop runs its request-consumer task.
    """
    try:
        from grpc import _common  # noqa: F401
        from grpc._cython import cygrpc
    except ImportError:
        return call
    if all(hasattr(call, name) for name in _REQUIRED) and hasattr(cygrpc, "InternalError") and \
            hasattr(call._cython_call, "status"):
        call._write = types.MethodType(_write_keeping_status, call)
    return call
