"""delta_lr_scale from the user's side: the SDK builds ReenactHeader.delta_lr_scale (field 17), the gateway's
pipeline puts it into the optimizer stream's OptimizerOptions.delta_lr_scale (field 14), and the optimizer
service maps that onto the engine's option (0 = the engine's default, 0.02). The gateway's checks and the value
reaching the optimizer through the real gateway: tests/service/test_gateway.py; the CLI flag and the client
keyword through a fake gateway: tests/unit/test_cli.py, tests/unit/test_client.py."""

from __future__ import annotations

import pytest

from reenact.api.gateway.v1 import gateway_pb2
from reenact.api.optimizer.v1 import optimizer_pb2 as pb
from reenact.client._common import MAX_DELTA_LR_SCALE, reenact_header
from reenact.errors import InvalidInputError
from reenact.optimize.engine import OptimizerOptions
from services.gateway.pipeline import ReenactPipeline, StreamSpec
from services.optimizer.servicer import options_from_proto

HEADER = {"output": "frames", "frame_encoding": "png", "paste_back": False, "edits": (), "steps": 0, "window": 0,
          "fps": 0.0, "person_version": 0}


def test_optimizer_service_maps_the_delta_lr_scale_option():
    assert options_from_proto(pb.OptimizerOptions()).delta_lr_scale == OptimizerOptions().delta_lr_scale == 0.02
    opts = options_from_proto(pb.OptimizerOptions(delta_lr_scale=0.1, init="mixed"))
    assert (opts.delta_lr_scale, opts.init, opts.learning_rate) == (0.1, "mixed", OptimizerOptions().learning_rate)
    assert options_from_proto(pb.OptimizerOptions(delta_lr_scale=MAX_DELTA_LR_SCALE)).delta_lr_scale == 10.0


@pytest.mark.parametrize("v", [-1.0, 10.01, 11.0, float("nan"), float("inf")])
def test_optimizer_service_refuses_a_bad_delta_lr_scale_by_its_request_path(v):
    """Out of [0, 10] or non-finite: INVALID_ARGUMENT with one violation on config.options.delta_lr_scale."""
    with pytest.raises(InvalidInputError) as err:
        options_from_proto(pb.OptimizerOptions(delta_lr_scale=v))
    assert err.value.kind == "INVALID_ARGUMENT"
    assert [x.field for x in err.value.violations] == ["config.options.delta_lr_scale"]


@pytest.mark.parametrize("v", [0.0, 0.1, 10.0])
def test_the_gateway_pipeline_sends_the_streams_delta_lr_scale_to_the_optimizer(v):
    """The optimizer stream's first message (its config) carries the header's value as sent (0 = unset: the
    optimizer's default)."""
    spec = StreamSpec(reenactment_id="re-1", person_id="amy", version=3, anchors=None, edits=[],
                      output=gateway_pb2.OUTPUT_KIND_FRAMES, encoding=0, paste_back=False, steps=5, window=2,
                      fps=25.0, resolution=32, num_ws=4, w_dim=16, crop_size=64, mouth_starts=1.0, delta_lr_scale=v)
    pipe = ReenactPipeline(peers=None, spec=spec, source=iter(()), writer=None, queue_frames=2, max_in_flight=4,
                           render_batch=1)
    first = next(pipe._optimizer_requests())
    assert (first.config.person_id, first.config.person_version) == ("amy", 3)
    opts = first.config.options
    assert (opts.delta_lr_scale, opts.mouth_starts, opts.steps, opts.window) == (v, 1.0, 5, 2)
    assert options_from_proto(opts).delta_lr_scale == (v or 0.02)


def test_the_sdk_header_carries_delta_lr_scale_and_refuses_bad_values_locally():
    assert reenact_header("amy", **HEADER).delta_lr_scale == 0.0  # unset: the server's default
    assert reenact_header("amy", **HEADER, delta_lr_scale=0.1).delta_lr_scale == pytest.approx(0.1)
    assert reenact_header("amy", **HEADER, delta_lr_scale="10").delta_lr_scale == 10.0
    for v in (-1, 10.01, 11, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="delta_lr_scale"):
            reenact_header("amy", **HEADER, delta_lr_scale=v)
