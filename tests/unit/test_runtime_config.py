import json
import logging
from dataclasses import dataclass

import pytest

from reenact.runtime.config import ServiceConfig, build_parser, option, parse_config
from reenact.runtime.logs import JsonFormatter, request_id_var


@dataclass(frozen=True)
class DemoConfig(ServiceConfig):
    window: int = option(8, "frames per batch")
    use_gpu: bool = option(False, "run on the GPU")


def test_defaults_flags_env_precedence():
    cfg = parse_config(DemoConfig, "demo", [], env={})
    assert cfg.port == 0 and cfg.window == 8 and cfg.use_gpu is False
    env = {"REENACT_WINDOW": "4", "REENACT_DEMO_WINDOW": "16", "REENACT_DEMO_USE_GPU": "true"}
    cfg = parse_config(DemoConfig, "demo", [], env=env)
    assert cfg.window == 16 and cfg.use_gpu is True
    cfg = parse_config(DemoConfig, "demo", ["--window", "2", "--port", "5000"], env=env)
    assert cfg.window == 2 and cfg.port == 5000


def test_invalid_values_rejected():
    with pytest.raises(ValueError):
        parse_config(DemoConfig, "demo", ["--port", "70000"], env={})
    with pytest.raises(ValueError):
        parse_config(DemoConfig, "demo", [], env={"REENACT_DEMO_USE_GPU": "maybe"})


def test_help_documents_flags_and_env():
    text = build_parser(DemoConfig, "demo").format_help()
    assert "--window" in text and "REENACT_DEMO_WINDOW" in text and "--port" in text


def test_json_logs_carry_request_id():
    rec = logging.makeLogRecord({"msg": "hello %s", "args": ("x",), "levelname": "INFO", "name": "t",
                                 "frames": 3})
    token = request_id_var.set("rid-1")
    try:
        out = json.loads(JsonFormatter("svc").format(rec))
    finally:
        request_id_var.reset(token)
    assert out["msg"] == "hello x" and out["request_id"] == "rid-1" and out["service"] == "svc"
    assert out["frames"] == 3


def test_optimizer_static_step_rule():
    from services.optimizer.config import STATIC_AUTO_MAX_STEPS, OptimizerConfig

    auto = OptimizerConfig(store_url="x")
    assert auto.static_step == "auto"
    assert auto.use_static_step("cuda", "regressor", 3)
    assert not auto.use_static_step("cpu", "regressor", 3)  # auto: CUDA only
    assert not auto.use_static_step("cuda", "anchor", 3)    # auto keeps anchor's long first frame
    assert not auto.use_static_step("cuda", "regressor", STATIC_AUTO_MAX_STEPS + 1)
    assert not auto.use_static_step("cuda", "regressor", 3, mouth_starts=1.0)  # eager only: auto leaves it
    on = OptimizerConfig(store_url="x", static_step="on")
    assert on.use_static_step("cpu", "anchor", 30) and not on.use_static_step("cpu", "uniform", 3)
    assert on.use_static_step("cpu", "regressor", 3, mouth_starts=1.0)  # "on" keeps it: the service refuses
    assert not OptimizerConfig(store_url="x", static_step="off").use_static_step("cuda", "regressor", 1)
    assert not OptimizerConfig(store_url="x", compile=True).use_static_step("cuda", "regressor", 1)
    for bad in (dict(static_step="sometimes"), dict(static_step="on", compile=True)):
        with pytest.raises(ValueError, match="static_step"):
            OptimizerConfig(store_url="x", **bad).validate()
