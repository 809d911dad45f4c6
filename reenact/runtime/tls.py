"""Optional (m)TLS of the services: server credentials for every ServiceServer and channel credentials for
the calls one service makes to another (the gateway's peers).

Config (`ServiceConfig`, flags / env like every option):

- `--tls-cert-file`, `--tls-key-file`: this service's certificate chain and private key (PEM). With them the
  server listens with TLS only; without them it listens in plaintext (the default, for loopback demos).
- `--tls-ca-file`: CA bundle (PEM). On the server: client certificates must be signed by it (mTLS; a
  client without a certificate, or with one from another CA, fails the handshake: UNAVAILABLE on its
  side) unless `--tls-require-client-cert=false`. On this service's channels to peers: the CA that peer
  certificates are checked against; its own cert/key are presented as the client certificate.
- `--tls-server-name`: the name peer certificates are checked for, when it differs from the host of the
  peer address (e.g. peers dialled by IP whose certificates name a DNS name).

- `--triton-tls` (gateway, trainer): the Triton channel uses TLS too, with the same files: cert/key as the
  client certificate (Triton started with `--grpc-use-ssl-mutual`, e.g. `python -m reenact.tritonserve
  --tls-cert-file ... --tls-ca-file ...`), Triton's certificate checked against the CA and for
  `--tls-server-name` when set (`reenact.tritonserve.client.TritonTLS.from_config`).

One certificate per service serves both directions, so it needs the serverAuth and clientAuth extended
key usages (or none).
"""

from __future__ import annotations

from pathlib import Path

import grpc


def _read(path: str) -> bytes:
    return Path(path).read_bytes()


def tls_enabled(cfg) -> bool:
    return bool(getattr(cfg, "tls_cert_file", "") and getattr(cfg, "tls_key_file", ""))


def mode(cfg) -> str:
    """'off', 'tls' (server cert only) or 'mtls' (client certificates required)."""
    if not tls_enabled(cfg):
        return "off"
    return "mtls" if cfg.tls_ca_file and cfg.tls_require_client_cert else "tls"


def validate(cfg) -> None:
    """ValueError for half a configuration or unreadable files (at start-up, not at the first call)."""
    cert, key, ca = cfg.tls_cert_file, cfg.tls_key_file, cfg.tls_ca_file
    if bool(cert) != bool(key):
        raise ValueError("tls_cert_file and tls_key_file must be given together")
    if ca and not cert:
        raise ValueError("tls_ca_file needs tls_cert_file and tls_key_file (this service's own certificate)")
    for name in ("tls_cert_file", "tls_key_file", "tls_ca_file"):
        path = getattr(cfg, name)
        if path and not Path(path).is_file():
            raise ValueError(f"{name}: no such file {path!r}")


def validate_triton(cfg) -> None:
    """ValueError when `triton_tls` is on without this service's certificate (the client certificate)."""
    if getattr(cfg, "triton_tls", False) and not tls_enabled(cfg):
        raise ValueError("triton_tls needs tls_cert_file and tls_key_file (the client certificate for Triton; "
                         "tls_ca_file: Triton's CA)")


def server_credentials(cfg) -> grpc.ServerCredentials | None:
    """Credentials of a ServiceServer's port; None = plaintext."""
    if not tls_enabled(cfg):
        return None
    ca = _read(cfg.tls_ca_file) if cfg.tls_ca_file else None
    return grpc.ssl_server_credentials(
        [(_read(cfg.tls_key_file), _read(cfg.tls_cert_file))], root_certificates=ca,
        require_client_auth=bool(ca) and bool(cfg.tls_require_client_cert))


def channel_credentials(cfg) -> grpc.ChannelCredentials | None:
    """Credentials of this service's channels to its peers; None = plaintext."""
    if not tls_enabled(cfg):
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=_read(cfg.tls_ca_file) if cfg.tls_ca_file else None,
        private_key=_read(cfg.tls_key_file), certificate_chain=_read(cfg.tls_cert_file))


def channel(address: str, cfg, options: list | None = None) -> grpc.Channel:
    """A channel to a peer: secure with this service's credentials when TLS is configured, else plaintext."""
    options = list(options or [])
    creds = channel_credentials(cfg)
    if creds is None:
        return grpc.insecure_channel(address, options=options)
    if getattr(cfg, "tls_server_name", ""):
        options.append(("grpc.ssl_target_name_override", cfg.tls_server_name))
    return grpc.secure_channel(address, creds, options=options)
