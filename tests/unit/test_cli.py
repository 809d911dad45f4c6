"""`reenact` CLI: argument parsing, output and error printing, against the FAKE gateway of test_client.

`FakeGatewayServicer` (tests/unit/test_client.py) is a test double served by a real gRPC server on
loopback; the real gateway is covered by the end-to-end tests.
"""

from __future__ import annotations

import io
import json

import grpc
import numpy as np
import pytest

from reenact import cli
from reenact.api.common.v1 import types_pb2
from reenact.client import ReenactClientError, ResourceExhaustedError
from reenact.client.errors import FieldViolation
from reenact.errors import UnavailableError as DomainUnavailable
from tests.unit.test_client import FakeGateway, default_timeline, job_proto


@pytest.fixture
def gw(monkeypatch, tmp_path):
    monkeypatch.delenv("REENACT_ADDRESS", raising=False)
    monkeypatch.delenv("REENACT_API_KEY", raising=False)
    monkeypatch.setenv("REENACT_WORKDIR", str(tmp_path / "wd"))
    with FakeGateway() as fake:
        yield fake


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def driving(tmp_path):
    from reenact.video import encode_video

    path = tmp_path / "driving.mp4"
    encode_video([np.full((32, 32, 3), 30 * i, np.uint8) for i in range(4)], 25.0, path)
    return path


# ---- parsing ----------------------------------------------------------------------------------------


def test_global_options_work_before_and_after_the_subcommand():
    p = cli.build_parser()
    a = p.parse_args(["--json", "--address", "h:1", "persons", "list"])
    b = p.parse_args(["persons", "list", "--json", "--address", "h:1"])
    c = p.parse_args(["persons", "--address", "h:1", "list"])
    for ns in (a, b, c):
        assert ns.address == "h:1" and ns.persons_cmd == "list"
    assert a.json and b.json and not getattr(c, "json", False)
    ns = p.parse_args(["reenact", "amy", "d.mp4", "-o", "o.mp4", "--edit", "smile=1.5", "--edit", "yaw=-1",
                       "--paste-back", "--max-frames", "10"])
    assert ns.edit == ["smile=1.5", "yaw=-1"] and ns.paste_back and ns.max_frames == 10
    t = p.parse_args(["track", "v.mp4", "--address", "lm:1"])   # track keeps its own --address
    assert t.address == "lm:1" and t.fn is cli.cmd_track
    d = p.parse_args(["demo", "--max-frames", "5", "--profile", "cpu-quick"])
    assert d.max_frames == 5 and d.out == "out/demo"
    assert (d.motion, d.opening_weight, d.latent_sigma, d.init) == ("relative", 0.0, 0.0, "")  # the server's defaults
    d = p.parse_args(["demo", "--opening-weight", "4", "--latent-sigma", "1", "--init", "mixed"])
    assert (d.opening_weight, d.latent_sigma, d.init) == (4.0, 1.0, "mixed")
    assert (d.opening_range, p.parse_args(["demo", "--opening-range", "2"]).opening_range) == (0.0, 2.0)  # 0 = off
    r = p.parse_args(["reenact", "amy", "d.mp4", "-o", "o.mp4"])
    assert (r.init, r.opening_range, r.mouth_starts) == ("", 0.0, 0.0)
    assert (d.mouth_starts, p.parse_args(["demo", "--mouth-starts", "1"]).mouth_starts) == (0.0, 1.0)  # 0 = off
    assert (r.delta_lr_scale, d.delta_lr_scale) == (0.0, 0.0)  # 0 = the server's default, 0.02
    assert p.parse_args(["demo", "--delta-lr-scale", "0.1"]).delta_lr_scale == 0.1
    assert p.parse_args(["reenact", "amy", "d.mp4", "-o", "o.mp4", "--delta-lr-scale", "10"]).delta_lr_scale == 10.0
    assert (r.lip_warp, d.lip_warp) == (0.0, 0.0)  # 0 = off
    assert p.parse_args(["demo", "--lip-warp", "1"]).lip_warp == 1.0
    assert p.parse_args(["reenact", "amy", "d.mp4", "-o", "o.mp4", "--lip-warp", "0.5"]).lip_warp == 0.5


@pytest.mark.parametrize("argv", [["reenact", "amy", "d.mp4"], ["jobs"], ["demo", "--max-frames", "0"],
                                  ["reenact", "amy", "d.mp4", "-o", "o.mp4", "--init", "best"],
                                  ["demo", "--init", "Mixed"], ["demo", "--opening-range", "10.5"],
                                  ["demo", "--opening-range", "nan"],
                                  ["reenact", "amy", "d.mp4", "-o", "o.mp4", "--opening-range", "x"],
                                  ["demo", "--mouth-starts", "1.6"], ["demo", "--mouth-starts", "nan"],
                                  ["reenact", "amy", "d.mp4", "-o", "o.mp4", "--mouth-starts", "-1"],
                                  ["demo", "--delta-lr-scale", "11"], ["demo", "--delta-lr-scale", "nan"],
                                  ["reenact", "amy", "d.mp4", "-o", "o.mp4", "--delta-lr-scale", "-1"],
                                  ["demo", "--lip-warp", "1.5"], ["demo", "--lip-warp", "nan"],
                                  ["reenact", "amy", "d.mp4", "-o", "o.mp4", "--lip-warp", "-0.1"],
                                  ["enroll", "v.mp4"], ["nosuch"]])
def test_bad_command_lines_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as ei:
        cli.main(argv)
    assert ei.value.code == 2


def test_opening_range_without_motion_relative_is_a_usage_error(gw, capsys, driving, tmp_path):
    """Refused before anything runs: the demo before it starts the stack, reenact before the call."""
    code, _out, err = run(capsys, "demo", "--motion", "absolute", "--opening-range", "2", "--out", str(tmp_path / "d"))
    assert code == cli.EXIT_USAGE and "--motion relative" in err and not (tmp_path / "d").exists()
    gw.servicer.add_person("amy")
    code, _out, err = run(capsys, "reenact", "amy", str(driving), "-o", str(tmp_path / "o.mp4"), "--opening-range", "2",
                          "--address", gw.address)
    assert code == cli.EXIT_USAGE and "motion='relative'" in err and not gw.servicer.reenact_headers


def test_no_gateway_address_is_a_clear_usage_error(gw, capsys):
    code, _out, err = run(capsys, "persons", "list")
    assert code == cli.EXIT_USAGE and "no gateway address" in err and "reenact up --detach" in err
    assert "Traceback" not in err


def test_address_from_environment_and_from_the_detached_stack_state(gw, capsys, monkeypatch, tmp_path):
    gw.servicer.add_person("amy")
    monkeypatch.setenv("REENACT_ADDRESS", gw.address)
    code, out, _ = run(capsys, "persons", "list")
    assert code == 0 and "amy" in out
    monkeypatch.delenv("REENACT_ADDRESS")
    monkeypatch.setattr(cli, "_read_state", lambda path: {"addresses": {"gateway": gw.address}})
    code, out, _ = run(capsys, "persons", "get", "amy")
    assert code == 0 and "person     amy" in out


# ---- registry and errors ----------------------------------------------------------------------------


def test_persons_list_get_delete_human_and_json(gw, capsys):
    for pid in ("amy", "bob", "cat"):
        gw.servicer.add_person(pid)
    code, out, _ = run(capsys, "--address", gw.address, "persons", "list")
    assert code == 0 and out.splitlines()[0].split() == ["PERSON", "NAME", "STATE", "VERSION", "PROFILE", "RES",
                                                         "CREATED"]
    assert [ln.split()[0] for ln in out.splitlines()[1:]] == ["amy", "bob", "cat"]
    code, out, _ = run(capsys, "persons", "list", "--json", "--address", gw.address, "--limit", "2")
    assert [p["person_id"] for p in json.loads(out)] == ["amy", "bob"]
    code, out, _ = run(capsys, "persons", "get", "bob", "--json", "--address", gw.address)
    got = json.loads(out)
    assert got["state"] == "READY" and got["versions"] == [1] and got["metrics"] == {"heldout_psnr_db": 30.0}
    code, out, _ = run(capsys, "persons", "delete", "bob", "--address", gw.address)
    assert code == 0 and "deleted person bob (7 objects)" in out


def test_server_errors_print_code_and_details_without_traceback(gw, capsys):
    code, out, err = run(capsys, "persons", "get", "ghost", "--address", gw.address)
    assert code == cli.EXIT_NOT_FOUND and out == ""
    assert err.startswith("error: NOT_FOUND (GetPerson): person 'ghost' not found")
    assert "reason: PERSON_NOT_FOUND" in err and "request id: req-" in err and "Traceback" not in err
    code, _out, err = run(capsys, "--json", "persons", "get", "ghost", "--address", gw.address)
    payload = json.loads(err)
    assert payload["exit_code"] == 3 and payload["error"]["code"] == "NOT_FOUND"


def test_invalid_argument_prints_field_violations_and_exits_2(gw, capsys, driving):
    code, _out, err = run(capsys, "enroll", str(driving), "--person", "9lives", "--address", gw.address)
    assert code == cli.EXIT_USAGE
    assert "error: INVALID_ARGUMENT (Enroll)" in err
    assert "  header.person_id: must start with a letter" in err and "  header.profile: unknown profile" in err


def test_unreachable_gateway_exits_4_with_a_hint(capsys):
    from reenact.launcher import free_port

    code, _out, err = run(capsys, "--timeout", "2", "--address", f"127.0.0.1:{free_port()}", "persons", "list")
    assert code == cli.EXIT_UNAVAILABLE and "error: UNAVAILABLE (ListPersons)" in err
    assert "hint: is the gateway running?" in err and "Traceback" not in err


def test_print_error_shows_retry_after_and_maps_exit_codes():
    buf = io.StringIO()
    err = ResourceExhaustedError("too many streams", retry_after=2.0, method="Reenact",
                                 violations=(FieldViolation("x", "y"),))
    assert cli.print_error(err, stream=buf) == cli.EXIT_STATE
    text = buf.getvalue()
    assert "error: RESOURCE_EXHAUSTED (Reenact): too many streams" in text and "retry after 2 s" in text
    assert "  x: y" in text
    assert cli.exit_code_for("INTERNAL") == cli.EXIT_SERVER
    assert cli.exit_code_for("UNAUTHENTICATED") == cli.EXIT_DENIED
    generic = ReenactClientError("boom", code=grpc.StatusCode.DATA_LOSS)
    assert cli.print_error(generic, stream=io.StringIO()) == cli.EXIT_SERVER


def test_api_key_flag_and_environment_are_sent(gw, capsys, monkeypatch):
    gw.servicer.api_key = "k1"
    gw.servicer.add_person("amy")
    code, _out, err = run(capsys, "persons", "list", "--address", gw.address)
    assert code == cli.EXIT_DENIED and "UNAUTHENTICATED" in err
    code, _out, _ = run(capsys, "persons", "list", "--address", gw.address, "--api-key", "k1")
    assert code == 0
    monkeypatch.setenv("REENACT_API_KEY", "k1")
    code, _out, _ = run(capsys, "persons", "list", "--address", gw.address)
    assert code == 0


# ---- enroll and jobs --------------------------------------------------------------------------------


def test_enroll_shows_progress_from_the_job_stream_and_the_final_job(gw, capsys, driving):
    code, out, err = run(capsys, "enroll", str(driving), "--person", "amy", "--profile", "cpu-quick",
                         "--address", gw.address, "--num-anchors", "8")
    assert code == 0
    assert "enrollment started job job-1 for person amy" in err
    assert "running base 10/20 eta 12s mse=0.02" in err and "running tune 20/20" in err
    assert "[########################] 100% succeeded export" in err
    assert "state      SUCCEEDED" in out and "version    1" in out
    h = gw.servicer.enroll_headers[-1]
    assert h.options.num_anchors == 8 and h.profile == "cpu-quick"


def test_enroll_no_wait_json_and_failed_job_exit_code(gw, capsys, driving):
    code, out, _ = run(capsys, "enroll", str(driving), "--person", "amy", "--no-wait", "--json",
                       "--address", gw.address)
    job = json.loads(out)
    assert code == 0 and job["state"] == "QUEUED" and job["created"] is True and gw.servicer.calls.get("WatchJob") is None
    gw.servicer.add_job("job-f", [job_proto("job-f", types_pb2.JOB_STATE_RUNNING, stage="align"),
                                  job_proto("job-f", types_pb2.JOB_STATE_FAILED, error_code=9,
                                            error_message="too little head turning")])
    code, out, _ = run(capsys, "jobs", "watch", "job-f", "--address", gw.address)
    assert code == cli.EXIT_FAILED and "error      FAILED_PRECONDITION: too little head turning" in out


def test_enroll_missing_video_is_a_usage_error(gw, capsys, tmp_path):
    code, _out, err = run(capsys, "enroll", str(tmp_path / "nope.mp4"), "--person", "amy", "--address", gw.address)
    assert code == cli.EXIT_USAGE and "no such video file" in err


def test_jobs_list_get_cancel_watch(gw, capsys):
    for i in range(3):
        gw.servicer.add_job(f"job-{i}", default_timeline(f"job-{i}", f"p{i}", f"r{i}"))
    gw.servicer.add_job("job-run", [job_proto("job-run", types_pb2.JOB_STATE_RUNNING, stage="tune")])
    code, out, _ = run(capsys, "jobs", "list", "--address", gw.address)
    assert code == 0 and len(out.splitlines()) == 5 and "SUCCEEDED" in out
    code, out, _ = run(capsys, "jobs", "get", "job-1", "--json", "--address", gw.address)
    assert json.loads(out)["job_id"] == "job-1"
    code, out, _ = run(capsys, "jobs", "cancel", "job-run", "--address", gw.address)
    assert code == 0 and "state      CANCELLED" in out
    code, out, _ = run(capsys, "jobs", "watch", "job-0", "--json", "--address", gw.address)
    states = [json.loads(line)["state"] for line in out.splitlines()]
    assert code == 0 and states == ["QUEUED", "RUNNING", "RUNNING", "SUCCEEDED"]
    code, _out, err = run(capsys, "jobs", "get", "job-zzz", "--address", gw.address)
    assert code == cli.EXIT_NOT_FOUND


def test_jobs_watch_survives_a_dropped_stream(gw, capsys):
    gw.servicer.add_job("job-0", default_timeline("job-0", "p", "r"))
    gw.servicer.watch_drop_after = 1
    code, out, _ = run(capsys, "jobs", "watch", "job-0", "--address", gw.address)
    assert code == 0 and "SUCCEEDED" in out and gw.servicer.calls["WatchJob"] == 2


# ---- reenact / render / directions ------------------------------------------------------------------


def test_reenact_writes_video_metrics_and_sends_edits(gw, capsys, driving, tmp_path):
    from reenact.video import decode_video

    gw.servicer.add_person("amy")
    out_mp4 = tmp_path / "o" / "out.mp4"
    code, out, err = run(capsys, "reenact", "amy", str(driving), "-o", str(out_mp4), "--edit", "smile=1.5",
                         "--paste-back", "--steps", "7", "--metrics", str(tmp_path / "m.json"),
                         "--motion", "relative", "--smoothing", "-1", "--opening-weight", "4", "--latent-sigma", "1",
                         "--init", "mixed", "--opening-range", "2", "--mouth-starts", "1", "--delta-lr-scale", "0.1",
                         "--lip-warp", "1", "--address", gw.address)
    assert code == 0, err
    assert f"wrote {out_mp4}" in out and "reenactment re-1" in out and "4 frames (0 without face)" in out
    assert "reenact 1/4 frames" in err and "100% reenact 4 frames in 0.5s" in err
    h = gw.servicer.reenact_headers[-1]
    assert (h.edits[0].semantic, h.edits[0].strength, h.paste_back, h.steps) == ("smile", 1.5, True, 7)
    assert (h.motion, h.smoothing_sigma, h.opening_weight, h.latent_sigma) == ("relative", -1.0, 4.0, 1.0)
    assert (h.init, h.opening_range, h.mouth_starts, h.delta_lr_scale) == ("mixed", 2.0, 1.0, 0.1)
    assert h.lip_warp == 1.0
    frames, _ = decode_video(out_mp4)
    assert frames.shape[0] == 4
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert len(metrics["frames"]) == 4 and metrics["reenactment_id"] == "re-1"


def test_reenact_max_frames_sends_frames_and_frames_dir(gw, capsys, driving, tmp_path):
    gw.servicer.add_person("amy")
    code, out, err = run(capsys, "reenact", "amy", str(driving), "-o", str(tmp_path / "o.mp4"), "--max-frames", "2",
                         "--frames-dir", str(tmp_path / "fr"), "--json", "--address", gw.address)
    assert code == 0, err
    res = json.loads(out)
    assert res["summary"]["frames"] == 2 and res["reenactment_id"] == "re-1"
    assert sorted(p.name for p in (tmp_path / "fr").iterdir()) == ["000000.png", "000001.png"]
    h = gw.servicer.reenact_headers[-1]
    assert h.fps == pytest.approx(25.0)


def test_reenact_bad_edit_unknown_person_and_non_retry(gw, capsys, driving, tmp_path):
    code, _out, err = run(capsys, "reenact", "amy", str(driving), "-o", str(tmp_path / "o.mp4"), "--edit", "smile",
                          "--address", gw.address)
    assert code == cli.EXIT_USAGE and "NAME=STRENGTH" in err
    code, _out, err = run(capsys, "reenact", "ghost", str(driving), "-o", str(tmp_path / "o.mp4"),
                          "--address", gw.address)
    assert code == cli.EXIT_NOT_FOUND and "person 'ghost' not found" in err
    assert not (tmp_path / "o.mp4").exists() and not list(tmp_path.glob("*.part"))
    gw.servicer.add_person("amy")
    gw.servicer.failures["Reenact"] = [DomainUnavailable("optimizer died")]
    n = gw.servicer.calls.get("Reenact", 0)
    code, _out, err = run(capsys, "reenact", "amy", str(driving), "-o", str(tmp_path / "o.mp4"),
                          "--address", gw.address)
    assert code == cli.EXIT_UNAVAILABLE and "optimizer died" in err and gw.servicer.calls["Reenact"] == n + 1


def test_render_and_directions(gw, capsys, driving, tmp_path):
    gw.servicer.add_person("amy")
    assert run(capsys, "reenact", "amy", str(driving), "-o", str(tmp_path / "a.mp4"), "--address", gw.address)[0] == 0
    code, out, err = run(capsys, "render", "amy", "re-1", "--edit", "yaw=-1", "-o", str(tmp_path / "r.mp4"),
                         "--address", gw.address)
    assert code == 0, err and "4 frames" in out
    assert gw.servicer.render_requests[-1].edits[0].semantic == "yaw"
    assert (tmp_path / "r.mp4").stat().st_size > 0
    code, _out, err = run(capsys, "render", "amy", "re-404", "-o", str(tmp_path / "x.mp4"), "--address", gw.address)
    assert code == cli.EXIT_NOT_FOUND
    code, out, _ = run(capsys, "directions", "amy", "--address", gw.address)
    assert code == 0 and out.splitlines()[1].split() == ["smile", "0.1", "0.80"]


# ---- stack commands and progress line ---------------------------------------------------------------


class _FakeStack:
    def __init__(self, address):
        self._address = address
        self.triton_url = "127.0.0.1:1"
        self.stopped = False
        self.state_written = None

    def address(self, name):
        if name != "gateway":
            raise KeyError(name)
        return self._address

    def write_state(self, path):
        self.state_written = path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"addresses": {"gateway": self._address}}))

    def stop(self):
        self.stopped = True


def test_up_detach_status_down_with_a_stub_launcher(gw, capsys, monkeypatch, tmp_path):
    """The launcher is stubbed here (helper B's start_local_stack is covered by its own tests)."""
    import reenact.launcher as launcher

    stack = _FakeStack(gw.address)
    calls = {}
    monkeypatch.setattr(cli, "_start_stack", lambda workdir, **kw: calls.update(workdir=workdir, **kw) or stack)
    monkeypatch.setattr(cli, "_read_state", lambda path: json.loads(path.read_text()) if path.exists() else None)
    monkeypatch.setattr(launcher, "stop_from_state", lambda path: calls.update(stopped=str(path)), raising=False)
    wd = tmp_path / "stackdir"
    code, out, _ = run(capsys, "up", "--detach", "--workdir", str(wd), "--device", "cpu")
    assert code == 0 and "export REENACT_ADDRESS=" + gw.address in out
    assert stack.state_written == wd / "stack.json" and not stack.stopped and calls["device"] == "cpu"
    code, _out, err = run(capsys, "up", "--detach", "--workdir", str(wd))
    assert code == cli.EXIT_STATE and "already recorded" in err
    gw.servicer.add_person("amy")
    code, out, _ = run(capsys, "status", "--workdir", str(wd), "--json")
    info = json.loads(out)
    assert code == 0 and info["gateway"] == gw.address and info["persons"] == 1
    code, out, _ = run(capsys, "down", "--workdir", str(wd))
    assert code == 0 and calls["stopped"] == str(wd / "stack.json") and not (wd / "stack.json").exists()
    code, _out, err = run(capsys, "down", "--workdir", str(wd))
    assert code == cli.EXIT_NOT_FOUND and "no detached stack" in err


def test_progress_line_redraws_in_place_on_a_tty_and_logs_lines_otherwise():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty = Tty()
    line = cli.ProgressLine(tty, min_interval=0.0)
    line.update(0.5, "tune 5/10")
    line.update(1.0, "done", force=True)
    line.close()
    assert tty.getvalue().count("\r") == 2 and "[############............]  50% tune 5/10" in tty.getvalue()
    assert tty.getvalue().endswith("\n")
    log = io.StringIO()
    line = cli.ProgressLine(log, log_interval=100)
    for i in range(5):
        line.update(i / 10, f"tune {i}/10", key="tune")
    line.update(0.9, "export", key="export")
    assert log.getvalue().splitlines() == ["[#.......................]   0% tune 0/10".replace("#", "."),
                                           "[######################..]  90% export"]
    assert cli.ProgressLine(io.StringIO()).bar(None).startswith("[?")


def test_status_reports_a_gateway_that_is_not_serving(gw, capsys):
    from grpc_health.v1 import health_pb2

    gw.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    code, out, _ = run(capsys, "status", "--address", gw.address)
    assert code == cli.EXIT_UNAVAILABLE and f"gateway: {gw.address} NOT_SERVING" in out
    gw.health.set("", health_pb2.HealthCheckResponse.SERVING)
    code, out, _ = run(capsys, "status", "--address", gw.address)
    assert code == 0 and "persons: 0, jobs running: 0" in out


def test_up_in_the_foreground_stops_the_stack_when_a_process_exits(gw, capsys, monkeypatch, tmp_path):
    from types import SimpleNamespace

    stack = _FakeStack(gw.address)
    stack.processes = {"gateway": SimpleNamespace(proc=SimpleNamespace(poll=lambda: 1))}
    monkeypatch.setattr(cli, "_start_stack", lambda workdir, **kw: stack)
    wd = tmp_path / "fg"
    code, out, err = run(capsys, "up", "--workdir", str(wd))
    assert code == cli.EXIT_FAILED and "gateway exited; stopping the stack" in err
    assert stack.stopped and stack.state_written == wd / "stack.json" and not (wd / "stack.json").exists()
