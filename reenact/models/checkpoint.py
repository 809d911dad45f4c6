"""The one place that saves and loads network checkpoints.

Format (one torch file, `FORMAT`, version `FORMAT_VERSION`), loadable with `torch.load(weights_only=True)`
because it holds only tensors and plain containers of str / int / float / bool / None:

    {"format": "reenact.stylegan2", "format_version": 1,
     "networks": {"G": {"class": "Generator", "kwargs": {...}, "state_dict": {name: tensor}},
                  "D": {...}},                      # D optional
     "provenance": {"source": str, "created_by": str, "created_at": ISO-8601 UTC, "torch_version": str, ...},
     "extra": {...}}                                # anything else the caller keeps beside the weights

A torch file (not safetensors + JSON) keeps architecture, provenance and weights in one artifact with
nested metadata, and `weights_only=True` keeps loading free of code execution. Networks are rebuilt from
`kwargs` and weights are loaded strictly; any problem raises `CheckpointError`.
"""

from __future__ import annotations

import datetime as _dt
import os
import pathlib
import tempfile
from dataclasses import dataclass, field

import torch
from torch import nn

from reenact.errors import PreconditionError
from reenact.models.stylegan2 import Discriminator, Generator

FORMAT = "reenact.stylegan2"
FORMAT_VERSION = 1
NETWORK_CLASSES: dict[str, type[nn.Module]] = {"Generator": Generator, "Discriminator": Discriminator}
_PRIMITIVES = (str, int, float, bool, type(None))


class CheckpointError(PreconditionError):
    """A checkpoint is missing, unreadable, of another format, or does not fit its architecture."""


@dataclass
class Networks:
    G: Generator
    D: Discriminator | None = None
    provenance: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


def _check_plain(value, where: str) -> None:
    """Raise unless `value` is made of tensors and plain containers (what weights_only loads)."""
    if type(value) in _PRIMITIVES or type(value) is torch.Tensor:  # exact: subclasses pickle as globals
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if type(key) not in (str, int):
                raise CheckpointError(f"{where}: key {key!r} is not a str or int")
            _check_plain(item, f"{where}.{key}")
        return
    raise CheckpointError(f"{where}: {type(value).__name__} cannot be stored (tensors and plain values only)")


def network_record(net: nn.Module) -> dict:
    """{'class', 'kwargs', 'state_dict'} of one of our networks, tensors detached on the CPU."""
    name = type(net).__name__
    if NETWORK_CLASSES.get(name) is not type(net):
        raise CheckpointError(f"cannot store a {name}: only {sorted(NETWORK_CLASSES)}")
    state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    return {"class": name, "kwargs": dict(net.init_kwargs), "state_dict": state}


def _provenance(provenance: dict) -> dict:
    if not isinstance(provenance, dict) or not provenance:
        raise CheckpointError("provenance must be a non-empty dict (say where the weights came from: "
                              "'source', 'person_id', ...)")
    out = {"created_by": "reenact",
           "created_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
           "torch_version": str(torch.__version__)}
    out.update(provenance)
    return out


def save_networks(path: str | os.PathLike, *, G: Generator, D: Discriminator | None = None,
                  provenance: dict, extra: dict | None = None) -> pathlib.Path:
    """Write G (and D) atomically (temporary file + rename). Returns the path written."""
    networks = {"G": network_record(G)}
    if D is not None:
        networks["D"] = network_record(D)
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "networks": networks,
               "provenance": _provenance(provenance), "extra": dict(extra or {})}
    _check_plain(payload, "checkpoint")
    return _atomic_save(payload, pathlib.Path(path))


def save_generator(path: str | os.PathLike, G: Generator, *, provenance: dict,
                   extra: dict | None = None) -> pathlib.Path:
    return save_networks(path, G=G, provenance=provenance, extra=extra)


def _atomic_save(payload: dict, path: pathlib.Path) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The raw checkpoint dict (tensors on the CPU), after format checks."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign or corrupt files
        raise CheckpointError(f"{path}: not a reenact checkpoint ({type(exc).__name__}: {exc})"[:500]) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        hint = " (NVlabs .pkl or rosinality .pt? convert it: python -m reenact.models.convert SRC DST)"
        raise CheckpointError(f"{path}: not a {FORMAT} checkpoint{hint}")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {payload.get('format_version')} != {FORMAT_VERSION}")
    if "G" not in payload.get("networks", {}):
        raise CheckpointError(f"{path}: no generator in checkpoint")
    return payload


def build_network(record: dict, device: str | torch.device = "cpu", where: str = "network") -> nn.Module:
    """Rebuild a network from its record and load its weights strictly."""
    cls = NETWORK_CLASSES.get(record.get("class"))
    if cls is None:
        raise CheckpointError(f"{where}: unknown network class {record.get('class')!r}")
    try:
        net = cls(**record["kwargs"])
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{where}: bad architecture kwargs: {exc}") from exc
    load_state_strict(net, record.get("state_dict", {}), where)
    return net.to(device).eval()


def load_state_strict(net: nn.Module, state: dict, where: str) -> None:
    """load_state_dict(strict=True) with one CheckpointError listing missing, unexpected and misshapen keys."""
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f"{k}: {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or wrong:
        raise CheckpointError(f"{where}: weights do not fit the architecture: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}, wrong shapes {wrong[:5]}")
    net.load_state_dict(state, strict=True)


def load_networks(path: str | os.PathLike, device: str | torch.device = "cpu") -> Networks:
    payload = read_checkpoint(path)
    nets = payload["networks"]
    G = build_network(nets["G"], device, f"{path}: G")
    D = build_network(nets["D"], device, f"{path}: D") if "D" in nets else None
    return Networks(G=G, D=D, provenance=dict(payload.get("provenance", {})),
                    extra=dict(payload.get("extra", {})))


def load_generator(path: str | os.PathLike, device: str | torch.device = "cpu") -> Generator:
    """The generator of a checkpoint, in eval mode on `device`."""
    return build_network(read_checkpoint(path)["networks"]["G"], device, f"{path}: G")
