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

Store-backed repositories (S3 / MinIO, what Triton reads as `s3://...`; `file:///dir` too): the trainer
publishes with `publish_generator_model(url, ...)` -> `StoreModelRepository.publish`. Object storage has no
rename, so a model version is staged in a new version directory that the live config.pbtxt does not name
(`version_policy: specific`) and published by one atomic put of config.pbtxt; see `StoreModelRepository`.
`remove_generator_model` / `list_generator_models` accept either kind (a URL has '://').

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
    path: pathlib.Path | str    # the model directory (a store URL for a store-backed repository)
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
                  parameters: dict[str, str] | None = None, versions: list[int] | None = None) -> str:
    """The config.pbtxt text of a generator model.

    `versions` None: Triton serves the latest version directory; a list: exactly those versions (the
    store-backed repository publishes a version by pointing config.pbtxt at it, see `StoreModelRepository`).
    """
    kind = {"cpu": "KIND_CPU", "gpu": "KIND_GPU"}[device]
    params = {"checkpoint": CHECKPOINT_NAME, **(parameters or {})}
    param_text = "".join(
        f"parameters {{ key: {_quote(k)} value: {{ string_value: {_quote(str(v))} }} }}\n"
        for k, v in sorted(params.items()))
    policy = ("{ latest: { num_versions: 1 } }" if versions is None
              else "{ specific: { versions: [ " + ", ".join(str(int(v)) for v in versions) + " ] } }")
    return (
        f"# written by reenact.tritonserve.repository; W+ latents -> RGB8 frames\n"
        f"name: {_quote(name)}\n"
        f'backend: "python"\n'
        f"max_batch_size: {max_batch_size}\n"
        f"input [ {{ name: \"WS\" data_type: TYPE_FP32 dims: [ {num_ws}, {w_dim} ] }} ]\n"
        f"output [ {{ name: \"IMAGE\" data_type: TYPE_UINT8 dims: [ {resolution}, {resolution}, 3 ] }} ]\n"
        f"dynamic_batching {{ max_queue_delay_microseconds: {max_queue_delay_us} }}\n"
        f"instance_group [ {{ count: {instance_count} kind: {kind} }} ]\n"
        f"version_policy: {policy}\n"
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


def _model_config(person_id: str, checkpoint_path: str | os.PathLike, *, max_batch_size: int, device: str,
                  version: int, instance_count: int, max_queue_delay_us: int,
                  reenact_root: str | os.PathLike | None, torch_threads: int | None,
                  versions: list[int] | None = None, extra: dict[str, str] | None = None
                  ) -> tuple[str, pathlib.Path, str, tuple[int, int, int]]:
    """(name, checkpoint path, config.pbtxt text, (num_ws, w_dim, resolution)); validates the arguments."""
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

    params: dict[str, str] = dict(extra or {})
    if reenact_root is not None:
        params["reenact_root"] = str(pathlib.Path(reenact_root).resolve())
    if torch_threads:
        params["torch_threads"] = str(int(torch_threads))
    config = render_config(name, num_ws=num_ws, w_dim=w_dim, resolution=resolution,
                           max_batch_size=max_batch_size, device=device, instance_count=instance_count,
                           max_queue_delay_us=max_queue_delay_us, parameters=params, versions=versions)
    return name, checkpoint_path, config, (num_ws, w_dim, resolution)


def export_generator_model(repo_dir: str | os.PathLike, person_id: str, checkpoint_path: str | os.PathLike,
                           *, max_batch_size: int = 8, device: str = "cpu", version: int = 1,
                           instance_count: int = 1, max_queue_delay_us: int = DEFAULT_QUEUE_DELAY_US,
                           reenact_root: str | os.PathLike | None = None,
                           torch_threads: int | None = None) -> ExportedModel:
    """Write (or replace) `gen_<person_id>` version `version` into the local repository, atomically.

    The checkpoint is validated by rebuilding its generator on the CPU; its num_ws, w_dim and resolution
    go into config.pbtxt. `device` is 'cpu' (KIND_CPU) or 'gpu' (KIND_GPU, one instance per GPU).
    (For an S3 / store repository use `publish_generator_model`.)
    """
    name, checkpoint_path, config, (num_ws, w_dim, resolution) = _model_config(
        person_id, checkpoint_path, max_batch_size=max_batch_size, device=device, version=version,
        instance_count=instance_count, max_queue_delay_us=max_queue_delay_us, reenact_root=reenact_root,
        torch_threads=torch_threads)

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
    """Delete `gen_<person_id>` from the repository (unload it from Triton first). True if it existed.

    `repo_dir` is a local directory or a store URL (`is_store_url`: s3://..., file://...)."""
    if is_store_url(repo_dir):
        return open_model_repository(str(repo_dir)).remove(person_id)
    model_dir = pathlib.Path(repo_dir) / model_name(person_id)
    if not model_dir.is_dir():
        return False
    trash = model_dir.with_name(f".rm-{model_dir.name}-{os.urandom(4).hex()}")
    os.rename(model_dir, trash)
    shutil.rmtree(trash, ignore_errors=True)
    return True


def list_generator_models(repo_dir: str | os.PathLike) -> list[str]:
    """Person ids with a complete model directory (config.pbtxt present) in the repository."""
    if is_store_url(repo_dir):
        return open_model_repository(str(repo_dir)).list()
    repo = pathlib.Path(repo_dir)
    if not repo.is_dir():
        return []
    return sorted(pid for d in repo.iterdir()
                  if d.is_dir() and (d / "config.pbtxt").is_file() and (pid := person_id_of(d.name)))


# ----------------------------------------------------------------------------------------------------
# model repository in an artifact store (S3 / MinIO, or a LocalStore): what Triton reads as s3://...


def is_store_url(repo: object) -> bool:
    """Whether a model repository setting names a store (`s3://...`, `file://...`) rather than a directory."""
    return isinstance(repo, str) and "://" in repo


def parse_s3_repository_url(url: str) -> tuple[str | None, str, str]:
    """(endpoint_url or None, bucket, prefix) of an S3 model repository URL in any of Triton's forms.

        s3://bucket/prefix                           (AWS; the store's $REENACT_S3_ENDPOINT applies)
        s3://http://host:port/bucket/prefix          (custom endpoint, Triton's form; https:// too)
        s3://host:port/bucket/prefix                 (custom endpoint over http, Triton's form)

    The first form may carry the store's query parameters (`?endpoint_url=...&region=...`, see
    `reenact.store.open_store`); they are returned in the prefix's place untouched by this function.
    """
    from reenact.store import StoreConfigError

    if not url.startswith("s3://"):
        raise StoreConfigError.for_field("model_repository", f"not an s3:// URL: {url!r}")
    rest = url[len("s3://"):]
    endpoint = None
    for scheme in ("http://", "https://"):
        if rest.startswith(scheme):
            host, _, rest = rest[len(scheme):].partition("/")
            endpoint = scheme + host
            break
    else:
        first = rest.split("/", 1)[0]
        if ":" in first:  # bucket names cannot contain ':', so this is host:port
            endpoint = "http://" + first
            rest = rest[len(first) + 1:]
    if endpoint is not None and (endpoint.endswith("//") or "?" in rest):
        raise StoreConfigError.for_field("model_repository", f"malformed S3 endpoint URL {url!r}")
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise StoreConfigError.for_field("model_repository", f"no bucket in {url!r}")
    return endpoint, bucket, prefix.strip("/")


def open_model_repository(url: str, *, env=None) -> StoreModelRepository:
    """A `StoreModelRepository` for a model repository URL: Triton's S3 forms (`parse_s3_repository_url`),
    `s3://bucket/prefix?...` and `file:///dir` (everything `reenact.store.open_store` accepts)."""
    from reenact.store import S3Store, open_store

    if url.startswith("s3://"):
        endpoint, bucket, prefix = parse_s3_repository_url(url)
        if endpoint is not None:
            return StoreModelRepository(S3Store(bucket, prefix, endpoint_url=endpoint))
    return StoreModelRepository(open_store(url, env=env))


_VERSION_RE = re.compile(r"^[1-9][0-9]{0,8}$")
_POLICY_RE = re.compile(r"specific\s*:\s*\{\s*versions\s*:\s*\[\s*([0-9]+)\s*\]")


class StoreModelRepository:
    """Triton's model repository in an artifact store (`reenact.store`): the trainer publishes into it,
    Triton reads it directly (`--model-repository=s3://...`), the gateway deletes from it.

    Object storage has no rename, so a model is published in two steps:

    1. stage: the checkpoint, then model.py, go to a NEW version directory `gen_<p>/<n>/` (n = highest
       version directory present + 1). The live config.pbtxt names one version explicitly
       (`version_policy: { specific: { versions: [c] } }`), so Triton never looks at `<n>/` yet;
       a failed or interrupted upload leaves only an unreferenced directory (removed by the next publish).
    2. publish: ONE put of `gen_<p>/config.pbtxt` naming version n (a single S3 PUT is atomic). A load
       after that sees version n complete; a load before it sees version c complete.

    Afterwards version directories other than n and the previous c are deleted: c stays loadable (a replica
    that read the old config.pbtxt just before the publish still finds all of c's files). A brand-new model
    has no config.pbtxt until step 2, so it cannot be loaded half-written. Removal deletes config.pbtxt first
    (the model stops being loadable) and then the rest. One writer per person at a time (the trainer runs
    one job per person); two concurrent publishes of one person would race on `n`.
    """

    CONFIG = "config.pbtxt"

    def __init__(self, store) -> None:
        self.store = store

    def url(self) -> str:
        return self.store.url()

    def _versions(self, name: str) -> list[int]:
        found = set()
        for key in self.store.list(name):
            seg = key[len(name) + 1:].split("/", 1)
            if len(seg) == 2 and _VERSION_RE.match(seg[0]):
                found.add(int(seg[0]))
        return sorted(found)

    def published_version(self, person_id: str) -> int | None:
        """The version config.pbtxt points at, None when the model is not published."""
        from reenact.store import ArtifactNotFoundError

        name = model_name(person_id)
        try:
            text = self.store.get_bytes(f"{name}/{self.CONFIG}").decode("utf-8", "replace")
        except ArtifactNotFoundError:
            return None
        m = _POLICY_RE.search(text)
        return int(m.group(1)) if m else None

    def publish(self, person_id: str, checkpoint_path: str | os.PathLike, *, max_batch_size: int = 8,
                device: str = "cpu", instance_count: int = 1, max_queue_delay_us: int = DEFAULT_QUEUE_DELAY_US,
                reenact_root: str | os.PathLike | None = None, torch_threads: int | None = None,
                person_version: int | None = None) -> ExportedModel:
        """Stage a new version of `gen_<person_id>` and publish it (see the class docstring)."""
        name = model_name(person_id)
        existing = self._versions(name)
        current = self.published_version(person_id)
        version = (max(existing) if existing else 0) + 1
        extra = {"person_version": str(int(person_version))} if person_version is not None else None
        name, checkpoint_path, config, (num_ws, w_dim, resolution) = _model_config(
            person_id, checkpoint_path, max_batch_size=max_batch_size, device=device, version=version,
            instance_count=instance_count, max_queue_delay_us=max_queue_delay_us, reenact_root=reenact_root,
            torch_threads=torch_threads, versions=[version], extra=extra)
        # 1. stage (unreferenced by the live config.pbtxt)
        self.store.put_file(f"{name}/{version}/{CHECKPOINT_NAME}", checkpoint_path)
        self.store.put_file(f"{name}/{version}/model.py", TEMPLATE)
        # 2. publish: one atomic PUT
        self.store.put_bytes(f"{name}/{self.CONFIG}", config.encode("utf-8"))
        # 3. drop what neither the new nor the previous config references (failed stagings included)
        for old in existing:
            if old != current:
                self.store.delete_prefix(f"{name}/{old}")
        return ExportedModel(name=name, path=f"{self.store.url().split('?')[0].rstrip('/')}/{name}", version=version,
                             num_ws=num_ws, w_dim=w_dim, resolution=resolution, max_batch_size=max_batch_size,
                             device=device)

    def remove(self, person_id: str) -> bool:
        """Unpublish (config.pbtxt first), then delete every object of `gen_<person_id>`. True if any existed."""
        name = model_name(person_id)
        had_config = self.store.exists(f"{name}/{self.CONFIG}")
        self.store.delete(f"{name}/{self.CONFIG}", missing_ok=True)
        return self.store.delete_prefix(name) > 0 or had_config

    def list(self) -> list[str]:
        """Person ids whose model is published (config.pbtxt present)."""
        return sorted(pid for key in self.store.list("")
                      if key.endswith("/" + self.CONFIG) and key.count("/") == 1
                      and (pid := person_id_of(key.split("/", 1)[0])))


def publish_generator_model(repo: str | os.PathLike, person_id: str, checkpoint_path: str | os.PathLike,
                            *, person_version: int | None = None, **kwargs) -> ExportedModel:
    """Export `gen_<person_id>` into the trainer's model repository, whatever its kind:

    * a local directory (the embedded default): `export_generator_model` (version 1, atomic renames);
    * a store URL (`s3://...` in any of Triton's forms, `file:///dir`): `StoreModelRepository.publish`
      (a new version directory, published by one config.pbtxt put).
    `kwargs` are `export_generator_model`'s keyword arguments (not `version`).
    """
    if is_store_url(repo):
        return open_model_repository(str(repo)).publish(person_id, checkpoint_path, person_version=person_version,
                                                        **kwargs)
    return export_generator_model(repo, person_id, checkpoint_path, **kwargs)
