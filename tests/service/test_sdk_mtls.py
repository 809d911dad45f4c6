"""Client certificates in the Python SDK (sync and asyncio) and the CLI against a REAL gateway server whose
public port requires client certificates (--tls-cert-file/--tls-key-file/--tls-ca-file), with a CA and
certificates generated at test time (tests/service/test_tls.py helpers). The peers are not running: the
calls used (ListPersons / GetPerson) are answered from the store, so the TLS handshake is what is tested.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from reenact.client import AsyncClient, Client
from reenact.client._common import NO_RETRY
from reenact.client.errors import NotFoundError, UnavailableError
from reenact.launcher import free_port
from reenact.store import LocalStore

pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import serialization  # noqa: E402

from tests.service.test_tls import make_ca, make_leaf  # noqa: E402


class NeverReadyRenderer:
    def is_ready(self) -> bool:
        return False

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    root = tmp_path_factory.mktemp("pki")
    ca, other_ca = make_ca("reenact test CA"), make_ca("someone else's CA")
    files = {"ca": str(root / "ca.pem")}
    (root / "ca.pem").write_bytes(ca[1].public_bytes(serialization.Encoding.PEM))
    for name, issuer in (("gateway", ca), ("client", ca), ("intruder", other_ca)):
        key, cert = make_leaf(issuer, name)
        (root / f"{name}.key").write_bytes(key)
        (root / f"{name}.pem").write_bytes(cert)
        files[name] = (str(root / f"{name}.pem"), str(root / f"{name}.key"))
    return files


@pytest.fixture(scope="module")
def gateway(pki, tmp_path_factory):
    from services.gateway.__main__ import build_server
    from services.gateway.config import GatewayConfig
    from services.gateway.peers import Peers

    root = tmp_path_factory.mktemp("gateway-mtls")
    cert, key = pki["gateway"]
    dead = f"127.0.0.1:{free_port()}"
    cfg = GatewayConfig(port=0, store_url="unused", landmarks_address=dead, trainer_address=dead,
                        optimizer_address=dead, triton_url=dead, precheck_frames=0, workers=4, max_streams=2,
                        drain_seconds=0.5, grace_seconds=0, tls_cert_file=cert, tls_key_file=key,
                        tls_ca_file=pki["ca"])
    peers = Peers(dead, dead, dead, dead, renderer=NeverReadyRenderer(), timeout=2)
    server = build_server(cfg, store=LocalStore(root / "store", fsync=False), peers=peers)
    server.start()
    yield server
    server.stop(drain_seconds=0, grace_seconds=0)


def test_sync_client_with_a_client_certificate(gateway, pki):
    cert, key = pki["client"]
    with Client(gateway.address, root_certificates=pki["ca"], certificate_chain=cert, private_key=key,
                timeout=10, retry=NO_RETRY) as cl:
        assert cl.list_persons() == []
        with pytest.raises(NotFoundError):  # the call reached the servicer
            cl.get_person("nobody")


def test_pem_bytes_and_env_variables(gateway, pki, monkeypatch):
    cert, key = pki["client"]
    with open(cert, "rb") as c, open(key, "rb") as k:
        pem_cert, pem_key = c.read(), k.read()
    with Client(gateway.address, root_certificates=pki["ca"], certificate_chain=pem_cert, private_key=pem_key,
                timeout=10, retry=NO_RETRY) as cl:
        assert cl.list_persons() == []
    monkeypatch.setenv("REENACT_TLS_CA", pki["ca"])
    monkeypatch.setenv("REENACT_TLS_CERT", cert)
    monkeypatch.setenv("REENACT_TLS_KEY", key)
    with Client(gateway.address, timeout=10, retry=NO_RETRY) as cl:
        assert cl.list_persons() == []


@pytest.mark.parametrize("who", ["plaintext", "no-cert", "other-ca"])
def test_sync_client_without_a_valid_certificate_is_refused(gateway, pki, who):
    kw = {"plaintext": {}, "no-cert": {"root_certificates": pki["ca"]},
          "other-ca": {"root_certificates": pki["ca"], "certificate_chain": pki["intruder"][0],
                       "private_key": pki["intruder"][1]}}[who]
    with Client(gateway.address, timeout=5, retry=NO_RETRY, **kw) as cl, pytest.raises(UnavailableError):
        cl.list_persons()


def test_half_a_client_certificate_is_refused(pki):
    with pytest.raises(ValueError, match="certificate_chain and private_key"):
        Client("127.0.0.1:1", root_certificates=pki["ca"], certificate_chain=pki["client"][0])


def test_async_client_with_and_without_a_client_certificate(gateway, pki):
    cert, key = pki["client"]

    async def main():
        async with AsyncClient(gateway.address, root_certificates=pki["ca"], certificate_chain=cert,
                               private_key=key, timeout=10, retry=NO_RETRY) as cl:
            assert await cl.list_persons() == []
        async with AsyncClient(gateway.address, root_certificates=pki["ca"], timeout=5, retry=NO_RETRY) as cl:
            with pytest.raises(UnavailableError):
                await cl.list_persons()

    asyncio.run(main())


def test_cli_client_certificate_options(gateway, pki, capsys, monkeypatch):
    from reenact.cli import EXIT_UNAVAILABLE, main

    for key in ("REENACT_ADDRESS", "REENACT_TLS_CA", "REENACT_TLS_CERT", "REENACT_TLS_KEY"):
        monkeypatch.delenv(key, raising=False)
    cert, key = pki["client"]
    base = ["persons", "list", "--address", gateway.address, "--json", "--timeout", "5", "--tls-ca", pki["ca"]]
    assert main([*base, "--tls-cert", cert, "--tls-key", key]) == 0
    assert json.loads(capsys.readouterr().out) in ([], {"persons": []})
    assert main(base) == EXIT_UNAVAILABLE  # no client certificate
    monkeypatch.setenv("REENACT_TLS_CERT", cert)
    monkeypatch.setenv("REENACT_TLS_KEY", key)
    assert main(base) == 0
