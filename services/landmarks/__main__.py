"""python -m services.landmarks: run the landmarks service alone."""

from __future__ import annotations

import sys

from reenact.api.landmarks.v1 import landmarks_pb2, landmarks_pb2_grpc
from reenact.runtime import ServiceServer, parse_config
from reenact.runtime.logs import setup_logging
from services.landmarks.config import LandmarksConfig

SERVICE_NAME = landmarks_pb2.DESCRIPTOR.services_by_name["LandmarksService"].full_name
DESCRIPTION = "Landmarks service: MediaPipe face mesh tracking, FFHQ-style alignment, temporal smoothing."


def build_server(cfg: LandmarksConfig) -> ServiceServer:
    from services.landmarks.servicer import LandmarksServicer  # imports mediapipe: only when serving

    servicer = LandmarksServicer(cfg)
    server = ServiceServer(
        "landmarks", cfg,
        [lambda s: landmarks_pb2_grpc.add_LandmarksServiceServicer_to_server(servicer, s)],
        [SERVICE_NAME],
    )
    server.servicer = servicer
    return server


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(LandmarksConfig, "landmarks", argv, description=DESCRIPTION)
    setup_logging("landmarks", cfg.log_level, cfg.log_json)
    server = build_server(cfg)
    server.start()
    server.install_signal_handlers()
    server.servicer.warm_up()  # MediaPipe loads its models from the wheel; SERVING only once that worked
    server.set_ready(True)
    print(f"landmarks listening on {server.address}", flush=True)
    server.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
