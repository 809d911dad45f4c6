"""Configuration of the landmarks service."""

from __future__ import annotations

from dataclasses import dataclass

from reenact.runtime.config import ServiceConfig, option


@dataclass(frozen=True)
class LandmarksConfig(ServiceConfig):
    default_crop_size: int = option(256, "aligned crop size when a request leaves it 0 (16..1024)")
    default_sigma: float = option(2.0, "temporal smoothing sigma in frames when a request leaves it 0")
    max_faces: int = option(4, "faces MediaPipe looks for per frame (the tracked one is returned)")
    max_stream_frames: int = option(100_000, "frames accepted in one TrackFrames stream")

    def validate(self) -> None:
        super().validate()
        if not (16 <= self.default_crop_size <= 1024):
            raise ValueError("default_crop_size must be 16..1024")
        if self.default_sigma < 0:
            raise ValueError("default_sigma must be >= 0")
        if not (1 <= self.max_faces <= 16):
            raise ValueError("max_faces must be 1..16")
