"""Pathology foundation models as patch encoders, each one registry entry, loaded from a local
checkpoint file (nothing is downloaded). Architectures, outputs and normalisation as published
(TRIDENT's builders and the model cards; see ``lego/slides/encoders/vit.py`` for the layout).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from lego.errors import ConfigError
from lego.slides.encoders import IMAGENET_MEAN, IMAGENET_STD, Encoder, digest_state_dict, load_state_dict, register_encoder
from lego.slides.encoders.vit import ConchVisionTower, VisionTransformer, ViTSpec, hf_dinov2_to_timm, hf_resampled

HOPTIMUS_MEAN, HOPTIMUS_STD = (0.707223, 0.578729, 0.703617), (0.211883, 0.230117, 0.177517)


@dataclass(frozen=True)
class Foundation:
    """One published model: its architecture and where its weights come from."""

    name: str
    spec: ViTSpec
    repo: str  # Hugging Face repository the user downloads the weights from (most are gated)
    filename: str
    summary: str
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    layout: str = "timm"  # "timm", "hf_dinov2" (renamed at load) or "conch" (tower with a trunk. prefix)
    stamp: str = ""  # the extractor name STAMP's slide encoders check (TITAN wants "conch1_5"); "" = ours

    @property
    def dim(self) -> int:
        return 768 if self.layout == "conch" else self.spec.out_dim

    @property
    def weights(self) -> str:
        return f"{self.filename} from https://huggingface.co/{self.repo}"


def _swiglu(dim: int, depth: int, heads: int, hidden: int, patch: int = 14, **kw) -> ViTSpec:
    return ViTSpec(patch_size=patch, dim=dim, depth=depth, heads=heads, mlp_hidden=hidden, mlp="swiglu", **kw)


MODELS = [
    Foundation("uni", ViTSpec(), "MahmoodLab/UNI", "pytorch_model.bin", "UNI ViT-L/16, class token"),
    Foundation("uni2_h", _swiglu(1536, 24, 24, 8192, reg_tokens=8, pos_embed_prefix=False), "MahmoodLab/UNI2-h",
               "pytorch_model.bin", "UNI2-h ViT-H/14 (8 registers), class token", stamp="uni2"),
    Foundation("conch_v15", ViTSpec(img_size=448, pos_grid=14, pool="tokens"), "MahmoodLab/conchv1_5",
               "pytorch_model_vision.bin", "CONCH v1.5 vision tower, ViT-L/16 at 448 px, attentional pooling",
               layout="conch", stamp="conch1_5"),
    Foundation("virchow2", _swiglu(1280, 32, 16, 6832, reg_tokens=4, pool="cls+mean"), "paige-ai/Virchow2",
               "pytorch_model.bin", "Virchow2 ViT-H/14 (4 registers), class token + mean patch token"),
    Foundation("h_optimus_0", _swiglu(1536, 40, 24, 8192, reg_tokens=4, pos_embed_prefix=False), "bioptimus/H-optimus-0",
               "pytorch_model.bin", "H-optimus-0 ViT-g/14 (4 registers), class token", HOPTIMUS_MEAN, HOPTIMUS_STD,
               stamp="h-optimus-0"),
    Foundation("h_optimus_1", _swiglu(1536, 40, 24, 8192, reg_tokens=4, pos_embed_prefix=False), "bioptimus/H-optimus-1",
               "pytorch_model.bin", "H-optimus-1 ViT-g/14 (4 registers), class token", HOPTIMUS_MEAN, HOPTIMUS_STD,
               stamp="h-optimus-1"),
    Foundation("gigapath", _swiglu(1536, 40, 24, 8192, patch=16), "prov-gigapath/prov-gigapath", "pytorch_model.bin",
               "Prov-GigaPath tile encoder ViT-g/16, class token"),
    Foundation("phikon_v2", ViTSpec(), "owkin/phikon-v2", "model.safetensors", "Phikon-v2 ViT-L/16 (DINOv2), class token",
               layout="hf_dinov2"),
]
FOUNDATION = {m.name: m for m in MODELS}


def stamp_extractor(encoder: str) -> str:
    """The name STAMP knows an encoder by (``conch_v15`` -> ``conch1_5``); any other name as it is."""
    model = FOUNDATION.get(encoder)
    return model.stamp if model and model.stamp else encoder


def network(model: Foundation, depth: int | None = None) -> torch.nn.Module:
    """The untrained module (``depth``: fewer blocks, for tests that cannot afford a billion weights)."""
    spec = model.spec if depth is None else replace(model.spec, depth=depth)
    return ConchVisionTower(spec) if model.layout == "conch" else VisionTransformer(spec)


def checkpoint_state(model: Foundation, checkpoint: str | None) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors in our module's names; a missing file says which file and where from."""
    if not checkpoint:
        raise ConfigError(f"encoder {model.name!r} needs local weights: set encoders.{model.name}.checkpoint in the config "
                          f"(or --checkpoint) to {model.weights} (download it once where there is internet, accepting "
                          "the model's licence); nothing is downloaded at run time")
    if not Path(checkpoint).is_file():
        raise ConfigError(f"{checkpoint}: file not found; encoder {model.name!r} expects {model.weights}")
    state = load_state_dict(checkpoint)
    if model.layout == "hf_dinov2":
        try:
            state = hf_dinov2_to_timm(state)
        except KeyError as exc:
            raise ConfigError(f"{checkpoint}: not a {model.name} checkpoint (Hugging Face Dinov2 layout): {exc}") from None
        state["pos_embed"] = hf_resampled(state["pos_embed"], model.spec.grid)
    return {k: v.float() for k, v in state.items()}  # half-precision files run in float32 on a CPU; autocast on a GPU


def load_network(model: Foundation, state: dict[str, torch.Tensor], where: str, depth: int | None = None) -> torch.nn.Module:
    """Build on the meta device and take the checkpoint's tensors (no second copy of a 4 GB model)."""
    with torch.device("meta"):
        net = network(model, depth)
    try:
        net.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        raise ConfigError(f"{where}: not a {model.name} checkpoint ({' '.join(lines[1:2])[:240]})") from None
    return net.eval()


def _builder(model: Foundation) -> Callable[..., Encoder]:
    def build(checkpoint: str | None = None, depth: int | None = None) -> Encoder:
        state = checkpoint_state(model, checkpoint)
        net = load_network(model, state, str(checkpoint), depth)
        return Encoder(model.name, model.dim, model.spec.img_size, net, digest_state_dict(state), mean=model.mean,
                       std=model.std, cpu_batch=8, autocast_dtype="bfloat16")

    return build


for _m in MODELS:
    register_encoder(_m.name, f"{_m.dim}-d {_m.summary}; local weights: {_m.weights}",
                     dim=_m.dim, input_px=_m.spec.img_size, weights=_m.weights)(_builder(_m))
