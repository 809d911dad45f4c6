"""A real tritonserver (from the nvidia-pytriton wheel, CPU, loopback) serving a tiny personalized generator.

Checks the whole path: checkpoint -> export_generator_model -> explicit load -> render over gRPC (chunked,
dynamically batched) == local G.synthesis to within one uint8 level; versions, unload, and errors.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from reenact.models.checkpoint import save_generator
from reenact.models.stylegan2 import Generator
from reenact.tritonserve.client import (
    ModelNotFoundError,
    RendererError,
    RendererUnavailableError,
    RenderInputError,
    TritonRenderer,
)
from reenact.tritonserve.repository import export_generator_model, list_generator_models, model_name
from reenact.tritonserve.server import TritonServer, free_port

ROOT = pathlib.Path(__file__).resolve().parents[2]
PERSON = "testperson"
MAX_BATCH = 4


def tiny_generator(seed: int) -> Generator:
    torch.manual_seed(seed)
    return Generator(z_dim=32, w_dim=32, img_resolution=32, channel_base=256, channel_max=16,
                     num_mapping_layers=2).eval()


def local_render(G: Generator, ws: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        img = G.synthesis(torch.from_numpy(ws), noise_mode="const")
    return ((img + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def random_ws(G: Generator, n: int, seed: int) -> np.ndarray:
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return G.mapping(z, None).numpy().astype(np.float32)


def ensure_loaded(r: TritonRenderer) -> None:
    if not r.is_model_ready(PERSON):  # a load of a loaded model may reload it (seconds): skip it
        r.load_model(PERSON)


def assert_close_uint8(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == np.uint8 and got.shape == want.shape
    assert np.abs(got.astype(np.int16) - want.astype(np.int16)).max() <= 1


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("triton")
    G = tiny_generator(0)
    ckpt = save_generator(tmp / "g.pt", G, provenance={"source": "test_triton"})
    repo = tmp / "model_repository"
    exported = export_generator_model(repo, PERSON, ckpt, max_batch_size=MAX_BATCH, device="cpu")
    assert (exported.num_ws, exported.w_dim, exported.resolution) == (G.num_ws, 32, 32)
    with TritonServer(repo, workdir=tmp / "work", startup_timeout=60) as server:
        renderer = TritonRenderer(server.grpc_url)
        renderer.wait_ready(30)
        yield {"G": G, "repo": repo, "tmp": tmp, "server": server, "renderer": renderer}
        renderer.close()


def test_export_layout(setup):
    model_dir = setup["repo"] / model_name(PERSON)
    assert sorted(p.name for p in model_dir.iterdir()) == ["1", "config.pbtxt"]
    assert sorted(p.name for p in (model_dir / "1").iterdir()) == ["generator.pt", "model.py"]
    config = (model_dir / "config.pbtxt").read_text()
    assert 'backend: "python"' in config and "KIND_CPU" in config and "dynamic_batching" in config
    assert f"dims: [ {setup['G'].num_ws}, 32 ]" in config and "dims: [ 32, 32, 3 ]" in config
    assert list_generator_models(setup["repo"]) == [PERSON]
    assert not [p for p in setup["repo"].iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_server_binds_loopback_and_serves_metrics(setup):
    server = setup["server"]
    assert server.grpc_url.startswith("127.0.0.1:") and server.startup_s < 30
    assert "--grpc-address=127.0.0.1" in server.command()
    text = urllib.request.urlopen(server.metrics_url, timeout=5).read().decode()
    assert "nv_" in text


def test_load_and_render_matches_local(setup):
    r, G = setup["renderer"], setup["G"]
    info = r.load_model(PERSON)
    assert r.is_model_ready(PERSON) and PERSON in r.loaded_models()
    assert (info.num_ws, info.w_dim, info.height, info.width, info.max_batch_size) == (G.num_ws, 32, 32, 32,
                                                                                        MAX_BATCH)
    ws = random_ws(G, 10, seed=1)  # 10 > max batch: split into chunks of 4, 4, 2
    assert_close_uint8(r.render(PERSON, ws), local_render(G, ws))
    assert r.render(PERSON, ws[:0]).shape == (0, 32, 32, 3)


def test_concurrent_requests_are_batched_correctly(setup):
    r, G = setup["renderer"], setup["G"]
    ensure_loaded(r)
    ws = random_ws(G, 12, seed=2)
    with ThreadPoolExecutor(6) as pool:  # many small requests at once: the dynamic batcher merges them
        parts = list(pool.map(lambda i: r.render(PERSON, ws[i:i + 2]), range(0, 12, 2)))
    assert_close_uint8(np.concatenate(parts), local_render(G, ws))


def test_bad_latents(setup):
    r, G = setup["renderer"], setup["G"]
    ensure_loaded(r)
    with pytest.raises(RenderInputError, match="ws must be"):
        r.render(PERSON, np.zeros((2, G.num_ws, 7), np.float32))
    with pytest.raises(RenderInputError, match="NaN"):
        r.render(PERSON, np.full((1, G.num_ws, 32), np.nan, np.float32))


def test_unknown_model(setup):
    r = setup["renderer"]
    with pytest.raises(ModelNotFoundError) as err:
        r.render("nobody", np.zeros((1, 8, 32), np.float32))
    assert "gen_nobody" in str(err.value)
    with pytest.raises(ModelNotFoundError, match="gen_nobody"):
        r.load_model("nobody")
    assert not r.is_model_ready("nobody")
    with pytest.raises(RendererError):  # not even a valid person id
        r.load_model("Bad_Id")


def test_new_version_is_served_after_reload(setup):
    r = setup["renderer"]
    G2 = tiny_generator(7)
    ckpt2 = save_generator(setup["tmp"] / "g2.pt", G2, provenance={"source": "test_triton v2"})
    ensure_loaded(r)
    export_generator_model(setup["repo"], PERSON, ckpt2, max_batch_size=MAX_BATCH, version=2)
    assert sorted(p.name for p in (setup["repo"] / model_name(PERSON)).iterdir()) == ["1", "2", "config.pbtxt"]
    r.load_model(PERSON)  # explicit (re)load: Triton now serves the latest version
    ws = random_ws(G2, 3, seed=3)
    assert_close_uint8(r.render(PERSON, ws), local_render(G2, ws))


def test_unload(setup):  # after test_new_version...: version 2 is loaded
    r, G = setup["renderer"], setup["G"]
    ensure_loaded(r)
    r.unload_model(PERSON)
    assert not r.is_model_ready(PERSON)
    with TritonRenderer(setup["server"].grpc_url, load_on_demand=False) as strict, \
            pytest.raises(ModelNotFoundError, match=model_name(PERSON)):
        strict.render(PERSON, random_ws(G, 1, seed=4))
    # the default renderer loads a model that is in the repository but not loaded (load on first use)
    assert r.render(PERSON, random_ws(G, 1, seed=4)).shape == (1, 32, 32, 3)
    assert r.is_model_ready(PERSON)
    r.unload_model(PERSON)


def test_server_down():
    r = TritonRenderer(f"127.0.0.1:{free_port()}", timeout=2)
    assert not r.is_ready()
    with pytest.raises(RendererUnavailableError):
        r.wait_ready(0.5)
    with pytest.raises(RendererUnavailableError):
        r.load_model(PERSON)
    r.close()


def test_foreground_entry_point(setup):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "reenact.tritonserve", "--model-repository",
                             str(setup["repo"]), "--grpc-port", str(port), "--http-port", "-1",
                             "--metrics-port", "-1", "--workdir", str(setup["tmp"] / "fg")],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        ready = json.loads(proc.stdout.readline())
        assert ready["ready"] and ready["grpc"] == f"127.0.0.1:{port}" and ready["http"] is None
        assert TritonRenderer(ready["grpc"]).is_ready()
    finally:
        proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        code = proc.wait(30)
    assert code == 0 and time.monotonic() - t0 < 20


def test_prepare_install_is_idempotent_and_concurrency_safe(tmp_path):
    from reenact.tritonserve.server import prepare_install

    dest = tmp_path / "ts"
    with ThreadPoolExecutor(3) as pool:
        roots = list(pool.map(lambda _: prepare_install(dest).root, range(3)))
    assert roots == [dest] * 3
    stub = dest / "backends" / "python" / "triton_python_backend_stub"
    assert os.access(dest / "bin" / "tritonserver", os.X_OK) and os.access(stub, os.X_OK)
    assert not (dest / "python_backend_stubs").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ts", "ts.lock"]  # no temp leftovers
    mtime = stub.stat().st_mtime_ns
    prepare_install(dest)
    assert stub.stat().st_mtime_ns == mtime  # second call copies nothing
