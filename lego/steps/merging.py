"""LegoMerge of a fold's blocks: the paper's training-free merge, and the merge tuned on validation."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from lego.data.fold_data import fold_ids
from lego.io import read_frame, read_json
from lego.model_selection import latent_scale, merge_weights, out_of_sample, prediction_gain, subsets, validation_score
from lego.models import files as model_files
from lego.models.merge import LegoMerge
from lego.models.model_kinds import HISTORY, MERGE
from lego.models.stacking import stack
from lego.settings import default
from lego.steps.fold_blocks import check_blocks_fold, combined_config, load_blocks
from lego.steps.inference import fold_modalities

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
    """LegoMerge that uses what the fold's out-of-sample patients know (still no training).

    The out-of-sample patients: every training patient through its cross-fitted score where each
    block has a fitted encoder (the blocks record them), and the validation patients -- else the
    validation patients alone. On them the blocks' weights are stacked (:mod:`lego.models.stacking`:
    the weights that best explain survival, by the Cox partial likelihood of the merge's form), and
    the merge form and weights are chosen by :func:`tuned_merge_choice`. ``search`` instead tries
    every subset of two or more blocks and each latent merge with the stacked weights -- off by
    default: the best of ~30 tries on the same patients is partly luck.
    """
    blocks, configs = load_blocks(block_dirs)
    first = next(iter(configs.values()))
    lab, ids = read_frame(labels, "labels"), fold_ids(read_frame(folds, "folds"), first["fold"])
    check_blocks_fold(configs, ids, lab, folds, labels)
    mods = fold_modalities(configs, data, ids=ids)
    hists = {m: read_json(Path(d) / HISTORY) for m, d in zip(configs, block_dirs)}
    oos = out_of_sample(blocks, hists, mods, ids)
    stacked, shrinkage = stacked_weights(blocks, configs, oos, lab, first["task"])
    if search:
        return _searched_merge(blocks, configs, mods, ids, oos, weights=stacked, lab=lab, head_method=head_method,
                               out_dir=out_dir, shrinkage=shrinkage)
    best, selection = tuned_merge_choice(blocks, configs, oos, stacked, lab, head_method)
    config = {**best["config"], "selection": {"block_val_scores": {m: h.get("val_score") for m, h in hists.items()},
                                              **selection, "stacking_shrinkage": shrinkage}}
    model_files.save(best["model"], config, out_dir)
    log.info("tuned merge of fold %s: weights %s (%s)", first["fold"], best["config"]["weights"], selection)
    return config


def tuned_merge_choice(blocks: dict, configs: dict, oos, stacked: dict[str, float], lab, head_method: str) -> tuple[dict, dict]:
    """The tuned merge: each merge form of :data:`TUNED_FORMS` (readout, harmonic and mean latents)
    with the stacked weights, scored on the fold's out-of-sample patients; the first listed within
    one bootstrap SE of the paired gain of the best is kept. Where those patients are the
    validation patients alone (a block without cross-fitted scores), the readout form alone.

    Why: the weights are the stacking's, shrunk toward equal weights for standardised risks (raw
    weights 1/sd of each block's risk) as far as the cross-validated likelihood says
    (:mod:`lego.models.stacking`) -- where the blocks are about equally informative that is an
    average of comparable risks, where one dominates the weak ones stop dragging it down.
    Choosing "equal or stacked" by C instead kept equal weights on 5-10 events even where the
    stacked ones won in 4 of 5 folds (docs/lego_method.md section 9). Which latent
    merge suits a cohort's blocks differed between cohorts by more than the noise; listed simplest
    first, a later form is kept only for a clear out-of-sample gain. But one SE of a C on the 5-10
    events of a validation part is no guard for a three-way choice: there a latent form that won
    validation by chance lost 0.19 test C in a fold (heart valve cohort, section 9)."""
    task = next(iter(configs.values()))["task"]
    offsets = oos.block_offsets(blocks, configs)
    forms = TUNED_FORMS if oos.cross_fitted else TUNED_FORMS[:1]
    tried = [_merged(blocks, configs, method, stacked, head_method, oos, lab, offsets=offsets) for method in forms]
    scores = [-np.inf if t["score"] is None else t["score"] for t in tried]
    best = int(np.argmax(scores))
    chosen = best
    for i, t in enumerate(tried[:best]):
        gain, se = prediction_gain(t["pred"], tried[best]["pred"], lab) if task == "survival" else (None, None)
        t["gain_of_best"], t["gain_se"] = gain, se
        if gain is None or gain <= (se or 0.0):
            chosen = i
            break
    return tried[chosen], {"chosen_on": oos.what, "n_patients": len(oos.ids), "stacked_weights": stacked, "tried": [
        {"method": t["config"]["method"], "weights": t["config"]["weights"], "score": t["score"],
         **{k: t[k] for k in ("gain_of_best", "gain_se") if k in t}} for t in tried]}


TUNED_FORMS = ("readout", "harmonic", "mean")  # single-source: the tuned merge's forms, simplest first


def _merged(blocks: dict, configs: dict, method: str, weights: dict[str, float], head_method: str, oos, lab, *,
            offsets: dict[str, list[float]] | None) -> dict:
    """A merge of all blocks in one form with the given weights, and its out-of-sample score
    (the readout centred at the blocks' out-of-sample mean logits, ``offsets``)."""
    extra = {"offsets": offsets} if method == "readout" and offsets else {}
    model = LegoMerge(blocks, method, head_method, weights, **extra)
    cfg = combined_config(MERGE.architecture, configs, method=method, head_method=head_method, weights=weights,
                          scales={m: 1.0 for m in blocks}, **extra)
    pred = oos.predict(model, cfg, list(blocks))
    return {"model": model, "config": cfg, "pred": pred, "score": validation_score(pred, lab, cfg["task"])}


def _searched_merge(blocks, configs, mods, ids, oos, *, weights, lab, head_method, out_dir, shrinkage=None) -> dict:
    """Every subset of two or more blocks and each latent merge, the best on the out-of-sample patients."""
    first = next(iter(configs.values()))
    scales = {m: latent_scale(blocks[m], mods[m], ids["train"]) for m in blocks}
    tried = []
    for subset in subsets(list(blocks)):
        for method in ("readout", "mean", "harmonic"):  # single-source: the searched merge's tries
            use_scales = {m: 1.0 if method == "readout" else scales[m] for m in subset}
            model = LegoMerge({m: blocks[m] for m in subset}, method, head_method, weights, use_scales)
            cfg = combined_config(MERGE.architecture, {m: configs[m] for m in subset}, method=method,
                                  head_method=head_method, weights={m: weights[m] for m in subset}, scales=use_scales)
            tried.append({"blocks": subset, "method": method, "model": model, "config": cfg,
                          "score": validation_score(oos.predict(model, cfg, subset), lab, first["task"])})
    best = max(tried, key=lambda t: (-np.inf if t["score"] is None else t["score"], len(t["blocks"])))
    config = {**best["config"], "selection": {"chosen_on": oos.what, "stacking_shrinkage": shrinkage, "tried": [
        {k: t[k] for k in ("blocks", "method", "score")} for t in tried]}}
    model_files.save(best["model"], config, out_dir)
    return config


def stacked_weights(blocks: dict, configs: dict, oos, lab, task: str) -> tuple[dict[str, float], float | str | None]:
    """Each block's merge weight from stacking its risks on the out-of-sample patients (see stacking),
    and the cross-validated shrinkage of the stacking (a number, "equal": shrunk to equal weights;
    None for a classification task, whose weights follow the blocks' scores).

    The stacked weights are for standardised risks; a merge averages the blocks' outputs as they
    are, so each weight is divided by the spread of its block's risk (renormalised to sum to 1)."""
    risks = {m: oos.block_risks(blocks[m], configs[m], m) for m in blocks}
    frame = pd.DataFrame(risks).reindex(oos.ids)
    if task != "survival":
        return merge_weights({m: validation_score(r.rename("risk").rename_axis("patient_id").reset_index(), lab, task)
                              for m, r in risks.items()}), None
    outcome = lab.set_index("patient_id").reindex(frame.index)
    w, shrink = stack(frame.to_numpy(float), frame.notna().to_numpy(), outcome["time"].to_numpy(float),
                      outcome["event"].to_numpy(bool))
    sd = frame.std(ddof=0).fillna(1.0).clip(lower=1e-6).to_numpy()
    raw = np.maximum(w / sd, 1e-4 * (w / sd).max())
    return {m: float(v) for m, v in zip(frame.columns, raw / raw.sum())}, (shrink if math.isfinite(shrink) else "equal")
