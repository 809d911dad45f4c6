"""Triton model repository of personalized generators: one model `gen_<person_id>` per person.

Layout written by `export_generator_model` (python backend, see `gen_model.py`):

    <repo>/gen_<person_id>/config.pbtxt
    <repo>/gen_<person_id>/<version>/model.py        (copy of reenact/tritonserve/gen_model.py)
    <repo>/gen_<person_id>/<version>/generator.pt    (reenact checkpoint, see reenact.models.checkpoint)

Model names: person ids match `[a-z0-9][a-z0-9-]*`; Triton accepts '-' in model names (they are
directory names), so the name is `gen_` + the person id verbatim, no mapping (`model_name`).

Writes are atomic: a new model is assembled in a hidden temporary directory inside `<repo>` and renamed
into place; a new version of an existing model is assembled beside it and renamed to `<version>/`, and
`config.pbtxt` is replaced with `os.replace`. Triton only sees complete models. Exporting version k+1 of
a loaded model and calling load again makes Triton serve the new version (default version policy: latest).

Importing `reenact` inside Triton's stub process: `TritonServer` sets REENACT_PYTHONPATH (the stub's
Python runs isolated and ignores PYTHONPATH; model.py reads REENACT_PYTHONPATH); for other deployments
install `reenact` into the stub's Python, or pass `reenact_root=` to write the `reenact_root` parameter.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import tempfile
from dataclasses import dataclass

from reenact.errors import InvalidInputError, NotFoundError

PERSON_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
MODEL_PREFIX = "gen_"
CHECKPOINT_NAME = "generator.pt"
TEMPLATE = pathlib.Path(__file__).with_name("gen_model.py")
DEFAULT_QUEUE_DELAY_US = 2000


def model_name(person_id: str) -> str:
    """Triton model name of a person's generator: `gen_<person_id>` (ids are `[a-z0-9][a-z0-9-]*`)."""
    if not isinstance(person_id, str) or not PERSON_ID_RE.match(person_id):
        raise InvalidInputError.for_field(
            "person_id", f"{person_id!r} must match {PERSON_ID_RE.pattern} (lowercase letters, digits, '-')")
    return MODEL_PREFIX + person_id


def person_id_of(name: str) -> str | None:
    """Inverse of `model_name`; None for names that are not generator models."""
    if name.startswith(MODEL_PREFIX) and PERSON_ID_RE.match(name[len(MODEL_PREFIX):]):
        return name[len(MODEL_PREFIX):]
    return None


@dataclass(frozen=True)
class ExportedModel:
    name: str
    path: pathlib.Path          # the model directory
    version: int
    num_ws: int
    w_dim: int
    resolution: int
    max_batch_size: int
    device: str


def _generator_dims(checkpoint_path: pathlib.Path) -> tuple[int, int, int, int]:
    """(num_ws, w_dim, resolution, img_channels) of the checkpoint's generator (rebuilt on the CPU)."""
    from reenact.models.checkpoint import load_generator

    G = load_generator(checkpoint_path, "cpu")
    w_dim = int(getattr(G, "w_dim", None) or G.init_kwargs["w_dim"])
    return int(G.num_ws), w_dim, int(G.img_resolution), int(getattr(G, "img_channels", 3))


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_config(name: str, *, num_ws: int, w_dim: int, resolution: int, max_batch_size: int = 8,
                  device: str = "cpu", instance_count: int = 1,
                  max_queue_delay_us: int = DEFAULT_QUEUE_DELAY_US,
                  parameters: dict[str, str] | None = None) -> str:
    """The config.pbtxt text of a generator model."""
    kind = {"cpu": "KIND_CPU", "gpu": "KIND_GPU"}[device]
    params = {"checkpoint": CHECKPOINT_NAME, **(parameters or {})}
    param_text = "".join(
        f"parameters {{ key: {_quote(k)} value: {{ string_value: {_quote(str(v))} }} }}\n"
        for k, v in sorted(params.items()))
    return (
        f"# written by reenact.tritonserve.repository; W+ latents -> RGB8 frames\n"
        f"name: {_quote(name)}\n"
        f'backend: "python"\n'
        f"max_batch_size: {max_batch_size}\n"
        f"input [ {{ name: \"WS\" data_type: TYPE_FP32 dims: [ {num_ws}, {w_dim} ] }} ]\n"
        f"output [ {{ name: \"IMAGE\" data_type: TYPE_UINT8 dims: [ {resolution}, {resolution}, 3 ] }} ]\n"
        f"dynamic_batching {{ max_queue_delay_microseconds: {max_queue_delay_us} }}\n"
        f"instance_group [ {{ count: {instance_count} kind: {kind} }} ]\n"
        f"version_policy: {{ latest: {{ num_versions: 1 }} }}\n"
        f"{param_text}")


def _atomic_write_text(path: pathlib.Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def _fill_version_dir(dest: pathlib.Path, checkpoint_path: pathlib.Path) -> None:
    dest.mkdir(parents=True)
    shutil.copyfile(TEMPLATE, dest / "model.py")
    shutil.copyfile(checkpoint_path, dest / CHECKPOINT_NAME)


def _swap_into_place(src: pathlib.Path, dest: pathlib.Path) -> None:
    """rename(src, dest); an existing dest is moved aside first and removed afterwards."""
    old = None
    if dest.exists():
        old = dest.with_name(f".old-{dest.name}-{os.getpid()}-{os.urandom(4).hex()}")
        os.rename(dest, old)
    try:
        os.rename(src, dest)
    except BaseException:
        if old is not None:
            os.rename(old, dest)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export_generator_model(repo_dir: str | os.PathLike, person_id: str, checkpoint_path: str | os.PathLike,
                           *, max_batch_size: int = 8, device: str = "cpu", version: int = 1,
                           instance_count: int = 1, max_queue_delay_us: int = DEFAULT_QUEUE_DELAY_US,
                           reenact_root: str | os.PathLike | None = None,
                           torch_threads: int | None = None) -> ExportedModel:
    """Write (or replace) `gen_<person_id>` version `version` into the repository, atomically.

    The checkpoint is validated by rebuilding its generator on the CPU; its num_ws, w_dim and resolution
    go into config.pbtxt. `device` is 'cpu' (KIND_CPU) or 'gpu' (KIND_GPU, one instance per GPU).
    """
    name = model_name(person_id)
    if device not in ("cpu", "gpu"):
        raise InvalidInputError.for_field("device", f"{device!r}: use 'cpu' or 'gpu'")
    if not isinstance(version, int) or version < 1:
        raise InvalidInputError.for_field("version", f"{version!r}: must be an int >= 1")
    if not isinstance(max_batch_size, int) or max_batch_size < 1:
        raise InvalidInputError.for_field("max_batch_size", f"{max_batch_size!r}: must be an int >= 1")
    checkpoint_path = pathlib.Path(checkpoint_path)
    if not checkpoint_path.is_file():
        raise NotFoundError(f"checkpoint {checkpoint_path} does not exist")
    num_ws, w_dim, resolution, img_channels = _generator_dims(checkpoint_path)
    if img_channels != 3:
        raise InvalidInputError.for_field("checkpoint_path", f"generator has {img_channels} channels, not 3")

    params: dict[str, str] = {}
    if reenact_root is not None:
        params["reenact_root"] = str(pathlib.Path(reenact_root).resolve())
    if torch_threads:
        params["torch_threads"] = str(int(torch_threads))
    config = render_config(name, num_ws=num_ws, w_dim=w_dim, resolution=resolution,
                           max_batch_size=max_batch_size, device=device, instance_count=instance_count,
                           max_queue_delay_us=max_queue_delay_us, parameters=params)

    repo = pathlib.Path(repo_dir)
    repo.mkdir(parents=True, exist_ok=True)
    model_dir = repo / name
    if not model_dir.is_dir():
        tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=repo))
        try:
            _fill_version_dir(tmp / str(version), checkpoint_path)
            (tmp / "config.pbtxt").write_text(config)
            tmp.chmod(0o755)
            _swap_into_place(tmp, model_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    else:
        tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=model_dir))
        try:
            _fill_version_dir(tmp / "v", checkpoint_path)
            _swap_into_place(tmp / "v", model_dir / str(version))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        _atomic_write_text(model_dir / "config.pbtxt", config)
    return ExportedModel(name=name, path=model_dir, version=version, num_ws=num_ws, w_dim=w_dim,
                         resolution=resolution, max_batch_size=max_batch_size, device=device)


def remove_generator_model(repo_dir: str | os.PathLike, person_id: str) -> bool:
    """Delete `gen_<person_id>` from the repository (unload it from Triton first). True if it existed."""
    model_dir = pathlib.Path(repo_dir) / model_name(person_id)
    if not model_dir.is_dir():
        return False
    trash = model_dir.with_name(f".rm-{model_dir.name}-{os.urandom(4).hex()}")
    os.rename(model_dir, trash)
    shutil.rmtree(trash, ignore_errors=True)
    return True


def list_generator_models(repo_dir: str | os.PathLike) -> list[str]:
    """Person ids with a complete model directory (config.pbtxt present) in the repository."""
    repo = pathlib.Path(repo_dir)
    if not repo.is_dir():
        return []
    return sorted(pid for d in repo.iterdir()
                  if d.is_dir() and (d / "config.pbtxt").is_file() and (pid := person_id_of(d.name)))
