"""Load test of the reenact stack: concurrent Reenact streams and enrollments for a soak of --duration seconds.

A plain thread-pool driver over the Python SDK (locust is not in the pinned dependency set, and its gevent
workers would need grpc's gevent mode; threads drive blocking gRPC streams just as well at this scale).

    python -m benchmarks.load.loadtest --duration 300 --streams 3 --enrollers 1 --json out/load.json

Without --address it starts the whole product with `start_local_stack` (real tritonserver, landmarks, trainer,
optimizer, gateway; cpu-quick profile unless --profile), enrolls one person (setup, not measured) and then,
for --duration seconds after --warmup:

- `--streams` workers each run Reenact calls back to back: `--frames` driving frames (the bundled carphone
  clip, 176x144, or --size to rescale) sent as fast as the gateway takes them, `--steps` optimizer steps per
  frame; per frame the latency from handing the frame to gRPC to receiving its result, per call the
  latency from opening the stream to its summary;
- `--enrollers` workers each enroll a fresh person from the self-scan fixture, wait for the job, delete the
  person, repeat (the trainer runs one job at a time: more enrollers queue);
- a sampler reads the RSS of every service process (Triton: the wrapper plus tritonserver and its Python
  stubs) each second.

It reports sustained result frames/s, p50/p90/p99 frame and call latency, errors by status code (error rate =
failed calls / calls), enrollment job times, RSS per service (start, max, end), CPU per service (cores used
over the window, CPU ms per result frame: the gateway's is its cost per frame) and the machine; --json writes
the whole report. Exit code 1 when any call failed and --fail-on-error is given.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import pathlib
import platform
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# ------------------------------------------------------------------------------------------- recording


@dataclass
class Recorder:
    """Thread-safe event log; everything is kept with its monotonic time so a warmup can be cut off."""

    frames: list[tuple[float, float]] = field(default_factory=list)        # (t_done, latency s)
    calls: list[tuple[float, float, int]] = field(default_factory=list)    # (t_done, latency s, frames)
    errors: list[tuple[float, str, str]] = field(default_factory=list)     # (t, kind, status code)
    enrolls: list[tuple[float, float, float]] = field(default_factory=list)  # (t_done, upload s, job s)
    rss: dict[str, list[tuple[float, int, float]]] = field(default_factory=dict)  # name -> (t, bytes, cpu s)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, what: str, item) -> None:
        with self.lock:
            getattr(self, what).append(item)


def percentile(values, q: float) -> float | None:
    return float(np.percentile(np.asarray(values, float), q)) if len(values) else None


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000.0, 1)


# ------------------------------------------------------------------------------------------- processes


def rss_bytes(pid: int) -> int:
    """Resident set size of one process (0 when gone)."""
    try:
        for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far (0 when gone)."""
    try:
        f = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def tree_usage(pid: int) -> tuple[int, float]:
    """(RSS bytes, CPU seconds) of a process and all its descendants."""
    from reenact.launcher import _descendants

    procs = [pid, *_descendants(pid)]
    return sum(rss_bytes(p) for p in procs), sum(cpu_seconds(p) for p in procs)


def sample_rss(pids, rec: Recorder, stop: threading.Event, every_s: float = 1.0) -> None:
    """pids: a callable returning name -> pid (re-read each time: a restarted service has a new pid)."""
    while not stop.is_set():
        now = time.monotonic()
        for name, pid in pids().items():
            rec.rss.setdefault(name, [])
            with rec.lock:
                rec.rss[name].append((now, *tree_usage(pid)))
        stop.wait(every_s)


def machine_info() -> dict:
    model = ""
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = os.getloadavg()
    except OSError:
        load = (0.0, 0.0, 0.0)
    mem = 0
    try:
        mem = int(pathlib.Path("/proc/meminfo").read_text().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model, "memory_bytes": mem, "platform": platform.platform(),
            "python": platform.python_version(), "loadavg_at_start": [round(x, 2) for x in load]}


# ------------------------------------------------------------------------------------------- workers


def driving_frames(n: int, size: int = 0) -> tuple[list[np.ndarray], float]:
    from reenact.samples import carphone_video_path
    from reenact.video import decode_video

    frames, fps = decode_video(carphone_video_path(), max_frames=max(n, 1))
    out = [np.asarray(f) for f in frames]
    if size:
        from PIL import Image

        out = [np.asarray(Image.fromarray(f).resize((size, size * f.shape[0] // f.shape[1]))) for f in out]
    while len(out) < n:
        out += out[: n - len(out)]
    return out[:n], float(fps)


def selfscan_bytes(frames: int = 90) -> bytes:
    from reenact.fixtures import load_face, make_schedule, render_selfscan, write_selfscan

    imgs, _ = render_selfscan(load_face("astronaut"), make_schedule(frames, seed=0), size=160)
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "scan.mp4"
        write_selfscan(path, imgs, fps=30)
        return path.read_bytes()


def _code(exc: BaseException) -> str:
    code = getattr(exc, "code", None)
    code = code() if callable(code) else code
    return getattr(code, "name", None) or type(exc).__name__


def _timed(frames, sent: dict[int, float], pace: float = 0.0, clock=time.monotonic, sleep=time.sleep):
    """The frames, noting when each one is handed to gRPC. `pace` > 0: frame i is released no earlier than
    i / pace seconds after the first (a camera at `pace` frames/s); 0: as fast as gRPC takes them."""
    t0 = clock()
    for i, f in enumerate(frames):
        if pace > 0:
            wait = t0 + i / pace - clock()
            if wait > 0:
                sleep(wait)
        sent[i] = clock()
        yield f


def stream_worker(client, person: str, frames, fps: float, args, rec: Recorder, stop: threading.Event) -> None:
    from reenact.client import Frame, Summary

    while not stop.is_set():
        sent: dict[int, float] = {}
        t0 = time.monotonic()
        n = 0
        try:
            paced = _timed(frames, sent, args.pace)
            for ev in client.reenact(person, frames=paced, fps=fps, steps=args.steps, window=args.window,
                                     smoothing_sigma=args.smoothing, motion=args.motion,
                                     frame_encoding="jpeg", decode=False, timeout=args.call_timeout):
                now = time.monotonic()
                if isinstance(ev, Frame):
                    rec.add("frames", (now, now - sent.get(ev.index, t0)))
                    n += 1
                elif isinstance(ev, Summary):
                    rec.add("calls", (now, now - t0, n))
        except Exception as exc:  # noqa: BLE001 - every failure is counted, the worker goes on
            rec.add("errors", (time.monotonic(), "reenact", _code(exc)))
            stop.wait(1.0)


def enroll_worker(client, scan: bytes, args, rec: Recorder, stop: threading.Event, wid: int) -> None:
    k = 0
    while not stop.is_set():
        k += 1
        person = f"load-e{wid}-{k}-{os.getpid() % 10000}"
        t0 = time.monotonic()
        try:
            job = client.enroll(scan, person_id=person, options=args.enroll_options, timeout=300)
            t1 = time.monotonic()
            final = client.wait_job(job.job_id, timeout=args.call_timeout)
            if final.succeeded:
                rec.add("enrolls", (time.monotonic(), t1 - t0, time.monotonic() - t1))
            else:
                rec.add("errors", (time.monotonic(), "enroll", f"JOB_{final.state.name}"))
        except Exception as exc:  # noqa: BLE001
            rec.add("errors", (time.monotonic(), "enroll", _code(exc)))
            stop.wait(1.0)
        finally:
            try:
                client.delete_person(person, timeout=60)
            except Exception:  # noqa: BLE001 - it may not exist (failed upload)
                pass


# ------------------------------------------------------------------------------------------- report


def summarize(rec: Recorder, t_start: float, t_end: float, args, extra: dict) -> dict:
    window = max(1e-9, t_end - t_start)
    frames = [lat for t, lat in rec.frames if t_start <= t <= t_end]
    calls = [(lat, n) for t, lat, n in rec.calls if t_start <= t <= t_end]
    errors = [(kind, code) for t, kind, code in rec.errors if t_start <= t <= t_end]
    enrolls = [(up, job) for t, up, job in rec.enrolls if t_start <= t <= t_end]
    reenact_errors = [c for k, c in errors if k == "reenact"]
    by_code: dict[str, int] = {}
    for kind, code in errors:
        by_code[f"{kind}:{code}"] = by_code.get(f"{kind}:{code}", 0) + 1
    rss, cpu = {}, {}
    for name, samples in sorted(rec.rss.items()):
        inside = [(t, b, c) for t, b, c in samples if t_start - 1.0 <= t <= t_end + 1.0]
        if inside:
            vals = [b for _, b, _ in inside]
            rss[name] = {"start_mib": round(vals[0] / 2**20, 1), "max_mib": round(max(vals) / 2**20, 1),
                         "end_mib": round(vals[-1] / 2**20, 1)}
            span = inside[-1][0] - inside[0][0]
            used = inside[-1][2] - inside[0][2]
            cpu[name] = {"cores": round(used / span, 3) if span > 0 else None,
                         "ms_per_frame": round(1000 * used / len(frames), 2) if frames else None}
    n_calls = len(calls) + len(reenact_errors)
    return {
        "window_s": round(window, 1),
        "streams": args.streams, "enrollers": args.enrollers, "frames_per_call": args.frames,
        "steps": args.steps, "window": args.window, "pace_fps": args.pace, "smoothing_sigma": args.smoothing,
        "motion": args.motion,
        "frames": len(frames), "frames_per_s": round(len(frames) / window, 3),
        "frame_latency_ms": {"p50": _ms(percentile(frames, 50)), "p90": _ms(percentile(frames, 90)),
                             "p99": _ms(percentile(frames, 99)), "max": _ms(max(frames) if frames else None)},
        "calls": len(calls),
        "call_latency_ms": {"p50": _ms(percentile([c for c, _ in calls], 50)),
                            "p99": _ms(percentile([c for c, _ in calls], 99))},
        "reenact_error_rate": round(len(reenact_errors) / n_calls, 4) if n_calls else 0.0,
        "errors": len(errors), "errors_by_code": by_code,
        "enrollments": len(enrolls),
        "enroll_upload_ms_p50": _ms(percentile([u for u, _ in enrolls], 50)),
        "enroll_job_s_p50": None if not enrolls else round(percentile([j for _, j in enrolls], 50), 1),
        "rss": rss, "cpu": cpu,
        **extra,
    }


def print_report(rep: dict, out=sys.stdout) -> None:
    fl, cl = rep["frame_latency_ms"], rep["call_latency_ms"]
    print(f"window {rep['window_s']} s, {rep['streams']} streams x {rep['frames_per_call']} frames "
          f"(steps {rep['steps']}, window {rep['window']}, smoothing {rep.get('smoothing_sigma', 0.0):g}), "
          f"{rep['enrollers']} enrollers, "
          f"{'paced at ' + str(rep['pace_fps']) + ' frames/s' if rep.get('pace_fps') else 'unpaced'}", file=out)
    print(f"  frames: {rep['frames']} = {rep['frames_per_s']} frames/s; latency p50 {fl['p50']} ms, p90 {fl['p90']} ms,"
          f" p99 {fl['p99']} ms, max {fl['max']} ms", file=out)
    print(f"  calls: {rep['calls']} ok, p50 {cl['p50']} ms, p99 {cl['p99']} ms; reenact error rate "
          f"{rep['reenact_error_rate']}; errors {rep['errors']} {rep['errors_by_code']}", file=out)
    print(f"  enrollments: {rep['enrollments']} (upload p50 {rep['enroll_upload_ms_p50']} ms, job p50 "
          f"{rep['enroll_job_s_p50']} s)", file=out)
    for name, r in rep["rss"].items():
        c = rep["cpu"].get(name, {})
        print(f"  {name:10s} rss start {r['start_mib']:7.1f} MiB  max {r['max_mib']:7.1f} MiB  end {r['end_mib']:7.1f} MiB"
              f"  cpu {c.get('cores')} cores, {c.get('ms_per_frame')} ms/frame", file=out)


# ------------------------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--address", default="", help="gateway host:port of a running stack (default: start one)")
    p.add_argument("--pids", default="", help="with --address: a stack state file (reenact up --detach) for RSS")
    p.add_argument("--person", default="", help="an enrolled person to reenact (default: enroll one first)")
    p.add_argument("--workdir", default="", help="where a started stack keeps its state (default: a temp dir)")
    p.add_argument("--profile", default="cpu-quick", choices=["cpu-quick", "gpu"])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    p.add_argument("--duration", type=float, default=180.0, help="measured soak, seconds (after --warmup)")
    p.add_argument("--warmup", type=float, default=10.0, help="seconds of load before measuring")
    p.add_argument("--streams", type=int, default=3, help="concurrent Reenact streams")
    p.add_argument("--enrollers", type=int, default=1, help="concurrent enrollment loops")
    p.add_argument("--frames", type=int, default=16, help="driving frames per Reenact call")
    p.add_argument("--size", type=int, default=0, help="rescale driving frames to this width (0 = 176x144)")
    p.add_argument("--pace", type=float, default=0.0,
                   help="send each stream's frames at this rate, frames/s, like a camera (0 = as fast as the "
                        "stream takes them: throughput mode); frame latency is then what a live caller sees")
    p.add_argument("--steps", type=int, default=4, help="optimizer steps per frame")
    p.add_argument("--window", type=int, default=2, help="optimizer temporal window")
    p.add_argument("--smoothing", type=float, default=0.0,
                   help="Reenact header smoothing_sigma (0 = server defaults; negative = off: with --window 1, "
                        "live settings without look-ahead)")
    p.add_argument("--motion", default="", choices=["", "absolute", "relative"], help="Reenact header motion")
    p.add_argument("--anchors", type=int, default=12, help="enrollment num_anchors")
    p.add_argument("--tune-steps", type=int, default=40, help="enrollment tune_steps")
    p.add_argument("--call-timeout", type=float, default=600.0)
    p.add_argument("--json", default="", help="write the report here")
    p.add_argument("--fail-on-error", action="store_true")
    args = p.parse_args(argv)
    args.command = ""
    args.enroll_options = {"num_anchors": args.anchors, "tune_steps": args.tune_steps}
    if args.streams < 0 or args.enrollers < 0 or args.duration <= 0 or args.frames < 1:
        p.error("need streams >= 0, enrollers >= 0, duration > 0, frames >= 1")
    return args


def _target(args):
    """(gateway address, pids callable, the stack started here or None, its temp dir or None)."""
    if args.address:
        fixed: dict[str, int] = {}
        if args.pids:
            from reenact.launcher import read_state

            fixed = {n: int(p["pid"]) for n, p in read_state(args.pids)["processes"].items()}
        return args.address, lambda: fixed, None, None
    from reenact.launcher import start_local_stack

    tmp = None if args.workdir else tempfile.mkdtemp(prefix="reenact-load-")
    stack = start_local_stack(pathlib.Path(args.workdir or tmp) / "stack", device=args.device, profile=args.profile,
                              timeout=300)
    return stack.gateway_address, lambda: dict(stack.pids), stack, tmp


def run(args: argparse.Namespace, log=print) -> dict:
    from reenact.client import Client
    from reenact.client._common import RetryPolicy

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    t_boot = time.monotonic()
    address, pids, stack, tmp = _target(args)
    startup_s = time.monotonic() - t_boot
    rec = Recorder()
    stop_sampler = threading.Event()
    sampler = threading.Thread(target=sample_rss, args=(pids, rec, stop_sampler), daemon=True)
    sampler.start()
    client = Client(address, retry=RetryPolicy(max_attempts=8, max_backoff=2.0), timeout=60)
    try:
        scan = selfscan_bytes() if (args.enrollers or not args.person) else b""
        person = args.person
        setup_s = 0.0
        if not person:
            t0 = time.monotonic()
            person = f"load-{os.getpid() % 100000}"
            log(f"enrolling {person} (setup, not measured)")
            job = client.enroll(scan, person_id=person, options=args.enroll_options, timeout=300)
            final = client.wait_job(job.job_id, timeout=1800)
            if not final.succeeded:
                raise RuntimeError(f"setup enrollment failed: {final.error_message}")
            setup_s = time.monotonic() - t0
        frames, fps = driving_frames(args.frames, args.size)
        stop = threading.Event()
        workers = [threading.Thread(target=stream_worker, args=(client, person, frames, fps, args, rec, stop),
                                    name=f"stream-{i}", daemon=True) for i in range(args.streams)]
        workers += [threading.Thread(target=enroll_worker, args=(client, scan, args, rec, stop, i),
                                     name=f"enroll-{i}", daemon=True) for i in range(args.enrollers)]
        log(f"load: {args.streams} streams, {args.enrollers} enrollers, warmup {args.warmup:g} s, "
            f"measuring {args.duration:g} s")
        t_go = time.monotonic()
        for w in workers:
            w.start()
        t_start = t_go + args.warmup
        t_end = t_start + args.duration
        while time.monotonic() < t_end:
            time.sleep(min(10.0, max(0.0, t_end - time.monotonic())))
            with rec.lock:
                done = sum(1 for t, _ in rec.frames if t >= t_start)
            log(f"  t={time.monotonic() - t_go:6.0f} s  frames measured {done}  errors {len(rec.errors)}")
        stop.set()
        for w in workers:
            w.join(args.call_timeout)
        stop_sampler.set()
        sampler.join(5)
        report = summarize(rec, t_start, t_end, args, {
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "command": args.command,
            "machine": machine_info(), "stack_started_here": stack is not None,
            "startup_s": round(startup_s, 1), "setup_enroll_s": round(setup_s, 1), "profile": args.profile})
        return report
    finally:
        stop_sampler.set()
        client.close()
        if stack is not None:
            stack.stop()
        if tmp is not None:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    args.command = " ".join(["python -m benchmarks.load.loadtest", *(sys.argv[1:] if argv is None else argv)])
    report = run(args, log=lambda m: print(m, flush=True))
    print_report(report)
    if args.json:
        path = pathlib.Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"report: {path}")
    return 1 if (args.fail_on_error and report["errors"]) else 0


if __name__ == "__main__":
    sys.exit(main())
