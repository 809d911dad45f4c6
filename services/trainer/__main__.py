"""python -m services.trainer: run the trainer service alone."""

from __future__ import annotations

import logging
import signal
import sys
import threading

from prometheus_client.core import GaugeMetricFamily

from reenact.api.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from reenact.errors import UnavailableError
from reenact.runtime import ServiceServer, parse_config
from reenact.runtime.logs import setup_logging
from reenact.store import StoreError, open_store
from services.trainer.config import TrainerConfig
from services.trainer.jobs import JobManager, RunFn
from services.trainer.servicer import TrainerServicer

SERVICE_NAME = trainer_pb2.DESCRIPTOR.services_by_name["TrainerService"].full_name
DESCRIPTION = "Trainer service: enrollment jobs (MyStyle personalization) with a persistent queue."

log = logging.getLogger("reenact.trainer")


class JobsCollector:
    """`reenact_trainer_jobs{state}`: jobs known to this trainer by state (queued = the scaling signal)."""

    def __init__(self, manager: JobManager) -> None:
        self.manager = manager

    def collect(self):
        fam = GaugeMetricFamily("reenact_trainer_jobs", "Jobs known to this trainer, by state", labels=["state"])
        for state, n in self.manager.counts().items():
            fam.add_metric([state.lower()], n)
        yield fam


def enrollment_run_fn(cfg: TrainerConfig) -> RunFn:
    """The real training function, imported on first use (torch, models) so tests never need it."""

    def run(job, ctx):
        from reenact.enroll import run_enrollment_job

        return run_enrollment_job(job, ctx, cfg)

    return run


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def build_manager(cfg: TrainerConfig, *, store=None, run_fn: RunFn | None = None) -> JobManager:
    """JobManager on the configured store (opening it touches nothing remote) with the real run_fn."""
    store = store if store is not None else open_store(cfg.store_url)
    cuda = cfg.device != "cpu" and _cuda_available()
    return JobManager(store, run_fn or enrollment_run_fn(cfg), workers=1,
                      persist_every_s=cfg.progress_persist_s, default_profile=cfg.default_profile(cuda),
                      keep_checkpoints=cfg.keep_checkpoints)


def build_server(cfg: TrainerConfig, manager: JobManager) -> ServiceServer:
    servicer = TrainerServicer(manager)
    server = ServiceServer(
        "trainer", cfg,
        [lambda s: trainer_pb2_grpc.add_TrainerServiceServicer_to_server(servicer, s)],
        [SERVICE_NAME],
    )
    server.metrics.registry.register(JobsCollector(manager))
    return server


def start_when_store_ready(server: ServiceServer, manager: JobManager, stopping: threading.Event,
                           retry_s: float = 2.0) -> bool:
    """Recover the jobs (needs the store), then mark the server SERVING; retries while the store is down."""
    while not stopping.is_set():
        try:
            requeued = manager.start()
        except StoreError as exc:  # the store is down or unreadable: stay NOT_SERVING and retry
            log.warning("artifact store not ready; retrying", extra={"error": str(exc), "retry_s": retry_s})
            stopping.wait(retry_s)
            continue
        except UnavailableError:  # closed by a shutdown meanwhile
            return False
        if stopping.is_set():
            return False
        server.set_ready(True)
        log.info("trainer ready", extra={"requeued_jobs": requeued})
        return True
    return False


def install_shutdown(server: ServiceServer, manager: JobManager, stopping: threading.Event,
                     cfg: TrainerConfig) -> None:
    """SIGTERM/SIGINT: NOT_SERVING, interrupt the running job (it stays RUNNING and resumes on the next
    start), end the watch streams, then the runtime's drain and graceful stop."""

    def shutdown() -> None:
        stopping.set()
        server.set_ready(False)
        manager.close(timeout=cfg.drain_seconds)
        server.stop()

    def handler(signum, _frame) -> None:
        log.info("signal received", extra={"signal": signal.Signals(signum).name})
        threading.Thread(target=shutdown, name="shutdown", daemon=True).start()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(TrainerConfig, "trainer", argv, description=DESCRIPTION)
    setup_logging("trainer", cfg.log_level, cfg.log_json)
    manager = build_manager(cfg)
    server = build_server(cfg, manager)
    stopping = threading.Event()
    server.start()
    install_shutdown(server, manager, stopping, cfg)
    print(f"trainer listening on {server.address}", flush=True)
    threading.Thread(target=start_when_store_ready, args=(server, manager, stopping), name="recover",
                     daemon=True).start()
    server.wait()
    manager.close(timeout=cfg.grace_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
