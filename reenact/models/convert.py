"""Convert official StyleGAN2 checkpoints into our format, without their code on sys.path.

- NVlabs stylegan2-ada-pytorch / stylegan3 (its StyleGAN2 networks) `.pkl`: a plain pickle of a dict with
  'G', 'D', 'G_ema', ... whose networks are `torch_utils.persistence` objects: each is pickled as
  `torch_utils.persistence._reconstruct_persistent_obj(meta)` with meta = {type, version, module_src,
  class_name, state}, `state` being the module's `__dict__` (`_parameters`, `_buffers`, `_modules`,
  `_init_kwargs`, ...). A restricted unpickler maps that function to a stand-in that keeps `meta`
  (NVlabs would `exec` module_src), maps other NVlabs classes (dnnlib.EasyDict, ...) to inert stand-ins,
  allows only torch's tensor rebuild functions (storages are read with `torch.load(weights_only=True)`)
  and a few plain types, and refuses any other global. Our parameter names equal NVlabs', so the
  conversion of G_ema (and D) is an identity mapping of the state dict; init_kwargs are translated.
- rosinality stylegan2-pytorch `.pt`: a torch file with 'g_ema' (state dict) and optional 'latent_avg',
  loaded with `weights_only=True` (argparse.Namespace allowed for 'args'); the architecture is inferred
  from the tensor shapes and each tensor is renamed/reshaped onto our Generator.

CLI: python -m reenact.models.convert SRC DST [--format auto|nvlabs|rosinality] [--no-D] [--source URL]
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import io
import logging
import math
import pathlib
import pickle
import re
import sys
import zipfile

import numpy as np
import torch

from reenact.models.checkpoint import CheckpointError, Networks, load_state_strict, save_networks
from reenact.models.stylegan2 import Discriminator, Generator, setup_filter

log = logging.getLogger("reenact.models.convert")

# ----------------------------------------------------------------------------------------------------
# Restricted unpickling of NVlabs pickles


class PersistentStub:
    """Stand-in for a `torch_utils.persistence` object: its class name and module state, nothing run."""

    def __init__(self, meta: dict) -> None:
        meta = dict(meta)
        self.class_name = str(meta.get("class_name"))
        self.version = meta.get("version")
        self.state = dict(meta.get("state") or {})


class ForeignObject:
    """Inert stand-in for any other NVlabs / torch.nn class found in the pickle."""

    qualname = "?"

    def __init__(self, *args, **kwargs) -> None:
        self.args, self.kwargs, self.state = args, kwargs, {}

    def __setstate__(self, state) -> None:
        self.state = state if isinstance(state, dict) else {"state": state}


class EasyDictStub(dict):
    """Stand-in for dnnlib.EasyDict (a dict with attribute access)."""


def _safe_load_from_bytes(data: bytes):
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _numpy_globals() -> dict:
    """numpy scalars and arrays (NVlabs modules keep gains as numpy float64), under both module names."""
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 1.26
        from numpy.core import multiarray
    out = {("numpy", "dtype"): np.dtype, ("numpy", "ndarray"): np.ndarray}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out[(mod, "scalar")] = multiarray.scalar
        out[(mod, "_reconstruct")] = multiarray._reconstruct
    return out


def _allowed_globals() -> dict:
    allowed = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
        ("torch.storage", "_load_from_bytes"): _safe_load_from_bytes,
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): PersistentStub,
        ("dnnlib", "EasyDict"): EasyDictStub,
        ("dnnlib.util", "EasyDict"): EasyDictStub,
    }
    allowed.update(_numpy_globals())
    return allowed


_FOREIGN_PREFIXES = ("training.", "torch_utils.", "dnnlib.", "metrics.", "torch.nn.modules.")


class NVlabsUnpickler(pickle.Unpickler):
    """Unpickler that resolves only allow-listed globals; NVlabs classes become inert stand-ins."""

    def __init__(self, file) -> None:
        super().__init__(file)
        self._allowed = _allowed_globals()

    def find_class(self, module: str, name: str):
        if (module, name) in self._allowed:
            return self._allowed[(module, name)]
        if (module + ".").startswith(_FOREIGN_PREFIXES) and name.isidentifier():
            return type(name, (ForeignObject,), {"qualname": f"{module}.{name}"})
        raise CheckpointError(f"refusing to unpickle global {module}.{name} (not allow-listed)")

    def persistent_load(self, pid):
        raise CheckpointError("unexpected persistent id in pickle (a torch file, not an NVlabs .pkl?)")


def read_nvlabs_pickle(path: str | pathlib.Path) -> dict:
    """Unpickle an NVlabs network pickle with stand-ins; returns its top-level dict."""
    try:
        with open(path, "rb") as f:
            data = NVlabsUnpickler(f).load()
    except CheckpointError:
        raise
    except Exception as exc:  # corrupt or foreign files fail in many ways inside pickle
        raise CheckpointError(f"{path}: cannot read as an NVlabs pickle ({type(exc).__name__}: {exc})") from exc
    if isinstance(data, tuple):
        raise CheckpointError(f"{path}: looks like a TensorFlow StyleGAN pickle (G, D, Gs); convert it with "
                              "NVlabs stylegan2-ada-pytorch legacy.py first")
    if not isinstance(data, dict) or not isinstance(data.get("G_ema", data.get("G")), PersistentStub):
        raise CheckpointError(f"{path}: no 'G_ema' network of NVlabs persistence format in pickle")
    return data


def _plain(value):
    """EasyDict stubs and tuples -> plain dicts/lists, recursively."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def stub_state_dict(obj, prefix: str = "") -> dict[str, torch.Tensor]:
    """state_dict() of a stand-in module tree (parameters, persistent buffers, children)."""
    state = obj.state
    out = {}
    for name, t in (state.get("_parameters") or {}).items():
        if t is not None:
            out[prefix + name] = t.detach()
    non_persistent = state.get("_non_persistent_buffers_set") or set()
    for name, t in (state.get("_buffers") or {}).items():
        if t is not None and name not in non_persistent:
            out[prefix + name] = t.detach()
    for name, child in (state.get("_modules") or {}).items():
        if child is not None:
            out.update(stub_state_dict(child, f"{prefix}{name}."))
    return out


# ----------------------------------------------------------------------------------------------------
# NVlabs init_kwargs -> ours


def _take(kwargs: dict, table: dict, required: dict, where: str) -> tuple[dict, dict]:
    """Rename keys per `table` (None = drop), check `required` values; returns (ours, unknown)."""
    ours, unknown = {}, {}
    for key, value in kwargs.items():
        if key in required:
            if _plain(value) != required[key]:
                raise CheckpointError(f"{where}: {key}={value!r} is not supported (need {required[key]!r})")
        elif key in table:
            if table[key] is not None:
                ours[table[key]] = value
        else:
            unknown[key] = value
    return ours, unknown


_G_TOP = {k: k for k in ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")}
_G_MAPPING = {"num_layers": "num_mapping_layers", "lr_multiplier": "mapping_lr_multiplier",
              "layer_features": "mapping_layer_features", "embed_features": "embed_features",
              "w_avg_beta": "w_avg_beta"}
_G_SYNTHESIS = {"channel_base": "channel_base", "channel_max": "channel_max", "conv_clamp": "conv_clamp",
                "num_fp16_res": None, "fp16_channels_last": None}
_COMMON_REQUIRED = {"activation": "lrelu", "resample_filter": [1, 3, 3, 1]}
_G_SYN_REQUIRED = {**_COMMON_REQUIRED, "architecture": "skip", "use_noise": True, "kernel_size": 3}


def nvlabs_generator_kwargs(init_kwargs: dict) -> tuple[dict, dict]:
    """NVlabs Generator init_kwargs -> (our Generator kwargs, ignored unknown kwargs)."""
    kw = _plain(init_kwargs)
    mapping, synthesis = kw.pop("mapping_kwargs", {}) or {}, kw.pop("synthesis_kwargs", {}) or {}
    ours, unknown = _take(kw, _G_TOP, {}, "Generator")
    m, unknown_m = _take(mapping, _G_MAPPING, {"activation": "lrelu"}, "mapping_kwargs")
    s, unknown_s = _take(synthesis, _G_SYNTHESIS, _G_SYN_REQUIRED, "synthesis_kwargs")
    if unknown_m or unknown_s:
        raise CheckpointError(f"unsupported NVlabs generator kwargs: {unknown_m | unknown_s}")
    return {**ours, **m, **s}, unknown


_D_TOP = {"c_dim": "c_dim", "img_resolution": "img_resolution", "img_channels": "img_channels",
          "channel_base": "channel_base", "channel_max": "channel_max", "conv_clamp": "conv_clamp",
          "cmap_dim": "cmap_dim", "num_fp16_res": None}
_D_BLOCK = {"freeze_layers": None, "fp16_channels_last": None}
_D_EPILOGUE = {"mbstd_group_size": "mbstd_group_size", "mbstd_num_channels": "mbstd_num_channels"}


def nvlabs_discriminator_kwargs(init_kwargs: dict) -> tuple[dict, dict]:
    """NVlabs Discriminator init_kwargs -> (our Discriminator kwargs, ignored unknown kwargs)."""
    kw = _plain(init_kwargs)
    block, mapping = kw.pop("block_kwargs", {}) or {}, kw.pop("mapping_kwargs", {}) or {}
    epilogue = kw.pop("epilogue_kwargs", {}) or {}
    ours, unknown = _take(kw, _D_TOP, {"architecture": "resnet"}, "Discriminator")
    _, unknown_b = _take(block, _D_BLOCK, _COMMON_REQUIRED, "block_kwargs")
    m, unknown_m = _take(mapping, {"num_layers": "num_mapping_layers"}, {}, "mapping_kwargs")
    e, unknown_e = _take(epilogue, _D_EPILOGUE, {"activation": "lrelu"}, "epilogue_kwargs")
    if unknown_b or unknown_m or unknown_e:
        raise CheckpointError(f"unsupported NVlabs discriminator kwargs: {unknown_b | unknown_m | unknown_e}")
    return {**ours, **m, **e}, unknown


def _network_from_stub(stub: PersistentStub, cls, translate, where: str):
    if stub.class_name != cls.__name__:
        raise CheckpointError(f"{where}: class {stub.class_name!r}, expected {cls.__name__}")
    kwargs, unknown = translate(stub.state.get("_init_kwargs") or {})
    if unknown:
        log.warning("%s: ignoring unknown NVlabs kwargs %s", where, sorted(unknown))
    state = stub_state_dict(stub)
    if any(k.startswith("synthesis.input.") for k in state):
        raise CheckpointError(f"{where}: a StyleGAN3 generator; only StyleGAN2 networks are supported")
    try:
        net = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{where}: cannot build {cls.__name__}({kwargs}): {exc}") from exc
    load_state_strict(net, state, where)
    return net.eval(), sorted(unknown)


def convert_nvlabs(path: str | pathlib.Path, *, include_D: bool = True) -> Networks:
    """NVlabs stylegan2(-ada) `.pkl` -> Networks (G from G_ema, D when present and asked for)."""
    data = read_nvlabs_pickle(path)
    key = "G_ema" if isinstance(data.get("G_ema"), PersistentStub) else "G"
    G, ignored = _network_from_stub(data[key], Generator, nvlabs_generator_kwargs, f"{path}: {key}")
    D = None
    if include_D and isinstance(data.get("D"), PersistentStub):
        D, ignored_d = _network_from_stub(data["D"], Discriminator, nvlabs_discriminator_kwargs, f"{path}: D")
        ignored += [f"D.{k}" for k in ignored_d]
    provenance = {"source_format": "nvlabs-stylegan2-pkl", "source_network": key,
                  "ignored_kwargs": ", ".join(ignored)}
    return Networks(G=G, D=D, provenance=provenance)


# ----------------------------------------------------------------------------------------------------
# rosinality stylegan2-pytorch


def read_rosinality(path: str | pathlib.Path) -> dict:
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign or corrupt files
        raise CheckpointError(f"{path}: cannot read as a torch checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("g_ema"), dict):
        raise CheckpointError(f"{path}: no 'g_ema' state dict (not a rosinality stylegan2-pytorch checkpoint)")
    return data


def _count(sd: dict, pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in sd if (m := rx.fullmatch(k))})


def _channel_schedule(channels: dict[int, int], where: str) -> tuple[int, int]:
    """(channel_base, channel_max) such that min(base // res, max) reproduces `channels`."""
    channel_max = max(channels.values())
    below = sorted(res for res, ch in channels.items() if ch < channel_max)
    channel_base = channels[below[0]] * below[0] if below else channel_max * max(channels)
    if any(min(channel_base // res, channel_max) != ch for res, ch in channels.items()):
        raise CheckpointError(f"{where}: channels {channels} do not follow min(base // res, max)")
    return channel_base, channel_max


def rosinality_generator_kwargs(sd: dict, *, lr_mlp: float = 0.01, where: str = "g_ema") -> dict:
    """Our Generator kwargs inferred from the shapes of a rosinality g_ema state dict."""
    try:
        n_mlp = _count(sd, r"style\.(\d+)\.weight")
        w_dim = sd["style.1.weight"].shape[0]
        num_blocks = _count(sd, r"to_rgbs\.(\d+)\.conv\.weight")
        channels = {4: sd["input.input"].shape[1]}
        for k in range(num_blocks):
            channels[2 ** (k + 3)] = sd[f"convs.{2 * k}.conv.weight"].shape[1]
        img_channels = sd["to_rgb1.conv.weight"].shape[1]
    except KeyError as exc:
        raise CheckpointError(f"{where}: missing rosinality key {exc}") from exc
    channel_base, channel_max = _channel_schedule(channels, where)
    return dict(z_dim=w_dim, c_dim=0, w_dim=w_dim, img_resolution=2 ** (num_blocks + 2),
                img_channels=img_channels, channel_base=channel_base, channel_max=channel_max,
                num_mapping_layers=n_mlp, mapping_lr_multiplier=lr_mlp)


def _ros_layer(src: dict, s: str, d: str, noise: torch.Tensor | None) -> dict:
    out = {f"{d}.weight": src[f"{s}.conv.weight"][0],
           f"{d}.affine.weight": src[f"{s}.conv.modulation.weight"],
           f"{d}.affine.bias": src[f"{s}.conv.modulation.bias"],
           f"{d}.noise_strength": src[f"{s}.noise.weight"].reshape([]),
           f"{d}.bias": src[f"{s}.activate.bias"]}
    if noise is not None:
        out[f"{d}.noise_const"] = noise[0, 0]
    return out


def _ros_torgb(src: dict, s: str, d: str) -> dict:
    return {f"{d}.weight": src[f"{s}.conv.weight"][0],
            f"{d}.affine.weight": src[f"{s}.conv.modulation.weight"],
            f"{d}.affine.bias": src[f"{s}.conv.modulation.bias"],
            f"{d}.bias": src[f"{s}.bias"].reshape(-1)}


def rosinality_to_nvlabs_names(src: dict, n_mlp: int, img_resolution: int) -> dict:
    """Rename/reshape a rosinality g_ema state dict to our (NVlabs) names; filters are not included."""
    def noise(i):
        return src.get(f"noises.noise_{i}")

    out = {}
    for i in range(n_mlp):
        out[f"mapping.fc{i}.weight"] = src[f"style.{i + 1}.weight"]
        out[f"mapping.fc{i}.bias"] = src[f"style.{i + 1}.bias"]
    out["synthesis.b4.const"] = src["input.input"][0]
    out.update(_ros_layer(src, "conv1", "synthesis.b4.conv1", noise(0)))
    out.update(_ros_torgb(src, "to_rgb1", "synthesis.b4.torgb"))
    for k in range(int(math.log2(img_resolution)) - 2):
        b = f"synthesis.b{2 ** (k + 3)}"
        out.update(_ros_layer(src, f"convs.{2 * k}", f"{b}.conv0", noise(2 * k + 1)))
        out.update(_ros_layer(src, f"convs.{2 * k + 1}", f"{b}.conv1", noise(2 * k + 2)))
        out.update(_ros_torgb(src, f"to_rgbs.{k}", f"{b}.torgb"))
    return out


def _check_ros_kernels(src: dict, where: str) -> None:
    expected = setup_filter() * 4
    for key, t in src.items():
        if key.endswith((".blur.kernel", ".upsample.kernel")) and (
                t.shape != expected.shape or not torch.allclose(t.float(), expected)):
            raise CheckpointError(f"{where}: {key} is not the [1, 3, 3, 1] FIR filter; unsupported")


def _estimate_w_avg(G: Generator, n: int = 10000, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        z = torch.randn([n, G.z_dim], generator=gen)
        return G.mapping(z)[:, 0].mean(dim=0)


def convert_rosinality(path: str | pathlib.Path, *, lr_mlp: float = 0.01) -> Networks:
    """rosinality stylegan2-pytorch `.pt` (g_ema [+ latent_avg]) -> Networks (G only)."""
    data = read_rosinality(path)
    src, where = data["g_ema"], f"{path}: g_ema"
    _check_ros_kernels(src, where)
    kwargs = rosinality_generator_kwargs(src, lr_mlp=lr_mlp, where=where)
    G = Generator(**kwargs)
    try:
        mapped = rosinality_to_nvlabs_names(src, kwargs["num_mapping_layers"], kwargs["img_resolution"])
    except KeyError as exc:
        raise CheckpointError(f"{where}: missing rosinality key {exc}") from exc
    notes = _ros_unused_notes(src, mapped, where)
    state = G.state_dict()
    state.update({k: v.float() for k, v in mapped.items()})
    load_state_strict(G, state, where)
    if isinstance(data.get("latent_avg"), torch.Tensor):
        G.mapping.w_avg.copy_(data["latent_avg"].reshape(-1))
    else:
        G.mapping.w_avg.copy_(_estimate_w_avg(G))
        notes.append("w_avg estimated from 10000 z samples (no latent_avg in source)")
    provenance = {"source_format": "rosinality-stylegan2-pt", "source_network": "g_ema",
                  "notes": "; ".join(notes)}
    return Networks(G=G.eval(), provenance=provenance)


def _ros_unused_notes(src: dict, mapped: dict, where: str) -> list[str]:
    notes = []
    if not any(k.endswith("noise_const") for k in mapped):
        notes.append("no noises.* buffers in source: const noise is random")
    used = _ros_used_keys(src)
    unused = sorted(k for k in src if k not in used)
    if unused:
        raise CheckpointError(f"{where}: unexpected rosinality keys {unused[:5]}")
    return notes


def _ros_used_keys(src: dict) -> set[str]:
    suffixes = (".blur.kernel", ".upsample.kernel")
    pattern = re.compile(r"(style\.\d+\.(weight|bias)|input\.input|noises\.noise_\d+|"
                         r"(conv1|convs\.\d+)\.(conv\.weight|conv\.modulation\.(weight|bias)|noise\.weight|"
                         r"activate\.bias)|(to_rgb1|to_rgbs\.\d+)\.(conv\.weight|conv\.modulation\.(weight|bias)|bias))")
    return {k for k in src if k.endswith(suffixes) or pattern.fullmatch(k)}


# ----------------------------------------------------------------------------------------------------
# Dispatch and CLI

_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19."


def detect_format(path: str | pathlib.Path) -> str:
    """'rosinality' for torch files (zip or legacy), 'nvlabs' otherwise."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    with open(path, "rb") as f:
        head = f.read(len(_LEGACY_TORCH_MAGIC))
    return "rosinality" if zipfile.is_zipfile(path) or head == _LEGACY_TORCH_MAGIC else "nvlabs"


def _sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def convert(src: str | pathlib.Path, *, fmt: str = "auto", include_D: bool = True,
            source: str | None = None) -> Networks:
    """Convert a foreign checkpoint; provenance records source, format, hash and notes."""
    src = pathlib.Path(src)
    fmt = detect_format(src) if fmt == "auto" else fmt
    if fmt == "nvlabs":
        nets = convert_nvlabs(src, include_D=include_D)
    elif fmt == "rosinality":
        nets = convert_rosinality(src)
    else:
        raise CheckpointError(f"unknown source format {fmt!r} (auto, nvlabs, rosinality)")
    nets.provenance.update(source=source or str(src.name), source_sha256=_sha256(src),
                           created_by="reenact.models.convert")
    return nets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reenact.models.convert", description=__doc__.split("\n")[0])
    parser.add_argument("src", help="NVlabs .pkl or rosinality .pt")
    parser.add_argument("dst", help="output checkpoint (reenact format)")
    parser.add_argument("--format", default="auto", choices=["auto", "nvlabs", "rosinality"])
    parser.add_argument("--no-D", dest="include_D", action="store_false", help="skip the discriminator")
    parser.add_argument("--source", default=None, help="where SRC came from (URL), for provenance")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        nets = convert(args.src, fmt=args.format, include_D=args.include_D, source=args.source)
        save_networks(args.dst, G=nets.G, D=nets.D, provenance=nets.provenance)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    G = nets.G
    print(f"wrote {args.dst}: G {G.img_resolution}px num_ws={G.num_ws} w_dim={G.w_dim}"
          f"{' + D' if nets.D is not None else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
