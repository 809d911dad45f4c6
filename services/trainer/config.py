"""Configuration of the trainer service."""

from __future__ import annotations

from dataclasses import dataclass

from reenact.runtime.config import StoreDeviceConfig, option


@dataclass(frozen=True)
class TrainerConfig(StoreDeviceConfig):
    model_repository: str = option("./.reenact/model_repository",
                                   "Triton model repository gen_<person> is published to: a local directory, or "
                                   "an S3 URL in Triton's form (s3://bucket/prefix, s3://http://host:port/bucket/"
                                   "prefix) or file:///dir (staged, then published by one config.pbtxt write)")
    triton_url: str = option("", "Triton gRPC address (host:port) to load gen_<person> into after publishing; "
                                 "dns:///host:port (a headless Service) loads on every replica; empty = do not load")
    triton_tls: bool = option(False, "TLS to Triton: tls_cert_file/tls_key_file as client certificate, Triton's "
                                     "certificate checked against tls_ca_file (for tls_server_name if set)")
    checkpoint_every_s: float = option(120.0, "seconds between training checkpoints (resume after a restart)")
    progress_persist_s: float = option(5.0, "at most one job-record write per this many seconds of progress")
    keep_checkpoints: bool = option(False, "keep jobs/<job_id>/ckpt/ after a job ends (debugging)")

    def validate(self) -> None:
        super().validate()
        if not self.model_repository:
            raise ValueError("model_repository must not be empty")
        if self.model_repository.startswith("s3://"):
            from reenact.tritonserve.repository import parse_s3_repository_url

            try:
                parse_s3_repository_url(self.model_repository)
            except Exception as exc:  # noqa: BLE001 - a config error, whatever the parser raised
                raise ValueError(f"model_repository: {exc}") from None
        elif "://" in self.model_repository and not self.model_repository.startswith("file:///"):
            raise ValueError(f"model_repository: use a directory, s3://... or file:///..., "
                             f"got {self.model_repository!r}")
        from reenact.runtime import tls

        tls.validate_triton(self)
        if self.checkpoint_every_s <= 0:
            raise ValueError("checkpoint_every_s must be > 0")
        if self.progress_persist_s < 0:
            raise ValueError("progress_persist_s must be >= 0")

    def default_profile(self, cuda_available: bool) -> str:
        """The profile of a job that names none: 'gpu' when training runs on CUDA, else 'cpu-quick'."""
        on_cuda = self.device == "cuda" or (self.device == "auto" and cuda_available)
        return "gpu" if on_cuda else "cpu-quick"
