"""Outcome tables: what ingest-labels accepts, and that every command reading a labels table checks
its outcomes. Several cases were found by the adversarial (hostile-input) sweeps: each was a
traceback, a silently different result or the wrong cause, and is now one line naming the fix."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from lego.cli import main
from tests.helpers import SMALL, lego_fails, trained_blocks


def test_both_status_columns_given_are_refused_not_one_silently_ignored(tmp_path, capsys):
    table = tmp_path / "labels.csv"
    table.write_text("case_id,survival_months,censorship,event\nA,3,1,1\nB,5,0,0\n")
    assert main(["ingest-labels", "--table", str(table), "--censorship-column", "censorship", "--event-column", "event",
                 "--out", str(tmp_path / "o.parquet")]) == 2
    assert "give one" in capsys.readouterr().err and not (tmp_path / "o.parquet").exists()


def test_class_labels_are_stripped(tmp_path):
    from lego.data.labels import ingest_labels

    (tmp_path / "l.csv").write_text("case_id,subtype\nA,LumA\nB,LumA \nC, Basal\n")
    out = ingest_labels(tmp_path / "l.csv", task="classification", label_column="subtype")
    assert sorted(out["label"].unique()) == ["Basal", "LumA"]


def test_labels_with_durations_and_folds_with_contradictions(tmp_path, capsys):
    pd.DataFrame({"case_id": ["A", "B", "C"], "survival_months": pd.to_timedelta([1, 2, 3], unit="D"),
                  "censorship": [0, 1, 0]}).to_parquet(tmp_path / "l.parquet")
    lego_fails(["ingest-labels", "--table", str(tmp_path / "l.parquet"), "--out", str(tmp_path / "o.parquet")], capsys,
               "timedelta64", "as a number in one unit")
    labels = tmp_path / "labels.parquet"
    pd.DataFrame({"patient_id": [f"P{i}" for i in range(20)], "time": np.arange(20) + 1.0,
                  "event": [i % 2 for i in range(20)]}).to_parquet(labels)
    base = ["make-folds", "--labels", str(labels), "--out", str(tmp_path / "f.parquet")]
    lego_fails([*base, "--path", str(tmp_path)], capsys, "only read by method 'file'")
    lego_fails([*base, "--method", "kfold", "--seeds", "1", "2"], capsys, "kfold takes one seed")


def test_one_class_classification_is_warned_at_ingest_and_refused_in_training(tmp_path, caplog):
    """A cohort of one subtype can be scored by a trained model (external validation), not trained on."""
    (tmp_path / "labels.csv").write_text("case_id,subtype\n" + "".join(f"P{i},LumA\n" for i in range(6)))
    with caplog.at_level(logging.WARNING):
        assert main(["ingest-labels", "--table", str(tmp_path / "labels.csv"), "--task", "classification",
                     "--label-column", "subtype", "--out", str(tmp_path / "l.parquet")]) == 0
    assert "'subtype' has one class ('LumA') in all 6 rows" in caplog.text
    from lego.data.fold_data import make_targets
    from lego.errors import InputError

    labels = pd.DataFrame({"patient_id": [f"P{i}" for i in range(6)], "label": ["A", "A", "A", "A", "B", "B"]})
    with pytest.raises(InputError, match=r"fold 0: the training patients hold only class \['A'\] of \['A', 'B'\]"):
        make_targets(labels, ["P0", "P1", "P2"], "classification", where="fold 0")
    assert make_targets(labels, ["P0", "P4"], "classification").classes == ["A", "B"]


@pytest.mark.parametrize("corrupt, phrase", [
    (lambda lab: pd.concat([lab, lab.iloc[:5]]), "has more than one row"),
    (lambda lab: lab.assign(event=np.where(np.arange(len(lab)) == 3, 2, lab["event"])), "event must be 0 or 1"),
    (lambda lab: lab.assign(time=-lab["time"]), "time must be a finite number >= 0"),
    (lambda lab: lab.assign(event=np.where(lab["event"] == 1, "yes", "no")), "event must be 0 or 1"),
])
def test_a_hand_made_labels_table_with_impossible_outcomes_is_refused(tmp_path, capsys, corrupt, phrase):
    p, dirs = trained_blocks(tmp_path, {**SMALL, "epochs": 1}, names=("zeta",))
    corrupt(pd.read_parquet(p["labels"])).to_parquet(tmp_path / "bad.parquet")
    for cmd in (["predict", "--model-dir", dirs[0], "--data", f"zeta={p['zeta']}", "--labels", str(tmp_path / "bad.parquet")],
                ["evaluate", "--model-dir", dirs[0], "--name", "block-zeta", "--data", f"zeta={p['zeta']}",
                 "--labels", str(tmp_path / "bad.parquet"), "--folds", str(p["folds"])]):
        lego_fails([*cmd, "--out-dir", str(tmp_path / "out")], capsys, phrase)


@pytest.mark.parametrize("corrupt, phrase", [
    (lambda lab: lab.assign(event=np.where(np.arange(len(lab)) == 4, np.nan, lab["event"])), "event must be 0 or 1"),
    (lambda lab: pd.concat([lab, lab.iloc[:3]]), "has more than one row"),
])
def test_every_reader_of_a_labels_table_checks_it(tmp_path, capsys, corrupt, phrase):
    p, dirs = trained_blocks(tmp_path, {**SMALL, "epochs": 1})
    corrupt(pd.read_parquet(p["labels"])).to_parquet(tmp_path / "bad.parquet")
    bad = str(tmp_path / "bad.parquet")
    data = ["--data", f"zeta={p['zeta']}", f"alpha={p['alpha']}", "--labels", bad, "--folds", str(p["folds"])]
    lego_fails(["merge-tuned", "--blocks", *dirs, *data, "--out-dir", str(tmp_path / "mt")], capsys, phrase)
    lego_fails(["fuse", "--blocks", *dirs, *data, "--spec", '{"epochs": 1}', "--out-dir", str(tmp_path / "fu"),
                "--device", "cpu"], capsys, phrase)
    lego_fails(["make-folds", "--labels", bad, "--out", str(tmp_path / "f.parquet")], capsys, phrase)
    lego_fails(["cohort-table", "--labels", bad, "--tabular", f"zeta={p['zeta']}", "--out", str(tmp_path / "c.parquet")],
               capsys, phrase)
