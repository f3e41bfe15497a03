"""A fold's selected blocks, loaded together for merging or fusing, and the checks that they belong
together (one fold, one bin set, one shape) and to the folds table they are used with."""

from __future__ import annotations

import pandas as pd

from lego.data.labels import require_outcomes
from lego.errors import InputError
from lego.models import files as model_files
from lego.models.block import LegoBlock
from lego.models.model_kinds import BLOCK, READOUT_READS
from lego.steps.inference import check_unseen

MERGE_SHAPE = ("latent_rows", "latent_dim", "depth", "heads", "head_dim", "n_outputs")  # what merge and fuse combine


def load_blocks(block_dirs: list[str]) -> tuple[dict[str, LegoBlock], dict[str, dict]]:
    """Each modality's block and config (one block per modality, of one fold, mergeable shapes)."""
    blocks, configs = {}, {}
    for d in block_dirs:
        block, config = model_files.load(d)
        if config["kind"] != BLOCK.architecture:
            raise InputError(f"{d}: a {config['kind']} model, not a block; merge and fuse take LegoBlock folders "
                             "(blocks/<modality>/fold<k>)")
        blocks[config["modality"]] = block
        configs[config["modality"]] = config
    _check_together(block_dirs, blocks, configs)
    return blocks, configs


def _check_together(block_dirs: list[str], blocks: dict, configs: dict[str, dict]) -> None:
    folds = {c["fold"] for c in configs.values()}
    bins = {tuple(c["bins"]) for c in configs.values()}
    if len(folds) != 1 or len(bins) != 1:
        raise InputError(f"blocks come from different folds or bin edges ({sorted(folds)}); merge blocks of one fold only")
    if len(blocks) < len(block_dirs):
        raise InputError(f"two of the block folders {block_dirs} hold the same modality; give one block per modality")
    if len(blocks) < 2:
        raise InputError(f"merging and fusing need blocks of at least two modalities; got {sorted(blocks)} "
                         f"from {len(block_dirs)} folder(s) (one block per modality)")
    shapes = {m: tuple(c["block"][k] for k in MERGE_SHAPE) for m, c in configs.items()}
    if len(set(shapes.values())) > 1:
        shown = "; ".join(f"{m}: {dict(zip(MERGE_SHAPE, v))}" for m, v in shapes.items())
        raise InputError(f"blocks of different shapes cannot merge ({shown}); train them with one model.block setting")


def check_blocks_fold(configs: dict[str, dict], ids: dict[str, list[str]], lab: pd.DataFrame, folds: str,
                      labels: str) -> None:
    """The folds table is the one the blocks were trained with, and the labels are valid, before a
    tuned merge or a fuse uses the fold's training and validation patients. Why: another split of
    the same cohort would fine-tune or choose on patients that are test patients of the blocks' fold."""
    task, fold = next(iter(configs.values()))["task"], next(iter(configs.values()))["fold"]
    require_outcomes(lab, task, f"{labels} (fold {fold})", ids["train"] + ids["val"])
    for m, c in configs.items():
        fix = f"use the folds table block {m!r} was trained with"
        check_unseen(c, ids["test"], f"of the test patients in {folds}", fix)
        for subset in ("train", "val"):
            check_recorded_patients(c, subset, ids[subset], folds, fix)


def check_recorded_patients(config: dict, subset: str, fold_patients: list[str] | set[str], folds: str, fix: str) -> None:
    """The model's recorded ``subset`` (train or val) patients are that subset of the fold in
    ``folds``: another folds table of the same cohort would otherwise pass unseen (a model saved
    before its patients were recorded is not checked)."""
    stray = sorted(set(config.get("patients", {}).get(subset, ())) - set(fold_patients))
    if stray:
        raise InputError(f"{len(stray)} of the model's {subset} patients (e.g. {stray[0]}) are not {subset} patients "
                         f"of fold {config['fold']} in {folds}; {fix}")


def combined_config(kind: str, configs: dict[str, dict], **extra) -> dict:
    """The config of a model made of the fold's blocks (a merge or a fuse)."""
    first = next(iter(configs.values()))
    return {"kind": kind, "fold": first["fold"], "task": first["task"], "bins": first["bins"],
            "classes": first["classes"], "blocks": configs, "order": list(configs), READOUT_READS[0]: READOUT_READS[1],
            **extra}
