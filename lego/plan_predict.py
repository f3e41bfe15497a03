"""Which trained models a predict-mode run applies: every fold of each model ``predict.models``
names, found in the training run's results folder (``predict.from``)."""

from __future__ import annotations

import json
from pathlib import Path

from lego.errors import ConfigError
from lego.models.model_kinds import CONFIG, kind_of, model_inputs


def predict_runs(models: list[str], source: str, modalities: dict[str, dict]) -> list[tuple[str, int, list[str]]]:
    """(model, fold, the modalities it reads) of every trained fold of ``models`` under ``source``."""
    runs = []
    for model in models:
        kind = kind_of(model)
        if kind is None:
            raise ConfigError(f"predict.models: {model!r} is not a trained model")
        base = Path(kind.folder(model, 0, source)).parent
        folds = sorted(int(p.name[4:]) for p in base.glob("fold*") if p.name[4:].isdigit() and (p / CONFIG).is_file())
        if not folds:
            raise ConfigError(f"predict.from: no trained {model} under {source}; run the training config first")
        for fold in folds:
            trained = json.loads(Path(kind.folder(model, fold, source), CONFIG).read_text())
            mods = sorted(model_inputs(trained))
            missing = [m for m in mods if m not in modalities]
            if missing:
                raise ConfigError(f"predict: {model} fold {fold} needs modalities {missing}, which this config lacks")
            runs.append((model, fold, mods))
    return runs
