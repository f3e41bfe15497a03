"""Patch-encoder registry (the timm pattern): one small module per encoder, one decorator.

Each encoder has a stable name, an output dimension, the input size it expects and a digest of
its weights; the digest is written into every feature file so features from different weights
never mix silently. Adding an encoder = adding a module with a ``@register_encoder`` function.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from lego.errors import ConfigError

if TYPE_CHECKING:  # torch is imported where a network runs: an array encoder's job never loads it
    import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


ArrayFn = Callable[[np.ndarray], np.ndarray]


@dataclass
class Encoder:
    """A ready patch encoder: ``model`` (a torch module) maps a float batch (B, 3, S, S) to features
    (B, dim); an *array encoder* has no network (``model`` None) and ``arrays`` maps a uint8 numpy
    batch (B, 3, S, S) to float32 features (B, dim) instead. Why both: importing torch costs 2-3 s
    of CPU per job, several times the work of a weightless descriptor on a small slide, and the
    workflow embeds each slide in its own job; an array encoder's job never imports torch."""

    name: str
    dim: int
    input_px: int
    model: Any  # torch.nn.Module, or None for an array encoder
    digest: str
    normalise: bool = True  # mean/std normalisation of [0, 1] inputs (ImageNet's unless the model's card says otherwise)
    extra: dict = field(default_factory=dict)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    # CNNs on a CPU: channels-last (NHWC) convolutions and small compute batches are 2-4x faster
    # than NCHW at batch 32 (measured: bench/bench_embed.py, compute_only_*), because a large
    # batch's activations no longer fit in cache. The reader still delivers big batches.
    channels_last: bool = False
    cpu_batch: int | None = None  # run the model on at most this many patches at a time on a CPU
    autocast_dtype: str = "float16"  # torch dtype of mixed precision on a GPU (bfloat16 for the large ViTs: fp16 overflows)
    arrays: ArrayFn | None = None  # an array encoder's features of a uint8 numpy batch (see the class docstring)

    def __post_init__(self) -> None:
        if (self.model is None) == (self.arrays is None):
            raise ValueError(f"encoder {self.name!r}: give a torch model or an array function, exactly one")
        if self.channels_last and self.model is not None:
            import torch

            self.model = self.model.to(memory_format=torch.channels_last)

    def prepare(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, S, S) batch -> model input, on the batch's device.

        Patches travel from the reader workers as uint8 (4x less inter-process and host-to-GPU
        traffic than float32); scaling and normalisation happen here, on the GPU when present.
        """
        import torch

        x = batch.float().div_(255.0)
        if self.normalise:
            mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
            std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
            x = (x - mean) / std
        return x

    def embed(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, S, S) -> features (B, dim), float32 on the CPU for an array encoder."""
        import torch

        if self.arrays is not None:
            return torch.from_numpy(self.arrays(batch.cpu().numpy()))
        if batch.device.type == "cpu" and self.cpu_batch and len(batch) > self.cpu_batch:
            return torch.cat([self._forward(chunk) for chunk in batch.split(self.cpu_batch)])
        return self._forward(batch)

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        import torch

        x = self.prepare(batch)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)


def to_chw_uint8(patch: np.ndarray) -> torch.Tensor:
    """HWC uint8 RGB array -> CHW uint8 tensor (no copy of the pixel values' type)."""
    import torch

    return torch.from_numpy(chw_uint8(patch))


def chw_uint8(patch: np.ndarray) -> np.ndarray:
    """HWC uint8 RGB array -> contiguous CHW uint8 array (the layout every encoder reads)."""
    return np.ascontiguousarray(np.asarray(patch).transpose(2, 0, 1))


Builder = Callable[..., Encoder]
_REGISTRY: dict[str, tuple[Builder, str]] = {}
_INFO: dict[str, dict] = {}


def register_encoder(name: str, description: str, dim: int | None = None, input_px: int | None = None,
                     weights: str = "none") -> Callable[[Builder], Builder]:
    """Register a builder ``fn(checkpoint=None) -> Encoder`` under ``name``; ``dim``, ``input_px``
    and ``weights`` (the checkpoint it expects) are what ``lego encoders`` lists."""
    def wrap(fn: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"encoder {name!r} registered twice")
        _REGISTRY[name] = (fn, description)
        _INFO[name] = {"dim": dim, "input_px": input_px, "weights": weights, "description": description}
        return fn

    return wrap


def list_encoders() -> dict[str, str]:
    """Registered encoder names and one-line descriptions."""
    _load_builtin()
    return {k: d for k, (_, d) in sorted(_REGISTRY.items())}


def encoder_info() -> dict[str, dict]:
    """Per encoder: output dimension, input size, the weights it expects and its description."""
    _load_builtin()
    return {k: _INFO[k] for k in sorted(_INFO)}


def create_encoder(name: str, checkpoint: str | None = None) -> Encoder:
    """Build encoder ``name`` (optionally from a local checkpoint file) in eval mode."""
    _load_named(name)
    if name not in _REGISTRY:
        _load_builtin()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown encoder {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    if checkpoint and _INFO[name]["weights"] == "none":
        raise ConfigError(f"encoder {name!r} has no weights; drop the checkpoint ({checkpoint}) or choose an encoder "
                          "that takes one (`lego encoders`)")
    enc = _REGISTRY[name][0](checkpoint=checkpoint)
    if enc.model is not None:
        enc.model.eval()
    return enc


def digest_state_dict(state: dict[str, torch.Tensor]) -> str:
    """Order-independent SHA-256 (first 16 hex) over parameter names, shapes and bytes."""
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def load_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Load weights from safetensors or a torch file without unpickling arbitrary objects.

    A damaged file, a pickle of anything but tensors, or a file that holds no state dict is one
    ConfigError naming the file (never a traceback, never an unpickled object)."""
    import torch

    try:
        if str(path).endswith(".safetensors") or _looks_like_safetensors(path):
            from safetensors.torch import load_file

            return load_file(path)
        if not _looks_like_torch_file(path):
            raise ConfigError(f"{path}: neither a safetensors nor a torch weights file; check the download")
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, ConfigError):
        raise
    except Exception as exc:  # pickle, zip and safetensors errors of every kind
        why = ("it is not a tensors-only file, and loading it would unpickle arbitrary objects (refused)"
               if "Unpickl" in type(exc).__name__ else f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}")
        raise ConfigError(f"{path}: not a readable weights file ({why}); use a safetensors or state-dict .pth file") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConfigError(f"{path}: holds a {type(obj).__name__}, not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _looks_like_safetensors(path: str) -> bool:
    """A safetensors file whatever its name: an 8-byte header length, then a JSON header."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < (1 << 30)


def _looks_like_torch_file(path: str) -> bool:
    """A torch.save file: a zip archive (torch >= 1.6) or a legacy pickle (protocol 2+)."""
    with open(path, "rb") as f:
        head = f.read(4)
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def _load_named(name: str) -> None:
    """Import the module of this package named like the encoder, if there is one, and no other.
    Why: building one encoder need not import every other (the networks import torch, which an
    array encoder's job never needs); a family registered by one module (``foundation``) is found
    by :func:`_load_builtin`."""
    import importlib
    import pkgutil

    if name in {m.name for m in pkgutil.iter_modules(__path__)}:
        importlib.import_module(f"{__name__}.{name}")


def _load_builtin() -> None:
    """Import every module of this package: their @register_encoder decorators fill the registry,
    so a new encoder is one new module (no list here to keep in step)."""
    import importlib
    import pkgutil

    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
