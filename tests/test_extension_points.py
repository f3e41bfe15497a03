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
def slog_kind(monkeypatch):
    """A table kind that takes sign(x) log(1 + |x|) of every numeric column, then the tabular preprocessing."""
    from lego.data import fold_data

    tabular = fold_data.KINDS["tabular"]

    def slog(table: pd.DataFrame) -> pd.DataFrame:
        num = table.select_dtypes("number").columns
        return table.assign(**{c: np.sign(table[c]) * np.log1p(table[c].abs()) for c in num})

    kind = fold_data.ModalityKind(tabular.table, tabular.key, tabular.usable,
                                  lambda table, train, opts: tabular.fit(slog(table), train, opts),
                                  lambda name, k, table, state, seed: tabular.apply(name, k, slog(table), state, seed),
                                  tabular.encoder)
    monkeypatch.setitem(fold_data.KINDS, "slog", kind)
    return "slog"


def test_a_modality_kind_is_one_registry_entry(slog_kind, tmp_path):
    import torch

    from lego.cli import main
    from lego.config import validate_config
    from lego.data.fold_data import apply_modality, fit_modality, is_slide_kind

    cfg = _config()
    cfg["modalities"]["counts"] = {"kind": slog_kind, "path": "counts.csv"}
    assert validate_config(cfg)["modalities"]["counts"]["id_column"] == "case_id"  # the table settings and defaults
    assert not is_slide_kind(slog_kind)
    labels, omics = _survival_cohort()
    train = labels["patient_id"].tolist()[:60]
    mod = fit_modality("counts", slog_kind, omics, train)
    logged = omics.assign(g1=np.log1p(omics["g1"]), g2=-np.log1p(-omics["g2"]),
                          g3=np.sign(omics["g3"]) * np.log1p(omics["g3"].abs()))
    plain = fit_modality("counts", "tabular", logged, train)
    assert mod.kind == slog_kind and mod.dim == plain.dim == 3
    torch.testing.assert_close(mod.dense, plain.dense)
    torch.testing.assert_close(apply_modality("counts", slog_kind, omics, json.loads(json.dumps(mod.state))).dense, mod.dense)

    common = [*_write_fold(tmp_path, labels, omics), "--device", "cpu"]
    spec = {"latent_rows": 4, "latent_dim": 8, "encoder_width": 16, "heads": 1, "head_dim": 8, "epochs": 2, "batch_size": 16}
    assert main(["train-block", "--modality", "omics", "--kind", slog_kind, "--data", str(tmp_path / "omics.parquet"),
                 "--fold", "0", "--spec", json.dumps(spec), "--out-dir", str(tmp_path / "block"), *common]) == 0
    assert json.loads((tmp_path / "block" / "config.json").read_text())["modality_kind"] == slog_kind
    assert main(["evaluate", "--model-dir", str(tmp_path / "block"), "--name", "block-omics",
                 "--data", f"omics={tmp_path / 'omics.parquet'}", "--out-dir", str(tmp_path / "eval"), *common]) == 0
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["test"]["n"] > 0


def test_an_unknown_kind_is_one_error_wherever_it_is_met(capsys):
    from lego.cli import main
    from lego.config import validate_config
    from lego.data.fold_data import KINDS, load_modality_table
    from lego.errors import ConfigError, InputError

    cfg = _config()
    cfg["modalities"]["x"] = {"kind": "omics", "path": "x.csv"}
    with pytest.raises(ConfigError, match="omics"):
        validate_config(cfg)
    with pytest.raises(InputError, match=f"unknown modality kind 'omics'; use one of {', '.join(sorted(KINDS))}"):
        load_modality_table("omics", "x.parquet")
    assert main(["train-block", "--modality", "x", "--kind", "omics", "--data", "x.parquet", "--fold", "0",
                 "--labels", "l.parquet", "--folds", "f.parquet", "--out-dir", "out"]) == 2
    assert "unknown modality kind 'omics'" in capsys.readouterr().err


def test_every_module_of_the_encoder_package_registers_itself():
    """An encoder is one new module under lego/slides/encoders: the registry imports them all."""
    import lego.slides.encoders as encoders

    encoders.list_encoders()
    modules = [m.name for m in pkgutil.iter_modules(encoders.__path__)]
    assert {"foundation", "stain_texture", "resnet50_trunc"} <= set(modules)
    assert all(f"lego.slides.encoders.{m}" in sys.modules for m in modules)
