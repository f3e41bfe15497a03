"""Model files: safetensors weights + a JSON config that rebuilds the architecture.

Loading never unpickles anything: the config is JSON and the weights are safetensors.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model

from lego.errors import InputError
from lego.io import atomic_path, write_json
from lego.models.model_kinds import CONFIG, HISTORY, MODEL_FILES, WEIGHTS, architecture, block_order  # noqa: F401


def build(config: dict) -> torch.nn.Module:
    """An untrained module of the architecture described by ``config`` (its kind's builder)."""
    return architecture(config).build(config)


def save(model: torch.nn.Module, config: dict, out_dir: str | Path) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(out / WEIGHTS) as tmp:
            save_model(model, str(tmp))
    except SafetensorError as exc:  # a full disk or an I/O error comes from the Rust writer, not as an OSError
        reason = " ".join(str(exc).split())[:200]
        free = shutil.disk_usage(out).free // 2**20
        raise InputError(f"{out / WEIGHTS}: cannot be written ({reason}; {free} MiB free there); free disk space "
                         "or point results_dir at a larger disk, then run again") from None
    write_json(config, out / CONFIG)


def read_config(out_dir: str | Path) -> dict:
    """A model folder's config.json (what it reads and how it was trained), without its weights."""
    path = Path(out_dir) / CONFIG
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read the model config ({exc}); give a model folder written by lego") from None


def load(out_dir: str | Path) -> tuple[torch.nn.Module, dict]:
    """Rebuild a saved model; any damage (unreadable files, a config that does not describe the
    weights, non-finite weights) is one InputError naming the folder, never a traceback."""
    out = Path(out_dir)
    if not (out / CONFIG).is_file() or not (out / WEIGHTS).is_file():
        raise InputError(f"{out}: no {CONFIG} + {WEIGHTS} model files")
    _check_readable(out)
    redo = "re-run the step that wrote it (delete the folder and run snakemake again)"
    try:
        config = json.loads((out / CONFIG).read_text())
        model = build(config)
    except InputError as exc:
        raise InputError(f"{out / CONFIG}: {exc}; {redo}") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"{out / CONFIG}: not a valid model config ({type(exc).__name__}: {exc}); {redo}") from None
    try:
        load_model(model, str(out / WEIGHTS), strict=True)
    except Exception as exc:  # safetensors and torch raise several types for damaged or mismatched files
        reason = " ".join(str(exc).split())[:300]
        raise InputError(f"{out / WEIGHTS}: does not hold this model's weights ({type(exc).__name__}: {reason}); {redo}") from None
    _check_finite(model, out / WEIGHTS, redo)
    model.eval()
    return model, config


def _check_readable(out: Path) -> None:
    """A model this user may not read is not damaged: say whose permission is missing, and never
    advise deleting (another member of a shared project would delete the owner's models)."""
    for name in (CONFIG, WEIGHTS):
        path = out / name
        if not os.access(path, os.R_OK):
            raise InputError(f"{path}: permission denied (mode {path.stat().st_mode & 0o777:o}); ask its owner to "
                             f"make the model readable (chmod g+r {out}/*) -- the model itself is fine")


def _check_finite(model: torch.nn.Module, path: Path, redo: str) -> None:
    """NaN or infinite weights give constant predictions that score C = 0.5 without a word: refuse them.
    (Forest thresholds of leaves are +inf by design; NaN is refused there too.)"""
    for name, tensor in model.state_dict().items():
        if not tensor.is_floating_point():
            continue
        bad = tensor.isnan() if name.endswith("threshold") else ~torch.isfinite(tensor)
        if bad.any():
            raise InputError(f"{path}: tensor {name!r} holds {int(bad.sum())} NaN or infinite value(s); {redo}")
