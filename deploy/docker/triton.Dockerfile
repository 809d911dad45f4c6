# syntax=docker/dockerfile:1.7
# Triton Inference Server for reenact's gen_<person> models: the tritonserver 2.51 binary that ships in
# the nvidia-pytriton wheel (python backend only), with the python backend's dependencies (torch, numpy,
# reenact itself, at the versions of requirements/lock.txt) in the same venv the backend stub uses.
# The same layout as the embedded default (reenact/tritonserve/server.py): the install is copied out of
# site-packages with the stub built for this Python, LD_LIBRARY_PATH = the interpreter's LIBDIR and
# nvidia_pytriton.libs, and the venv's bin first on PATH (the stub's embedded Python finds the venv).
# Build from the repository root:
#   docker build -f deploy/docker/triton.Dockerfile -t REGISTRY/reenact/triton:0.1.0 .
#   docker build -f deploy/docker/triton.Dockerfile --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 \
#     -t REGISTRY/reenact/triton-cuda:0.1.0 .      # GPU (the node's driver comes in through the NVIDIA runtime)
# Base image: python:3.11-slim-bookworm, pinned by tag; for a release pin its digest in both FROM lines:
#   FROM python:3.11-slim-bookworm@sha256:<DIGEST>   (docker buildx imagetools inspect python:3.11-slim-bookworm)
# The wheel's tritonserver needs glibc >= 2.35 (manylinux_2_35): bookworm has 2.36.

# ---------------------------------------------------------------------------------------------- build
FROM python:3.11-slim-bookworm AS build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY requirements/lock.txt requirements/lock.txt
RUN grep -E '^torch==' requirements/lock.txt > /tmp/torch.txt \
 && /opt/venv/bin/pip install --index-url "${TORCH_INDEX_URL}" -r /tmp/torch.txt
COPY pyproject.toml README.md ./
COPY reenact reenact
COPY services services
RUN /opt/venv/bin/pip install -c requirements/lock.txt . \
 && /opt/venv/bin/pip check
# tritonserver + python backend + the stub for this Python into /opt/tritonserver
RUN REENACT_TRITON_HOME=/opt/tritonserver /opt/venv/bin/python -c \
    "from reenact.tritonserve.server import prepare_install; print(prepare_install().binary)"

# -------------------------------------------------------------------------------------------- runtime
FROM python:3.11-slim-bookworm AS runtime
RUN groupadd --gid 10001 reenact \
 && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin reenact
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/tritonserver /opt/tritonserver
ENV PATH=/opt/venv/bin:$PATH \
    LD_LIBRARY_PATH=/usr/local/lib:/opt/venv/lib/python3.11/site-packages/nvidia_pytriton.libs \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
WORKDIR /tmp
USER 10001:10001
# gRPC 8001, metrics 8002 (HTTP 8000 is off in the Deployment)
EXPOSE 8001 8002
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
  CMD ["python", "-c", "import sys, grpc; from grpc_health.v1 import health_pb2 as p, health_pb2_grpc as g; ch = grpc.insecure_channel('127.0.0.1:8001'); sys.exit(0 if g.HealthStub(ch).Check(p.HealthCheckRequest(), timeout=3).status == p.HealthCheckResponse.SERVING else 1)"]
# The Deployment adds --model-repository=s3://..., --model-control-mode=explicit and the ports.
ENTRYPOINT ["/opt/tritonserver/bin/tritonserver", "--backend-directory=/opt/tritonserver/backends", "--cache-directory=/opt/tritonserver/caches"]
