"""Train one trained baseline (a registered model kind with a ``fit``) on one fold."""

from __future__ import annotations

import logging
from pathlib import Path

from lego.data.fold_data import load_fold_inputs
from lego.device import resolve_device
from lego.errors import InputError
from lego.io import write_json
from lego.modality_kinds import modality_kind
from lego.models import files as model_files
from lego.models.model_kinds import HISTORY, ModelKind, model_kinds
from lego.settings import default
from lego.train import seed_everything

log = logging.getLogger(__name__)


def trained_kind(name: str) -> ModelKind:
    """The registered trained baseline of that name, or one error listing them."""
    known = {k.name: k for k in model_kinds().values() if k.role == "baseline"}
    if name not in known:
        raise InputError(f"unknown trained model {name!r}; registered: {', '.join(sorted(known)) or 'none'}")
    return known[name]


def _check_modalities(kind: ModelKind, modalities: dict[str, dict], where: str) -> None:
    if kind.scope == "modality" and len(modalities) != 1:
        raise InputError(f"{where}: {kind.name} is trained on one modality at a time; got {sorted(modalities)}")
    if kind.bags_only:
        wrong = [m for m, s in modalities.items() if not modality_kind(s["kind"]).bags]
        if wrong:
            raise InputError(f"{where}: {kind.name} needs a bag modality (slides, a series, images); {wrong[0]!r} is "
                             f"{modalities[wrong[0]]['kind']}")
    families = {m: modality_kind(s["kind"]).form for m, s in modalities.items()}
    problem = kind.problem(families)
    if problem:
        shown = ", ".join(f"{m} ({family})" for m, family in families.items())
        raise InputError(f"{where}: {kind.name} {problem}; got {shown}")


def _inputs_config(inputs, modalities: dict[str, dict], kind: ModelKind) -> dict:
    """How the saved model finds its inputs again: one modality's kind and fitted preprocessing at
    the top (modality scope, as a block's), else one entry per modality."""
    described = {m: {"modality_kind": modalities[m]["kind"], "preprocess": t.state} for m, t in inputs.mods.items()}
    if kind.scope == "modality":
        (m, entry), = described.items()
        return {"modality": m, **entry}
    return {"inputs": described}


def train_model(kind_name: str, modalities: dict[str, dict], data: dict[str, str], *, labels: str, folds: str,
                fold: int, task: str, spec: dict, out_dir: str, device: str = default("model.train.device")) -> dict:
    """Fit a trained baseline on the fold's training patients (early stopping on its validation
    patients) and save it as a model folder that ``evaluate``, ``predict`` and heatmaps read."""
    kind = trained_kind(kind_name)
    name = kind.model_name(next(iter(modalities))) if kind.scope == "modality" else kind.name
    where = f"{name}, fold {fold}"
    _check_modalities(kind, modalities, where)
    inputs = load_fold_inputs(modalities, data, labels=labels, folds=folds, fold=fold, task=task, spec=spec, where=where)
    seed_everything(int(spec.get("seed", 0)))
    model, extra, history = kind.fit(inputs, spec, resolve_device(device), where)
    config = {"kind": kind.architecture, "fold": fold, "task": task, **_inputs_config(inputs, modalities, kind), **extra,
              "bins": inputs.targets.bins, "classes": inputs.targets.classes,
              "patients": {"train": sorted(inputs.train_ids), "val": sorted(inputs.val_ids)}}
    model_files.save(model.cpu().eval(), config, out_dir)
    write_json(history, Path(out_dir) / HISTORY)
    log.info("%s: %d train / %d val patients", where, len(inputs.train_ids), len(inputs.val_ids))
    return config
