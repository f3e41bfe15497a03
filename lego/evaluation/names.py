"""The models' names: how every model is called in folders, metrics and the summary.

Derived from the registries, never listed here: the classical baselines from
:data:`lego.evaluation.classical.CLASSICAL`, the block, the MM-Lego variants and the trained
baselines from :mod:`lego.models.model_kinds`. Light at import (no numpy, pandas or torch); the trained
baselines' modules are imported only by the functions that list them.
"""

from __future__ import annotations

from lego.evaluation.classical import CLASSICAL
from lego.models.model_kinds import BLOCK, MODEL_KINDS, by_role
from lego.settings import setting

# Classical models fitted per fold on one input (a modality, or several concatenated: "early").
TASK_BASELINES: dict[str, tuple[str, ...]] = {task: tuple(n for n, b in CLASSICAL.items() if b.task == task)
                                              for task in setting("cohort.task").choices}
DEFAULT_BASELINES: dict[str, tuple[str, ...]] = {task: tuple(n for n in names if CLASSICAL[n].default)
                                                 for task, names in TASK_BASELINES.items()}
FITTED_BASELINES: tuple[str, ...] = tuple(CLASSICAL)
# What every evaluated model ends as (eval/<model>/fold<k>/): its scores and its per-patient predictions.
METRICS_FILE, PREDICTIONS_FILE = "metrics.json", "predictions.parquet"
ENSEMBLE = "ensemble"  # the late-fusion mean of the blocks' predictions
CHOSEN = "lego"  # the MM-Lego variant chosen on validation in each fold
EARLY = "early"  # the baselines' input of every modality concatenated


def variants() -> tuple[str, ...]:
    """The MM-Lego variants, in their registration order (the summary's)."""
    return tuple(k.name for k in MODEL_KINDS.values() if k.role == "variant")


def lego_models() -> tuple[str, ...]:
    """Every model the summary counts as MM-Lego: the variants and the chosen one."""
    return (*variants(), CHOSEN)


def trained_baselines(defaults_only: bool = False) -> tuple[str, ...]:
    """The trained baselines' names (their modules imported); ``defaults_only``: those a run fits
    unless evaluation.baselines names the ones wanted."""
    return tuple(k.name for k in by_role("baseline") if k.default or not defaults_only)


def all_baselines() -> tuple[str, ...]:
    """Every name ``evaluation.baselines`` accepts."""
    return (*FITTED_BASELINES, *trained_baselines(), ENSEMBLE)


def block_name(modality: str) -> str:
    """``block-<modality>``: one modality's LegoBlock."""
    return BLOCK.model_name(modality)


def baseline_name(method: str, source: str) -> str:
    """``<method>-<source>``: a baseline on one modality, or on all of them (source ``early``)."""
    return f"{method}-{source}"


def block_modality(name: str) -> str | None:
    """The modality of a block's name; None for any other model."""
    prefix = BLOCK.name + "-"
    return name[len(prefix):] if name.startswith(prefix) else None


def model_kind(name: str) -> str:
    """block, lego (a merge, the fuse or the chosen variant), ensemble or baseline."""
    if block_modality(name) is not None:
        return "block"
    if name in lego_models():
        return "lego"
    return "ensemble" if name == ENSEMBLE else "baseline"


def model_folder(name: str, fold: int | str, base: str) -> str:
    """Where a run under ``base`` keeps a trained model's fold (blocks/<m>/fold<k>, <variant>/fold<k>,
    baselines/<name>/fold<k>)."""
    from lego.models.model_kinds import kind_of

    kind = kind_of(name)
    if kind is None:
        raise ValueError(f"{name!r} is not a trained model with a folder of its own")
    return kind.folder(name, fold, base)
