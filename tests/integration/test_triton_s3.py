"""Triton's model repository on S3, end to end: the trainer-side publish (`publish_generator_model`, what
reenact/enroll/job.py calls) writes gen_<person> to a real moto_server; two real tritonservers (two
"replicas" on 127.0.0.1 and 127.0.0.2, same port) read that S3 repository directly (Triton's
`s3://http://host:port/bucket/prefix` form, explicit model control) and render.

Checked: load on first use through a pinned channel and through a round_robin channel over both replicas; load fan-out to every replica of a `dns:///` URL (the
trainer after publishing; name resolution patched to give both loopback addresses); a new version is served
by both replicas after the fan-out; a failed staging of a later version leaves the live one loadable; a
deleted person is unloaded everywhere and cannot be loaded again.
"""

from __future__ import annotations

import socket

import boto3
import numpy as np
import pytest
import torch

from reenact.models.checkpoint import save_generator
from reenact.models.stylegan2 import Generator
from reenact.store import S3Store
from reenact.tritonserve import client as client_mod
from reenact.tritonserve.client import ModelNotFoundError, TritonRenderer
from reenact.tritonserve.repository import (
    StoreModelRepository,
    list_generator_models,
    open_model_repository,
    publish_generator_model,
    remove_generator_model,
)
from reenact.tritonserve.server import TritonServer, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

PERSON = "s3person"
BUCKET = "reenact-models"


def tiny_generator(seed: int) -> Generator:
    torch.manual_seed(seed)
    return Generator(z_dim=32, w_dim=32, img_resolution=32, channel_base=256, channel_max=16,
                     num_mapping_layers=2).eval()


def local_render(G: Generator, ws: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        img = G.synthesis(torch.from_numpy(ws), noise_mode="const")
    return ((img + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def close_uint8(got: np.ndarray, want: np.ndarray) -> bool:
    return got.shape == want.shape and int(np.abs(got.astype(np.int16) - want.astype(np.int16)).max()) <= 1


@pytest.fixture(scope="module")
def env(moto_endpoint, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("triton-s3")
    boto3.client("s3", endpoint_url=moto_endpoint).create_bucket(Bucket=BUCKET)
    url = f"s3://{moto_endpoint}/{BUCKET}/model_repository"  # Triton's form: s3://http://127.0.0.1:P/bucket/path
    Gs = [tiny_generator(seed) for seed in (0, 1)]
    ckpts = [save_generator(tmp / f"g{i}.pt", G, provenance={"source": "test_triton_s3"}) for i, G in enumerate(Gs)]
    publish_generator_model(url, PERSON, ckpts[0], person_version=1, max_batch_size=4)
    port = free_port()
    servers = []
    try:
        for i, host in enumerate(("127.0.0.1", "127.0.0.2")):
            servers.append(TritonServer(url, host=host, grpc_port=port, http_port=-1, metrics_port=-1,
                                        workdir=tmp / f"work{i}", startup_timeout=90).start())
        with torch.no_grad():
            ws = Gs[0].mapping(torch.randn(3, 32, generator=torch.Generator().manual_seed(5)), None).numpy()
        yield {"url": url, "Gs": Gs, "ckpts": ckpts, "port": port, "servers": servers, "ws": ws,
               "store": S3Store(BUCKET, "model_repository", endpoint_url=moto_endpoint)}
    finally:
        for s in servers:
            s.stop()


@pytest.fixture
def both_replicas(monkeypatch, env):
    """`dns:///localhost:P` resolves to both loopback replicas for the fan-out."""
    real = socket.getaddrinfo

    def fake(host, port, *a, **kw):
        if host == "localhost":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in ("127.0.0.1", "127.0.0.2")]
        return real(host, port, *a, **kw)

    monkeypatch.setattr(client_mod.socket, "getaddrinfo", fake)
    return f"dns:///localhost:{env['port']}"


def replica(env, i: int) -> TritonRenderer:
    return TritonRenderer(env["servers"][i].grpc_url, timeout=30)


def test_01_published_layout_on_s3(env):
    assert list_generator_models(env["url"]) == [PERSON]
    assert env["store"].list(f"gen_{PERSON}") == [f"gen_{PERSON}/1/generator.pt", f"gen_{PERSON}/1/model.py",
                                                  f"gen_{PERSON}/config.pbtxt"]
    assert open_model_repository(env["url"]).published_version(PERSON) == 1


def test_02_load_on_first_use_from_s3(env):
    with replica(env, 0) as r0, replica(env, 1) as r1:
        assert not r0.is_model_ready(PERSON) and not r1.is_model_ready(PERSON)
        out = r0.render(PERSON, env["ws"])  # NOT_FOUND -> load over the same channel -> retry
        assert close_uint8(out, local_render(env["Gs"][0], env["ws"]))
        assert r0.is_model_ready(PERSON) and not r1.is_model_ready(PERSON)  # only where it was used
        with TritonRenderer(env["servers"][1].grpc_url, load_on_demand=False) as strict, \
                pytest.raises(ModelNotFoundError):
            strict.render(PERSON, env["ws"])


def test_02b_round_robin_channel_loads_on_every_replica_on_first_use(env):
    """A multi-replica URL balances per RPC (round_robin): a render that lands on the replica without the
    model loads it on every replica missing it (replica 0 has it from test_02, replica 1 not)."""
    url = f"ipv4:127.0.0.1:{env['port']},127.0.0.2:{env['port']}"
    want = local_render(env["Gs"][0], env["ws"])
    with TritonRenderer(url, timeout=30) as rr:
        for _ in range(4):  # both replicas get requests
            assert close_uint8(rr.render(PERSON, env["ws"]), want)
    with replica(env, 0) as r0, replica(env, 1) as r1:
        assert r0.is_model_ready(PERSON) and r1.is_model_ready(PERSON)
        stats = [r._client.get_inference_statistics(f"gen_{PERSON}", as_json=True)["model_stats"][0]
                 for r in (r0, r1)]
    assert all(int(st["inference_count"]) >= 1 for st in stats), stats  # both served


def test_03_new_version_fanned_out_to_every_replica(env, both_replicas):
    publish_generator_model(env["url"], PERSON, env["ckpts"][1], person_version=2, max_batch_size=4)
    assert open_model_repository(env["url"]).published_version(PERSON) == 2
    with TritonRenderer(both_replicas, timeout=30) as fan:
        info = fan.load_model(PERSON, everywhere=True)  # what the trainer does after publishing
    assert info.max_batch_size == 4
    want = local_render(env["Gs"][1], env["ws"])
    for i in (0, 1):
        with replica(env, i) as r:
            assert r._client.is_model_ready(f"gen_{PERSON}", "2")
            assert close_uint8(r.render(PERSON, env["ws"]), want), f"replica {i} still serves version 1"
    # the previous version's files stay (a replica that read the old config.pbtxt can still load them)
    assert {k.split("/")[1] for k in env["store"].list(f"gen_{PERSON}")} == {"1", "2", "config.pbtxt"}


def test_04_failed_staging_keeps_the_live_version_loadable(env, monkeypatch):
    repo = open_model_repository(env["url"])
    real = repo.store.put_file

    def fail_on_model_py(key, path):
        if key.endswith("/model.py"):
            raise OSError("upload interrupted")
        real(key, path)

    monkeypatch.setattr(repo.store, "put_file", fail_on_model_py)
    with pytest.raises(OSError):
        repo.publish(PERSON, env["ckpts"][0])
    assert isinstance(repo, StoreModelRepository) and repo.published_version(PERSON) == 2
    with replica(env, 0) as r:
        r.load_model(PERSON)  # a reload now still finds version 2 complete
        assert close_uint8(r.render(PERSON, env["ws"]), local_render(env["Gs"][1], env["ws"]))


def test_05_delete_unloads_everywhere_and_removes_from_s3(env, both_replicas):
    with TritonRenderer(both_replicas, timeout=30) as fan:
        fan.unload_model(PERSON, wait=True, timeout=30)  # dns:/// URL: every replica
    assert remove_generator_model(env["url"], PERSON) is True
    assert env["store"].list(f"gen_{PERSON}") == [] and list_generator_models(env["url"]) == []
    for i in (0, 1):
        with replica(env, i) as r:
            assert not r.is_model_ready(PERSON)
            with pytest.raises(ModelNotFoundError):
                r.render(PERSON, env["ws"])  # load on first use finds nothing to load


def test_06_trainer_exporter_publishes_to_s3_and_loads_on_every_replica(env, tmp_path):
    """The trainer's own export step (reenact/enroll/job.py make_exporter) with the Kubernetes settings:
    model_repository = the S3 URL Triton reads, triton_url = several replicas."""
    from reenact.enroll.job import make_exporter
    from reenact.store import LocalStore, PersonRepository
    from services.trainer.config import TrainerConfig

    store = LocalStore(tmp_path / "store")
    with PersonRepository(store).begin_version("trainee") as w:
        w.put_file("generator.pt", env["ckpts"][1])
        version = w.commit({}).version
    cfg = TrainerConfig(model_repository=env["url"], device="cpu",
                        triton_url=f"ipv4:127.0.0.1:{env['port']},127.0.0.2:{env['port']}")
    cfg.validate()
    make_exporter(store, cfg)("trainee", version, "generator.pt")
    assert list_generator_models(env["url"]) == ["trainee"]
    assert f'"person_version" value: {{ string_value: "{version}" }}' in env["store"].get_bytes(
        "gen_trainee/config.pbtxt").decode()
    want = local_render(env["Gs"][1], env["ws"])
    for i in (0, 1):
        with TritonRenderer(env["servers"][i].grpc_url, load_on_demand=False) as r:
            assert r.is_model_ready("trainee"), f"replica {i} did not load the published model"
            assert close_uint8(r.render("trainee", env["ws"]), want)
