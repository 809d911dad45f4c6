"""Configuration of the gateway service."""

from __future__ import annotations

from dataclasses import dataclass

from reenact.runtime.config import ServiceConfig, option

MIB = 1 << 20
PROFILES = ("", "cpu-quick", "gpu")


@dataclass(frozen=True)
class GatewayConfig(ServiceConfig):
    store_url: str = option("./.reenact/store", "artifact store: a local directory, file:///dir or s3://bucket/prefix")
    landmarks_address: str = option("127.0.0.1:50051", "landmarks service gRPC address (host:port)")
    trainer_address: str = option("127.0.0.1:50052", "trainer service gRPC address (host:port)")
    optimizer_address: str = option("127.0.0.1:50053", "optimizer service gRPC address (host:port)")
    triton_url: str = option("127.0.0.1:8001", "Triton gRPC address (host:port) serving gen_<person>")
    triton_tls: bool = option(False, "TLS to Triton: tls_cert_file/tls_key_file as client certificate, Triton's "
                                     "certificate checked against tls_ca_file (for tls_server_name if set)")
    model_repository: str = option("", "Triton model repository directory shared with the trainer: DeletePerson "
                                       "removes gen_<person> from it (empty = only unload the model)")
    default_profile: str = option("", "profile of an enrollment whose header names none ('' = the trainer's choice)")
    # input limits
    max_video_mb: int = option(512, "largest uploaded video container (self-scan or driving video), MiB")
    max_side: int = option(4096, "largest width or height of an uploaded video or driving frame, pixels")
    max_frames: int = option(20_000, "most frames of one uploaded video or one Reenact stream")
    max_duration_s: float = option(900.0, "longest uploaded video, seconds")
    precheck_frames: int = option(5, "frames of a self-scan checked for a face (landmarks DetectImage) before "
                                     "its job is queued (0 = no check)")
    # reenactment pipeline
    max_streams: int = option(4, "concurrent Reenact/Render streams; more get RESOURCE_EXHAUSTED")
    queue_frames: int = option(8, "capacity of each queue between two pipeline stages, frames")
    max_in_flight: int = option(64, "frames of one stream between input and output at once (bounds memory)")
    render_batch: int = option(8, "most frames rendered by one Triton request")
    crop_size: int = option(256, "aligned crop size asked from the landmarks service (16..1024)")
    store_driving: bool = option(True, "store the driving video with each reenactment (Render paste_back needs it)")
    peer_timeout_s: float = option(30.0, "deadline of unary calls to the peers, seconds")
    health_poll_s: float = option(1.0, "seconds between readiness checks of the peers and Triton")
    retry_after_s: float = option(2.0, "retry delay suggested with RESOURCE_EXHAUSTED")
    # auth
    api_keys_file: str = option("", "JSON file of API keys (services/gateway/README.md); empty = auth off (every "
                                    "caller sees every person; logged loudly when not bound to loopback)")

    def validate(self) -> None:
        super().validate()
        if not self.store_url:
            raise ValueError("store_url must not be empty")
        for name in ("landmarks_address", "trainer_address", "optimizer_address", "triton_url"):
            if not getattr(self, name):
                raise ValueError(f"{name} must not be empty")
        if self.default_profile not in PROFILES:
            raise ValueError(f"default_profile must be one of {PROFILES}, got {self.default_profile!r}")
        self._validate_limits()
        self._validate_pipeline()
        from reenact.runtime import tls

        tls.validate_triton(self)
        if self.api_keys_file:
            from pathlib import Path

            if not Path(self.api_keys_file).is_file():
                raise ValueError(f"api_keys_file: no such file {self.api_keys_file!r}")

    def _validate_limits(self) -> None:
        if not (1 <= self.max_video_mb <= 1 << 20):
            raise ValueError("max_video_mb must be >= 1")
        if not (16 <= self.max_side <= 8192):
            raise ValueError("max_side must be 16..8192")
        if self.max_frames < 1 or self.max_duration_s <= 0:
            raise ValueError("max_frames and max_duration_s must be > 0")
        if self.precheck_frames < 0:
            raise ValueError("precheck_frames must be >= 0")

    def _validate_pipeline(self) -> None:
        if self.max_streams < 1:
            raise ValueError("max_streams must be >= 1")
        if self.max_streams >= self.workers:
            raise ValueError(f"max_streams ({self.max_streams}) must be below workers ({self.workers}): "
                             "unary calls, watches and refusals need free worker threads")
        if self.queue_frames < 1 or self.max_in_flight < 2 or self.render_batch < 1:
            raise ValueError("queue_frames >= 1, max_in_flight >= 2 and render_batch >= 1 are required")
        if not (16 <= self.crop_size <= 1024):
            raise ValueError("crop_size must be 16..1024")
        if self.peer_timeout_s <= 0 or self.health_poll_s <= 0 or self.retry_after_s < 0:
            raise ValueError("peer_timeout_s and health_poll_s must be > 0, retry_after_s >= 0")

    @property
    def max_video_bytes(self) -> int:
        return self.max_video_mb * MIB
