"""The trainer's job machinery as a pure core (no grpc import): records, queue, worker, watchers, recovery.

A `JobManager` owns the enrollment jobs of one trainer process:

- `create(...)` is idempotent by `request_id` (same parameters -> the same job; different ->
  AlreadyExistsError). Records live in the artifact store as JSON under ``jobs/<job_id>.json`` with an
  index ``jobs/by-request/<request_id>.json``; memory holds the authoritative copy while running.
- A FIFO queue served by `workers` threads (1 = one GPU job per pod). Each job goes
  QUEUED -> RUNNING -> SUCCEEDED | FAILED | CANCELLED.
- `run_fn(job, ctx)` does the work. `ctx.progress(...)` updates the in-memory progress (every watcher
  sees each update); the store copy is written at most every `persist_every_s` and at each stage change.
  `ctx.should_stop()` turns true on cancel or shutdown.
- `watch(job_id)` yields snapshots (the current one first, then each change; changes faster than the
  consumer are coalesced) and ends after a final state. Waiting uses the manager's condition variable.
- `close()` interrupts the running job but leaves it RUNNING in the store; `start()` of the next
  manager on the same store re-queues QUEUED and RUNNING jobs, and a resumed `run_fn` finds whatever it
  saved under ``jobs/<job_id>/ckpt/``.

One manager (one process) owns the ``jobs/`` namespace of its store: trainer replicas sharing one store
would each recover the others' jobs.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import hashlib
import json
import logging
import math
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from reenact.errors import (
    AlreadyExistsError,
    FieldViolation,
    InvalidInputError,
    NotFoundError,
    ReenactError,
    UnavailableError,
)
from reenact.store import ArtifactStore, StoreError, get_json, is_valid_key, put_json

log = logging.getLogger("reenact.trainer.jobs")

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"
STATES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
FINAL_STATES = frozenset({SUCCEEDED, FAILED, CANCELLED})
PROFILES = frozenset({"cpu-quick", "gpu", ""})

JOBS_PREFIX = "jobs"
RECORD_SCHEMA = 1
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000

# google.rpc.Code numbers of the canonical status names (ReenactError.kind).
RPC_CODES = {
    "OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4, "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8, "FAILED_PRECONDITION": 9,
    "ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12, "INTERNAL": 13, "UNAVAILABLE": 14,
    "DATA_LOSS": 15, "UNAUTHENTICATED": 16,
}

# Rough share of an enrollment's time per stage (order matters): the overall fraction when run_fn
# reports only (stage, step, total). run_fn may pass its own `fraction` instead.
DEFAULT_STAGE_WEIGHTS: tuple[tuple[str, float], ...] = (
    ("align", 0.05), ("select", 0.02), ("base", 0.50), ("anchors", 0.03), ("tune", 0.25),
    ("evaluate", 0.12), ("export", 0.03),
)

# Per-job hyperparameters of common.v1.EnrollOptions; 0 / "" = the profile's default.
OPTION_DEFAULTS: dict[str, Any] = {"num_anchors": 0, "resolution": 0, "base_checkpoint": "", "tune_steps": 0,
                                   "seed": 0}

_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,128}")
_PERSON_ID_RE = re.compile(r"[a-z][a-z0-9-]{0,63}")
_JOB_ID_RE = re.compile(r"job-[0-9a-f]{32}")
_RECORD_KEY_RE = re.compile(rf"{JOBS_PREFIX}/(job-[0-9a-f]{{32}})\.json")
_INT64_MAX = 2**63 - 1


# ----------------------------------------------------------------------------------------------- records


@dataclass
class JobProgress:
    stage: str = ""
    step: int = 0
    total_steps: int = 0
    fraction: float = 0.0
    losses: dict[str, float] = field(default_factory=dict)
    eta_seconds: float = -1.0
    message: str = ""


@dataclass
class JobRecord:
    """Everything known about one job; persisted as JSON (`to_dict`), times in epoch seconds."""

    job_id: str
    request_id: str
    person_id: str
    scan_key: str
    profile: str
    options: dict[str, Any] = field(default_factory=lambda: dict(OPTION_DEFAULTS))
    owner: str = ""
    fingerprint: str = ""
    seq: int = 0
    state: str = QUEUED
    progress: JobProgress = field(default_factory=JobProgress)
    create_time: float = 0.0
    update_time: float = 0.0
    start_time: float = 0.0
    end_time: float = 0.0
    attempt: int = 0
    cancel_requested: bool = False
    error_code: int = 0
    error_kind: str = ""
    error_message: str = ""
    coverage: dict[str, Any] = field(default_factory=dict)
    person_version: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    schema: int = RECORD_SCHEMA

    @property
    def workdir_key(self) -> str:
        """Store prefix of the job's own scratch data: ``jobs/<job_id>``."""
        return f"{JOBS_PREFIX}/{self.job_id}"

    @property
    def checkpoint_prefix(self) -> str:
        """Where run_fn saves training checkpoints: ``jobs/<job_id>/ckpt/`` (append a file name)."""
        return f"{self.workdir_key}/ckpt/"

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> JobRecord:
        """Parse a stored record; unknown keys (written by a newer version) are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in raw.items() if k in names}
        prog = values.get("progress") or {}
        prog_names = {f.name for f in dataclasses.fields(JobProgress)}
        values["progress"] = JobProgress(**{k: v for k, v in prog.items() if k in prog_names})
        rec = cls(**values)
        if rec.state not in STATES or not _JOB_ID_RE.fullmatch(rec.job_id):
            raise ValueError(f"bad job record {rec.job_id!r} in state {rec.state!r}")
        return rec


def record_key(job_id: str) -> str:
    return f"{JOBS_PREFIX}/{job_id}.json"


def request_index_key(request_id: str) -> str:
    return f"{JOBS_PREFIX}/by-request/{request_id}.json"


# ------------------------------------------------------------------------------------------- validation


def normalize_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Fill defaults; InvalidInputError on unknown option names."""
    opts = dict(OPTION_DEFAULTS)
    unknown = sorted(set(options or {}) - set(OPTION_DEFAULTS))
    if unknown:
        raise InvalidInputError.for_field("options", f"unknown option(s) {unknown}")
    opts.update(options or {})
    return opts


def _option_violations(opts: Mapping[str, Any]) -> list[FieldViolation]:
    out = []
    res = opts["resolution"]
    if res and not (32 <= res <= 1024 and res & (res - 1) == 0):
        out.append(FieldViolation("options.resolution", f"{res} is not a power of two in 32..1024 (or 0)"))
    if not 0 <= opts["num_anchors"] <= 10_000:
        out.append(FieldViolation("options.num_anchors", f"{opts['num_anchors']} outside 0..10000"))
    if not 0 <= opts["tune_steps"] <= 10_000_000:
        out.append(FieldViolation("options.tune_steps", f"{opts['tune_steps']} outside 0..10000000"))
    if not -_INT64_MAX - 1 <= opts["seed"] <= _INT64_MAX:
        out.append(FieldViolation("options.seed", "outside the int64 range"))
    base = opts["base_checkpoint"]
    if base and not is_valid_key(base):
        out.append(FieldViolation("options.base_checkpoint", f"{base!r} is not a valid store key"))
    return out


def validate_request(request_id: str, person_id: str, scan_key: str, profile: str,
                     options: Mapping[str, Any]) -> None:
    """Format checks of a CreateJob request; one InvalidInputError listing every bad field."""
    out = []
    if not _REQUEST_ID_RE.fullmatch(request_id or ""):
        out.append(FieldViolation("request_id", "must be 1..128 characters of [A-Za-z0-9._-]"))
    if not _PERSON_ID_RE.fullmatch(person_id or ""):
        out.append(FieldViolation("person_id", "must be 1..64 characters of [a-z0-9-], starting with a letter"))
    if not is_valid_key(scan_key):
        out.append(FieldViolation("scan_key", f"{scan_key!r} is not a valid store key"))
    if profile not in PROFILES:
        out.append(FieldViolation("profile", f"{profile!r} is not one of 'cpu-quick', 'gpu' or empty"))
    out += _option_violations(options)
    if out:
        text = "; ".join(f"{v.field}: {v.description}" for v in out)
        raise InvalidInputError(f"invalid CreateJob request: {text}", violations=out)


def _fingerprint(**params: Any) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()


def _finite(values: Mapping[str, Any] | None) -> dict[str, float]:
    """Losses/metrics as plain floats; non-finite values are dropped (JSON cannot hold them)."""
    out = {}
    for k, v in (values or {}).items():
        f = float(v)
        if math.isfinite(f):
            out[str(k)] = f
    return out


def _check_job_id(job_id: str) -> None:
    if not job_id:
        raise InvalidInputError.for_field("job_id", "required")


# ------------------------------------------------------------------------------------------------ context


class JobContext:
    """What run_fn gets besides the job: progress/stop callbacks, coverage sink, checkpoint prefix, store."""

    def __init__(self, manager: JobManager, job: JobRecord, stop: threading.Event) -> None:
        self._manager = manager
        self._stop = stop
        self.job_id = job.job_id
        self.store = manager.store
        self.checkpoint_prefix = job.checkpoint_prefix
        self.attempt = job.attempt
        self.resumed = job.attempt > 1 or job.progress.stage != ""

    def progress(self, stage: str, step: int, total: int, losses: Mapping[str, float] | None = None,
                 message: str = "", *, fraction: float | None = None, eta_seconds: float | None = None) -> None:
        """Report progress of `stage` (step of total; total 0 = unknown); fraction/ETA computed if omitted."""
        self._manager._on_progress(self.job_id, stage, int(step), int(total), losses, message, fraction,
                                   eta_seconds)

    def should_stop(self) -> bool:
        """True once the job is cancelled or the trainer shuts down: return or raise soon after."""
        return self._stop.is_set()

    def set_coverage(self, coverage: Mapping[str, Any]) -> None:
        """Record the self-scan coverage report (CoverageReport field names)."""
        self._manager._on_coverage(self.job_id, dict(coverage))


RunFn = Callable[[JobRecord, JobContext], Mapping[str, Any] | None]


@dataclass
class _RunClock:
    """Start point of the current attempt, for the ETA."""

    t0: float
    f0: float


# ------------------------------------------------------------------------------------------------ manager


class JobManager:
    def __init__(self, store: ArtifactStore, run_fn: RunFn, *, workers: int = 1,
                 clock: Callable[[], float] = time.time, persist_every_s: float = 5.0,
                 default_profile: str = "", stage_weights: tuple[tuple[str, float], ...] = DEFAULT_STAGE_WEIGHTS,
                 keep_checkpoints: bool = False) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        if default_profile not in PROFILES:
            raise ValueError(f"default_profile must be one of {sorted(PROFILES)}")
        self.store = store
        self.run_fn = run_fn
        self.clock = clock
        self.persist_every_s = persist_every_s
        self.default_profile = default_profile
        self.keep_checkpoints = keep_checkpoints
        self._workers_n = workers
        self._weights = stage_weights
        self._cv = threading.Condition()
        self._create_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._jobs: dict[str, JobRecord] = {}
        self._by_request: dict[str, str] = {}
        self._rev: dict[str, int] = {}
        self._queue: deque[str] = deque()
        self._stops: dict[str, threading.Event] = {}
        self._run_clock: dict[str, _RunClock] = {}
        self._persisted: dict[str, tuple[float, str]] = {}
        self._seq = 0
        self._threads: list[threading.Thread] = []
        self._started = False
        self._closed = False

    # ------------------------------------------------------------------------------------ lifecycle

    def start(self) -> int:
        """Load the job records from the store, re-queue unfinished jobs, start the workers.

        Returns how many jobs were re-queued. Raises StoreError when the store cannot be read.
        """
        with self._cv:
            if self._started:
                return 0
            if self._closed:
                raise UnavailableError("job manager is closed")
        keys = self.store.list(JOBS_PREFIX)
        records = self._load_all(keys)
        requeued, changed = self._recover(records)
        for job_id in changed:
            self._persist(job_id)
        self._repair_index(records)
        self._drop_orphan_checkpoints(keys)
        with self._cv:
            self._started = True
            for i in range(self._workers_n):
                t = threading.Thread(target=self._worker, name=f"trainer-job-worker-{i}", daemon=True)
                self._threads.append(t)
                t.start()
            self._cv.notify_all()
        log.info("job manager started", extra={"jobs": len(self._jobs), "requeued": requeued})
        return requeued

    def close(self, timeout: float | None = 30.0) -> None:
        """Stop the workers. A running job is asked to stop and stays RUNNING in the store (it resumes on
        the next start); queued jobs stay QUEUED. Watchers end with UnavailableError."""
        with self._cv:
            if self._closed:
                return
            self._closed = True
            for stop in self._stops.values():
                stop.set()
            self._cv.notify_all()
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                log.warning("job worker did not stop in time; its job resumes on the next start",
                            extra={"thread": t.name})
        log.info("job manager closed")

    def __enter__(self) -> JobManager:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def wake_watchers(self) -> None:
        """Wake every waiting watcher so it re-checks its stop event (used when an RPC is cancelled)."""
        with self._cv:
            self._cv.notify_all()

    # -------------------------------------------------------------------------------------- create

    def create(self, *, request_id: str, person_id: str, scan_key: str, profile: str = "",
               options: Mapping[str, Any] | None = None, owner: str = "") -> tuple[JobRecord, bool]:
        """Create a job or return the one this request_id created. Returns (snapshot, created)."""
        opts = normalize_options(options)
        validate_request(request_id, person_id, scan_key, profile, opts)
        fp = _fingerprint(person_id=person_id, scan_key=scan_key, profile=profile, options=opts, owner=owner)
        with self._create_lock:
            self._check_serving()
            existing = self._find_by_request(request_id)
            if existing is not None:
                if existing.fingerprint != fp:
                    raise AlreadyExistsError(
                        f"request_id {request_id!r} was used for job {existing.job_id} with other parameters",
                        reason="REQUEST_ID_REUSED")
                return existing, False
            self._check_inputs_exist(scan_key, opts["base_checkpoint"])
            rec = self._new_record(request_id, person_id, scan_key, profile, opts, owner, fp)
            put_json(self.store, record_key(rec.job_id), rec.to_dict())
            put_json(self.store, request_index_key(request_id), {"job_id": rec.job_id})
            with self._cv:
                self._jobs[rec.job_id] = rec
                self._by_request[request_id] = rec.job_id
                self._persisted[rec.job_id] = (self.clock(), "")
                self._queue.append(rec.job_id)
                self._bump(rec.job_id)
                snap = copy.deepcopy(rec)
        log.info("job created", extra={"job_id": rec.job_id, "person_id": person_id, "request_id": request_id})
        return snap, True

    def _check_inputs_exist(self, scan_key: str, base_checkpoint: str) -> None:
        if not self.store.exists(scan_key):
            raise NotFoundError(f"scan {scan_key!r} is not in the artifact store", reason="SCAN_NOT_FOUND")
        if base_checkpoint and not self.store.exists(base_checkpoint):
            raise NotFoundError(f"base checkpoint {base_checkpoint!r} is not in the artifact store",
                                reason="BASE_CHECKPOINT_NOT_FOUND")

    def _new_record(self, request_id, person_id, scan_key, profile, opts, owner, fp) -> JobRecord:
        now = self.clock()
        with self._cv:
            self._seq += 1
            seq = self._seq
        return JobRecord(job_id=f"job-{uuid.uuid4().hex}", request_id=request_id, person_id=person_id,
                         scan_key=scan_key, profile=profile or self.default_profile, options=opts, owner=owner,
                         fingerprint=fp, seq=seq, create_time=now, update_time=now,
                         progress=JobProgress(message="queued"))

    def _find_by_request(self, request_id: str) -> JobRecord | None:
        with self._cv:
            job_id = self._by_request.get(request_id)
        return None if job_id is None else self._snapshot(job_id)

    # --------------------------------------------------------------------------------- read / list

    def get(self, job_id: str) -> JobRecord:
        """A snapshot of the job; NotFoundError when unknown."""
        _check_job_id(job_id)
        return self._snapshot(job_id)

    def list(self, owner: str | None = None, page_size: int = 0, page_token: str = "") -> tuple[list[JobRecord], str]:
        """Jobs newest first (of `owner` when given); returns (page, next_page_token or '')."""
        size = page_size or DEFAULT_PAGE_SIZE
        if not 1 <= size <= MAX_PAGE_SIZE:
            raise InvalidInputError.for_field("page_size", f"{page_size} outside 0..{MAX_PAGE_SIZE}")
        after = _decode_token(page_token)
        self._check_serving()
        with self._cv:
            jobs = sorted(self._jobs.values(), key=lambda r: r.seq, reverse=True)
            jobs = [r for r in jobs if (after is None or r.seq < after) and (not owner or r.owner == owner)]
            page = [copy.deepcopy(r) for r in jobs[:size]]
        token = _encode_token(page[-1].seq) if len(jobs) > size else ""
        return page, token

    def counts(self) -> dict[str, int]:
        """Number of known jobs per state (for metrics)."""
        with self._cv:
            out = dict.fromkeys(STATES, 0)
            for r in self._jobs.values():
                out[r.state] += 1
            return out

    # -------------------------------------------------------------------------------------- watch

    def watch(self, job_id: str, *, stop: threading.Event | None = None) -> Iterator[JobRecord]:
        """Snapshots of the job: the current one, then each change; ends after a final state.

        Ends silently once `stop` is set (call `wake_watchers()` after setting it); raises
        UnavailableError when the manager closes first.
        """
        _check_job_id(job_id)
        self._snapshot(job_id)  # NotFoundError before the first yield
        seen = -1
        while True:
            with self._cv:
                self._cv.wait_for(partial(self._watch_wakeup, job_id, seen, stop))
                if stop is not None and stop.is_set():
                    return
                if self._rev[job_id] == seen:
                    raise UnavailableError("the trainer is shutting down; watch again", retry_after_s=1.0)
                seen = self._rev[job_id]
                snap = copy.deepcopy(self._jobs[job_id])
            yield snap
            if snap.is_final:
                return

    def _watch_wakeup(self, job_id: str, seen: int, stop: threading.Event | None) -> bool:
        return self._rev[job_id] != seen or self._closed or (stop is not None and stop.is_set())

    # ------------------------------------------------------------------------------------- cancel

    def cancel(self, job_id: str) -> JobRecord:
        """Queued -> CANCELLED now; running -> stop requested (ends CANCELLED); final -> unchanged."""
        _check_job_id(job_id)
        self._snapshot(job_id)
        with self._cv:
            rec = self._jobs[job_id]
            if rec.is_final or rec.cancel_requested:
                return copy.deepcopy(rec)
            rec.cancel_requested = True  # a worker no longer picks it up
            queued = rec.state == QUEUED
            if not queued:
                rec.progress.message = "cancelling"
                self._stops[job_id].set()  # RUNNING jobs always have a stop event
                self._bump(job_id)
        if queued:
            self._finalize(job_id, CANCELLED, "cancelled before it started")
        else:
            self._persist_quietly(job_id)
        log.info("job cancel requested", extra={"job_id": job_id})
        return self._snapshot(job_id)

    # ------------------------------------------------------------------------------------- worker

    def _worker(self) -> None:
        while True:
            picked = self._next_job()
            if picked is None:
                return
            rec, stop = picked
            self._persist_quietly(rec.job_id)
            log.info("job started", extra={"job_id": rec.job_id, "attempt": rec.attempt})
            self._run(rec, stop)

    def _next_job(self) -> tuple[JobRecord, threading.Event] | None:
        """Wait for the next QUEUED job and mark it RUNNING; None when closing."""
        with self._cv:
            while True:
                self._cv.wait_for(lambda: self._queue or self._closed)
                if self._closed:
                    return None
                job_id = self._queue.popleft()
                rec = self._jobs[job_id]
                if rec.state == QUEUED and not rec.cancel_requested:
                    break
            now = self.clock()
            rec.state, rec.attempt, rec.start_time = RUNNING, rec.attempt + 1, rec.start_time or now
            rec.progress.message = "resuming" if rec.attempt > 1 else "started"
            stop = self._stops[job_id] = threading.Event()
            self._run_clock[job_id] = _RunClock(now, rec.progress.fraction)
            self._bump(job_id)
            return copy.deepcopy(rec), stop

    def _run(self, job: JobRecord, stop: threading.Event) -> None:
        ctx = JobContext(self, job, stop)
        try:
            result = self.run_fn(job, ctx)
        except ReenactError as exc:
            self._end_with_error(job.job_id, exc.kind, exc.message)
        except Exception as exc:  # noqa: BLE001 - any crash of run_fn fails the job, never the worker
            log.error("job crashed", exc_info=exc, extra={"job_id": job.job_id})
            self._end_with_error(job.job_id, "INTERNAL", f"{type(exc).__name__}: {exc}")
        else:
            self._end_with_result(job.job_id, result)
        finally:
            with self._cv:
                self._stops.pop(job.job_id, None)
                self._run_clock.pop(job.job_id, None)

    def _end_with_result(self, job_id: str, result: Mapping[str, Any] | None) -> None:
        if result is None or "person_version" not in result:
            self._end_with_error(job_id, "INTERNAL", "run_fn returned no person_version")
            return

        def succeed(rec: JobRecord) -> None:
            rec.person_version = int(result["person_version"])
            rec.metrics = _finite(result.get("metrics"))
            rec.progress.fraction, rec.progress.eta_seconds = 1.0, 0.0

        self._finalize(job_id, SUCCEEDED, "done", succeed)

    def _end_with_error(self, job_id: str, kind: str, message: str) -> None:
        with self._cv:
            rec = self._jobs[job_id]
            cancelled = rec.cancel_requested
            if not cancelled and self._closed:
                rec.progress.message = "interrupted by shutdown; resumes on the next start"
                self._bump(job_id)
                log.info("job interrupted by shutdown", extra={"job_id": job_id})
                return  # the store keeps RUNNING: the next start resumes it
        if cancelled:
            self._finalize(job_id, CANCELLED, "cancelled")
            return

        def fail(rec: JobRecord) -> None:
            rec.error_kind, rec.error_code = kind, RPC_CODES.get(kind, RPC_CODES["INTERNAL"])
            rec.error_message = message

        self._finalize(job_id, FAILED, f"failed: {message}", fail)

    def _finish_locked(self, rec: JobRecord, state: str, *, message: str) -> None:
        """Put `rec` (not yet visible to watchers, or during recovery) into a final state."""
        rec.state, rec.end_time = state, self.clock()
        rec.update_time = rec.end_time
        rec.progress.message = message
        if state != SUCCEEDED:
            rec.progress.eta_seconds = -1.0

    def _finalize(self, job_id: str, state: str, message: str,
                  mutate: Callable[[JobRecord], None] | None = None) -> None:
        """End a job: build the final record on a copy, store it, drop the checkpoints, then install it.

        Watchers and readers see the final state only once it is durable (or its write has failed and
        been logged); writes stay serialized by the write lock.
        """
        with self._write_lock:
            with self._cv:
                final = copy.deepcopy(self._jobs[job_id])
            if mutate is not None:
                mutate(final)
            self._finish_locked(final, state, message=message)
            try:
                put_json(self.store, record_key(job_id), final.to_dict())
            except (StoreError, OSError):
                log.error("could not store the final job state", exc_info=True, extra={"job_id": job_id})
            self._drop_checkpoints(final)
            with self._cv:
                self._jobs[job_id] = final
                self._bump(job_id)
        log.info("job finished", extra={"job_id": job_id, "state": state, "error": final.error_message})

    def _drop_checkpoints(self, rec: JobRecord) -> None:
        if self.keep_checkpoints:
            return
        try:
            self.store.delete_prefix(rec.workdir_key)
        except StoreError:
            log.warning("could not delete job checkpoints", exc_info=True, extra={"job_id": rec.job_id})

    # ---------------------------------------------------------------------------- run_fn callbacks

    def _on_progress(self, job_id: str, stage: str, step: int, total: int, losses, message: str,
                     fraction: float | None, eta: float | None) -> None:
        with self._cv:
            rec = self._jobs[job_id]
            p = rec.progress
            frac = self._stage_fraction(stage, step, total) if fraction is None else float(fraction)
            frac = p.fraction if frac is None else min(1.0, max(0.0, frac))
            p.stage, p.step, p.total_steps, p.fraction = stage, step, total, frac
            p.losses, p.message = _finite(losses), message
            p.eta_seconds = self._eta(job_id, frac) if eta is None else float(eta)
            self._bump(job_id)
            last_t, last_stage = self._persisted.get(job_id, (0.0, ""))
            due = stage != last_stage or self.clock() - last_t >= self.persist_every_s
        if due:
            self._persist_quietly(job_id)

    def _on_coverage(self, job_id: str, coverage: dict[str, Any]) -> None:
        with self._cv:
            self._jobs[job_id].coverage = coverage
            self._bump(job_id)
        self._persist_quietly(job_id)

    def _stage_fraction(self, stage: str, step: int, total: int) -> float | None:
        done = 0.0
        whole = sum(w for _, w in self._weights) or 1.0
        for name, weight in self._weights:
            if name == stage:
                part = min(1.0, step / total) if total > 0 else 0.0
                return (done + weight * part) / whole
            done += weight
        return None  # unknown stage: keep the previous fraction

    def _eta(self, job_id: str, fraction: float) -> float:
        rc = self._run_clock.get(job_id)
        if rc is None or fraction - rc.f0 < 0.01:
            return -1.0
        return (self.clock() - rc.t0) / (fraction - rc.f0) * (1.0 - fraction)

    # --------------------------------------------------------------------------------- persistence

    def _persist(self, job_id: str) -> None:
        """Write the current record (writes are serialized so an older snapshot never wins)."""
        with self._write_lock:
            with self._cv:
                data = self._jobs[job_id].to_dict()
                self._persisted[job_id] = (self.clock(), data["progress"]["stage"])
            put_json(self.store, record_key(job_id), data)

    def _persist_quietly(self, job_id: str) -> None:
        try:
            self._persist(job_id)
        except (StoreError, OSError):
            log.warning("could not persist the job record", exc_info=True, extra={"job_id": job_id})

    def _load_all(self, keys: list[str]) -> list[JobRecord]:
        out = []
        for key in keys:
            m = _RECORD_KEY_RE.fullmatch(key)
            if m is None:
                continue
            try:
                out.append(JobRecord.from_dict(get_json(self.store, key)))
            except (StoreError, TypeError, ValueError, KeyError):
                log.error("skipping unreadable job record", exc_info=True, extra={"key": key})
        return out

    def _recover(self, records: list[JobRecord]) -> tuple[int, list[str]]:
        """Merge stored records into memory; rebuild the queue. Returns (re-queued, changed job ids)."""
        changed = []
        with self._cv:
            for rec in records:
                self._jobs[rec.job_id] = rec
                self._by_request.setdefault(rec.request_id, rec.job_id)
                self._rev[rec.job_id] = 0
                self._persisted[rec.job_id] = (self.clock(), rec.progress.stage)
                self._seq = max(self._seq, rec.seq)
                if rec.state == RUNNING:
                    changed.append(rec.job_id)
                    if rec.cancel_requested:
                        self._finish_locked(rec, CANCELLED, message="cancelled")
                    else:
                        rec.state, rec.progress.message = QUEUED, "resuming after a restart"
            pending = [r for r in self._jobs.values() if r.state == QUEUED]
            pending.sort(key=lambda r: (r.attempt == 0, r.seq))  # interrupted jobs first, then FIFO
            self._queue = deque(r.job_id for r in pending)
        return len(pending), changed

    def _drop_orphan_checkpoints(self, keys: list[str]) -> None:
        """Checkpoints of finished jobs that a crash kept from being deleted."""
        with_data = {k.split("/")[1] for k in keys if k.count("/") >= 2}
        for job_id in sorted(with_data):
            rec = self._jobs.get(job_id)
            if rec is not None and rec.is_final:
                self._drop_checkpoints(rec)

    def _repair_index(self, records: list[JobRecord]) -> None:
        """Rewrite request index entries a crash between the two create writes left missing."""
        for rec in records:
            key = request_index_key(rec.request_id)
            if not self.store.exists(key):
                put_json(self.store, key, {"job_id": rec.job_id})

    # ------------------------------------------------------------------------------------- helpers

    def _snapshot(self, job_id: str) -> JobRecord:
        with self._cv:
            if not self._started:
                raise UnavailableError("the trainer is starting (recovering its jobs)", retry_after_s=1.0)
            rec = self._jobs.get(job_id)
            if rec is None:
                raise NotFoundError(f"no job {job_id!r}", reason="JOB_NOT_FOUND")
            return copy.deepcopy(rec)

    def _bump(self, job_id: str) -> None:
        """Record a change of the job (caller holds the lock) and wake watchers and workers."""
        self._jobs[job_id].update_time = self.clock()
        self._rev[job_id] = self._rev.get(job_id, 0) + 1
        self._cv.notify_all()

    def _check_serving(self) -> None:
        if self._closed:
            raise UnavailableError("the trainer is shutting down", retry_after_s=1.0)
        if not self._started:
            raise UnavailableError("the trainer is starting (recovering its jobs)", retry_after_s=1.0)


def _encode_token(seq: int) -> str:
    return base64.urlsafe_b64encode(f"seq:{seq}".encode()).decode().rstrip("=")


def _decode_token(token: str) -> int | None:
    if not token:
        return None
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        kind, _, value = text.partition(":")
        if kind == "seq":
            return int(value)
    except (ValueError, UnicodeDecodeError):
        pass
    raise InvalidInputError.for_field("page_token", "not a token from a previous ListJobs response")
