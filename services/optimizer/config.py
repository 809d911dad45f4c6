"""Configuration of the optimizer service."""

from __future__ import annotations

from dataclasses import dataclass

from reenact.runtime.config import StoreDeviceConfig, option

GIB = 1 << 30


@dataclass(frozen=True)
class OptimizerConfig(StoreDeviceConfig):
    cache_bytes: int = option(2 * GIB, "LRU budget in bytes of the person generators kept loaded")
    max_streams: int = option(8, "concurrent Optimize streams; more are refused with RESOURCE_EXHAUSTED")
    max_queue: int = option(64, "targets received but not yet answered per stream (window + look-ahead)")
    retry_after_s: float = option(1.0, "retry delay suggested to clients refused for too many streams")
    compile: bool = option(False, "torch.compile the optimization step's forward (CUDA: ~1.3x frames/s at 256 px; "
                           "the first stream of each batch size pays a compile of a few minutes)")

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

    def resolve_device(self, cuda_available: bool) -> str:
        """'cuda' or 'cpu': auto picks cuda when present; an explicit 'cuda' without a GPU is an error."""
        if self.device == "cuda" and not cuda_available:
            raise ValueError("device=cuda but no CUDA device is available")
        return "cuda" if self.device == "cuda" or (self.device == "auto" and cuda_available) else "cpu"
