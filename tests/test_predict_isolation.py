"""Predicting reads a finished training run and never writes into it, retrains it or applies
folds it did not make (issue 27, classes 5 and 9)."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from lego.config import validate_config
from lego.errors import ConfigError
from lego.io import write_json, write_parquet
from lego.plan import Plan
from tests.conftest import REPO


def training_run(root, folds=(0, 1), trained=(0, 1), extra=()):
    """A stand-in for a finished training run: its fold table and block-rna folders."""
    out = root / "results" / "demo"
    rows = [{"patient_id": f"P{i}", "fold": f, "subset": "test"} for f in folds for i in range(3)]
    write_parquet(pd.DataFrame(rows), out / "cohort" / "folds.parquet")
    for f in (*trained, *extra):
        write_json({"kind": "block", "modality": "rna"}, out / "blocks" / "rna" / f"fold{f}" / "config.json")
    return out


def predict_config(source, results_dir="results", name="demo_b") -> dict:
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["results_dir"], cfg["cohort"]["name"] = results_dir, name
    cfg["predict"] = {"from": str(source), "models": ["block-rna"]}
    return validate_config(cfg)


def test_folds_left_from_an_earlier_configuration_are_not_applied(tmp_path, monkeypatch):
    source = training_run(tmp_path / "train", extra=(2, 3, 4))  # fold2..4 from an earlier 5-fold run
    monkeypatch.chdir(tmp_path)
    runs = Plan(predict_config(source)).predict_runs
    assert [(m, f) for m, f, _ in runs] == [("block-rna", 0), ("block-rna", 1)]


def test_a_fold_that_failed_in_training_is_an_error_not_silently_dropped(tmp_path, monkeypatch):
    source = training_run(tmp_path / "train", trained=(0,))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="block-rna fold 1 .* was not trained"):
        _ = Plan(predict_config(source)).predict_runs


def test_predicting_into_the_training_runs_own_folder_is_refused_before_any_job(tmp_path, monkeypatch):
    source = training_run(tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="own results folder"):
        _ = Plan(predict_config("results/demo", name="demo")).predict_runs
    assert source.is_dir()


def test_remaking_the_demo_beside_the_training_run_that_read_it_is_refused(tmp_path, monkeypatch):
    """The README's example followed in the training project: the second demo cohort would be made
    over results/demo_input, the training run's inputs."""
    training_run(tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="another results_dir"):
        _ = Plan(predict_config("results/demo", name="demo_b")).predict_runs
    assert Plan(predict_config("results/demo", results_dir="results_b", name="demo")).predict_runs
