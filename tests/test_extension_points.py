"""Adding a classical baseline, a modality kind or a patch encoder is one registry entry: each test
adds one for its duration (nothing else changed) and follows it through the config schema, the
command line and the fitting code, as a user would meet it."""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import REPO

PLUGINS = "tests.plugins.lego_example_plugins"


def _survival_cohort(n: int = 90, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Labels and one omics table whose first gene carries the risk (lognormal, as counts are)."""
    rng = np.random.default_rng(seed)
    ids = [f"P{i:03d}" for i in range(n)]
    signal = rng.normal(size=n)
    omics = pd.DataFrame({"patient_id": ids, "g1": np.exp(3 + 2 * signal), "g2": -np.exp(rng.normal(2, 1, n)),
                          "g3": rng.normal(size=n)})
    labels = pd.DataFrame({"patient_id": ids, "time": rng.exponential(20 / np.exp(signal)) + 0.5,
                           "event": (rng.uniform(size=n) < 0.8).astype(int)})
    return labels, omics


def _write_fold(tmp_path, labels: pd.DataFrame, omics: pd.DataFrame) -> list[str]:
    from lego.data.folds import make_folds

    for name, df in (("labels", labels), ("folds", make_folds(labels, n_folds=1)), ("omics", omics)):
        df.to_parquet(tmp_path / f"{name}.parquet")
    return ["--labels", str(tmp_path / "labels.parquet"), "--folds", str(tmp_path / "folds.parquet")]


def _config() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


@pytest.fixture
def ridge_cox(monkeypatch):
    """A ridge Cox model, registered in lego.evaluation.classical only."""
    from lego.evaluation import classical, names

    def fit(x, y, seed):
        from sksurv.linear_model import CoxPHSurvivalAnalysis

        return [(f"alpha={a}", CoxPHSurvivalAnalysis(alpha=a).fit(x, y), {}) for a in (0.1, 10.0)]

    monkeypatch.setitem(classical.CLASSICAL, "ridgecox", classical.Classical("survival", fit, default=False))
    importlib.reload(names)
    yield "ridgecox"
    monkeypatch.undo()
    importlib.reload(names)


def test_a_classical_baseline_is_one_registry_entry(ridge_cox, tmp_path):
    from lego.cli import main
    from lego.config import validate_config
    from lego.evaluation.names import DEFAULT_BASELINES, TASK_BASELINES

    assert ridge_cox in TASK_BASELINES["survival"] and ridge_cox not in DEFAULT_BASELINES["survival"]
    cfg = _config()
    cfg["evaluation"]["baselines"] = [ridge_cox, "ensemble"]
    validate_config(cfg)  # the schema's enum is the registry's
    cfg["evaluation"]["baselines"] = ["ridge_cox"]
    with pytest.raises(Exception, match="ridge_cox"):
        validate_config(cfg)
    common = _write_fold(tmp_path, *_survival_cohort())
    assert main(["baselines", "--methods", ridge_cox, "--source", "omics", "--data", f"omics={tmp_path / 'omics.parquet'}",
                 "--modalities", json.dumps({"omics": {"kind": "tabular"}}), "--fold", "0", *common,
                 "--out-root", str(tmp_path / "eval")]) == 0
    result = json.loads((tmp_path / "eval" / f"{ridge_cox}-omics" / "fold0" / "metrics.json").read_text())
    assert result["baseline"]["candidates"] == ["alpha=0.1", "alpha=10.0"]
    assert result["test"]["c_index"] > 0.6


def test_a_baseline_of_the_other_task_is_refused_by_the_fitting_code():
    from lego.data.fold_data import Targets
    from lego.errors import InputError
    from lego.evaluation.baselines import fit_baseline

    targets = Targets("classification", {}, [], ["a", "b"])
    with pytest.raises(InputError, match="no classification baseline 'coxnet'; choose from logreg, rf"):
        fit_baseline("coxnet", {"train": ([f"p{i}" for i in range(6)], np.zeros((6, 1))), "val": ([], np.zeros((0, 1)))},
                     pd.DataFrame({"patient_id": []}), targets)


@pytest.fixture
def plugins():
    """The example plugins (a modality kind and a trained baseline) registered for the test only."""
    from lego.modality_kinds import KINDS, kinds
    from lego.models.model_kinds import MODEL_KINDS, model_kinds

    kinds(), model_kinds()
    before = dict(KINDS), dict(MODEL_KINDS)
    module = importlib.import_module(PLUGINS)
    yield module
    KINDS.clear(), KINDS.update(before[0]), MODEL_KINDS.clear(), MODEL_KINDS.update(before[1])
    sys.modules.pop(PLUGINS, None)


def test_a_modality_kind_is_one_module(plugins, tmp_path):
    """The kind takes its family's settings and defaults from the schema, is fitted and re-applied
    through the registry, and trains a block through the command line -- nothing else names it."""
    import torch

    from lego.cli import main
    from lego.config import validate_config
    from lego.data.fold_data import apply_modality, fit_modality
    from lego.modality_kinds import is_slide_kind

    cfg = _config()
    cfg["modalities"]["counts"] = {"kind": "slog", "path": "counts.csv"}
    assert validate_config(cfg)["modalities"]["counts"]["id_column"] == "case_id"  # the table settings and defaults
    cfg["modalities"]["counts"]["encoder"] = "stain_texture"
    with pytest.raises(Exception, match="counts"):
        validate_config(cfg)  # a slide setting on a table kind
    assert not is_slide_kind("slog")
    labels, omics = _survival_cohort()
    train = labels["patient_id"].tolist()[:60]
    mod = fit_modality("counts", "slog", omics, train)
    plain = fit_modality("counts", "tabular", plugins.signed_log(omics), train)
    assert mod.kind == "slog" and mod.dim == plain.dim == 3
    torch.testing.assert_close(mod.dense, plain.dense)
    torch.testing.assert_close(apply_modality("counts", "slog", omics, json.loads(json.dumps(mod.state))).dense, mod.dense)

    common = [*_write_fold(tmp_path, labels, omics), "--device", "cpu"]
    spec = {"latent_rows": 4, "latent_dim": 8, "encoder_width": 16, "heads": 1, "head_dim": 8, "epochs": 2, "batch_size": 16}
    assert main(["train-block", "--modality", "omics", "--kind", "slog", "--data", str(tmp_path / "omics.parquet"),
                 "--fold", "0", "--spec", json.dumps(spec), "--out-dir", str(tmp_path / "block"), *common]) == 0
    assert json.loads((tmp_path / "block" / "config.json").read_text())["modality_kind"] == "slog"
    assert main(["evaluate", "--model-dir", str(tmp_path / "block"), "--name", "block-omics",
                 "--data", f"omics={tmp_path / 'omics.parquet'}", "--out-dir", str(tmp_path / "eval"), *common]) == 0
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["test"]["n"] > 0


def test_a_trained_baseline_is_one_module(plugins, tmp_path):
    """Registered, the baseline is a name the config accepts, a model ``train-model`` fits on a fold
    (two modalities, in-fold preprocessing) and a folder ``evaluate`` and ``predict`` read back."""
    from lego.cli import main
    from lego.config import validate_config

    cfg = _config()
    cfg["evaluation"]["baselines"] = ["coxnet", "meanfusion", "ensemble"]
    validate_config(cfg)
    labels, omics = _survival_cohort()
    common = [*_write_fold(tmp_path, labels, omics), "--device", "cpu"]
    omics[["patient_id", "g3"]].to_parquet(tmp_path / "other.parquet")
    data = [f"omics={tmp_path / 'omics.parquet'}", f"other={tmp_path / 'other.parquet'}"]
    kinds = json.dumps({"omics": {"kind": "tabular"}, "other": {"kind": "slog"}})
    assert main(["train-model", "--model", "meanfusion", "--data", *data, "--modalities", kinds, "--fold", "0",
                 "--spec", json.dumps({"epochs": 40, "lr": 0.01, "patience": 40}), "--out-dir", str(tmp_path / "mf"),
                 *common]) == 0
    saved = json.loads((tmp_path / "mf" / "config.json").read_text())
    assert saved["kind"] == "meanfusion" and set(saved["inputs"]) == {"omics", "other"}
    assert main(["evaluate", "--model-dir", str(tmp_path / "mf"), "--name", "meanfusion", "--data", *data,
                 "--out-dir", str(tmp_path / "eval"), *common]) == 0
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["test"]["c_index"] > 0.6
    assert main(["predict", "--model-dir", str(tmp_path / "mf"), "--data", *data, "--out-dir", str(tmp_path / "pred")]) == 0


@pytest.fixture(scope="module")
def plugin_run(tmp_path_factory):
    """A run of the workflow whose config uses both example plugins (tables only, 2 folds)."""
    from tests.workflow_runs import snakemake

    workdir = tmp_path_factory.mktemp("plugin_run")
    labels, omics = _survival_cohort(n=60, seed=4)
    labels.rename(columns={"patient_id": "case_id", "time": "survival_months"}).assign(
        censorship=1 - labels["event"]).drop(columns="event").to_csv(workdir / "labels.csv", index=False)
    omics.rename(columns={"patient_id": "case_id"}).to_csv(workdir / "omics.csv", index=False)
    config = {
        "cohort": {"name": "plugins", "labels": {"path": "labels.csv"}},
        "modalities": {"rna": {"kind": "tabular", "path": "omics.csv", "include": "^g[12]$"},
                       "counts": {"kind": "slog", "path": "omics.csv", "include": "^g3$"}},
        "model": {"block": {"latent_rows": 4, "latent_dim": 8, "encoder_width": 16, "heads": 1, "head_dim": 8},
                  "train": {"epochs": 3}, "build": ["blocks", "merge"]},
        "evaluation": {"baselines": ["meanfusion"], "n_boot": 10},
        "folds": {"n_folds": 2},
    }
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    env = {"LEGO_PLUGINS": PLUGINS, "PYTHONPATH": str(REPO)}
    snakemake(workdir, "--cores", "2", env=env)
    return workdir


@pytest.mark.slow
def test_a_modality_kind_plugin_runs_from_the_config_to_a_trained_block(plugin_run):
    """The workflow prepares the new kind with the command its registration names and trains its
    blocks; no rule, schema entry or CLI flag was added for it."""
    out = plugin_run / "results" / "plugins"
    for fold in (0, 1):
        config = json.loads((out / "blocks" / "counts" / f"fold{fold}" / "config.json").read_text())
        assert config["modality_kind"] == "slog" and config["modality"] == "counts"
    assert (out / "modalities" / "counts.parquet").is_file()


@pytest.mark.slow
def test_a_trained_baseline_plugin_runs_from_the_config_to_the_summary(plugin_run):
    """The trained baseline is fitted per fold, evaluated like every model and summarised beside the
    blocks and MM-Lego's merge."""
    out = plugin_run / "results" / "plugins"
    metrics = pd.read_csv(out / "summary" / "metrics.tsv", sep="\t")
    row = metrics[(metrics["model"] == "meanfusion") & (metrics["metric"] == "c_index")]
    assert len(row) == 1 and row["kind"].iloc[0] == "baseline" and row["folds"].iloc[0] == 2
    assert set(metrics["model"]) == {"block-rna", "block-counts", "merge", "meanfusion"}
    for fold in (0, 1):
        assert (out / "baselines" / "meanfusion" / f"fold{fold}" / "model.safetensors").is_file()


def test_an_unknown_kind_is_one_error_wherever_it_is_met(capsys):
    from lego.cli import main
    from lego.config import validate_config
    from lego.data.fold_data import load_modality_table
    from lego.errors import ConfigError, InputError
    from lego.modality_kinds import kinds

    cfg = _config()
    cfg["modalities"]["x"] = {"kind": "omics", "path": "x.csv"}
    with pytest.raises(ConfigError, match="omics"):
        validate_config(cfg)
    with pytest.raises(InputError, match=f"unknown modality kind 'omics'; use one of {', '.join(sorted(kinds()))}"):
        load_modality_table("omics", "x.parquet")
    assert main(["train-block", "--modality", "x", "--kind", "omics", "--data", "x.parquet", "--fold", "0",
                 "--labels", "l.parquet", "--folds", "f.parquet", "--out-dir", "out"]) == 2
    assert "unknown modality kind 'omics'" in capsys.readouterr().err
    assert main(["train-model", "--model", "nosuchmodel", "--data", "x=x.parquet", "--modalities", '{"x": {"kind": "tabular"}}',
                 "--fold", "0", "--labels", "l.parquet", "--folds", "f.parquet", "--out-dir", "out"]) == 2
    assert "unknown trained model 'nosuchmodel'; registered: abmil, healnet" in capsys.readouterr().err


@pytest.mark.parametrize("package", ["lego.slides.encoders", "lego.modality_kinds", "lego.baselines"])
def test_every_module_of_a_registry_package_is_imported_by_its_registry(package):
    """An encoder, a modality kind or a trained baseline is one new module: its registry imports
    every module of its package (no list to keep in step)."""
    from lego.modality_kinds import kinds
    from lego.models.model_kinds import model_kinds
    from lego.slides.encoders import list_encoders

    list_encoders(), kinds(), model_kinds()
    pkg = importlib.import_module(package)
    modules = [m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_")]
    assert modules and all(f"{package}.{m}" in sys.modules for m in modules)
