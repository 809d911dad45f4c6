"""Configuration of the optimizer service."""

from __future__ import annotations

from dataclasses import dataclass

from reenact.runtime.config import StoreDeviceConfig, option

GIB = 1 << 30
STATIC_STEP_MODES = ("auto", "on", "off")
STATIC_AUTO_MAX_STEPS = 10  # beyond: the eager engine (tolerance stop; launches matter less per frame)


@dataclass(frozen=True)
class OptimizerConfig(StoreDeviceConfig):
    cache_bytes: int = option(2 * GIB, "LRU budget in bytes of the person generators kept loaded")
    max_streams: int = option(8, "concurrent Optimize streams; more are refused with RESOURCE_EXHAUSTED")
    max_queue: int = option(64, "targets received but not yet answered per stream (window + look-ahead)")
    retry_after_s: float = option(1.0, "retry delay suggested to clients refused for too many streams")
    compile: bool = option(False, "torch.compile the optimization step's forward (CUDA: ~1.3x frames/s at 256 px; "
                           "the first stream of each batch size pays a compile of a few minutes)")
    static_step: str = option("auto", "run each window as the static-shape step (reenact.optimize.graphed: one CUDA "
                              "graph per stream, fixed steps, both starts optimized; H100 live p99 11 ms vs 220 ms): "
                              "auto = on CUDA for streams with init regressor (auto with an initializer) and steps "
                              f"<= {STATIC_AUTO_MAX_STEPS}; on = every stream whose init allows it (eager off CUDA); off = never")

    def validate(self) -> None:
        super().validate()
        if self.cache_bytes < 0:
            raise ValueError("cache_bytes must be >= 0")
        if self.max_streams < 1:
            raise ValueError("max_streams must be >= 1")
        if self.max_streams >= self.workers:
            raise ValueError(f"max_streams ({self.max_streams}) must be below workers ({self.workers}): "
                             "health checks and refusals need a free worker thread")
        if self.max_queue < 1:
            raise ValueError("max_queue must be >= 1")
        if self.retry_after_s < 0:
            raise ValueError("retry_after_s must be >= 0")
        if self.static_step not in STATIC_STEP_MODES:
            raise ValueError(f"static_step must be one of {STATIC_STEP_MODES}, got {self.static_step!r}")
        if self.static_step == "on" and self.compile:
            raise ValueError("static_step=on and compile exclude each other")

    def use_static_step(self, device: str, init: str, steps: int, mouth_starts: float = 0.0) -> bool:
        """Whether a stream (its resolved init mode, steps and mouth_starts) runs the static step on `device`.
        "auto" leaves a stream with mouth starts (eager engine only) to the eager engine; "on" keeps it (the
        service then refuses the stream on config.options.mouth_starts)."""
        if self.static_step == "off" or self.compile or init not in ("regressor", "anchor"):
            return False
        if self.static_step == "on":
            return True
        return (device.startswith("cuda") and init == "regressor" and steps <= STATIC_AUTO_MAX_STEPS
                and mouth_starts <= 0)

    def resolve_device(self, cuda_available: bool) -> str:
        """'cuda' or 'cpu': auto picks cuda when present; an explicit 'cuda' without a GPU is an error."""
        if self.device == "cuda" and not cuda_available:
            raise ValueError("device=cuda but no CUDA device is available")
        return "cuda" if self.device == "cuda" or (self.device == "auto" and cuda_available) else "cpu"
