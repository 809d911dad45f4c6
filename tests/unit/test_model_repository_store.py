"""Triton's model repository in an artifact store (reenact.tritonserve.repository.StoreModelRepository):
staging + one config.pbtxt publish, the previous version kept, removal, URL forms; and the renderer
client's replica helpers. LocalStore here (fast); tests/integration/test_triton_s3.py runs it on moto S3
with a real tritonserver."""

from __future__ import annotations

import socket

import pytest
import torch

from reenact.models.checkpoint import save_generator
from reenact.models.stylegan2 import Generator
from reenact.store import LocalStore, StoreConfigError
from reenact.tritonserve.client import RendererError, TritonRenderer, replica_urls
from reenact.tritonserve.repository import (
    StoreModelRepository,
    is_store_url,
    list_generator_models,
    open_model_repository,
    parse_s3_repository_url,
    publish_generator_model,
    remove_generator_model,
)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    G = Generator(z_dim=16, w_dim=16, img_resolution=16, channel_base=64, channel_max=8, num_mapping_layers=1)
    return save_generator(tmp_path_factory.mktemp("g") / "g.pt", G.eval(), provenance={"source": "test"})


def test_s3_url_forms():
    assert parse_s3_repository_url("s3://reenact-models/model_repository") == (None, "reenact-models",
                                                                              "model_repository")
    assert parse_s3_repository_url("s3://http://minio.minio.svc:9000/reenact-models/a/b/") == (
        "http://minio.minio.svc:9000", "reenact-models", "a/b")
    assert parse_s3_repository_url("s3://https://s3.example.com/bkt") == ("https://s3.example.com", "bkt", "")
    assert parse_s3_repository_url("s3://127.0.0.1:9000/bkt/repo") == ("http://127.0.0.1:9000", "bkt", "repo")
    for bad in ("s3://", "s3://http:///bkt", "/dir"):
        with pytest.raises(StoreConfigError):
            parse_s3_repository_url(bad)
    repo = open_model_repository("s3://http://127.0.0.1:9/reenact-models/model_repository")
    assert repo.store.bucket == "reenact-models" and repo.store.prefix == "model_repository"
    assert repo.store.endpoint_url == "http://127.0.0.1:9"
    assert is_store_url("s3://b/p") and is_store_url("file:///x") and not is_store_url("./.reenact/model_repository")


def test_publish_stages_then_publishes_and_keeps_the_previous_version(tmp_path, ckpt):
    url = (tmp_path / "repo").as_uri()
    store = LocalStore(tmp_path / "repo")
    seen_during_staging = []
    real_put_file = store.put_file

    def spy_put_file(key, path):  # what a Triton load would see while the version is being staged
        seen_during_staging.append((key, store.exists("gen_alice/config.pbtxt") and
                                    store.get_bytes("gen_alice/config.pbtxt").decode()))
        real_put_file(key, path)

    store.put_file = spy_put_file
    repo = StoreModelRepository(store)
    m1 = repo.publish("alice", ckpt, person_version=1)
    assert m1.version == 1 and repo.published_version("alice") == 1
    # a brand-new model has no config.pbtxt while its files are uploaded: not loadable half-written
    assert [k for k, _ in seen_during_staging] == ["gen_alice/1/generator.pt", "gen_alice/1/model.py"]
    assert all(cfg is False for _, cfg in seen_during_staging)
    cfg = store.get_bytes("gen_alice/config.pbtxt").decode()
    assert "specific: { versions: [ 1 ] }" in cfg and '"person_version"' in cfg

    seen_during_staging.clear()
    m2 = repo.publish("alice", ckpt, person_version=2)
    assert m2.version == 2
    # while version 2 was staged the live config still named version 1 only
    assert all("versions: [ 1 ]" in cfg for _, cfg in seen_during_staging)
    m3 = repo.publish("alice", ckpt, person_version=3)
    # version 3 live, version 2 (the previous one) still complete, version 1 gone
    assert m3.version == 3 and repo.published_version("alice") == 3
    assert store.list("gen_alice") == ["gen_alice/2/generator.pt", "gen_alice/2/model.py", "gen_alice/3/generator.pt",
                                       "gen_alice/3/model.py", "gen_alice/config.pbtxt"]
    assert list_generator_models(url) == ["alice"]


def test_failed_staging_leaves_the_live_version_and_is_cleaned_up(tmp_path, ckpt):
    store = LocalStore(tmp_path / "repo")
    repo = StoreModelRepository(store)
    repo.publish("bob", ckpt)
    before = store.get_bytes("gen_bob/config.pbtxt")
    real_put_file = store.put_file

    def failing(key, path):
        if key.endswith("model.py"):
            raise OSError("network down")
        real_put_file(key, path)

    store.put_file = failing
    with pytest.raises(OSError):
        repo.publish("bob", ckpt)
    assert store.get_bytes("gen_bob/config.pbtxt") == before and repo.published_version("bob") == 1
    assert store.exists("gen_bob/2/generator.pt")  # the unreferenced, half-staged version 2
    store.put_file = real_put_file
    assert repo.publish("bob", ckpt).version == 3
    assert sorted({k.split("/")[1] for k in store.list("gen_bob")}) == ["1", "3", "config.pbtxt"]


def test_remove_unpublishes_first(tmp_path, ckpt):
    url = (tmp_path / "repo").as_uri()
    publish_generator_model(url, "carol", ckpt)
    publish_generator_model(url, "dave", ckpt)
    assert remove_generator_model(url, "carol") is True
    assert remove_generator_model(url, "carol") is False
    assert list_generator_models(url) == ["dave"]
    assert LocalStore(tmp_path / "repo").list("gen_carol") == []


def test_local_directory_mode_is_unchanged(tmp_path, ckpt):
    m = publish_generator_model(tmp_path / "models", "erin", ckpt, person_version=4)
    assert m.version == 1 and (tmp_path / "models/gen_erin/1/generator.pt").is_file()
    assert "latest: { num_versions: 1 }" in (tmp_path / "models/gen_erin/config.pbtxt").read_text()
    assert remove_generator_model(str(tmp_path / "models"), "erin") is True


def test_trainer_config_accepts_repository_urls():
    from services.trainer.config import TrainerConfig

    for ok in ("./models", "file:///var/models", "s3://b/p", "s3://http://minio:9000/reenact-models/model_repository"):
        TrainerConfig(model_repository=ok).validate()
    for bad in ("http://x/y", "s3://"):
        with pytest.raises(ValueError):
            TrainerConfig(model_repository=bad).validate()


def test_replica_urls():
    assert replica_urls("triton:8001") == ["triton:8001"]
    assert replica_urls("ipv4:10.0.0.1:8001,10.0.0.2:8001") == ["10.0.0.1:8001", "10.0.0.2:8001"]
    assert replica_urls("dns:///localhost:8001") == sorted(
        {f"[{i[4][0]}]:8001" if ":" in i[4][0] else f"{i[4][0]}:8001"
         for i in socket.getaddrinfo("localhost", 8001, type=socket.SOCK_STREAM)})
    assert replica_urls("dns:///no-such-host.invalid:8001") == []
    with pytest.raises(RendererError):
        replica_urls("dns:///nohostport")


def test_fan_out_to_nothing_is_unavailable():
    from reenact.tritonserve.client import RendererUnavailableError

    with TritonRenderer("dns:///no-such-host.invalid:8001", timeout=1) as r, pytest.raises(RendererUnavailableError):
        r.load_model("alice", everywhere=True)
