"""The optimizer service maps OptimizerOptions.mouth_starts (proto field 20) onto the engine's option."""

from __future__ import annotations

import pytest

from reenact.api.optimizer.v1 import optimizer_pb2 as pb
from reenact.errors import InvalidInputError
from reenact.optimize.engine import MAX_MOUTH_STEP
from services.optimizer.servicer import options_from_proto


def test_optimizer_service_maps_the_mouth_starts_option():
    assert options_from_proto(pb.OptimizerOptions()).mouth_starts == 0.0  # unset: off
    opts = options_from_proto(pb.OptimizerOptions(mouth_starts=1.0, init="mixed"))
    assert (opts.mouth_starts, opts.init) == (1.0, "mixed")
    assert options_from_proto(pb.OptimizerOptions(mouth_starts=MAX_MOUTH_STEP)).mouth_starts == 1.5
    assert options_from_proto(pb.OptimizerOptions(motion="absolute", mouth_starts=0.5)).mouth_starts == 0.5  # any motion


@pytest.mark.parametrize("s", [-0.5, 1.51, 2.0, float("nan"), float("inf")])
def test_optimizer_service_refuses_a_bad_mouth_starts_by_its_request_path(s):
    """Out of [0, 1.5] or non-finite: INVALID_ARGUMENT with one violation on config.options.mouth_starts."""
    with pytest.raises(InvalidInputError) as err:
        options_from_proto(pb.OptimizerOptions(mouth_starts=s))
    assert err.value.kind == "INVALID_ARGUMENT"
    assert [v.field for v in err.value.violations] == ["config.options.mouth_starts"]
