"""Model files: safetensors weights + a JSON config that rebuilds the architecture.

Loading never unpickles anything: the config is JSON and the weights are safetensors.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model

from lego.errors import InputError
from lego.io import atomic_path, write_json
from lego.models.block import BlockConfig, LegoBlock
from lego.models.fuse import LegoFuse
from lego.models.merge import LegoMerge

WEIGHTS, CONFIG = "model.safetensors", "config.json"


def build(config: dict) -> torch.nn.Module:
    """An untrained module of the architecture described by ``config``."""
    kind = config["kind"]
    if kind == "block":
        return LegoBlock(BlockConfig(**config["block"]))
    blocks = {m: LegoBlock(BlockConfig(**c["block"])) for m, c in config["blocks"].items()}
    if kind == "merge":
        return LegoMerge(blocks, config["method"], config["head_method"])
    if kind == "fuse":
        return LegoFuse(blocks, config["mode"], config["head_method"])
    raise InputError(f"unknown model kind {kind!r} in config")


def save(model: torch.nn.Module, config: dict, out_dir: str | Path) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / WEIGHTS) as tmp:
        save_model(model, str(tmp))
    write_json(config, out / CONFIG)


def load(out_dir: str | Path) -> tuple[torch.nn.Module, dict]:
    out = Path(out_dir)
    if not (out / CONFIG).is_file() or not (out / WEIGHTS).is_file():
        raise InputError(f"{out}: no {CONFIG} + {WEIGHTS} model files")
    config = json.loads((out / CONFIG).read_text())
    model = build(config)
    load_model(model, str(out / WEIGHTS), strict=True)
    model.eval()
    return model, config
