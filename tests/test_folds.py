"""Fold tables: split files (MCAT folders, long tables) read and checked, make-folds settings
refused when contradictory, and every fold a leak-free partition of its patients.
Most cases are regressions found by the adversarial
(hostile-input) sweeps: each was a traceback, a silently wrong result or the wrong cause."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from lego.cli import main
from lego.data.folds import make_folds, n_folds_in, read_fold_file
from lego.errors import InputError
from tests.helpers import lego_fails, parse_fails


def labels_for(ids):
    return pd.DataFrame({"patient_id": ids, "time": np.arange(len(ids)) + 1.0, "event": [i % 2 for i in range(len(ids))]})


def write_mcat_splits(folder, ids, k=3):
    folder.mkdir()
    for f in range(k):
        test = ids[f::k]
        train = [i for i in ids if i not in test]
        col = pd.Series(test + [None] * (len(train) - len(test)))
        pd.DataFrame({"train": train, "val": col}).to_csv(folder / f"splits_{f}.csv")


def test_mcat_split_files_test_their_val_column_and_carve_validation_from_train(tmp_path, caplog):
    ids = [f"P{i:02d}" for i in range(40)]
    write_mcat_splits(tmp_path / "splits", ids + ["GHOST"])
    labels = labels_for(ids + ["NOSPLIT"])
    assert n_folds_in(tmp_path / "splits") == 3
    folds = make_folds(labels, "file", path=tmp_path / "splits", stratify=True, fractions=(0.7, 0.15, 0.15))
    assert "1 patient(s) in the split file have no labels" in caplog.text and "GHOST" in caplog.text
    assert "1 labelled patient(s) are in no split" in caplog.text
    for f in range(3):
        sub = folds[folds.fold == f]
        assert set(sub.loc[sub.subset == "test", "patient_id"]) == set((ids + ["GHOST"])[f::3]) - {"GHOST"}
        assert (sub.subset == "val").sum() > 0 and not sub.patient_id.duplicated().any()
    again = make_folds(labels, "file", path=tmp_path / "splits", stratify=True)
    pd.testing.assert_frame_equal(folds, again)  # seeded


def test_split_files_with_a_test_column_keep_their_validation(tmp_path):
    ids = [f"P{i:02d}" for i in range(30)]
    (tmp_path / "s").mkdir()
    pd.DataFrame({"train": ids[:20], "val": ids[20:25] + [None] * 15, "test": ids[25:] + [None] * 15}).to_csv(tmp_path / "s" / "splits_0.csv")
    folds = make_folds(labels_for(ids), "file", path=tmp_path / "s")
    assert sorted(folds.loc[folds.subset == "val", "patient_id"]) == ids[20:25]
    assert sorted(folds.loc[folds.subset == "test", "patient_id"]) == ids[25:]


def test_long_fold_table_and_its_errors(tmp_path):
    ids = [f"P{i:02d}" for i in range(12)]
    rows = [(p, 0, "train" if i < 8 else "val" if i < 10 else "test") for i, p in enumerate(ids)]
    path = tmp_path / "folds.csv"
    pd.DataFrame(rows, columns=["patient_id", "fold", "subset"]).to_csv(path, index=False)
    assert n_folds_in(path) == 1
    assert len(make_folds(labels_for(ids), "file", path=path)) == 12
    pd.DataFrame(rows + [("P00", 0, "test")], columns=["patient_id", "fold", "subset"]).to_csv(path, index=False)
    with pytest.raises(InputError, match="P00 appears in more than one subset of fold 0"):
        make_folds(labels_for(ids), "file", path=path)
    with pytest.raises(InputError, match="no splits_<k>.csv"):
        n_folds_in(tmp_path)


def test_repeated_kfold_tests_every_patient_once_per_repeat():
    labels = labels_for([f"P{i:02d}" for i in range(50)])
    folds = make_folds(labels, "kfold", n_folds=5, repeats=3, stratify=True)
    assert sorted(folds.fold.unique()) == list(range(15))
    test = folds[folds.subset == "test"]
    for r in range(3):
        rep = test[test.fold.between(5 * r, 5 * r + 4)]
        assert sorted(rep.patient_id) == sorted(labels.patient_id)
    assert set(test[test.fold < 5].groupby("patient_id").fold.first().items()) != set(
        (p, f - 5) for p, f in test[test.fold.between(5, 9)].groupby("patient_id").fold.first().items())


def test_a_patient_in_two_subsets_of_a_fold_is_a_leak_and_refused(tmp_path):
    from lego.data.fold_data import fold_ids

    folds = pd.DataFrame({"patient_id": ["A", "A", "B"], "fold": [0, 0, 0], "subset": ["train", "test", "val"]})
    with pytest.raises(InputError, match="patient A appears 2 times"):
        fold_ids(folds, 0)
    with pytest.raises(InputError, match=r"unknown subset name\(s\) \['validation'\]"):
        fold_ids(folds.assign(patient_id=["A", "B", "C"], subset=["train", "validation", "test"]), 0)


@pytest.mark.parametrize("content, phrase", [
    ("", "the split file is empty"),
    ("train,val\nX1,X2\n", "none of its patient IDs is in the labels table"),
])
def test_bad_split_files_are_one_line(content, phrase, tmp_path):
    from lego.data.folds import make_folds

    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "splits_0.csv").write_text(content)
    labels = pd.DataFrame({"patient_id": [f"P{i}" for i in range(20)], "time": range(1, 21), "event": [1, 0] * 10})
    with pytest.raises(InputError, match=phrase):
        make_folds(labels, method="file", path=tmp_path / "splits")


def test_a_fold_table_with_a_bad_fold_number_names_the_line(tmp_path):
    from lego.data.folds import n_folds_in

    pd.DataFrame({"patient_id": ["A", "B"], "fold": ["0", "0a"], "subset": ["train", "test"]}).to_csv(tmp_path / "f.csv", index=False)
    with pytest.raises(InputError, match=r"line 3: fold '0a' is not a fold number"):
        n_folds_in(tmp_path / "f.csv")
    pd.DataFrame({"patient_id": ["A", "B"], "fold": [0, 3], "subset": ["train", "test"]}).to_csv(tmp_path / "g.csv", index=False)
    with pytest.raises(InputError, match=r"folds are numbered \[0, 3\]"):
        n_folds_in(tmp_path / "g.csv")


@pytest.mark.parametrize("args, phrase", [
    (["--fractions", "0.5", "0.2", "0.2"], "summing to 1"),
    (["--n-folds", "3", "--seeds", "4", "5"], "2 seeds make 2 folds but n_folds is 3"),
])
def test_make_folds_refuses_contradictory_or_invalid_settings(tmp_path, labels, capsys, args, phrase):
    lego_fails(["make-folds", "--labels", str(labels), "--out", str(tmp_path / "f.parquet"), *args], capsys, phrase)


@pytest.mark.parametrize("args, phrase", [
    (["--fractions", "0", "0", "0"], "argument --fractions: 0.0 is outside (0, inf)"),
    (["--seeds", "-1", "-2"], "argument --seeds: -1 is outside [0, 4294967295]"),
])
def test_make_folds_refuses_values_the_config_refuses_when_parsed(tmp_path, labels, capsys, args, phrase):
    """The flags take folds.fractions' and folds.seeds' ranges from the schema (before: the library
    refused them, with its own wording)."""
    parse_fails(["make-folds", "--labels", str(labels), "--out", str(tmp_path / "f.parquet"), *args], capsys, phrase)


def test_seeds_alone_set_the_number_of_folds(tmp_path, labels):
    assert main(["make-folds", "--labels", str(labels), "--out", str(tmp_path / "f.parquet"), "--seeds", "4", "5"]) == 0
    assert sorted(pd.read_parquet(tmp_path / "f.parquet")["fold"].unique()) == [0, 1]


def test_fold_files_with_an_empty_id_or_too_few_training_patients(tmp_path, labels, capsys):
    (tmp_path / "long.csv").write_text("patient_id,fold,subset\nP000,0,train\n,0,val\nP002,0,test\n")
    lego_fails(["make-folds", "--labels", str(labels), "--out", str(tmp_path / "f.parquet"), "--method", "file",
                "--path", str(tmp_path / "long.csv")], capsys, "line 3: empty patient_id")
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "splits_0.csv").write_text("train,val\nP000,P002\n,P003\n")
    lego_fails(["make-folds", "--labels", str(labels), "--out", str(tmp_path / "f.parquet"), "--method", "file",
                "--path", str(tmp_path / "s")], capsys, "fold 0 has 1 labelled training patient")


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


def test_split_files_with_a_repeated_column_or_invisible_characters(tmp_path):
    from lego.data.folds import _read_split_csv
    from lego.errors import InputError

    (tmp_path / "splits_0.csv").write_text(",train,train,val\n0,P1,P2,P3\n")
    with pytest.raises(InputError, match="column 'train' appears twice in the header"):
        _read_split_csv(tmp_path / "splits_0.csv", 0)
    (tmp_path / "splits_1.csv").write_text(",train,val\n0,P1\u200b,P3\ufeff\n1, P2 ,\n")
    split = _read_split_csv(tmp_path / "splits_1.csv", 1)
    assert split["patient_id"].tolist() == ["P1", "P2", "P3"]
