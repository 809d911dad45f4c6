"""The load driver's frame pacing (benchmarks/load/loadtest.py `--pace`), on a fake clock: no stack, no sleeps."""

from __future__ import annotations

import pytest

from benchmarks.load.loadtest import _timed, parse_args


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


def test_paced_frames_are_released_at_the_camera_rate():
    clock, sent = FakeClock(), {}
    out = []
    for f in _timed(list("abcde"), sent, pace=25.0, clock=clock, sleep=clock.sleep):
        out.append(f)
        clock.now += 0.01  # gRPC takes 10 ms per frame: faster than the camera, so the driver waits
    assert out == list("abcde")
    assert [round(sent[i] - 100.0, 6) for i in range(5)] == [0.0, 0.04, 0.08, 0.12, 0.16]
    assert clock.slept == pytest.approx([0.03] * 4)


def test_a_slow_consumer_is_not_paced_further_and_unpaced_never_sleeps():
    clock, sent = FakeClock(), {}
    for _ in _timed(range(3), sent, pace=25.0, clock=clock, sleep=clock.sleep):
        clock.now += 0.1  # slower than 25 frames/s: no extra waiting, frames go as soon as taken
    assert clock.slept == [] and [round(sent[i] - 100.0, 6) for i in range(3)] == [0.0, 0.1, 0.2]
    clock2, sent2 = FakeClock(), {}
    assert list(_timed(range(4), sent2, clock=clock2, sleep=clock2.sleep)) == [0, 1, 2, 3] and clock2.slept == []


def test_pace_option():
    assert parse_args([]).pace == 0.0 and parse_args(["--pace", "15"]).pace == 15.0
