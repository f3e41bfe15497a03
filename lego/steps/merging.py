"""LegoMerge of a fold's blocks: the paper's training-free merge, and the merge tuned on validation."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from lego.data.fold_data import fold_ids
from lego.io import read_frame, read_json
from lego.model_selection import latent_scale, merge_weights, subsets, validation_score
from lego.models import files as model_files
from lego.models.merge import LegoMerge
from lego.models.model_kinds import HISTORY, MERGE
from lego.settings import default
from lego.steps.fold_blocks import check_blocks_fold, combined_config, load_blocks
from lego.steps.inference import fold_modalities, predict

log = logging.getLogger(__name__)


def merge(block_dirs: list[str], method: str, head_method: str, out_dir: str) -> None:
    """LegoMerge of a fold's blocks: no training, no data."""
    blocks, configs = load_blocks(block_dirs)
    model = LegoMerge(blocks, method, head_method)
    config = combined_config(MERGE.architecture, configs, method=method, head_method=head_method)
    model_files.save(model, config, out_dir)
    log.info("merged %s (%s latents, %s heads)", ", ".join(blocks), method, head_method)


def merge_tuned(block_dirs: list[str], data: dict[str, str], *, labels: str, folds: str, out_dir: str,
                head_method: str = default("model.merge.head"), search: bool = False) -> dict:
    """LegoMerge that uses what validation knows (still no training).

    Each block's latent is divided by its RMS on the fold's training patients, and blocks are
    weighted (latents and heads) by how far their validation score is above chance: a block no
    better than chance on validation keeps a floor weight of 0.01, i.e. it is all but left out.
    Two merges of all blocks are tried and the better on validation kept: the weighted mean of
    the latents, and ``readout`` (each latent read by the merged head, logits averaged).
    ``search`` also tries every subset of two or more blocks and the harmonic merge -- off by
    default: with 10-25 validation events, the best of ~30 tries is mostly luck, and the merge's
    validation score (which chooses the reported MM-Lego variant) would be inflated.
    """
    blocks, configs = load_blocks(block_dirs)
    first = next(iter(configs.values()))
    lab, ids = read_frame(labels, "labels"), fold_ids(read_frame(folds, "folds"), first["fold"])
    check_blocks_fold(configs, ids, lab, folds, labels)
    mods = fold_modalities(configs, data, ids=ids)
    scales = {m: latent_scale(blocks[m], mods[m], ids["train"]) for m in blocks}
    block_scores = {m: read_json(Path(d) / HISTORY).get("val_score") for m, d in zip(configs, block_dirs)}
    weights = merge_weights(block_scores)
    methods = ("mean", "readout", "harmonic") if search else ("mean", "readout")  # single-source: the tuned merge's tries
    tried = []
    for subset in subsets(list(blocks)) if search else [list(blocks)]:
        for method in methods:
            model = LegoMerge({m: blocks[m] for m in subset}, method, head_method, weights, scales)
            cfg = combined_config(MERGE.architecture, {m: configs[m] for m in subset}, method=method,
                                  head_method=head_method, weights={m: weights[m] for m in subset},
                                  scales={m: scales[m] for m in subset})
            val_ids = [p for p in ids["val"] if any(p in mods[m].per_patient for m in subset)]
            score = validation_score(predict(model, cfg, {m: mods[m] for m in subset}, val_ids), lab, first["task"])
            tried.append({"blocks": subset, "method": method, "val_score": score, "model": model, "config": cfg})
    best = max(tried, key=lambda t: (-np.inf if t["val_score"] is None else t["val_score"], len(t["blocks"])))
    config = {**best["config"], "selection": {"block_val_scores": block_scores, "tried": [
        {k: t[k] for k in ("blocks", "method", "val_score")} for t in tried]}}
    model_files.save(best["model"], config, out_dir)
    log.info("tuned merge of fold %s: %s (%s), validation %s", first["fold"], best["blocks"], best["method"], best["val_score"])
    return config
