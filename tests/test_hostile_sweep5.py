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


# ---- the fifth sweep (new names, new corruptions) ----

def test_an_output_that_is_also_an_input_is_refused_before_any_work(tmp_path, capsys):
    from tests.test_fit_protocol import trained_blocks

    p, dirs = trained_blocks(tmp_path, {**SMALL, "epochs": 1})
    before = (tmp_path / "blocks" / "zeta" / "config.json").read_text()
    lego_fails(["merge", "--blocks", *dirs, "--out-dir", dirs[0]], capsys,
               "--out-dir", "would overwrite config.json (--blocks", "choose another output path")
    assert (tmp_path / "blocks" / "zeta" / "config.json").read_text() == before, "the block is untouched"
    (tmp_path / "ok.csv").write_text("case_id,survival_months,censorship\nP1,3,0\nP2,4,1\n")
    lego_fails(["ingest-labels", "--table", str(tmp_path / "ok.csv"), "--out", str(tmp_path / "ok.csv")], capsys,
               "would overwrite ok.csv (--table")
    assert (tmp_path / "ok.csv").read_text().startswith("case_id"), "the table is untouched"
    lego_fails(["ingest-labels", "--table", str(tmp_path / "ok.csv"), "--out", str(tmp_path / "labels.csv")], capsys,
               "this output is a parquet table; name it .parquet")


def test_an_ensemble_given_one_model_name_twice_is_refused(tmp_path, capsys):
    from tests.test_fit_protocol import trained_blocks

    p, dirs = trained_blocks(tmp_path, {**SMALL, "epochs": 1})
    common = ["--labels", str(p["labels"]), "--folds", str(p["folds"])]
    for d, m in zip(dirs, ("zeta", "alpha")):
        assert main(["evaluate", "--model-dir", d, "--name", "zeta", "--data", f"{m}={p[m]}", *common,
                     "--out-dir", str(tmp_path / f"ev_{m}")]) == 0
    metrics = [str(tmp_path / f"ev_{m}" / "metrics.json") for m in ("zeta", "alpha")]
    lego_fails(["ensemble", "--block-metrics", *metrics, *common, "--out-dir", str(tmp_path / "ens")], capsys,
               "model 'zeta' more than once")


@pytest.mark.parametrize("corrupt, phrase", [
    (lambda lab: pd.concat([lab, lab.iloc[:5]]), "has more than one row"),
    (lambda lab: lab.assign(event=np.where(np.arange(len(lab)) == 3, 2, lab["event"])), "event must be 0 or 1"),
    (lambda lab: lab.assign(time=-lab["time"]), "time must be a finite number >= 0"),
    (lambda lab: lab.assign(event=np.where(lab["event"] == 1, "yes", "no")), "event must be 0 or 1"),
])
def test_a_hand_made_labels_table_with_impossible_outcomes_is_refused(tmp_path, capsys, corrupt, phrase):
    from tests.test_fit_protocol import trained_blocks

    p, dirs = trained_blocks(tmp_path, {**SMALL, "epochs": 1}, names=("zeta",))
    corrupt(pd.read_parquet(p["labels"])).to_parquet(tmp_path / "bad.parquet")
    for cmd in (["predict", "--model-dir", dirs[0], "--data", f"zeta={p['zeta']}", "--labels", str(tmp_path / "bad.parquet")],
                ["evaluate", "--model-dir", dirs[0], "--name", "block-zeta", "--data", f"zeta={p['zeta']}",
                 "--labels", str(tmp_path / "bad.parquet"), "--folds", str(p["folds"])]):
        lego_fails([*cmd, "--out-dir", str(tmp_path / "out")], capsys, phrase)


def test_a_model_given_the_labels_as_its_data_is_refused(tmp_path, capsys):
    p = cohort(tmp_path)
    common = ["--labels", str(p["labels"]), "--folds", str(p["folds"]), "--fold", "0"]
    lego_fails(["train-block", "--modality", "zeta", "--kind", "tabular", "--data", str(p["labels"]), *common,
                "--spec", json.dumps(SMALL), "--out-dir", str(tmp_path / "b"), "--device", "cpu"], capsys,
               "column(s) ['time', 'event'] are the labels' outcome")
    lego_fails(["baselines", "--methods", "coxnet", "--source", "zeta", "--data", f"zeta={p['labels']}",
                "--modalities", json.dumps({"zeta": {"kind": "tabular"}}), *common, "--out-root", str(tmp_path / "bl")],
               capsys, "are the labels' outcome")


def test_training_with_labels_of_the_wrong_kind_is_one_line(tmp_path, capsys):
    p = cohort(tmp_path)
    args = ["train-block", "--modality", "zeta", "--kind", "tabular", "--data", str(p["zeta"]), "--folds", str(p["folds"]),
            "--fold", "0", "--spec", json.dumps(SMALL), "--out-dir", str(tmp_path / "b"), "--device", "cpu"]
    lego_fails([*args, "--labels", str(p["labels"]), "--task", "classification"], capsys,
               "a classification model needs outcome column(s) ['label']", "survival outcomes")
    lego_fails([*args, "--labels", str(p["alpha"])], capsys, "a survival model needs outcome column(s) ['time', 'event']")


def test_a_merge_folder_given_as_a_block_is_one_line(tmp_path, capsys):
    from tests.test_fit_protocol import trained_blocks

    p, dirs = trained_blocks(tmp_path, {**SMALL, "epochs": 1})
    assert main(["merge", "--blocks", *dirs, "--out-dir", str(tmp_path / "m")]) == 0
    lego_fails(["merge", "--blocks", str(tmp_path / "m"), dirs[1], "--out-dir", str(tmp_path / "m2")], capsys,
               "a merge model, not a block")


def test_an_all_empty_modality_table_and_the_id_as_a_category_are_refused(tmp_path, capsys):
    (tmp_path / "t.csv").write_text("case_id,g1,g2\nP1,,\nP2,,\n")
    lego_fails(["prepare-modality", "--table", str(tmp_path / "t.csv"), "--modality", "m", "--out",
                str(tmp_path / "m.parquet")], capsys, "every selected cell is empty (2 rows, 2 column(s))")
    (tmp_path / "c.csv").write_text("case_id,g1\nP1,1\nP2,2\n")
    lego_fails(["prepare-modality", "--table", str(tmp_path / "c.csv"), "--modality", "m", "--categorical", "case_id",
                "--out", str(tmp_path / "m.parquet")], capsys, "the ID column 'case_id' is listed as categorical")


def test_split_files_with_a_repeated_column_or_invisible_characters(tmp_path):
    from lego.data.folds import _read_split_csv
    from lego.errors import InputError

    (tmp_path / "splits_0.csv").write_text(",train,train,val\n0,P1,P2,P3\n")
    with pytest.raises(InputError, match="column 'train' appears twice in the header"):
        _read_split_csv(tmp_path / "splits_0.csv", 0)
    (tmp_path / "splits_1.csv").write_text(",train,val\n0,P1\u200b,P3\ufeff\n1, P2 ,\n")
    split = _read_split_csv(tmp_path / "splits_1.csv", 1)
    assert split["patient_id"].tolist() == ["P1", "P2", "P3"]


def test_a_feature_group_instead_of_a_dataset_is_one_line(tmp_path, capsys):
    with h5py.File(tmp_path / "g.h5", "w") as f:
        f.create_group("features")
    lego_fails(["import-features", "--src", str(tmp_path / "g.h5"), "--out", str(tmp_path / "o.h5"), "--slide-name", "s"],
               capsys, "'features' is an HDF5 group, not a dataset")


def test_one_slide_in_the_folder_and_the_list_is_one_slide(tmp_path):
    from lego.data.slides_index import index_slides
    from lego.errors import InputError

    (tmp_path / "d").mkdir()
    a = tmp_path / "d" / "TCGA-AA-0001-01Z.svs"
    a.write_bytes(b"x")
    pd.DataFrame({"path": [str(a)], "patient_id": ["TCGA-AA-0001"]}).to_csv(tmp_path / "list.csv", index=False)
    slides, _ = index_slides(tmp_path / "d", tmp_path / "list.csv", [".svs"], patients=["TCGA-AA-0001"])
    assert slides["slide_id"].tolist() == ["TCGA-AA-0001-01Z"]
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "TCGA-AA-0002-01Z.svs").write_bytes(b"x")
    b = tmp_path / "e" / "TCGA-AA-0001-01Z.svs"
    b.write_bytes(b"y")
    pd.DataFrame({"path": [str(b)]}).to_csv(tmp_path / "list2.csv", index=False)
    with pytest.raises(InputError) as err:
        index_slides(tmp_path / "d", tmp_path / "list2.csv", [".svs"])
    assert str(a.resolve()) in str(err.value) and str(b.resolve()) in str(err.value) and "0002" not in str(err.value)


def test_a_patient_with_no_value_in_a_hand_made_table_is_not_scored(tmp_path):
    from tests.test_fit_protocol import trained_blocks

    p, dirs = trained_blocks(tmp_path, {**SMALL, "epochs": 1}, names=("zeta",))
    table = pd.read_parquet(p["zeta"])
    empty = table["patient_id"].iloc[0]
    table.loc[table["patient_id"] == empty, [c for c in table.columns if c != "patient_id"]] = np.nan
    table.to_parquet(tmp_path / "new.parquet")
    assert main(["predict", "--model-dir", dirs[0], "--data", f"zeta={tmp_path / 'new.parquet'}",
                 "--out-dir", str(tmp_path / "p")]) == 0
    scored = pd.read_parquet(tmp_path / "p" / "predictions.parquet")["patient_id"]
    assert empty not in set(scored) and len(scored) == len(table) - 1


def test_an_empty_slide_name_is_refused(tmp_path, capsys):
    lego_fails(["import-features", "--src", _h5(tmp_path / "s.h5", "ok"), "--out", str(tmp_path / "o.h5"),
                "--slide-name", " "], capsys, "--slide-name is empty")
