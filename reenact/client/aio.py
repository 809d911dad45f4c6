"""`AsyncClient`: the asyncio Python SDK of the reenact gateway (grpc.aio), same API as `Client`."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable

import grpc
import grpc.aio
import numpy as np

from reenact.api.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from reenact.client import _common as c
from reenact.client._aio_compat import keep_server_status
from reenact.client.errors import JobFailedError, ReenactClientError, UnavailableError, from_rpc_error
from reenact.client.sync import Client, _FileSink
from reenact.client.types import (
    EditDirection,
    Frame,
    Job,
    Person,
    ReenactEvent,
    ReenactResult,
    VideoChunk,
    event_from_reenact_response,
    event_from_render_response,
)

log = logging.getLogger("reenact.client")

_attempt_timeout = Client._attempt_timeout
_retry_delay = Client._retry_delay


class AsyncClient:
    """asyncio client of the reenact gateway; arguments, defaults, retries and errors as `Client`.

    Create it inside a running event loop; `async with AsyncClient(...) as client:` closes the channel.
    """

    def __init__(self, address: str | None = None, *, api_key: str | None = None, tls: bool = False,
                 root_certificates: bytes | str | os.PathLike | None = None,
                 certificate_chain: bytes | str | os.PathLike | None = None,
                 private_key: bytes | str | os.PathLike | None = None,
                 timeout: float | None = c.DEFAULT_TIMEOUT, retry: c.RetryPolicy | None = None,
                 options: Iterable[tuple[str, object]] = (), channel: grpc.aio.Channel | None = None) -> None:
        self.address = c.resolve_address(address) if channel is None else (address or "")
        self._api_key = c.resolve_api_key(api_key)
        self.timeout = timeout
        self.retry = retry or c.RetryPolicy()
        if channel is not None:
            self._channel, self._owns_channel = channel, False
        elif (creds := c.resolve_tls(tls, root_certificates, certificate_chain, private_key)) is not None:
            self._channel = grpc.aio.secure_channel(self.address, creds,
                                                    options=c.channel_options(options))
            self._owns_channel = True
        else:
            self._channel = grpc.aio.insecure_channel(self.address, options=c.channel_options(options))
            self._owns_channel = True
        self._stub = gateway_pb2_grpc.ReenactServiceStub(self._channel)
        self._sleep = asyncio.sleep

    async def close(self) -> None:
        if self._owns_channel:
            await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def wait_ready(self, timeout: float = 10.0) -> None:
        try:
            await asyncio.wait_for(self._channel.channel_ready(), timeout)
        except TimeoutError:
            raise UnavailableError(f"gateway at {self.address} not reachable after {timeout:g} s",
                                   method="connect") from None

    def _timeout(self, timeout, default):
        return default if timeout is ... else timeout

    async def _call(self, method: str, fn: Callable, request_factory: Callable[[], object], *,
                    timeout: float | None, retry_codes: frozenset = frozenset()):
        policy = self.retry if retry_codes else c.NO_RETRY
        deadline = None if timeout is None else time.monotonic() + timeout
        request_id = c.new_request_id()
        attempt = 0
        while True:
            try:
                call = fn(request_factory(), timeout=_attempt_timeout(deadline, policy),
                          metadata=c.call_metadata(self._api_key, request_id))
                return await keep_server_status(call)
            except grpc.RpcError as exc:
                err = from_rpc_error(exc, method=method, request_id=request_id)
                delay = _retry_delay(err, attempt, policy, retry_codes, deadline)
                if delay is None:
                    raise err from None
                log.info("retrying %s after %s (attempt %d, %.2fs)", method, err.code.name, attempt + 1, delay)
                await self._sleep(delay)
                attempt += 1

    # jobs ---------------------------------------------------------------------------------------------

    async def enroll(self, video: str | os.PathLike | bytes, *, person_id: str = "", display_name: str = "",
                     profile: str = "", options: dict | None = None, request_id: str | None = None,
                     chunk_size: int = c.CHUNK_BYTES, timeout: float | None = ...) -> Job:
        c.check_video_source(video)
        c.check_chunk_size(chunk_size)
        header = c.enroll_header(request_id=request_id or c.new_request_id("enroll"), person_id=person_id,
                                 display_name=display_name, profile=profile, options=options)
        req_errors = c.RequestErrors()
        try:
            resp = await self._call("Enroll", self._stub.Enroll,
                                    lambda: req_errors.wrap(c.enroll_requests(header, video, chunk_size)),
                                    timeout=self._timeout(timeout, c.UPLOAD_TIMEOUT), retry_codes=c.RETRY_IDEMPOTENT)
        except (ReenactClientError, asyncio.CancelledError):
            req_errors.reraise()
            raise
        return Job.from_proto(resp.job, created=resp.created)

    async def get_job(self, job_id: str, *, timeout: float | None = ...) -> Job:
        resp = await self._call("GetJob", self._stub.GetJob, lambda: gateway_pb2.GetJobRequest(job_id=job_id),
                                timeout=self._timeout(timeout, self.timeout), retry_codes=c.RETRY_IDEMPOTENT)
        return Job.from_proto(resp.job)

    async def cancel_job(self, job_id: str, *, timeout: float | None = ...) -> Job:
        resp = await self._call("CancelJob", self._stub.CancelJob,
                                lambda: gateway_pb2.CancelJobRequest(job_id=job_id),
                                timeout=self._timeout(timeout, self.timeout), retry_codes=c.RETRY_UNAVAILABLE)
        return Job.from_proto(resp.job)

    async def iter_jobs(self, *, page_size: int = 0, timeout: float | None = ...) -> AsyncIterator[Job]:
        token = ""
        while True:
            req = gateway_pb2.ListJobsRequest(page_size=page_size, page_token=token)
            resp = await self._call("ListJobs", self._stub.ListJobs, lambda req=req: req,
                                    timeout=self._timeout(timeout, self.timeout), retry_codes=c.RETRY_IDEMPOTENT)
            for j in resp.jobs:
                yield Job.from_proto(j)
            token = resp.next_page_token
            if not token:
                return

    async def list_jobs(self, *, page_size: int = 0, limit: int | None = None,
                        timeout: float | None = ...) -> list[Job]:
        out = []
        async for job in self.iter_jobs(page_size=page_size, timeout=timeout):
            if limit is not None and len(out) >= limit:
                break
            out.append(job)
        return out

    async def watch_job(self, job_id: str, *, timeout: float | None = ...) -> AsyncIterator[Job]:
        timeout = self._timeout(timeout, c.STREAM_TIMEOUT)
        deadline = None if timeout is None else time.monotonic() + timeout
        policy = self.retry
        attempt = 0
        request_id = c.new_request_id()
        while True:
            call = self._stub.WatchJob(gateway_pb2.WatchJobRequest(job_id=job_id),
                                       timeout=_attempt_timeout(deadline, c.RetryPolicy()),
                                       metadata=c.call_metadata(self._api_key, request_id))
            err = None
            try:
                async for resp in call:
                    attempt = 0
                    job = Job.from_proto(resp.job)
                    yield job
                    if job.done:
                        return
            except grpc.RpcError as exc:
                err = from_rpc_error(exc, method="WatchJob", request_id=request_id)
            finally:
                call.cancel()
            if err is not None:
                delay = _retry_delay(err, attempt, policy, c.RETRY_UNAVAILABLE, deadline)
                if delay is None:
                    raise err
            else:
                if attempt + 1 >= policy.max_attempts:
                    raise ReenactClientError("WatchJob stream ended before the job finished",
                                             code=grpc.StatusCode.UNAVAILABLE, method="WatchJob",
                                             request_id=request_id)
                delay = policy.backoff(attempt)
            await self._sleep(delay)
            attempt += 1

    async def wait_job(self, job_id: str, *, timeout: float | None = None,
                       on_update: Callable[[Job], None] | None = None, raise_on_failure: bool = False) -> Job:
        last = None
        async for job in self.watch_job(job_id, timeout=timeout):
            last = job
            if on_update is not None:
                on_update(job)
        if last is None:
            last = await self.get_job(job_id)
        if raise_on_failure and not last.succeeded:
            raise JobFailedError(f"job {job_id} {last.state.value}: {last.error_message}", job=last,
                                 code=last.error_code)
        return last

    # reenactment --------------------------------------------------------------------------------------

    async def reenact(self, person_id: str, *, video: str | os.PathLike | bytes | None = None,
                      frames: Iterable[np.ndarray] | AsyncIterable[np.ndarray] | None = None,
                      output: str = "frames", paste_back: bool = False, edits=(), steps: int = 0,
                      window: int = 0, fps: float = 0.0, person_version: int = 0, frame_encoding: str = "png",
                      decode: bool = True, chunk_size: int = c.CHUNK_BYTES, motion: str = "",
                      smoothing_sigma: float = 0.0, opening_weight: float = 0.0, latent_sigma: float = 0.0,
                      init: str | None = None, opening_range: float = 0.0,
                      mouth_starts: float = 0.0, delta_lr_scale: float = 0.0, lip_warp: float = 0.0,
                      timeout: float | None = ...) -> AsyncIterator[ReenactEvent]:
        """As `Client.reenact`; frames may also be an async iterable."""
        c.check_reenact_input(video, frames)
        c.check_chunk_size(chunk_size)
        header = c.reenact_header(person_id, output=output, frame_encoding=frame_encoding, paste_back=paste_back,
                                  edits=edits, steps=steps, window=window, fps=fps, person_version=person_version,
                                  motion=motion, smoothing_sigma=smoothing_sigma,
                                  opening_weight=opening_weight, latent_sigma=latent_sigma, init=init,
                                  opening_range=opening_range, mouth_starts=mouth_starts,
                                  delta_lr_scale=delta_lr_scale, lip_warp=lip_warp)

        async def requests():
            if video is not None or not hasattr(frames, "__aiter__"):
                for r in c.reenact_requests(header, video=video, frames=frames, chunk_size=chunk_size):
                    yield r
                return
            yield gateway_pb2.ReenactRequest(header=header)
            i = 0
            async for rgb in frames:
                yield gateway_pb2.ReenactRequest(frame=c.frame_to_proto(i, rgb))
                i += 1

        request_id = c.new_request_id()
        req_errors = c.RequestErrors()
        call = keep_server_status(self._stub.Reenact(
            req_errors.wrap_async(requests()), timeout=self._timeout(timeout, c.STREAM_TIMEOUT),
            metadata=c.call_metadata(self._api_key, request_id)))
        try:
            async for resp in call:
                ev = event_from_reenact_response(resp, decode=decode)
                if ev is not None:
                    yield ev
        except grpc.RpcError as exc:
            req_errors.reraise()
            raise from_rpc_error(exc, method="Reenact", request_id=request_id) from None
        except asyncio.CancelledError:
            req_errors.reraise()  # grpc.aio cancels the call when the request iterator fails
            raise
        finally:
            call.cancel()

    async def render(self, person_id: str, reenactment_id: str, *, edits=(), output: str = "frames",
                     paste_back: bool = False, frame_encoding: str = "png", decode: bool = True,
                     timeout: float | None = ...) -> AsyncIterator[Frame | VideoChunk]:
        req = gateway_pb2.RenderRequest(person_id=person_id, reenactment_id=reenactment_id,
                                        edits=c.edits_to_proto(edits), output=c.output_kind(output),
                                        frame_encoding=c.image_encoding(frame_encoding), paste_back=paste_back)
        timeout = self._timeout(timeout, c.STREAM_TIMEOUT)
        deadline = None if timeout is None else time.monotonic() + timeout
        request_id = c.new_request_id()
        attempt = 0
        while True:
            call = self._stub.Render(req, timeout=_attempt_timeout(deadline, c.RetryPolicy()),
                                     metadata=c.call_metadata(self._api_key, request_id))
            received = False
            try:
                async for resp in call:
                    received = True
                    ev = event_from_render_response(resp, decode=decode)
                    if ev is not None:
                        yield ev
                return
            except grpc.RpcError as exc:
                err = from_rpc_error(exc, method="Render", request_id=request_id)
                delay = None if received else _retry_delay(err, attempt, self.retry, c.RETRY_UNAVAILABLE, deadline)
                if delay is None:
                    raise err from None
            finally:
                call.cancel()
            await self._sleep(delay)
            attempt += 1

    async def reenact_to_file(self, person_id: str, out_path: str | os.PathLike, *, video=None, frames=None,
                              frames_dir: str | os.PathLike | None = None,
                              on_event: Callable[[ReenactEvent], None] | None = None, **kw) -> ReenactResult:
        events = self.reenact(person_id, video=video, frames=frames, output="frames" if frames_dir else "video", **kw)
        return await _collect_to_file(events, out_path, frames_dir=frames_dir, on_event=on_event)

    async def render_to_file(self, person_id: str, reenactment_id: str, out_path: str | os.PathLike, *,
                             frames_dir: str | os.PathLike | None = None, fps: float = 30.0,
                             on_event: Callable[[ReenactEvent], None] | None = None, **kw) -> ReenactResult:
        events = self.render(person_id, reenactment_id, output="frames" if frames_dir else "video", **kw)
        return await _collect_to_file(events, out_path, frames_dir=frames_dir, on_event=on_event, fps=fps)

    # registry -----------------------------------------------------------------------------------------

    async def list_edit_directions(self, person_id: str, *, person_version: int = 0,
                                   timeout: float | None = ...) -> list[EditDirection]:
        req = gateway_pb2.ListEditDirectionsRequest(person_id=person_id, person_version=person_version)
        resp = await self._call("ListEditDirections", self._stub.ListEditDirections, lambda: req,
                                timeout=self._timeout(timeout, self.timeout), retry_codes=c.RETRY_IDEMPOTENT)
        return [EditDirection.from_proto(d) for d in resp.directions]

    async def iter_persons(self, *, page_size: int = 0, timeout: float | None = ...) -> AsyncIterator[Person]:
        token = ""
        while True:
            req = gateway_pb2.ListPersonsRequest(page_size=page_size, page_token=token)
            resp = await self._call("ListPersons", self._stub.ListPersons, lambda req=req: req,
                                    timeout=self._timeout(timeout, self.timeout), retry_codes=c.RETRY_IDEMPOTENT)
            for p in resp.persons:
                yield Person.from_proto(p)
            token = resp.next_page_token
            if not token:
                return

    async def list_persons(self, *, page_size: int = 0, limit: int | None = None,
                           timeout: float | None = ...) -> list[Person]:
        out = []
        async for p in self.iter_persons(page_size=page_size, timeout=timeout):
            if limit is not None and len(out) >= limit:
                break
            out.append(p)
        return out

    async def get_person(self, person_id: str, *, timeout: float | None = ...) -> Person:
        resp = await self._call("GetPerson", self._stub.GetPerson,
                                lambda: gateway_pb2.GetPersonRequest(person_id=person_id),
                                timeout=self._timeout(timeout, self.timeout), retry_codes=c.RETRY_IDEMPOTENT)
        return Person.from_proto(resp.person)

    async def delete_person(self, person_id: str, *, timeout: float | None = ...) -> int:
        resp = await self._call("DeletePerson", self._stub.DeletePerson,
                                lambda: gateway_pb2.DeletePersonRequest(person_id=person_id),
                                timeout=self._timeout(timeout, self.timeout))
        return int(resp.objects_deleted)


async def _collect_to_file(events: AsyncIterable[ReenactEvent], out_path, *, frames_dir=None, on_event=None,
                           fps: float = 30.0) -> ReenactResult:
    sink = _FileSink(out_path, frames_dir, fps)
    try:
        async for ev in events:
            sink.feed(ev)
            if on_event is not None:
                on_event(ev)
        return sink.finish()
    except BaseException:
        sink.abort()
        raise
