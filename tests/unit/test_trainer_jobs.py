"""The trainer's JobManager with a LocalStore and scripted run_fns.

The run_fns here are test doubles of the training function: they script progress, stops, failures and
checkpoints so the job machinery (idempotency, queue, watchers, cancel, failure mapping, restart
recovery, validation) is tested without training anything.
"""

from __future__ import annotations

import logging
import threading

import pytest

from reenact.errors import (
    AlreadyExistsError,
    CancelledError,
    InvalidInputError,
    NotFoundError,
    UnavailableError,
)
from reenact.store import LocalStore, PersonRepository, get_json, put_json
from services.trainer.jobs import (
    CANCELLED,
    FAILED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    JobContext,
    JobManager,
    JobRecord,
    record_key,
    request_index_key,
)

SCAN = "uploads/scan-alice.mp4"
TIMEOUT = 5.0


class FakeClock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture()
def store(tmp_path):
    s = LocalStore(tmp_path / "store", fsync=False)
    s.put_bytes(SCAN, b"not really a video")
    return s


@pytest.fixture()
def managers():
    """Builds started JobManagers and closes them after the test."""
    made: list[JobManager] = []

    def make(store, run_fn, **kw) -> JobManager:
        m = JobManager(store, run_fn, **kw)
        m.start()
        made.append(m)
        return m

    yield make
    for m in made:
        m.close(timeout=TIMEOUT)


def create(m: JobManager, rid: str = "req-1", person: str = "alice", **kw):
    return m.create(request_id=rid, person_id=person, scan_key=kw.pop("scan_key", SCAN), **kw)


def wait_final(m: JobManager, job_id: str) -> JobRecord:
    *_, last = m.watch(job_id)
    return last


def wait_state(m: JobManager, job_id: str, state: str) -> JobRecord:
    for snap in m.watch(job_id):
        if snap.state == state:
            return snap
    raise AssertionError(f"{job_id} ended {snap.state} without passing {state}")


class Gate:
    """A scripted run_fn that blocks until released (or stopped) and records the jobs it ran."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started: list[str] = []
        self.running = 0
        self.max_running = 0
        self.lock = threading.Lock()

    def __call__(self, job: JobRecord, ctx: JobContext) -> dict:
        with self.lock:
            self.started.append(job.request_id)
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        try:
            ctx.progress("tune", 0, 10)
            while not self.release.wait(0.01):
                if ctx.should_stop():
                    raise CancelledError("stopped")
            return {"person_version": len(self.started), "metrics": {"heldout_psnr_db": 30.0}}
        finally:
            with self.lock:
                self.running -= 1


# ------------------------------------------------------------------------------------------ idempotency


def test_create_is_idempotent_by_request_id_with_scripted_run_fn(store, managers):
    gate = Gate()
    m = managers(store, gate)
    first, created1 = create(m, options={"seed": 7})
    again, created2 = create(m, options={"seed": 7})
    assert created1 and not created2
    assert again.job_id == first.job_id and first.job_id.startswith("job-") and len(first.job_id) == 36
    assert get_json(store, request_index_key("req-1")) == {"job_id": first.job_id}
    assert get_json(store, record_key(first.job_id))["request_id"] == "req-1"
    gate.release.set()
    assert wait_final(m, first.job_id).state == SUCCEEDED
    assert create(m, options={"seed": 7})[0].job_id == first.job_id  # also after it finished
    assert gate.started == ["req-1"]


def test_reused_request_id_with_other_params_is_already_exists(store, managers):
    m = managers(store, Gate())
    create(m)
    with pytest.raises(AlreadyExistsError):
        create(m, person="bob")
    with pytest.raises(AlreadyExistsError):
        create(m, options={"tune_steps": 5})


# ------------------------------------------------------------------------------------------------ queue


def test_queue_with_scripted_run_fn_is_fifo_one_at_a_time(store, managers):
    gate = Gate()
    m = managers(store, gate)
    ids = [create(m, rid=f"req-{i}")[0].job_id for i in range(3)]
    wait_state(m, ids[0], RUNNING)
    assert [m.get(j).state for j in ids] == [RUNNING, QUEUED, QUEUED]
    gate.release.set()
    finals = [wait_final(m, j) for j in ids]
    assert [f.state for f in finals] == [SUCCEEDED] * 3
    assert gate.started == ["req-0", "req-1", "req-2"] and gate.max_running == 1
    assert [f.person_version for f in finals] == [1, 2, 3]
    assert finals[0].metrics == {"heldout_psnr_db": 30.0} and finals[0].progress.fraction == 1.0


def test_list_is_newest_first_with_pages_and_owner_filter(store, managers):
    m = managers(store, Gate())
    ids = [create(m, rid=f"r{i}", owner="k1" if i % 2 else "k2")[0].job_id for i in range(5)]
    page1, token = m.list(page_size=2)
    page2, token2 = m.list(page_size=2, page_token=token)
    page3, token3 = m.list(page_size=2, page_token=token2)
    assert [r.job_id for r in page1 + page2 + page3] == ids[::-1]
    assert token and token2 and token3 == ""
    assert [r.job_id for r in m.list(owner="k1")[0]] == [ids[3], ids[1]]
    with pytest.raises(InvalidInputError):
        m.list(page_token="garbage!")
    with pytest.raises(InvalidInputError):
        m.list(page_size=1001)


# ------------------------------------------------------------------------------------------------ watch


def test_watch_stream_sequence_with_scripted_run_fn(store, managers):
    blocker = Gate()
    seen_running = threading.Event()

    def run_fn(job, ctx):
        if job.request_id == "blocker":
            return blocker(job, ctx)
        ctx.progress("align", 0, 2, message="aligning")
        ctx.set_coverage({"frames_total": 40, "frames_usable": 35, "missing": ["blink"], "not_a_field": 1})
        assert seen_running.wait(TIMEOUT)
        ctx.progress("tune", 1, 2, losses={"lpips": 0.25, "bad": float("nan")})
        return {"person_version": 4, "metrics": {"heldout_psnr_db": 28.5}}

    m = managers(store, run_fn)
    create(m, rid="blocker")
    job, _ = create(m, rid="watched")
    states, fractions, last = [], [], None
    stream = m.watch(job.job_id)
    for snap in stream:
        if not states or states[-1] != snap.state:
            states.append(snap.state)
        fractions.append(snap.progress.fraction)
        if snap.state == QUEUED:
            blocker.release.set()
        if snap.state == RUNNING:
            seen_running.set()
        last = snap
    assert states == [QUEUED, RUNNING, SUCCEEDED]  # the stream ended by itself after the final state
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert last.person_version == 4 and last.coverage["missing"] == ["blink"]
    stored = get_json(store, record_key(job.job_id))
    assert stored["state"] == SUCCEEDED and stored["progress"]["stage"] == "tune"
    assert stored["progress"]["losses"] == {"lpips": 0.25}  # non-finite values are dropped


def test_watch_ends_with_its_stop_event_and_on_close(store, managers):
    gate = Gate()
    m = managers(store, gate)
    job, _ = create(m)
    stop = threading.Event()
    stream = m.watch(job.job_id, stop=stop)
    next(stream)
    stop.set()
    m.wake_watchers()
    assert list(stream) == []
    stream2 = m.watch(job.job_id)
    next(stream2)
    m.close(timeout=TIMEOUT)
    with pytest.raises(UnavailableError):
        list(stream2)


def test_progress_persisted_at_most_every_few_seconds_and_on_stage_change(store, managers):
    clock = FakeClock()
    step_done, go_on = threading.Event(), threading.Event()

    def run_fn(job, ctx):
        for stage, step in [("tune", 1), ("tune", 2), ("tune", 3), ("evaluate", 0)]:
            go_on.wait(TIMEOUT)
            go_on.clear()
            ctx.progress(stage, step, 10)
            step_done.set()
        return {"person_version": 1}

    m = managers(store, run_fn, clock=clock, persist_every_s=5.0)
    job, _ = create(m)

    def step(advance: float) -> dict:
        clock.t += advance
        step_done.clear()
        go_on.set()
        assert step_done.wait(TIMEOUT)
        return get_json(store, record_key(job.job_id))["progress"]

    assert step(0)["step"] == 1  # stage change: written at once
    assert step(1.0)["step"] == 1  # 1 s later, same stage: memory only
    assert m.get(job.job_id).progress.step == 2
    assert step(5.0)["step"] == 3  # due again
    assert step(0)["stage"] == "evaluate"
    assert wait_final(m, job.job_id).state == SUCCEEDED


# ----------------------------------------------------------------------------------------------- cancel


def test_cancel_queued_job_with_scripted_run_fn(store, managers):
    gate = Gate()
    m = managers(store, gate)
    first, _ = create(m, rid="a")
    second, _ = create(m, rid="b")
    assert m.cancel(second.job_id).state == CANCELLED
    assert get_json(store, record_key(second.job_id))["state"] == CANCELLED
    gate.release.set()
    assert wait_final(m, first.job_id).state == SUCCEEDED
    assert gate.started == ["a"]
    assert m.cancel(first.job_id).state == SUCCEEDED  # no-op on a finished job


def test_cancel_running_job_aborts_its_partial_version_with_scripted_run_fn(store, managers):
    repo = PersonRepository(store)
    writing = threading.Event()

    def run_fn(job, ctx):
        store.put_bytes(ctx.checkpoint_prefix + "tune.pt", b"ckpt")
        with repo.begin_version(job.person_id) as w:
            w.put_bytes("generator.pt", b"partial")
            writing.set()
            while not ctx.should_stop():
                threading.Event().wait(0.01)
            raise CancelledError("cancelled by the user")  # the writer aborts on the way out

    m = managers(store, run_fn)
    job, _ = create(m)
    assert writing.wait(TIMEOUT)
    assert m.cancel(job.job_id).cancel_requested
    final = wait_final(m, job.job_id)
    assert final.state == CANCELLED and final.error_code == 0
    assert repo.versions("alice") == [] and store.list("persons") == []
    assert store.list(f"jobs/{job.job_id}") == []  # checkpoints removed


# ---------------------------------------------------------------------------------------------- failure


@pytest.mark.parametrize("raise_it,code,kind,text", [
    (NotFoundError("base checkpoint vanished"), 5, "NOT_FOUND", "base checkpoint vanished"),
    (InvalidInputError("scan has no usable frames"), 3, "INVALID_ARGUMENT", "scan has no usable frames"),
    (RuntimeError("CUDA out of memory"), 13, "INTERNAL", "RuntimeError: CUDA out of memory"),
    (None, 13, "INTERNAL", "run_fn returned no person_version"),
])
def test_failure_mapping_with_scripted_run_fn(store, managers, caplog, raise_it, code, kind, text):
    def run_fn(job, ctx):
        ctx.progress("align", 0, 1)
        if raise_it is not None:
            raise raise_it
        return {}

    m = managers(store, run_fn)
    job, _ = create(m)
    with caplog.at_level(logging.ERROR, logger="reenact.trainer.jobs"):
        final = wait_final(m, job.job_id)
    assert (final.state, final.error_code, final.error_kind, final.error_message) == (FAILED, code, kind, text)
    assert get_json(store, record_key(job.job_id))["error_code"] == code
    crashed = [r for r in caplog.records if r.getMessage() == "job crashed"]
    assert bool(crashed) == isinstance(raise_it, RuntimeError)
    if crashed:
        assert crashed[0].exc_info is not None  # the traceback is logged


# --------------------------------------------------------------------------------------------- recovery


def test_restart_recovery_resumes_running_job_with_scripted_run_fn(store, managers):
    saved = threading.Event()
    prefixes = []

    def first_life(job, ctx):
        prefixes.append(ctx.checkpoint_prefix)
        ctx.progress("tune", 3, 10)
        store.put_bytes(ctx.checkpoint_prefix + "tune.pt", b"step=3")
        saved.set()
        while not ctx.should_stop():
            threading.Event().wait(0.01)
        raise CancelledError("interrupted")

    a = managers(store, first_life)
    running, _ = create(a, rid="r1")
    queued, _ = create(a, rid="r2")
    assert saved.wait(TIMEOUT)
    a.close(timeout=TIMEOUT)
    assert get_json(store, record_key(running.job_id))["state"] == RUNNING  # left for the next start
    assert get_json(store, record_key(queued.job_id))["state"] == QUEUED

    resumed_from = []

    def second_life(job, ctx):
        prefixes.append(ctx.checkpoint_prefix)
        if ctx.store.exists(ctx.checkpoint_prefix + "tune.pt"):
            resumed_from.append((job.request_id, ctx.store.get_bytes(ctx.checkpoint_prefix + "tune.pt"), ctx.resumed))
        return {"person_version": 1}

    b = JobManager(store, second_life)
    assert b.start() == 2
    try:
        assert wait_final(b, running.job_id).state == SUCCEEDED
        assert wait_final(b, queued.job_id).state == SUCCEEDED
        assert prefixes[0] == prefixes[1] == f"jobs/{running.job_id}/ckpt/"
        assert resumed_from == [("r1", b"step=3", True)]
        assert b.get(running.job_id).attempt == 2
        assert create(b, rid="r1")[0].job_id == running.job_id  # idempotency survives the restart
    finally:
        b.close(timeout=TIMEOUT)


def test_recovery_finishes_a_cancel_requested_while_running(store, managers):
    rec = JobRecord(job_id="job-" + "a" * 32, request_id="r", person_id="alice", scan_key=SCAN, profile="gpu",
                    seq=1, state=RUNNING, cancel_requested=True)
    put_json(store, record_key(rec.job_id), rec.to_dict())
    store.put_bytes(rec.checkpoint_prefix + "tune.pt", b"ckpt")
    calls = []
    m = managers(store, lambda job, ctx: calls.append(job))
    assert m.get(rec.job_id).state == CANCELLED and not calls
    assert get_json(store, record_key(rec.job_id))["state"] == CANCELLED
    assert store.list(rec.workdir_key) == []  # its checkpoints are gone
    assert get_json(store, request_index_key("r")) == {"job_id": rec.job_id}  # index repaired


# ------------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize("kw,fields", [
    ({"rid": ""}, ["request_id"]),
    ({"rid": "has space"}, ["request_id"]),
    ({"rid": "x" * 129}, ["request_id"]),
    ({"person": "Alice"}, ["person_id"]),
    ({"person": "1alice"}, ["person_id"]),
    ({"person": "a" * 65}, ["person_id"]),
    ({"profile": "tpu"}, ["profile"]),
    ({"scan_key": "../etc/passwd"}, ["scan_key"]),
    ({"options": {"resolution": 100}}, ["options.resolution"]),
    ({"person": "", "profile": "x", "options": {"num_anchors": -1}}, ["person_id", "profile", "options.num_anchors"]),
])
def test_validation_errors_name_the_fields(store, managers, kw, fields):
    m = managers(store, Gate())
    with pytest.raises(InvalidInputError) as ei:
        create(m, **kw)
    assert [v.field for v in ei.value.violations] == fields


def test_missing_scan_and_unknown_job_are_not_found(store, managers):
    m = managers(store, Gate())
    with pytest.raises(NotFoundError):
        create(m, scan_key="uploads/missing.mp4")
    with pytest.raises(NotFoundError):
        create(m, rid="r2", options={"base_checkpoint": "bases/missing.pt"})
    for op in (m.get, m.cancel, lambda j: next(m.watch(j))):
        with pytest.raises(NotFoundError):
            op("job-" + "0" * 32)
        with pytest.raises(InvalidInputError):
            op("")
    assert m.list() == ([], "")


def test_default_profile_is_recorded(store, managers):
    m = managers(store, Gate(), default_profile="cpu-quick")
    assert create(m)[0].profile == "cpu-quick"
    assert create(m, rid="r2", profile="gpu")[0].profile == "gpu"


def test_manager_serves_only_between_start_and_close(store):
    m = JobManager(store, Gate())
    with pytest.raises(UnavailableError):
        create(m)
    m.start()
    m.close(timeout=TIMEOUT)
    with pytest.raises(UnavailableError):
        create(m)
