"""Triton python-backend model of one person's generator: W+ latents -> RGB8 frames.

This file is the template that `reenact.tritonserve.repository.export_generator_model` copies to
`<repo>/gen_<person>/<version>/model.py`. It runs inside Triton's python-backend stub process, never in
ours, so it imports `triton_python_backend_utils` (only present there) and must be able to import
`reenact`:

* the embedded default (`reenact.tritonserve.server.TritonServer`) sets REENACT_PYTHONPATH to the
  directory that holds the `reenact` package (the stub runs its Python isolated, so PYTHONPATH is
  ignored; `initialize` puts REENACT_PYTHONPATH's entries first on sys.path), and puts the interpreter's
  bin directory first on PATH (so the stub's embedded Python uses the same virtual environment and torch);
* elsewhere (a Triton image with `reenact` installed) nothing is needed; or the model config parameter
  `reenact_root` names a directory that is put first on sys.path before importing `reenact`.

Model config parameters read here (all strings, all optional):
  checkpoint      file name of the checkpoint beside this file (default `generator.pt`)
  reenact_root    directory to put on sys.path so that `import reenact` works
  torch_threads   intra-op threads of torch on CPU instances (default: torch's own choice)
  noise_mode      `const` (default) or `none`; `random` is refused (a renderer must be deterministic)

Inputs / outputs (batch dimension implicit, `max_batch_size` > 0):
  WS     TYPE_FP32  [num_ws, w_dim]     W+ latents
  IMAGE  TYPE_UINT8 [H, W, 3]           RGB, round((x + 1) * 127.5) clamped to [0, 255], NHWC

All requests of one `execute` call (Triton's dynamic batcher groups them) run as ONE forward pass.
A request with a bad shape gets its own error response; a failure of the forward pass fails every
request of the batch with the same message.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import triton_python_backend_utils as pb_utils  # only importable inside Triton's python backend


def _parameters(model_config: dict) -> dict[str, str]:
    return {k: v.get("string_value", "") for k, v in (model_config.get("parameters") or {}).items()}


class TritonPythonModel:
    """One generator per model instance, on the instance's device (CPU, or cuda:<id> for KIND_GPU)."""

    def initialize(self, args: dict) -> None:
        self.model_config = json.loads(args["model_config"])
        params = _parameters(self.model_config)
        roots = [params.get("reenact_root", "")] + os.environ.get("REENACT_PYTHONPATH", "").split(os.pathsep)
        for root in reversed([r for r in roots if r]):
            if root not in sys.path:
                sys.path.insert(0, root)

        import torch

        from reenact.models.checkpoint import load_generator

        self.torch = torch
        if params.get("torch_threads"):
            torch.set_num_threads(int(params["torch_threads"]))
        self.noise_mode = params.get("noise_mode") or "const"
        if self.noise_mode not in ("const", "none"):
            raise pb_utils.TritonModelException(f"noise_mode {self.noise_mode!r}: use 'const' or 'none'")

        kind = args.get("model_instance_kind", "CPU")
        device_id = args.get("model_instance_device_id", "0")
        if kind == "GPU":
            if not torch.cuda.is_available():
                raise pb_utils.TritonModelException("instance kind GPU but torch sees no CUDA device")
            self.device = torch.device(f"cuda:{device_id}")
        else:
            self.device = torch.device("cpu")

        model_dir = args["model_repository"]  # the model's own directory (…/gen_<person>)
        path = os.path.join(model_dir, args["model_version"], params.get("checkpoint") or "generator.pt")
        self.G = load_generator(path, self.device)
        self.G.requires_grad_(False)
        self.num_ws = int(self.G.num_ws)
        self.w_dim = int(getattr(self.G, "w_dim", None) or self.G.init_kwargs["w_dim"])
        self.resolution = int(self.G.img_resolution)

        ws_cfg = pb_utils.get_input_config_by_name(self.model_config, "WS")
        img_cfg = pb_utils.get_output_config_by_name(self.model_config, "IMAGE")
        want_ws, want_img = [self.num_ws, self.w_dim], [self.resolution, self.resolution, 3]
        if list(ws_cfg["dims"]) != want_ws or list(img_cfg["dims"]) != want_img:
            raise pb_utils.TritonModelException(
                f"config.pbtxt dims WS {list(ws_cfg['dims'])} / IMAGE {list(img_cfg['dims'])} do not fit the "
                f"checkpoint {path}: WS {want_ws} / IMAGE {want_img}")
        pb_utils.Logger.log_info(
            f"gen model {self.model_config.get('name')}: {path} on {self.device}, num_ws={self.num_ws}, "
            f"w_dim={self.w_dim}, resolution={self.resolution}")

    def _read(self, request):
        """The request's WS as float32 [n, num_ws, w_dim], or a TritonError."""
        tensor = pb_utils.get_input_tensor_by_name(request, "WS")
        if tensor is None:
            return pb_utils.TritonError("missing input WS")
        ws = tensor.as_numpy()
        if ws.ndim != 3 or tuple(ws.shape[1:]) != (self.num_ws, self.w_dim):
            return pb_utils.TritonError(
                f"WS must be [N, {self.num_ws}, {self.w_dim}] float32, got {list(ws.shape)}")
        if not np.isfinite(ws).all():
            return pb_utils.TritonError("WS contains NaN or Inf")
        return ws

    def _render(self, ws: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(ws, dtype=np.float32)).to(self.device)
            img = self.G.synthesis(x, noise_mode=self.noise_mode)
            img = ((img.float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
            return img.permute(0, 2, 3, 1).contiguous().cpu().numpy()

    def execute(self, requests):
        responses: list = [None] * len(requests)
        batch, owners = [], []
        for i, request in enumerate(requests):
            ws = self._read(request)
            if isinstance(ws, np.ndarray):
                batch.append(ws)
                owners.append((i, ws.shape[0]))
            else:
                responses[i] = pb_utils.InferenceResponse(output_tensors=[], error=ws)
        if batch:
            try:
                images = self._render(np.concatenate(batch, axis=0))
            except Exception as exc:  # one failed forward fails the whole batch, with its reason
                error = pb_utils.TritonError(f"render failed: {type(exc).__name__}: {exc}"[:1000])
                for i, _ in owners:
                    responses[i] = pb_utils.InferenceResponse(output_tensors=[], error=error)
            else:
                start = 0
                for i, n in owners:
                    out = pb_utils.Tensor("IMAGE", images[start:start + n])
                    responses[i] = pb_utils.InferenceResponse(output_tensors=[out])
                    start += n
        return responses

    def finalize(self) -> None:
        self.G = None
        if self.device.type == "cuda":
            self.torch.cuda.empty_cache()
