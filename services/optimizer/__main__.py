"""python -m services.optimizer: run the optimizer service alone."""

from __future__ import annotations

import logging
import sys
import threading

from reenact.api.optimizer.v1 import optimizer_pb2, optimizer_pb2_grpc
from reenact.runtime import ServiceServer, parse_config
from reenact.runtime.logs import setup_logging
from reenact.runtime.metrics import ServiceMetrics
from reenact.store import ArtifactStore, PersonRepository, StoreError, open_store
from services.optimizer.cache import ModelCache
from services.optimizer.config import OptimizerConfig

SERVICE_NAME = optimizer_pb2.DESCRIPTOR.services_by_name["OptimizerService"].full_name
DESCRIPTION = "Optimizer service: per-frame latent optimization in the person's P+ space (targets -> latents)."

log = logging.getLogger("reenact.optimizer")


def resolve_device(cfg: OptimizerConfig) -> str:
    import torch

    return cfg.resolve_device(bool(torch.cuda.is_available()))


def build_cache(cfg: OptimizerConfig, store: ArtifactStore, device: str) -> ModelCache:
    """LRU cache of PersonModels loaded from the store onto `device` (imported on first use: torch)."""
    from reenact.optimize.person import PersonModel

    repo = PersonRepository(store)
    return ModelCache(load=lambda pid, version: PersonModel.load(repo, pid, version, device=device),
                      latest=repo.latest_version, max_bytes=cfg.cache_bytes)


def build_server(cfg: OptimizerConfig, *, store: ArtifactStore | None = None, device: str | None = None,
                 optimizer_factory=None) -> ServiceServer:
    """The server, with `server.servicer`, `server.cache` and `server.store` attached for startup and tests.

    `optimizer_factory` replaces ReenactmentOptimizer (same signature), e.g. to wrap it in a test.
    """
    from services.optimizer.servicer import CacheCollector, OptimizerMetrics, OptimizerServicer  # torch

    store = store if store is not None else open_store(cfg.store_url)
    device = device or resolve_device(cfg)
    cache = build_cache(cfg, store, device)
    metrics = ServiceMetrics("optimizer")
    kw = {} if optimizer_factory is None else {"optimizer_factory": optimizer_factory}
    servicer = OptimizerServicer(cfg, cache, OptimizerMetrics(metrics.registry), device=device, **kw)
    server = ServiceServer(
        "optimizer", cfg,
        [lambda s: optimizer_pb2_grpc.add_OptimizerServiceServicer_to_server(servicer, s)],
        [SERVICE_NAME], metrics=metrics,
    )
    metrics.registry.register(CacheCollector(cache))
    server.servicer, server.cache, server.store = servicer, cache, store
    log.info("optimizer built", extra={"device": device, "cache_bytes": cfg.cache_bytes})
    return server


def start_when_store_ready(server: ServiceServer, store: ArtifactStore, stopping: threading.Event,
                           retry_s: float = 2.0) -> bool:
    """Mark the server SERVING once the artifact store answers a listing (retried every `retry_s` while it
    is down) and the landmark network is loaded."""
    while not stopping.is_set():
        try:
            store.list("persons")
        except StoreError as exc:
            log.warning("artifact store not ready; retrying", extra={"error": str(exc), "retry_s": retry_s})
            stopping.wait(retry_s)
            continue
        server.servicer.warm_up()
        server.set_ready(True)
        log.info("optimizer ready")
        return True
    return False


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(OptimizerConfig, "optimizer", argv, description=DESCRIPTION)
    setup_logging("optimizer", cfg.log_level, cfg.log_json)
    server = build_server(cfg)
    stopping = threading.Event()
    server.start()
    server.install_signal_handlers()
    print(f"optimizer listening on {server.address}", flush=True)
    threading.Thread(target=start_when_store_ready, args=(server, server.store, stopping), name="store-ready",
                     daemon=True).start()
    server.wait()
    stopping.set()
    return 0


if __name__ == "__main__":
    sys.exit(main())
