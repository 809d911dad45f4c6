"""The optimizer service maps OptimizerOptions.opening_range (proto field 19) onto the engine's option."""

from __future__ import annotations

import pytest

from reenact.api.optimizer.v1 import optimizer_pb2 as pb
from reenact.errors import InvalidInputError
from services.optimizer.servicer import options_from_proto


def test_optimizer_service_maps_the_opening_range_option():
    assert options_from_proto(pb.OptimizerOptions()).opening_range == 0.0  # unset: off
    opts = options_from_proto(pb.OptimizerOptions(motion="relative", opening_range=2.0))
    assert (opts.motion, opts.opening_range) == ("relative", 2.0)
    assert options_from_proto(pb.OptimizerOptions(motion="relative", opening_range=10.0)).opening_range == 10.0


@pytest.mark.parametrize("motion, k", [("relative", -0.5), ("relative", 10.5), ("relative", float("nan")),
                                       ("absolute", 2.0), ("", 2.0)])
def test_optimizer_service_refuses_a_bad_opening_range_by_its_request_path(motion, k):
    """Out of [0, 10], non-finite, or > 0 without motion "relative" (also unset: the default is absolute):
    INVALID_ARGUMENT with one violation on config.options.opening_range."""
    with pytest.raises(InvalidInputError) as err:
        options_from_proto(pb.OptimizerOptions(motion=motion, opening_range=k))
    assert err.value.kind == "INVALID_ARGUMENT"
    assert [v.field for v in err.value.violations] == ["config.options.opening_range"]
    if motion != "relative":
        assert "relative" in err.value.violations[0].description
