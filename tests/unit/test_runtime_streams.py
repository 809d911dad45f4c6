"""StreamSlots: the shared concurrent-stream limit of the gateway and the optimizer."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Gauge

from reenact.errors import ExhaustedError
from reenact.runtime.streams import StreamSlots


def test_slots_refuse_over_the_limit_and_free_on_exit_and_error():
    gauge = Gauge("t_active", "t", registry=CollectorRegistry())
    limit = {"n": 2}
    slots = StreamSlots("streams", lambda: limit["n"], lambda: 1.5, gauge)
    with slots.take(), slots.take():
        assert slots.active == 2 and gauge._value.get() == 2
        with pytest.raises(ExhaustedError) as ei, slots.take():
            pass
        assert ei.value.retry_after_s == 1.5 and "max 2" in str(ei.value)
        assert slots.active == 2  # the refused stream took nothing
    assert slots.active == 0 and gauge._value.get() == 0
    with pytest.raises(RuntimeError), slots.take():
        raise RuntimeError("stream failed")
    assert slots.active == 0
    limit["n"] = 0  # the limit is read at each call
    with pytest.raises(ExhaustedError), slots.take():
        pass
