"""Regression tests for the cases the fourth sweep found and the first round of fixes left:
partial fold files, other tools' status spellings, a wrong QC file, hand-written block specs and
one-class classification. (A second imported features folder is covered in test_workflow.py.)"""

from __future__ import annotations

import json
import logging

import h5py
import numpy as np
import pandas as pd
import pytest

from lego.cli import main
from lego.config import block_spec_errors
from lego.data.folds import read_fold_file
from tests.test_fit_protocol import SMALL, cohort
from tests.test_hostile_inputs import lego_fails


def test_a_fold_that_leaves_out_patients_other_folds_use_is_warned(tmp_path, caplog):
    """Fold 1 of a hand-cut table covers half the cohort; the union check saw nothing."""
    ids = [f"P{i:02d}" for i in range(20)]
    rows = [(p, 0, ("train", "val", "test")[i % 3]) for i, p in enumerate(ids)]
    rows += [(p, 1, ("train", "val", "test")[i % 3]) for i, p in enumerate(ids[:10])]
    table = tmp_path / "folds.csv"
    pd.DataFrame(rows, columns=["patient_id", "fold", "subset"]).to_csv(table, index=False)
    patients = pd.DataFrame({"patient_id": ids, "event": [i % 2 for i in range(20)]})
    with caplog.at_level(logging.WARNING):
        folds = read_fold_file(table, patients, 0.15, 0, False)
    assert "fold 1 leaves out 10 labelled patient(s)" in caplog.text and "P10" in caplog.text
    assert "fold 0 leaves out" not in caplog.text
    assert (folds["fold"] == 1).sum() == 10


def _h5(path, status):
    with h5py.File(path, "w") as f:
        f["features"] = np.ones((3, 4), np.float32)
        f["coords"] = np.zeros((3, 2), np.int64)
        f.attrs["status"] = status
    return str(path)


@pytest.mark.parametrize("status", ["success", "OK", "Completed", b"done"])
def test_another_tools_success_status_is_a_good_slide(tmp_path, status):
    out = tmp_path / "o.h5"
    assert main(["import-features", "--src", _h5(tmp_path / "s.h5", status), "--out", str(out), "--slide-name", "s"]) == 0
    with h5py.File(out) as f:
        assert f.attrs["status"] == "ok" and f["features"].shape == (3, 4)


def test_a_failure_status_and_an_unknown_one_are_said(tmp_path, capsys):
    lego_fails(["import-features", "--src", _h5(tmp_path / "f.h5", "ERROR"), "--out", str(tmp_path / "o.h5"),
                "--slide-name", "s"], capsys, "records a failed slide")
    lego_fails(["import-features", "--src", _h5(tmp_path / "u.h5", "pending"), "--out", str(tmp_path / "o.h5"),
                "--slide-name", "s"], capsys, "status attribute 'pending' says neither success nor failure")


def test_collect_qc_with_the_wrong_file_names_it(tmp_path, capsys):
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    lego_fails(["collect-qc", "--unmatched", str(tmp_path / "x.csv"), "--out", str(tmp_path / "qc.tsv")], capsys,
               "x.csv: a slide-QC table needs column(s) ['slide_id', 'patient_id', 'reason']", "lego index-slides")
    good = tmp_path / "unmatched.tsv"
    good.write_text("slide_id\tpatient_id\tpath\treason\nS1\t\t/x/S1.svs\tno patient ID could be derived\n")
    assert main(["collect-qc", "--unmatched", str(good), "--out", str(tmp_path / "qc.tsv")]) == 0
    qc = pd.read_table(tmp_path / "qc.tsv")
    assert qc["slide_id"].tolist() == ["S1"] and qc["stage"].tolist() == ["index_slides"]


@pytest.mark.parametrize("extra, phrase", [
    ({"preprocess": {"clip_quantiles": [0.99, 0.01]}}, "'preprocess.clip_quantiles': [0.99, 0.01] must be [lower, upper]"),
    ({"preprocess": {"select_k": 0}}, "'preprocess.select_k': 0 is less than the minimum of 1"),
    ({"preprocess": {"clip_quantiles": [0.5]}}, "'preprocess.clip_quantiles': [0.5] is too short"),
    ({"lr": -1}, "'lr': -1 is less than or equal to the minimum of 0"),
    ({"encoder": "nope"}, "'encoder': 'nope' is not one of"),
])
def test_a_hand_written_block_spec_is_checked_like_the_config(tmp_path, capsys, extra, phrase):
    p = cohort(tmp_path)
    spec = json.dumps({**SMALL, **extra})
    lego_fails(["train-block", "--modality", "zeta", "--kind", "tabular", "--data", str(p["zeta"]), "--labels",
                str(p["labels"]), "--folds", str(p["folds"]), "--fold", "0", "--spec", spec, "--out-dir",
                str(tmp_path / "b"), "--device", "cpu"], capsys, "modality 'zeta', fold 0: block spec", phrase)


def test_the_config_refuses_reversed_clip_quantiles_and_specs_the_workflow_writes_pass():
    from lego.config import ConfigError, validate_config

    config = {"cohort": {"name": "c", "labels": {"path": "l.csv"}},
              "modalities": {"rna": {"kind": "tabular", "path": "r.csv", "preprocess": {"clip_quantiles": [0.9, 0.1]}}}}
    with pytest.raises(ConfigError, match=r"modalities\.rna\.preprocess\.clip_quantiles': \[0\.9, 0\.1\] must be"):
        validate_config(config)
    config["modalities"]["rna"]["preprocess"] = {"clip_quantiles": [0.01, 0.99], "select_k": 64}
    config = validate_config(config)
    model = config["model"]
    spec = {**model["block"], **model["train"], "n_bins": model["n_bins"], "encoder": "snn",
            "preprocess": config["modalities"]["rna"]["preprocess"]}
    assert block_spec_errors(spec) == []


def test_one_class_classification_is_refused_at_ingest_and_in_training(tmp_path, capsys):
    (tmp_path / "labels.csv").write_text("case_id,subtype\n" + "".join(f"P{i},LumA\n" for i in range(6)))
    lego_fails(["ingest-labels", "--table", str(tmp_path / "labels.csv"), "--task", "classification",
                "--label-column", "subtype", "--out", str(tmp_path / "l.parquet")], capsys,
               "'subtype' has one class ('LumA') in all 6 rows")
    from lego.data.fold_data import make_targets
    from lego.errors import InputError

    labels = pd.DataFrame({"patient_id": [f"P{i}" for i in range(6)], "label": ["A", "A", "A", "A", "B", "B"]})
    with pytest.raises(InputError, match=r"fold 0: the training patients hold only class \['A'\] of \['A', 'B'\]"):
        make_targets(labels, ["P0", "P1", "P2"], "classification", where="fold 0")
    assert make_targets(labels, ["P0", "P4"], "classification").classes == ["A", "B"]
