"""`Client`: the blocking Python SDK of the reenact gateway (reenact.api.gateway.v1.ReenactService)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import grpc
import numpy as np

from reenact.api.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from reenact.client import _common as c
from reenact.client.errors import JobFailedError, ReenactClientError, from_rpc_error
from reenact.client.types import (
    EditDirection,
    Frame,
    Job,
    Person,
    ReenactEvent,
    ReenactResult,
    Started,
    Summary,
    VideoChunk,
    event_from_reenact_response,
    event_from_render_response,
)

log = logging.getLogger("reenact.client")


class Client:
    """Blocking client of the reenact gateway. Thread-safe; use as a context manager or call `close()`.

    address: "host:port" (default $REENACT_ADDRESS). api_key: sent as "authorization: Bearer <key>"
    (default $REENACT_API_KEY). tls / root_certificates: TLS channel (root_certificates: PEM bytes or a
    path; None = the system roots). certificate_chain + private_key (PEM bytes or paths): the client
    certificate of mutual TLS (a gateway started with --tls-ca-file requires one). Not given, they come
    from $REENACT_TLS_CA / $REENACT_TLS_CERT / $REENACT_TLS_KEY; any of them means TLS. timeout: default deadline of unary calls in seconds. retry: backoff
    policy of idempotent calls (get/list/cancel, WatchJob reconnects, Enroll with its request_id);
    Reenact and DeletePerson are never retried.
    """

    def __init__(self, address: str | None = None, *, api_key: str | None = None, tls: bool = False,
                 root_certificates: bytes | str | os.PathLike | None = None,
                 certificate_chain: bytes | str | os.PathLike | None = None,
                 private_key: bytes | str | os.PathLike | None = None,
                 timeout: float | None = c.DEFAULT_TIMEOUT, retry: c.RetryPolicy | None = None,
                 options: Iterable[tuple[str, object]] = (), channel: grpc.Channel | None = None) -> None:
        self.address = c.resolve_address(address) if channel is None else (address or "")
        self._api_key = c.resolve_api_key(api_key)
        self.timeout = timeout
        self.retry = retry or c.RetryPolicy()
        if channel is not None:
            self._channel, self._owns_channel = channel, False
        elif (creds := c.resolve_tls(tls, root_certificates, certificate_chain, private_key)) is not None:
            self._channel = grpc.secure_channel(self.address, creds,
                                                options=c.channel_options(options))
            self._owns_channel = True
        else:
            self._channel = grpc.insecure_channel(self.address, options=c.channel_options(options))
            self._owns_channel = True
        self._stub = gateway_pb2_grpc.ReenactServiceStub(self._channel)
        self._sleep = time.sleep

    # lifecycle ----------------------------------------------------------------------------------------

    def close(self) -> None:
        if self._owns_channel:
            self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Block until the channel is connected; UnavailableError after `timeout` seconds."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            from reenact.client.errors import UnavailableError

            raise UnavailableError(f"gateway at {self.address} not reachable after {timeout:g} s",
                                   method="connect") from None

    # plumbing -----------------------------------------------------------------------------------------

    def _timeout(self, timeout, default):
        return default if timeout is ... else timeout

    def _call(self, method: str, fn: Callable, request_factory: Callable[[], object], *, timeout: float | None,
              retry_codes: frozenset = frozenset()):
        """One unary/client-streaming RPC with deadline, metadata, retries and error mapping."""
        policy = self.retry if retry_codes else c.NO_RETRY
        deadline = None if timeout is None else time.monotonic() + timeout
        request_id = c.new_request_id()
        attempt = 0
        while True:
            attempt_timeout = self._attempt_timeout(deadline, policy)
            try:
                return fn(request_factory(), timeout=attempt_timeout,
                          metadata=c.call_metadata(self._api_key, request_id))
            except grpc.RpcError as exc:
                err = from_rpc_error(exc, method=method, request_id=request_id)
                delay = self._retry_delay(err, attempt, policy, retry_codes, deadline)
                if delay is None:
                    raise err from None
                log.info("retrying %s after %s (attempt %d, %.2fs)", method, err.code.name, attempt + 1, delay)
                self._sleep(delay)
                attempt += 1

    @staticmethod
    def _attempt_timeout(deadline, policy: c.RetryPolicy):
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        if policy.attempt_timeout is None:
            return remaining
        return policy.attempt_timeout if remaining is None else min(remaining, policy.attempt_timeout)

    @staticmethod
    def _retry_delay(err: ReenactClientError, attempt: int, policy: c.RetryPolicy, retry_codes, deadline):
        """Seconds to wait before the next attempt, or None when the error is final."""
        if err.code not in retry_codes or attempt + 1 >= policy.max_attempts:
            return None
        if err.code == grpc.StatusCode.DEADLINE_EXCEEDED and policy.attempt_timeout is None:
            return None  # the whole budget is spent
        delay = policy.backoff(attempt, err.retry_after)
        if deadline is not None and time.monotonic() + delay >= deadline:
            return None
        return delay

    # jobs ---------------------------------------------------------------------------------------------

    def enroll(self, video: str | os.PathLike | bytes, *, person_id: str = "", display_name: str = "",
               profile: str = "", options: dict | None = None, request_id: str | None = None,
               chunk_size: int = c.CHUNK_BYTES, timeout: float | None = ...) -> Job:
        """Upload a self-scan video (path or bytes, in chunks <= 1 MiB) and start an enrollment job.

        Idempotent by request_id (generated when not given), so UNAVAILABLE is retried with the same id;
        `Job.created` is False when the id matched an existing enrollment. options: EnrollOptions fields
        (num_anchors, resolution, base_checkpoint, tune_steps, seed).
        """
        c.check_video_source(video)
        c.check_chunk_size(chunk_size)
        header = c.enroll_header(request_id=request_id or c.new_request_id("enroll"), person_id=person_id,
                                 display_name=display_name, profile=profile, options=options)
        req_errors = c.RequestErrors()
        try:
            resp = self._call("Enroll", self._stub.Enroll,
                              lambda: req_errors.wrap(c.enroll_requests(header, video, chunk_size)),
                              timeout=self._timeout(timeout, c.UPLOAD_TIMEOUT), retry_codes=c.RETRY_IDEMPOTENT)
        except ReenactClientError:
            req_errors.reraise()
            raise
        return Job.from_proto(resp.job, created=resp.created)

    def get_job(self, job_id: str, *, timeout: float | None = ...) -> Job:
        resp = self._call("GetJob", self._stub.GetJob, lambda: gateway_pb2.GetJobRequest(job_id=job_id),
                          timeout=self._timeout(timeout, self.timeout), retry_codes=c.RETRY_IDEMPOTENT)
        return Job.from_proto(resp.job)

    def cancel_job(self, job_id: str, *, timeout: float | None = ...) -> Job:
        """Ask the server to cancel a job (idempotent: cancelling a cancelled job returns it)."""
        resp = self._call("CancelJob", self._stub.CancelJob,
                          lambda: gateway_pb2.CancelJobRequest(job_id=job_id),
                          timeout=self._timeout(timeout, self.timeout), retry_codes=c.RETRY_UNAVAILABLE)
        return Job.from_proto(resp.job)

    def iter_jobs(self, *, page_size: int = 0, timeout: float | None = ...) -> Iterator[Job]:
        """Every job, page after page (each page call retried on its own)."""
        token = ""
        while True:
            req = gateway_pb2.ListJobsRequest(page_size=page_size, page_token=token)
            resp = self._call("ListJobs", self._stub.ListJobs, lambda req=req: req,
                              timeout=self._timeout(timeout, self.timeout), retry_codes=c.RETRY_IDEMPOTENT)
            for j in resp.jobs:
                yield Job.from_proto(j)
            token = resp.next_page_token
            if not token:
                return

    def list_jobs(self, *, page_size: int = 0, limit: int | None = None, timeout: float | None = ...) -> list[Job]:
        """All jobs (pagination handled), at most `limit`."""
        out = []
        for job in self.iter_jobs(page_size=page_size, timeout=timeout):
            if limit is not None and len(out) >= limit:
                break
            out.append(job)
        return out

    def watch_job(self, job_id: str, *, timeout: float | None = ...) -> Iterator[Job]:
        """Job states as the server streams them, until a terminal one (SUCCEEDED, FAILED, CANCELLED).

        A dropped stream (UNAVAILABLE, or the server closing it before the job ended) is reopened with
        backoff; the backoff resets after every state received. timeout: for the whole watch.
        """
        timeout = self._timeout(timeout, c.STREAM_TIMEOUT)
        deadline = None if timeout is None else time.monotonic() + timeout
        policy = self.retry
        attempt = 0
        request_id = c.new_request_id()
        while True:
            call = self._stub.WatchJob(gateway_pb2.WatchJobRequest(job_id=job_id),
                                       timeout=self._attempt_timeout(deadline, c.RetryPolicy()),
                                       metadata=c.call_metadata(self._api_key, request_id))
            try:
                for resp in call:
                    attempt = 0
                    job = Job.from_proto(resp.job)
                    yield job
                    if job.done:
                        return
                err = None
            except grpc.RpcError as exc:
                err = from_rpc_error(exc, method="WatchJob", request_id=request_id)
            finally:
                call.cancel()
            if err is not None:
                delay = self._retry_delay(err, attempt, policy, c.RETRY_UNAVAILABLE, deadline)
                if delay is None:
                    raise err
            else:  # closed without a terminal state: reconnect
                delay = policy.backoff(attempt)
                if attempt + 1 >= policy.max_attempts:
                    raise ReenactClientError("WatchJob stream ended before the job finished",
                                             code=grpc.StatusCode.UNAVAILABLE, method="WatchJob",
                                             request_id=request_id)
            log.info("WatchJob reconnecting in %.2fs", delay)
            self._sleep(delay)
            attempt += 1

    def wait_job(self, job_id: str, *, timeout: float | None = None, on_update: Callable[[Job], None] | None = None,
                 raise_on_failure: bool = False) -> Job:
        """Watch a job until it ends; returns its final state (JobFailedError when asked and not SUCCEEDED)."""
        last = None
        for job in self.watch_job(job_id, timeout=timeout):
            last = job
            if on_update is not None:
                on_update(job)
        if last is None:
            last = self.get_job(job_id)
        if raise_on_failure and not last.succeeded:
            raise JobFailedError(f"job {job_id} {last.state.value}: {last.error_message}", job=last,
                                 code=last.error_code)
        return last

    # reenactment --------------------------------------------------------------------------------------

    def reenact(self, person_id: str, *, video: str | os.PathLike | bytes | None = None,
                frames: Iterable[np.ndarray] | None = None, output: str = "frames", paste_back: bool = False,
                edits=(), steps: int = 0, window: int = 0, fps: float = 0.0, person_version: int = 0,
                frame_encoding: str = "png", decode: bool = True, chunk_size: int = c.CHUNK_BYTES,
                motion: str = "", smoothing_sigma: float = 0.0, opening_weight: float = 0.0,
                latent_sigma: float = 0.0, init: str | None = None, opening_range: float = 0.0,
                mouth_starts: float = 0.0, delta_lr_scale: float = 0.0, lip_warp: float = 0.0,
                timeout: float | None = ...) -> Iterator[ReenactEvent]:
        """Reenact a driving video (path/bytes, streamed in chunks) or RGB frames with a person's generator.

        Yields Started, then Frame per driving frame (image None in output="video", which also yields
        VideoChunk pieces of an H.264 mp4), then Summary. edits: Edit, "smile=1.5" or ("smile", 1.5).
        fps: frame rate of frames= input. motion: "relative" for a driver of another identity (the
        person's own keypoints moved by the driver's motion), "absolute" (the server's default) otherwise.
        smoothing_sigma: temporal smoothing in frames (0 = server defaults; negative = off: with window=1
        every frame comes back without waiting for later frames, for live use). opening_weight: weight of
        the optimizer's mouth/eye opening-ratio term (0 = the server default, off; up to 1e6): follows the
        driver's mouth and eyes more closely, with more jitter. latent_sigma: temporal smoothing of the
        returned latents in frames (0 = the server default, off; up to 10), ceil(3 latent_sigma) more
        frames of delay; docs/RESULTS.md measured opening_weight=4, latent_sigma=1 with motion="relative"
        for a driver of another identity. init: the optimizer's start point of every frame, "auto",
        "anchor", "regressor", "mixed", "uniform" or "random" (None / "" = the server default, "auto");
        "mixed" starts as "regressor" with each frame's nearest anchor as a third candidate, and with
        motion="relative", opening_weight=4, latent_sigma 1-2 lowered the expression error further for a
        driver of another identity (H100); "regressor" and "mixed" raise FailedPreconditionError (reason
        NO_INITIALIZER) when the person version has no amortized initializer. opening_range: with
        motion="relative" only (ValueError otherwise; 0 = the server default, off; up to 10), maps the
        driver's mouth opening softly into the person's scan range, slope 1/opening_range at the person's
        reference, so a wide-open driver does not ask for an opening the person's generator never
        produced (docs/RESULTS.md measures it). mouth_starts: 0..1.5 (ValueError otherwise; 0 = the server
        default, off) adds four candidate starts per frame, the warm start moved by -2s, -s, +s, +2s unit
        strengths along the person's mouth-opening edit direction, the lowest loss winning (eager optimizer
        only: a stream the optimizer runs as its static step raises InvalidArgumentError; docs/RESULTS.md
        "fifth session" measured mouth_starts=1). delta_lr_scale: the learning rate of the optimizer's
        per-layer offsets (delta) as a fraction of its learning rate, 0..10 (ValueError otherwise; 0 = the
        server default, 0.02); docs/RESULTS.md "ninth session" measured delta_lr_scale=0.1 with the
        recommended setting for a driver of another identity (mouth-opening r >= 0.8 on all four enrollments
        of the wider-jaw fixture person). lip_warp: 0..1 (ValueError otherwise; 0 = off, the default), a
        residual lip warp of every output frame that fraction of the way to the optimizer's lip target (the
        lip shapes the person's generator does not draw; reenact.lipwarp); stored with the reenactment, so
        `render` without edits applies it again (docs/RESULTS.md "tenth session" measures lip_warp=1).
        Never retried (a reenactment is not idempotent); breaking out of
        the loop cancels the call.
        """
        c.check_reenact_input(video, frames)
        c.check_chunk_size(chunk_size)
        header = c.reenact_header(person_id, output=output, frame_encoding=frame_encoding, paste_back=paste_back,
                                  edits=edits, steps=steps, window=window, fps=fps, person_version=person_version,
                                  motion=motion, smoothing_sigma=smoothing_sigma,
                                  opening_weight=opening_weight, latent_sigma=latent_sigma, init=init,
                                  opening_range=opening_range, mouth_starts=mouth_starts,
                                  delta_lr_scale=delta_lr_scale, lip_warp=lip_warp)
        request_id = c.new_request_id()
        req_errors = c.RequestErrors()
        requests = req_errors.wrap(c.reenact_requests(header, video=video, frames=frames, chunk_size=chunk_size))
        call = self._stub.Reenact(requests, timeout=self._timeout(timeout, c.STREAM_TIMEOUT),
                                  metadata=c.call_metadata(self._api_key, request_id))
        try:
            for resp in call:
                ev = event_from_reenact_response(resp, decode=decode)
                if ev is not None:
                    yield ev
        except grpc.RpcError as exc:
            req_errors.reraise()  # the driving frames failed (e.g. a decode error), not the server
            raise from_rpc_error(exc, method="Reenact", request_id=request_id) from None
        finally:
            call.cancel()

    def render(self, person_id: str, reenactment_id: str, *, edits=(), output: str = "frames",
               paste_back: bool = False, frame_encoding: str = "png", decode: bool = True,
               timeout: float | None = ...) -> Iterator[Frame | VideoChunk]:
        """Re-render a stored reenactment's latents with edits (no optimization). Yields Frame or VideoChunk.

        Rendering is read-only, so a failure before the first result (UNAVAILABLE) is retried.
        """
        req = gateway_pb2.RenderRequest(person_id=person_id, reenactment_id=reenactment_id,
                                        edits=c.edits_to_proto(edits), output=c.output_kind(output),
                                        frame_encoding=c.image_encoding(frame_encoding), paste_back=paste_back)
        timeout = self._timeout(timeout, c.STREAM_TIMEOUT)
        deadline = None if timeout is None else time.monotonic() + timeout
        request_id = c.new_request_id()
        attempt = 0
        while True:
            call = self._stub.Render(req, timeout=self._attempt_timeout(deadline, c.RetryPolicy()),
                                     metadata=c.call_metadata(self._api_key, request_id))
            received = False
            try:
                for resp in call:
                    received = True
                    ev = event_from_render_response(resp, decode=decode)
                    if ev is not None:
                        yield ev
                return
            except grpc.RpcError as exc:
                err = from_rpc_error(exc, method="Render", request_id=request_id)
                delay = None if received else self._retry_delay(err, attempt, self.retry, c.RETRY_UNAVAILABLE,
                                                                deadline)
                if delay is None:
                    raise err from None
            finally:
                call.cancel()
            self._sleep(delay)
            attempt += 1

    def reenact_to_file(self, person_id: str, out_path: str | os.PathLike, *,
                        video: str | os.PathLike | bytes | None = None, frames: Iterable[np.ndarray] | None = None,
                        frames_dir: str | os.PathLike | None = None,
                        on_event: Callable[[ReenactEvent], None] | None = None, **kw) -> ReenactResult:
        """Reenact and write the H.264 mp4 to out_path (and every frame as PNG to frames_dir when given).

        Without frames_dir the server encodes the video (output="video"); with it, frames come back as
        images, are written as PNGs and encoded here. Other keyword arguments as in `reenact`.
        """
        events = self.reenact(person_id, video=video, frames=frames,
                              output="frames" if frames_dir else "video", **kw)
        return collect_to_file(events, out_path, frames_dir=frames_dir, on_event=on_event)

    def render_to_file(self, person_id: str, reenactment_id: str, out_path: str | os.PathLike, *,
                       frames_dir: str | os.PathLike | None = None, fps: float = 30.0,
                       on_event: Callable[[ReenactEvent], None] | None = None, **kw) -> ReenactResult:
        """Render with edits and write the mp4 (fps: used only when frames are encoded here)."""
        events = self.render(person_id, reenactment_id, output="frames" if frames_dir else "video", **kw)
        return collect_to_file(events, out_path, frames_dir=frames_dir, on_event=on_event, fps=fps)

    # registry -----------------------------------------------------------------------------------------

    def list_edit_directions(self, person_id: str, *, person_version: int = 0,
                             timeout: float | None = ...) -> list[EditDirection]:
        req = gateway_pb2.ListEditDirectionsRequest(person_id=person_id, person_version=person_version)
        resp = self._call("ListEditDirections", self._stub.ListEditDirections, lambda: req,
                          timeout=self._timeout(timeout, self.timeout), retry_codes=c.RETRY_IDEMPOTENT)
        return [EditDirection.from_proto(d) for d in resp.directions]

    def iter_persons(self, *, page_size: int = 0, timeout: float | None = ...) -> Iterator[Person]:
        token = ""
        while True:
            req = gateway_pb2.ListPersonsRequest(page_size=page_size, page_token=token)
            resp = self._call("ListPersons", self._stub.ListPersons, lambda req=req: req,
                              timeout=self._timeout(timeout, self.timeout), retry_codes=c.RETRY_IDEMPOTENT)
            for p in resp.persons:
                yield Person.from_proto(p)
            token = resp.next_page_token
            if not token:
                return

    def list_persons(self, *, page_size: int = 0, limit: int | None = None,
                     timeout: float | None = ...) -> list[Person]:
        out = []
        for p in self.iter_persons(page_size=page_size, timeout=timeout):
            if limit is not None and len(out) >= limit:
                break
            out.append(p)
        return out

    def get_person(self, person_id: str, *, timeout: float | None = ...) -> Person:
        resp = self._call("GetPerson", self._stub.GetPerson,
                          lambda: gateway_pb2.GetPersonRequest(person_id=person_id),
                          timeout=self._timeout(timeout, self.timeout), retry_codes=c.RETRY_IDEMPOTENT)
        return Person.from_proto(resp.person)

    def delete_person(self, person_id: str, *, timeout: float | None = ...) -> int:
        """Delete a person with every version and reenactment; returns the number of objects removed.

        Not retried: a repeated delete after a lost answer would report NOT_FOUND.
        """
        resp = self._call("DeletePerson", self._stub.DeletePerson,
                          lambda: gateway_pb2.DeletePersonRequest(person_id=person_id),
                          timeout=self._timeout(timeout, self.timeout))
        return int(resp.objects_deleted)


class _FileSink:
    """Writes a reenactment's output: server-encoded mp4 chunks, or frames (PNG files + local encode)."""

    def __init__(self, out_path, frames_dir, fps: float) -> None:
        self.out = Path(out_path)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.frames_dir = Path(frames_dir) if frames_dir else None
        if self.frames_dir:
            self.frames_dir.mkdir(parents=True, exist_ok=True)
        self.fps = fps
        self.partial = self.out.with_name(self.out.name + ".part")
        self._fh = None
        self._frames: list[np.ndarray] = []
        self.started: Started | None = None
        self.summary: Summary | None = None
        self.metrics: list[Frame] = []

    def feed(self, ev) -> None:
        if isinstance(ev, Started):
            self.started = ev
            self.fps = ev.fps or self.fps
        elif isinstance(ev, Summary):
            self.summary = ev
        elif isinstance(ev, VideoChunk):
            if self._fh is None:
                self._fh = open(self.partial, "wb")  # noqa: SIM115 - closed in finish/abort
            self._fh.write(ev.data)
        elif isinstance(ev, Frame):
            self.metrics.append(Frame(ev.index, None, ev.metrics))
            if ev.image is not None and self.frames_dir is not None:
                import cv2

                cv2.imwrite(str(self.frames_dir / f"{ev.index:06d}.png"), ev.image[:, :, ::-1])
                self._frames.append(ev.image)

    def finish(self) -> ReenactResult:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
            self.partial.replace(self.out)
        elif self._frames:
            from reenact.video import encode_video

            encode_video(self._frames, self.fps or 30.0, self.out)
        else:
            raise ReenactClientError("the server returned neither video nor frames", code=grpc.StatusCode.INTERNAL)
        return ReenactResult(output=str(self.out), started=self.started, summary=self.summary,
                             frames=tuple(self.metrics), bytes_written=self.out.stat().st_size)

    def abort(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        self.partial.unlink(missing_ok=True)


def collect_to_file(events: Iterable[ReenactEvent], out_path, *, frames_dir=None, on_event=None,
                    fps: float = 30.0) -> ReenactResult:
    sink = _FileSink(out_path, frames_dir, fps)
    try:
        for ev in events:
            sink.feed(ev)
            if on_event is not None:
                on_event(ev)
        return sink.finish()
    except BaseException:
        sink.abort()
        raise
