"""Typed, frozen service configuration read from flags and environment variables.

Every field of a config dataclass becomes a `--flag` and an env var `REENACT_<SERVICE>_<FIELD>`
(or the shared `REENACT_<FIELD>`); precedence: flag > service env > shared env > default.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import typing
from dataclasses import dataclass, field


def option(default, help: str, **kw):  # noqa: A002 - mirrors argparse
    """A config field with its --help text."""
    return field(default=default, metadata={"help": help, **kw})


@dataclass(frozen=True)
class ServiceConfig:
    """Options every service has."""

    host: str = option("127.0.0.1", "address to bind the gRPC server to (0.0.0.0 in containers)")
    port: int = option(0, "gRPC port (0 = pick a free port and log it)")
    metrics_port: int = option(-1, "port of the Prometheus /metrics HTTP endpoint (0 = free port, -1 = off)")
    max_message_mb: int = option(16, "max gRPC message size in MiB, both directions")
    workers: int = option(16, "gRPC worker threads (max concurrent RPCs)")
    drain_seconds: float = option(10.0, "on SIGTERM: seconds to wait for in-flight RPCs after NOT_SERVING")
    grace_seconds: float = option(5.0, "on SIGTERM: grace period given to server.stop() after draining")
    log_level: str = option("INFO", "log level (DEBUG, INFO, WARNING, ERROR)")
    log_json: bool = option(True, "write logs as JSON lines (false: plain text)")
    tls_cert_file: str = option("", "PEM certificate chain of this service: serve TLS only (empty = plaintext)")
    tls_key_file: str = option("", "PEM private key of tls_cert_file")
    tls_ca_file: str = option("", "PEM CA bundle: clients must present a certificate it signed (mTLS), and peer "
                                  "services' certificates are checked against it")
    tls_require_client_cert: bool = option(True, "with tls_ca_file: refuse clients without a valid certificate")
    tls_server_name: str = option("", "name peer certificates are checked for (default: the peer address's host)")

    def validate(self) -> None:
        if not (0 <= self.port <= 65535):
            raise ValueError(f"port must be 0..65535, got {self.port}")
        if not (-1 <= self.metrics_port <= 65535):
            raise ValueError(f"metrics_port must be -1..65535, got {self.metrics_port}")
        if not (1 <= self.max_message_mb <= 2047):
            raise ValueError(f"max_message_mb must be 1..2047, got {self.max_message_mb}")
        if self.workers < 1:
            raise ValueError("workers must be >= 1")
        from reenact.runtime import tls

        tls.validate(self)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class StoreDeviceConfig(ServiceConfig):
    """Options of the services that read the artifact store and compute on a device (trainer, optimizer)."""

    store_url: str = option("./.reenact/store", "artifact store: a local directory, file:///dir or s3://bucket/prefix")
    device: str = option("auto", "compute device: auto (cuda when present), cpu or cuda")

    def validate(self) -> None:
        super().validate()
        if not self.store_url:
            raise ValueError("store_url must not be empty")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")


def _parse_bool(text: str) -> bool:
    low = str(text).strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _converter(tp):
    if tp is bool:
        return _parse_bool
    if tp in (int, float, str):
        return tp
    raise TypeError(f"unsupported config field type {tp}")


def build_parser(cls: type[ServiceConfig], service: str, description: str = "") -> argparse.ArgumentParser:
    hints = typing.get_type_hints(cls)
    parser = argparse.ArgumentParser(
        prog=f"python -m services.{service}",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"Every flag can also be set by the env var REENACT_{service.upper()}_<FLAG> or REENACT_<FLAG>"
        " (upper case, '-' as '_').",
    )
    for f in dataclasses.fields(cls):
        env = f"REENACT_{service.upper()}_{f.name.upper()}"
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            type=_converter(hints[f.name]),
            default=None,
            help=f"{f.metadata.get('help', '')} [env {env}; default {f.default!r}]",
        )
    return parser


def parse_config(cls: type[ServiceConfig], service: str, argv: list[str] | None = None,
                 env: typing.Mapping[str, str] | None = None, description: str = ""):
    """Build a validated config instance from flags, then env, then defaults."""
    env = os.environ if env is None else env
    hints = typing.get_type_hints(cls)
    ns = build_parser(cls, service, description).parse_args(argv)
    values = {}
    for f in dataclasses.fields(cls):
        val = getattr(ns, f.name)
        if val is None:
            for key in (f"REENACT_{service.upper()}_{f.name.upper()}", f"REENACT_{f.name.upper()}"):
                if key in env:
                    val = _converter(hints[f.name])(env[key])
                    break
        if val is not None:
            values[f.name] = val
    cfg = cls(**values)
    cfg.validate()
    return cfg


def describe(cfg: ServiceConfig) -> str:
    """JSON of the config for the start-up log line (secrets never live in configs; keys come from files)."""
    return json.dumps(cfg.as_dict(), sort_keys=True)
