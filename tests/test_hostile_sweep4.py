"""A fourth adversarial sweep (hostile and careless inputs on tables, IDs, categories, predict,
feature import and the ensemble): each case below exited 0 with a wrong result, crashed with a
traceback or stopped a batch; each is now handled, one line or a recorded failure."""

from __future__ import annotations

import json
import logging
import shutil

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from lego.cli import main
from tests.test_fit_protocol import SMALL, cohort, trained_blocks
from tests.test_hostile_inputs import lego_fails


def _csv(path, df):
    df.to_csv(path, index=False)
    return str(path)


def test_outcome_columns_are_never_features(tmp_path, capsys, caplog):
    """A clinical table that also holds the outcome (non-MCAT names) used to train on the answer
    (test C 0.98, exit 0)."""
    table = _csv(tmp_path / "clin.csv", pd.DataFrame({"case_id": ["a", "b", "c"], "age": [50, 60, 70],
                                                      "OS_months": [1.0, 2.0, 3.0], "OS_event": [1, 0, 1]}))
    out = tmp_path / "clin.parquet"
    with caplog.at_level(logging.WARNING):
        assert main(["prepare-modality", "--table", table, "--modality", "clinical", "--out", str(out),
                     "--outcome-columns", "OS_months", "OS_event"]) == 0
    assert list(pd.read_parquet(out).columns) == ["patient_id", "age"]
    assert "outcome column(s) ['OS_months', 'OS_event']" in caplog.text
    lego_fails(["prepare-modality", "--table", table, "--modality", "clinical", "--out", str(out),
                "--columns", "age", "OS_event", "--outcome-columns", "OS_months", "OS_event"],
               capsys, "['OS_event'] hold the cohort's outcome")


def test_the_workflow_passes_the_configured_outcome_columns(tmp_path):
    from tests.workflow_runs import snakemake, write_config

    cfg = write_config(tmp_path)
    cfg["cohort"]["labels"].update(time_column="OS_months", event_column="OS_event", censorship_column=None)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(tmp_path, "-n", "-p", "--forceall", "results/demo/modalities/rna.parquet", check=False)
    assert "--outcome-columns OS_months OS_event" in proc.stdout + proc.stderr


def test_a_trained_column_empty_in_a_new_cohort_is_an_error(tmp_path, capsys):
    p, dirs = trained_blocks(tmp_path, names=("zeta",))
    new = pd.read_parquet(p["zeta"])
    new["zeta0"] = np.nan
    new.to_parquet(tmp_path / "new.parquet")
    lego_fails(["predict", "--model-dir", dirs[0], "--data", f"zeta={tmp_path / 'new.parquet'}",
                "--out-dir", str(tmp_path / "p")], capsys, "['zeta0'] are empty in all 90 rows")


def _categorical_block(tmp_path, stage_values):
    p = cohort(tmp_path)
    table = pd.read_parquet(p["alpha"])
    table["stage"] = pd.array(stage_values, dtype="string")
    table.to_parquet(tmp_path / "cat.parquet")
    from lego.stages import train_block

    train_block("alpha", "tabular", str(tmp_path / "cat.parquet"), str(p["labels"]), str(p["folds"]), 0, "survival",
                SMALL, str(tmp_path / "blk"), categorical=["stage"], device="cpu")
    return table


def test_categories_spelled_differently_are_an_error_and_a_missing_one_no_crash(tmp_path, capsys):
    values = [str(1 + i % 3) for i in range(90)]
    values[5] = None  # a missing category used to crash training (boolean value of NA is ambiguous)
    table = _categorical_block(tmp_path, values)
    spelled = table.assign(stage=table["stage"].map(lambda v: None if pd.isna(v) else f"{v}.0"))
    spelled.to_parquet(tmp_path / "spelled.parquet")
    lego_fails(["predict", "--model-dir", str(tmp_path / "blk"), "--data", f"alpha={tmp_path / 'spelled.parquet'}",
                "--out-dir", str(tmp_path / "p")], capsys, "categorical column 'stage'", "write the categories as in training")
    assert main(["predict", "--model-dir", str(tmp_path / "blk"), "--data", f"alpha={tmp_path / 'cat.parquet'}",
                 "--out-dir", str(tmp_path / "ok")]) == 0


def test_ids_with_invisible_characters_match_and_stray_rows_are_said(tmp_path, caplog):
    from lego.data.cohort_table import build_patients_table
    from lego.tabular.tables import stripped_text

    text, empty = stripped_text(pd.Series(["P1\u200b", "\ufeffP2", "P\x003", " ", "P4"]))
    assert text.tolist()[:2] == ["P1", "P2"] and text[2] == "P3" and empty.tolist() == [False, False, False, True, False]
    labels = pd.DataFrame({"patient_id": ["P1", "P2", "P3"], "time": [1.0, 2.0, 3.0], "event": [1, 0, 1]})
    with caplog.at_level(logging.WARNING):
        out = build_patients_table(labels, {"rna": pd.DataFrame({"patient_id": ["P1", "p2", "p3"]})}, {})
    assert out["has_rna"].tolist() == [True, False, False]
    assert "2 of 3 patient(s) match no labelled patient" in caplog.text and "'p2'" in caplog.text


def test_predict_with_class_labels_the_model_does_not_know(tmp_path, capsys):
    from lego.stages import train_block

    p = cohort(tmp_path)
    lab = pd.read_parquet(p["labels"])
    lab = pd.DataFrame({"patient_id": lab["patient_id"], "label": np.where(lab["time"] > lab["time"].median(), "1", "0")})
    lab.to_parquet(tmp_path / "cls.parquet")
    train_block("zeta", "tabular", str(p["zeta"]), str(tmp_path / "cls.parquet"), str(p["folds"]), 0, "classification",
                SMALL, str(tmp_path / "blk"), device="cpu")
    lab.assign(label=lab["label"] + ".0").to_parquet(tmp_path / "ext.parquet")
    lego_fails(["predict", "--model-dir", str(tmp_path / "blk"), "--data", f"zeta={p['zeta']}", "--labels",
                str(tmp_path / "ext.parquet"), "--out-dir", str(tmp_path / "p")], capsys,
               "class label(s) ['0.0', '1.0'] are not among the model's classes")


def test_a_modality_table_with_its_own_patient_id_column(tmp_path, capsys):
    table = _csv(tmp_path / "t.csv", pd.DataFrame({"case_id": ["a", "b"], "patient_id": ["x", "y"], "g": [1.0, 2.0]}))
    lego_fails(["prepare-modality", "--table", table, "--modality", "m", "--out", str(tmp_path / "m.parquet")],
               capsys, "a 'patient_id' column besides the ID column 'case_id'")


@pytest.mark.parametrize("make", ["sparse", "complex", "bool", "bytes_coords", "complex_h5"])
def test_feature_files_of_the_wrong_kind_are_recorded_failures(tmp_path, make):
    src = tmp_path / ("s.pt" if make in ("sparse", "complex", "bool") else "s.h5")
    if make == "sparse":
        torch.save(torch.eye(3, 4).to_sparse(), src)
    elif make == "complex":
        torch.save(torch.ones(3, 4, dtype=torch.complex64), src)
    elif make == "bool":
        torch.save(torch.ones(3, 4, dtype=torch.bool), src)
    else:
        with h5py.File(src, "w") as f:
            f["features"] = np.ones((3, 4), np.complex64 if make == "complex_h5" else np.float32)
            f["coords"] = np.array([[b"0", b"0"]] * 3)
    out = tmp_path / "o.h5"
    assert main(["import-features", "--src", str(src), "--out", str(out), "--slide-name", "s", "--record-failure"]) == 0
    with h5py.File(out) as f:
        assert f.attrs["status"] == "failed", "recorded; the batch goes on"
    assert main(["import-features", "--src", str(src), "--out", str(tmp_path / "x.h5"), "--slide-name", "s"]) != 0


def test_a_slide_name_near_the_file_name_limit_is_written(tmp_path):
    torch.save(torch.ones(3, 4), tmp_path / "b.pt")
    name = "S" * 245
    assert main(["import-features", "--src", str(tmp_path / "b.pt"), "--out", str(tmp_path / f"{name}.h5"),
                 "--slide-name", name]) == 0
    assert (tmp_path / f"{name}.h5").exists() and len(list(tmp_path.iterdir())) == 2, "no temporary left"


def test_the_ensemble_refuses_blocks_with_different_bin_edges(tmp_path, capsys):
    p = cohort(tmp_path)
    metrics = []
    for k, edges in enumerate(([0, 5.0, 20.0, np.inf], [0, 1.0, 2.0, np.inf])):
        d = tmp_path / f"b{k}"
        d.mkdir()
        (d / "metrics.json").write_text(json.dumps({"model": f"block-{k}", "fold": 0, "task": "survival",
                                                    "bins": [e if np.isfinite(e) else "inf" for e in edges]}))
        pd.DataFrame({"patient_id": ["P000"], "subset": ["test"], "risk": [0.1]}).to_parquet(d / "predictions.parquet")
        metrics.append(str(d / "metrics.json"))
    lego_fails(["ensemble", "--block-metrics", *metrics, "--labels", str(p["labels"]), "--folds", str(p["folds"]),
                "--out-dir", str(tmp_path / "e")], capsys, "different survival bin edges")


def test_predict_names_a_fold_model_by_the_model(tmp_path):
    p, dirs = trained_blocks(tmp_path, names=("zeta",))
    fold_dir = tmp_path / "blocks_run" / "blocks" / "zeta" / "fold0"
    fold_dir.parent.mkdir(parents=True)
    shutil.copytree(dirs[0], fold_dir)
    assert main(["predict", "--model-dir", str(fold_dir), "--data", f"zeta={p['zeta']}", "--out-dir", str(tmp_path / "p")]) == 0
    assert json.loads((tmp_path / "p" / "metrics.json").read_text())["model"] == "block-zeta"


@pytest.mark.parametrize("name", ["..", ".hidden", "."])
def test_a_cohort_name_cannot_leave_the_results_folder(name):
    from lego.config import validate_config
    from lego.errors import ConfigError
    from tests.conftest import REPO

    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["cohort"]["name"] = name
    with pytest.raises(ConfigError, match="cohort"):
        validate_config(cfg)
