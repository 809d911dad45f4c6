"""The load driver (benchmarks/load/loadtest.py) for ~15 s: 2 Reenact streams on the local stack.

It starts the real stack, enrolls one person (setup, about a minute on 2 cores), then measures; the report
must show no errors and plausible numbers (frames flowing, ordered percentiles, every service's RSS).
"""

from __future__ import annotations

import pytest

from benchmarks.load.loadtest import parse_args, print_report, run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_load_driver_smoke(tmp_path):
    args = parse_args(["--duration", "15", "--warmup", "3", "--streams", "2", "--enrollers", "0",
                       "--frames", "8", "--steps", "2", "--workdir", str(tmp_path)])
    rep = run(args, log=lambda m: None)
    print_report(rep)
    assert rep["errors"] == 0 and rep["errors_by_code"] == {} and rep["reenact_error_rate"] == 0.0
    assert rep["window_s"] == pytest.approx(15, abs=0.5)
    assert rep["calls"] >= 2 and rep["frames"] >= 2 * 8
    assert 0.5 < rep["frames_per_s"] < 1000
    lat = rep["frame_latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"] < 60_000
    assert 0 < rep["call_latency_ms"]["p50"] <= rep["call_latency_ms"]["p99"]
    assert set(rep["rss"]) == {"triton", "landmarks", "trainer", "optimizer", "gateway"}
    for name, r in rep["rss"].items():
        assert 20 < r["start_mib"] <= r["max_mib"] < 8192, (name, r)
    assert rep["cpu"]["gateway"]["cores"] > 0 and rep["cpu"]["gateway"]["ms_per_frame"] > 0
    assert rep["machine"]["cpus"] >= 1 and rep["setup_enroll_s"] > 0
