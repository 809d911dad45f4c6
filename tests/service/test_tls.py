"""mTLS between services: a CA and certificates generated at test time (the `cryptography` package), the REAL
landmarks service started with --tls-cert-file/--tls-key-file/--tls-ca-file, and clients with and without
valid certificates, plus the gateway's peer channels (reenact.runtime.tls) reaching it over mTLS.
"""

from __future__ import annotations

import datetime
import ipaddress

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from reenact.api.common.v1 import types_pb2
from reenact.api.landmarks.v1 import landmarks_pb2, landmarks_pb2_grpc
from reenact.runtime import tls
from reenact.runtime.config import ServiceConfig

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402


def _name(cn: str):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_ca(cn: str):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn)).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def make_leaf(ca, cn: str):
    ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.DNSName(cn),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    return _pem_key(key), cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    root = tmp_path_factory.mktemp("pki")
    ca, other_ca = make_ca("reenact test CA"), make_ca("someone else's CA")
    files = {"ca": root / "ca.pem"}
    files["ca"].write_bytes(ca[1].public_bytes(serialization.Encoding.PEM))
    for name, issuer in (("landmarks", ca), ("gateway", ca), ("intruder", other_ca)):
        key, cert = make_leaf(issuer, name)
        (root / f"{name}.key").write_bytes(key)
        (root / f"{name}.pem").write_bytes(cert)
        files[name] = (root / f"{name}.pem", root / f"{name}.key")
    return files


@pytest.fixture(scope="module")
def landmarks(pki):
    from services.landmarks.__main__ import build_server
    from services.landmarks.config import LandmarksConfig

    cert, key = pki["landmarks"]
    cfg = LandmarksConfig(port=0, workers=4, drain_seconds=0.5, grace_seconds=0, tls_cert_file=str(cert),
                          tls_key_file=str(key), tls_ca_file=str(pki["ca"]))
    assert tls.mode(cfg) == "mtls"
    server = build_server(cfg)
    server.start()
    server.set_ready(True)  # no MediaPipe warm-up needed: the calls below are refused before the model runs
    yield server
    server.stop(drain_seconds=0, grace_seconds=0)


def creds(pki, who: str | None):
    ca = pki["ca"].read_bytes()
    if who is None:
        return grpc.ssl_channel_credentials(root_certificates=ca)
    cert, key = pki[who]
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key.read_bytes(),
                                        certificate_chain=cert.read_bytes())


def detect(channel):
    stub = landmarks_pb2_grpc.LandmarksServiceStub(channel)
    bad = landmarks_pb2.DetectImageRequest(image=types_pb2.Image(encoding=types_pb2.IMAGE_ENCODING_PNG, data=b"x"))
    with pytest.raises(grpc.RpcError) as ei:
        stub.DetectImage(bad, timeout=10)
    return ei.value.code()


def test_client_with_a_valid_certificate_works(landmarks, pki):
    with grpc.secure_channel(landmarks.address, creds(pki, "gateway")) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == \
            health_pb2.HealthCheckResponse.SERVING
        assert detect(ch) == grpc.StatusCode.INVALID_ARGUMENT  # the call reached the servicer


@pytest.mark.parametrize("who", [None, "intruder", "plaintext"])
def test_client_without_a_valid_certificate_is_refused(landmarks, pki, who):
    ch = grpc.insecure_channel(landmarks.address) if who == "plaintext" else \
        grpc.secure_channel(landmarks.address, creds(pki, who))
    with ch:
        assert detect(ch) == grpc.StatusCode.UNAVAILABLE


def test_gateway_peer_channels_use_mtls(landmarks, pki):
    from services.gateway.peers import Peers

    class Renderer:
        def is_ready(self):
            return True

        def close(self):
            pass

    cert, key = pki["gateway"]
    cfg = ServiceConfig(tls_cert_file=str(cert), tls_key_file=str(key), tls_ca_file=str(pki["ca"]))
    peers = Peers(landmarks.address, "127.0.0.1:1", "127.0.0.1:1", "unused", renderer=Renderer(), tls_config=cfg)
    try:
        assert peers.readiness()["landmarks"] is True
    finally:
        peers.close()
    plain = Peers(landmarks.address, "127.0.0.1:1", "127.0.0.1:1", "unused", renderer=Renderer())
    try:
        assert plain.readiness()["landmarks"] is False
    finally:
        plain.close()


def test_half_a_tls_config_is_refused(pki, tmp_path):
    cert, key = pki["gateway"]
    with pytest.raises(ValueError, match="together"):
        ServiceConfig(tls_cert_file=str(cert)).validate()
    with pytest.raises(ValueError, match="no such file"):
        ServiceConfig(tls_cert_file=str(cert), tls_key_file=str(tmp_path / "missing.key")).validate()
    with pytest.raises(ValueError, match="tls_ca_file needs"):
        ServiceConfig(tls_ca_file=str(pki["ca"])).validate()
