"""The gateway's DrivingSink (services/gateway/pipeline.py): the source stage adds frames while the RPC thread may
close the sink (a cancelled stream or a client deadline does not wait for the source). Closing the muxer under a
running mux crashed libavformat, and with it the whole gateway (a segfault seen in CI); these tests run that race."""
import threading

import av
import numpy as np

from services.gateway.pipeline import DrivingSink


def _frame(i: int) -> np.ndarray:
    rgb = np.zeros((48, 64, 3), np.uint8)
    rgb[:, (i * 3) % 64] = 255
    return rgb


def test_finish_writes_a_readable_mp4(tmp_path):
    sink = DrivingSink(tmp_path / "driving.mp4", 25.0)
    for i in range(12):
        sink.add(_frame(i))
    path = sink.finish()
    sink.close()
    with av.open(str(path)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 12


def test_close_from_another_thread_while_adding_is_safe(tmp_path):
    for trial in range(20):
        sink = DrivingSink(tmp_path / f"d{trial}.mp4", 25.0)
        started, errors = threading.Event(), []

        def feed(s=sink, st=started, errs=errors):
            try:
                for i in range(400):
                    s.add(_frame(i))
                    st.set()
            except Exception as exc:  # noqa: BLE001 - reported below
                errs.append(exc)

        t = threading.Thread(target=feed)
        t.start()
        assert started.wait(30)
        sink.close()  # while the feeder is mid-stream
        t.join(60)
        assert not t.is_alive() and errors == []
        assert sink.finish() is None  # closed: nothing more is written
        sink.add(_frame(0))  # and adding after close is a no-op, not a crash
