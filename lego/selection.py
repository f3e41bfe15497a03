"""Choices made on validation patients only: block hyper-parameters, which blocks to merge and
with what weights, and which MM-Lego variant (merge or fuse) a fold reports.

Every choice reads the fold's validation patients and nothing else: test patients are only ever
predicted, after the choice, by the evaluation stage.
"""

from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lego.io import copy_atomic, write_json

log = logging.getLogger(__name__)

MODEL_FILES = ("model.safetensors", "config.json", "history.json")


def grid_candidates(grid: dict[str, list] | list[dict] | None) -> list[dict]:
    """The hyper-parameter grid as a list of settings.

    A mapping of lists is every combination (keys sorted, so numbering is stable); a list of
    mappings is taken as the candidates themselves, in order (for grids that are not a product,
    e.g. feature selection for some encoders only).
    """
    if not grid:
        return [{}]
    if isinstance(grid, list):
        return [dict(c) for c in grid]
    keys = sorted(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def validation_score(pred: pd.DataFrame, labels: pd.DataFrame, task: str) -> float | None:
    """Harrell's C (survival) or AUC (classification) of predictions on validation patients; None if undefined."""
    from lego.evaluation.metrics import headline

    if pred.empty:
        return None
    score = headline(pred.merge(labels, on="patient_id", how="left"), task)
    return None if score is None or not np.isfinite(score) else float(score)


def select_candidate(candidate_dirs: list[str], out_dir: str) -> dict:
    """Copy the candidate with the best validation score (ties: the first) into ``out_dir``."""
    scores = []
    for d in candidate_dirs:
        hist = json.loads((Path(d) / "history.json").read_text())
        score, loss = hist.get("val_score"), hist.get("best_val_loss")
        scores.append((-np.inf if score is None else score, -(loss if loss is not None else np.inf)))
    best = max(range(len(scores)), key=lambda i: scores[i])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in MODEL_FILES:
        copy_atomic(Path(candidate_dirs[best]) / name, out / name)
    choice = {"chosen": Path(candidate_dirs[best]).name, "candidates": {Path(d).name: s[0] if np.isfinite(s[0]) else None
                                                                        for d, s in zip(candidate_dirs, scores)}}
    write_json(choice, out / "selection.json")
    log.info("%s: chose %s (validation %s)", out, choice["chosen"], choice["candidates"][choice["chosen"]])
    return choice


def latent_scale(block, mod, ids: list[str]) -> float:
    """RMS magnitude of a block's latent over the given (training) patients who have the modality."""
    from lego.data.fold_data import collate

    ids = [p for p in ids if p in mod.per_patient]
    if not ids:
        return 1.0
    with torch.no_grad():
        x, mask, _ = collate(ids, {mod.name: mod})[mod.name]
        z = block.latent_from(x, mask)
    return float(z.abs().pow(2).mean().sqrt().clamp_min(1e-6))


def merge_weights(val_scores: dict[str, float | None], floor: float = 0.01) -> dict[str, float]:
    """Weight of each block from its validation score: how far it is above chance (0.5), floored."""
    return {m: max((s if s is not None else 0.5) - 0.5, floor) for m, s in val_scores.items()}


def subsets(names: list[str], max_blocks: int = 6) -> list[list[str]]:
    """Block subsets a tuned merge may choose among: every subset of two or more (all blocks only past max_blocks)."""
    if len(names) > max_blocks:
        return [list(names)]
    return [list(c) for r in range(len(names), 1, -1) for c in itertools.combinations(names, r)]
