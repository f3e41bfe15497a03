"""The models' names: the one list the CLI, the workflow and the fitting code read.

A module of names only (no numpy, pandas or torch), so that the CLI's argument parser and the
Snakefile can import it without paying for the fitting code. The classical baselines' names come
from their registry, :data:`lego.evaluation.classical.CLASSICAL`; ``config/schema.yaml``'s
``evaluation.baselines`` enum is filled from :data:`ALL_BASELINES` when the schema loads.
"""

from __future__ import annotations

from lego.evaluation.classical import CLASSICAL

# Classical models fitted per fold on one input (a modality, or several concatenated: "early").
TASK_BASELINES: dict[str, tuple[str, ...]] = {task: tuple(n for n, b in CLASSICAL.items() if b.task == task)
                                              for task in ("survival", "classification")}
DEFAULT_BASELINES: dict[str, tuple[str, ...]] = {task: tuple(n for n in names if CLASSICAL[n].default)
                                                 for task, names in TASK_BASELINES.items()}
FITTED_BASELINES: tuple[str, ...] = tuple(CLASSICAL)
# Baselines with their own rules: attention-MIL on the slides alone, and the late-fusion mean of the blocks.
OTHER_BASELINES: tuple[str, ...] = ("abmil", "ensemble")
ALL_BASELINES: tuple[str, ...] = FITTED_BASELINES + OTHER_BASELINES

# Model names: how every model is called in folders, metrics and the summary. Built and read
# here only (the workflow, the fitting code and the summary all call these).
BLOCK_PREFIX = "block-"
LEGO_MODELS: tuple[str, ...] = ("merge", "merge-tuned", "fuse", "lego")  # "lego": the variant chosen per fold
TRAINED_MODELS: tuple[str, ...] = ("merge", "merge-tuned", "fuse")  # with a model folder of their own


def block_name(modality: str) -> str:
    """``block-<modality>``: one modality's LegoBlock."""
    return BLOCK_PREFIX + modality


def baseline_name(method: str, source: str) -> str:
    """``<method>-<source>``: a baseline on one modality, or on all of them (source ``early``)."""
    return f"{method}-{source}"


def block_modality(name: str) -> str | None:
    """The modality of a block's name; None for any other model."""
    return name[len(BLOCK_PREFIX):] if name.startswith(BLOCK_PREFIX) else None


def model_kind(name: str) -> str:
    """block, lego (a merge, the fuse or the chosen variant), ensemble or baseline."""
    if block_modality(name) is not None:
        return "block"
    if name in LEGO_MODELS:
        return "lego"
    return "ensemble" if name == "ensemble" else "baseline"


def model_folder(name: str, fold: int | str, base: str) -> str:
    """Where a run under ``base`` keeps a trained model's fold (blocks/<m>/fold<k> or <name>/fold<k>)."""
    modality = block_modality(name)
    return f"{base}/blocks/{modality}/fold{fold}" if modality is not None else f"{base}/{name}/fold{fold}"
