"""mTLS on the Triton channel: the REAL tritonserver started with --grpc-use-ssl-mutual (TritonServer tls_*),
certificates generated at test time (tests/service/test_tls.py helpers), and TritonRenderer clients with
and without valid certificates; the gateway's renderer built from its --tls-* / --triton-tls options, and
a dns:/// URL (per-replica channels dial IPs: the certificate is checked for the URL's host).
"""

from __future__ import annotations

import numpy as np
import pytest

from reenact.tritonserve.client import RendererUnavailableError, TritonRenderer, TritonTLS
from reenact.tritonserve.repository import export_generator_model
from reenact.tritonserve.server import TritonServer
from tests.integration.test_triton import local_render, random_ws, tiny_generator

pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import serialization  # noqa: E402

from tests.service.test_tls import make_ca, make_leaf  # noqa: E402

PERSON = "tlsperson"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    root = tmp_path_factory.mktemp("pki")
    ca, other_ca = make_ca("reenact test CA"), make_ca("someone else's CA")
    files = {"ca": root / "ca.pem", "other_ca": root / "other_ca.pem"}
    files["ca"].write_bytes(ca[1].public_bytes(serialization.Encoding.PEM))
    files["other_ca"].write_bytes(other_ca[1].public_bytes(serialization.Encoding.PEM))
    for name, issuer in (("triton", ca), ("gateway", ca), ("intruder", other_ca)):
        key, cert = make_leaf(issuer, name)
        (root / f"{name}.key").write_bytes(key)
        (root / f"{name}.pem").write_bytes(cert)
        files[name] = (str(root / f"{name}.pem"), str(root / f"{name}.key"))
    return files


@pytest.fixture(scope="module")
def triton(pki, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("triton_tls")
    G = tiny_generator(0)
    from reenact.models.checkpoint import save_generator

    ckpt = save_generator(tmp / "g.pt", G, provenance={"source": "test_triton_tls"})
    export_generator_model(tmp / "repo", PERSON, ckpt, max_batch_size=4, device="cpu")
    cert, key = pki["triton"]
    with TritonServer(tmp / "repo", workdir=tmp / "work", startup_timeout=60, tls_cert_file=cert,
                      tls_key_file=key, tls_ca_file=pki["ca"], load_models=[f"gen_{PERSON}"]) as server:
        yield {"server": server, "G": G}


def tls_for(pki, who: str | None, ca: str = "ca") -> TritonTLS:
    if who is None:
        return TritonTLS(root_cert_file=str(pki[ca]))
    cert, key = pki[who]
    return TritonTLS(root_cert_file=str(pki[ca]), cert_file=cert, key_file=key)


def test_server_runs_mutual_tls_and_no_http(triton):
    server = triton["server"]
    cmd = server.command()
    assert server.tls_mode == "mtls" and "--grpc-use-ssl=true" in cmd and "--grpc-use-ssl-mutual=true" in cmd
    assert "--allow-http=false" in cmd and server.http_url is None  # HTTP has no TLS: it would bypass it


def test_client_with_a_valid_certificate_renders(triton, pki):
    G = triton["G"]
    ws = random_ws(G, 5, seed=3)
    with TritonRenderer(triton["server"].grpc_url, tls=tls_for(pki, "gateway"), timeout=20) as r:
        assert r.is_ready() and r.is_model_ready(PERSON)
        got = r.render(PERSON, ws)
    assert np.abs(got.astype(np.int16) - local_render(G, ws).astype(np.int16)).max() <= 1


@pytest.mark.parametrize("who", ["plaintext", "no-cert", "other-ca-cert", "untrusted-server"])
def test_client_without_a_valid_certificate_fails(triton, pki, who):
    tls = {"plaintext": None, "no-cert": tls_for(pki, None), "other-ca-cert": tls_for(pki, "intruder"),
           "untrusted-server": tls_for(pki, "gateway", ca="other_ca")}[who]
    with TritonRenderer(triton["server"].grpc_url, tls=tls, timeout=3, load_on_demand=False) as r:
        assert not r.is_ready()
        with pytest.raises(RendererUnavailableError):
            r.render(PERSON, random_ws(triton["G"], 1, seed=4))


def test_dns_url_checks_the_url_host_on_each_replica(triton, pki):
    """dns:///localhost:P: the round_robin channel and the per-replica channels (dialled by IP; the
    certificate names localhost) both verify Triton's certificate; an unreachable ::1 is skipped."""
    url = f"dns:///localhost:{triton['server'].grpc_port}"
    with TritonRenderer(url, tls=tls_for(pki, "gateway"), timeout=20) as r:
        r.wait_ready(10)
        r.load_model(PERSON, everywhere=True)
        assert r.render(PERSON, random_ws(triton["G"], 2, seed=5)).shape == (2, 32, 32, 3)


def test_gateway_and_trainer_configs_build_the_triton_tls(triton, pki):
    from services.gateway.config import GatewayConfig
    from services.gateway.peers import Peers
    from services.trainer.config import TrainerConfig

    cert, key = pki["gateway"]
    tls_opts = {"tls_cert_file": cert, "tls_key_file": key, "tls_ca_file": str(pki["ca"])}
    gw = GatewayConfig(triton_url=triton["server"].grpc_url, triton_tls=True, **tls_opts)
    gw.validate()
    peers = Peers("127.0.0.1:1", "127.0.0.1:1", "127.0.0.1:1", gw.triton_url, tls_config=gw, timeout=5)
    try:
        assert peers.readiness()["triton"] is True
    finally:
        peers.close()
    # the services' own mTLS alone does not switch the Triton channel (a plaintext Triton keeps working)
    plain = Peers("127.0.0.1:1", "127.0.0.1:1", "127.0.0.1:1", gw.triton_url,
                  tls_config=GatewayConfig(**tls_opts), timeout=5)
    try:
        assert plain.readiness()["triton"] is False
    finally:
        plain.close()
    assert TritonTLS.from_config(TrainerConfig(triton_tls=True, **tls_opts)) == tls_for(pki, "gateway")
    for cls in (GatewayConfig, TrainerConfig):
        with pytest.raises(ValueError, match="triton_tls needs"):
            cls(triton_tls=True).validate()


def test_server_refuses_half_a_tls_config_and_http_with_tls(pki, tmp_path):
    cert, key = pki["triton"]
    with pytest.raises(ValueError, match="together"):
        TritonServer(tmp_path, tls_cert_file=cert)
    with pytest.raises(ValueError, match="HTTP endpoint has no TLS"):
        TritonServer(tmp_path, tls_cert_file=cert, tls_key_file=key, http_port=8000)
    one_way = TritonServer(tmp_path, tls_cert_file=cert, tls_key_file=key, tls_ca_file=pki["ca"],
                           tls_require_client_cert=False)
    assert one_way.tls_mode == "tls" and one_way.client_tls().cert_file == ""


@pytest.mark.parametrize(("name", "ok"), [("triton", True), ("elsewhere", False)])
def test_server_name_is_checked(triton, pki, name, ok):
    """server_name (--tls-server-name): the name Triton's certificate must carry, instead of the URL's host."""
    cert, key = pki["gateway"]
    tls = TritonTLS(root_cert_file=str(pki["ca"]), cert_file=cert, key_file=key, server_name=name)
    with TritonRenderer(triton["server"].grpc_url, tls=tls, timeout=3) as r:
        assert r.is_ready() is ok
