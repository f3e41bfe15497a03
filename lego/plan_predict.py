"""Which trained models a predict-mode run applies: each model ``predict.models`` names, on every
fold the training run made (its ``cohort/folds.parquet``), from its results folder (``predict.from``)."""

from __future__ import annotations

import json
from pathlib import Path

from lego.errors import ConfigError
from lego.models.model_kinds import CONFIG, kind_of, model_inputs


def predict_runs(models: list[str], source: str, modalities: dict[str, dict]) -> list[tuple[str, int, list[str]]]:
    """(model, fold, the modalities it reads) of every trained fold of ``models`` under ``source``.

    The folds are the training run's own (its fold table), not whatever ``fold*`` folders exist:
    folders left from an earlier, larger configuration would otherwise be applied and averaged in,
    and a fold that failed in training silently dropped."""
    runs = []
    folds = training_folds(source)
    for model in models:
        kind = kind_of(model)
        if kind is None:
            raise ConfigError(f"predict.models: {model!r} is not a trained model")
        for fold in folds:
            config = Path(kind.folder(model, fold, source), CONFIG)
            if not config.is_file():
                raise ConfigError(f"predict.from: {model} fold {fold} of the training run {source} was not trained "
                                  f"(no {config}); finish the training run first")
            mods = sorted(model_inputs(json.loads(config.read_text())))
            missing = [m for m in mods if m not in modalities]
            if missing:
                raise ConfigError(f"predict: {model} fold {fold} needs modalities {missing}, which this config lacks")
            runs.append((model, fold, mods))
    return runs


def training_folds(source: str) -> list[int]:
    """The fold numbers of the training run in ``source``, from its fold table."""
    table = Path(source) / "cohort" / "folds.parquet"
    if not table.is_file():
        raise ConfigError(f"predict.from: {source} has no cohort/folds.parquet; give the results folder of a finished "
                          "training run (results_dir/<cohort.name>)")
    import pyarrow.parquet as pq

    return sorted({int(f) for f in pq.read_table(table, columns=["fold"]).column("fold").to_pylist()})


def refuse_overwriting_the_source(source: str, out: str, results_dir: str, demo_dir: str, inputs: list[str]) -> None:
    """Predicting never writes into, or retrains, the run it reads: refused before any job runs.

    Two ways it could: this run's results folder is the training run's (same ``results_dir`` and
    ``cohort.name``: every block would be retrained on the new cohort over the finished run), or
    this run makes a demo cohort into ``results_dir/demo_input`` -- where a training run in the
    same results folder read its own demo inputs."""
    src, mine = Path(source).resolve(), Path(out).resolve()
    if src == mine or src in mine.parents or mine in src.parents:
        raise ConfigError(f"predict.from: {source} is this run's own results folder ({out}); predicting there would "
                          "overwrite the training run -- give the new cohort another cohort.name or results_dir")
    demo = Path(demo_dir).resolve()
    makes_demo = any(demo == Path(p).resolve() or demo in Path(p).resolve().parents for p in inputs)
    if makes_demo and Path(results_dir).resolve() in src.parents:
        raise ConfigError(f"predict: this config makes its demo cohort in {demo_dir}, beside the training run {source}, "
                          "which read the demo inputs there; give the new cohort another results_dir")
