"""python -m services.gateway: run the gateway (the public ReenactService) alone."""

from __future__ import annotations

import logging
import sys

from reenact.api.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from reenact.runtime import ServiceServer, parse_config
from reenact.runtime.logs import setup_logging
from reenact.runtime.metrics import ServiceMetrics
from reenact.store import ArtifactStore, open_store
from services.gateway.auth import GatewayAuth, KeysFile, is_loopback
from services.gateway.config import GatewayConfig
from services.gateway.peers import PEERS, Peers, ReadinessPoller
from services.gateway.servicer import GatewayMetrics, GatewayServicer

SERVICE_NAME = gateway_pb2.DESCRIPTOR.services_by_name["ReenactService"].full_name
DESCRIPTION = ("Gateway: the public ReenactService (enroll, reenact, render, edit, persons) composed from the "
               "landmarks, trainer and optimizer services and Triton.")

log = logging.getLogger("reenact.gateway")


def build_server(cfg: GatewayConfig, *, store: ArtifactStore | None = None, peers: Peers | None = None) -> ServiceServer:
    """The server (NOT_SERVING), with `server.servicer`, `server.peers` and `server.poller` attached.

    `server.poller.start()` begins polling the peers; the server turns SERVING once landmarks, trainer,
    optimizer and Triton all answer ready, and NOT_SERVING again when one of them stops answering.
    """
    store = store if store is not None else open_store(cfg.store_url)
    peers = peers or Peers(cfg.landmarks_address, cfg.trainer_address, cfg.optimizer_address, cfg.triton_url,
                           timeout=cfg.peer_timeout_s, tls_config=cfg)
    metrics = ServiceMetrics("gateway")
    gw_metrics = GatewayMetrics(metrics.registry)
    servicer = GatewayServicer(cfg, store, peers, gw_metrics)
    server = ServiceServer(
        "gateway", cfg,
        [lambda s: gateway_pb2_grpc.add_ReenactServiceServicer_to_server(servicer, s)],
        [SERVICE_NAME], metrics=metrics, authenticator=build_auth(cfg),
    )
    for peer in (*PEERS, "triton"):
        gw_metrics.peer_ready.labels(peer).set(0)

    def on_change(ready: bool, states: dict[str, bool]) -> None:
        for peer, up in states.items():
            gw_metrics.peer_ready.labels(peer).set(1 if up else 0)
        server.set_ready(ready)

    server.servicer, server.peers, server.store = servicer, peers, store
    server.poller = ReadinessPoller(peers, cfg.health_poll_s, on_change)
    return server


def build_auth(cfg: GatewayConfig) -> GatewayAuth | None:
    """The API-key authenticator, or None (auth off: logged as an error when the gateway is reachable from
    other machines, as a warning on loopback)."""
    if cfg.api_keys_file:
        return GatewayAuth(KeysFile(cfg.api_keys_file))
    if is_loopback(cfg.host):
        log.warning("API-key auth is OFF (no --api-keys-file): every caller sees every person; fine on loopback only",
                    extra={"host": cfg.host})
    else:
        for _ in range(3):  # hard to miss in a log stream
            log.error("SECURITY: API-key auth is OFF on a non-loopback address: anyone who can reach "
                      f"{cfg.host}:{cfg.port} can read, reenact and delete every person. Set --api-keys-file "
                      "(REENACT_GATEWAY_API_KEYS_FILE).", extra={"host": cfg.host})
    return None


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(GatewayConfig, "gateway", argv, description=DESCRIPTION)
    setup_logging("gateway", cfg.log_level, cfg.log_json)
    server = build_server(cfg)
    server.start()
    server.install_signal_handlers()
    print(f"gateway listening on {server.address}", flush=True)
    server.poller.start()
    server.wait()
    server.poller.stop()
    server.peers.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
