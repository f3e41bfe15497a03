"""A second adversarial sweep (about 150 hostile calls on tiny inputs): each case below crashed
with a traceback, exited 0 with a wrong or empty result, or named the wrong cause. Each is now
one line naming the file, row or value and the fix."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest

from lego.cli import main
from lego.stages import train_block
from tests.test_fit_protocol import SMALL, cohort
from tests.test_hostile_inputs import lego_fails


@pytest.fixture
def labels(tmp_path):
    rng = np.random.default_rng(0)
    ids = [f"P{i:03d}" for i in range(30)]
    path = tmp_path / "labels.parquet"
    pd.DataFrame({"patient_id": ids, "time": rng.uniform(1, 100, 30), "event": [i % 2 for i in range(30)]}).to_parquet(path)
    return path


@pytest.mark.parametrize("args, phrase", [
    (["--fractions", "0", "0", "0"], "each above 0, summing to 1"),
    (["--fractions", "0.5", "0.2", "0.2"], "summing to 1"),
    (["--seeds", "-1", "-2"], "negative value"),
    (["--n-folds", "3", "--seeds", "4", "5"], "2 seeds make 2 folds but n_folds is 3"),
])
def test_make_folds_refuses_contradictory_or_invalid_settings(tmp_path, labels, capsys, args, phrase):
    lego_fails(["make-folds", "--labels", str(labels), "--out", str(tmp_path / "f.parquet"), *args], capsys, phrase)


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


@pytest.mark.parametrize("text, args, phrase", [
    ("case_id,g1\nA,1\nB,2\n", ["--include", "("], "include pattern '(' is not a valid regular expression"),
    ("case_id,g1\nA,1\nB,2\n", ["--exclude", "["], "exclude pattern '['"),
    ("case_id,g1\nA,1\nB,2\n", ["--columns", "g1", "g1"], "listed more than once"),
    ("case_id,g1,g2\nA,1,inf\nB,2,3\n", [], "column 'g2': infinite value for patient A (line 2"),
    ("case_id,g1\n", [], "no data rows"),
    ("case_id,g1,g2\nA,1,2,9\nB,3,4\n", [], "line 2 has more fields than the header"),
])
def test_prepare_modality_refuses_what_would_be_silently_wrong(tmp_path, capsys, text, args, phrase):
    (tmp_path / "t.csv").write_text(text)
    lego_fails(["prepare-modality", "--table", str(tmp_path / "t.csv"), "--modality", "m",
                "--out", str(tmp_path / "m.parquet"), *args], capsys, phrase)


def test_unreadable_text_encodings_and_txt_with_commas(tmp_path, capsys):
    (tmp_path / "u.csv").write_bytes("case_id,g1\nA,1\n".encode("utf-16"))
    (tmp_path / "c.txt").write_text("case_id,g1\nA,1\n")
    base = ["prepare-modality", "--modality", "m", "--out", str(tmp_path / "m.parquet"), "--table"]
    lego_fails([*base, str(tmp_path / "u.csv")], capsys, "not UTF-8 text")
    lego_fails([*base, str(tmp_path / "c.txt")], capsys, "comma-delimited; name it .csv")


def test_slide_list_ids_stay_text(tmp_path):
    from lego.data.slides_index import index_slides

    (tmp_path / "a.svs").write_bytes(b"x")
    (tmp_path / "list.csv").write_text("path,patient_id\na.svs,0011\n")
    slides, _ = index_slides(slide_list=tmp_path / "list.csv", patients=["0011"])
    assert slides["patient_id"].tolist() == ["0011"]


def test_class_labels_are_stripped(tmp_path):
    from lego.data.labels import ingest_labels

    (tmp_path / "l.csv").write_text("case_id,subtype\nA,LumA\nB,LumA \nC, Basal\n")
    out = ingest_labels(tmp_path / "l.csv", task="classification", label_column="subtype")
    assert sorted(out["label"].unique()) == ["Basal", "LumA"]


@pytest.mark.parametrize("kind, option", [("modality", "--tabular"), ("manifest", "--wsi"), ("labels", "--labels")])
def test_our_tables_missing_their_columns_are_named(tmp_path, labels, capsys, kind, option):
    pd.DataFrame({"x": [1]}).to_parquet(tmp_path / "odd.parquet")
    pd.DataFrame({"patient_id": ["P000"], "g": [1.0]}).to_parquet(tmp_path / "mod.parquet")
    args = {"--labels": str(labels), "--tabular": "a=" + str(tmp_path / "mod.parquet")}
    args[option] = str(tmp_path / "odd.parquet") if option == "--labels" else option[2] + "=" + str(tmp_path / "odd.parquet")
    lego_fails(["cohort-table", *[x for kv in args.items() for x in kv], "--out", str(tmp_path / "c.parquet")], capsys,
               f"a {kind} table needs column(s)")


def test_a_name_given_twice_is_refused(tmp_path, capsys):
    lego_fails(["cohort-table", "--labels", "l.parquet", "--tabular", "a=x.parquet", "a=y.parquet", "--out",
                str(tmp_path / "c.parquet")], capsys, "'a' is given twice")


@pytest.fixture
def block(tmp_path):
    p = cohort(tmp_path)
    train_block("zeta", "tabular", str(p["zeta"]), str(p["labels"]), str(p["folds"]), 0, "survival", SMALL,
                str(tmp_path / "blk"), device="cpu")
    return p


def test_evaluate_refuses_labels_of_another_task_or_missing_test_patients(tmp_path, block, capsys):
    lab = pd.read_parquet(block["labels"])
    folds = pd.read_parquet(block["folds"])
    test = folds[(folds["fold"] == 0) & (folds["subset"] == "test")]["patient_id"]
    lab[~lab["patient_id"].isin(test)].to_parquet(tmp_path / "notest.parquet")
    pd.DataFrame({"patient_id": lab["patient_id"], "label": "a"}).to_parquet(tmp_path / "cls.parquet")
    base = ["evaluate", "--model-dir", str(tmp_path / "blk"), "--data", f"zeta={block['zeta']}", "--folds",
            str(block["folds"]), "--out-dir", str(tmp_path / "ev"), "--name", "block-zeta", "--labels"]
    lego_fails([*base, str(tmp_path / "cls.parquet")], capsys, "a survival model needs outcome column(s)")
    lego_fails([*base, str(tmp_path / "notest.parquet")], capsys, f"{len(test)} of the", "have no label")


def test_predict_refuses_labels_that_match_no_predicted_patient(tmp_path, block, capsys):
    z = pd.read_parquet(block["zeta"]).assign(patient_id=lambda d: "N" + d["patient_id"].str[1:])
    z.to_parquet(tmp_path / "new.parquet")
    lego_fails(["predict", "--model-dir", str(tmp_path / "blk"), "--data", f"zeta={tmp_path / 'new.parquet'}",
                "--labels", str(block["labels"]), "--out-dir", str(tmp_path / "pr")], capsys,
               "none of its patients is among the 90 predicted")


def test_select_block_refuses_candidates_of_different_blocks(tmp_path, block, capsys):
    train_block("alpha", "tabular", str(block["alpha"]), str(block["labels"]), str(block["folds"]), 0, "survival",
                SMALL, str(tmp_path / "other"), device="cpu")
    lego_fails(["select-block", "--candidates", str(tmp_path / "blk"), str(tmp_path / "other"), "--out-dir",
                str(tmp_path / "sel")], capsys, "choose among candidates of one block and fold")


def test_summarise_names_a_missing_predictions_file_and_a_negative_seed(tmp_path, capsys):
    d = tmp_path / "m" / "fold0"
    d.mkdir(parents=True)
    (d / "metrics.json").write_text('{"model": "x", "fold": 0, "task": "survival", "test": {}, "val": {}}')
    lego_fails(["summarise", "--metrics", str(d / "metrics.json"), "--out-dir", str(tmp_path / "s")], capsys,
               "predictions.parquet: missing beside metrics.json")
    lego_fails(["summarise", "--metrics", str(d / "metrics.json"), "--out-dir", str(tmp_path / "s"),
                "--evaluation", '{"seed": -1}'], capsys, "seed=-1")


@pytest.mark.parametrize("data, phrase", [
    ({"features": np.zeros((5, 0), np.float32)}, "dim >= 1"),
    ({"features": np.ones((3, 4), np.float32), "coords": np.array([[0, 0], [np.nan, 1], [2, 2]])}, "NaN, infinite"),
    ({"features": np.ones((3, 4), np.float32), "coords": np.arange(3)}, "coords must be (patches x 2)"),
    ({"features": np.ones((3, 4), np.float32), "feats": np.ones((3, 4), np.float32)}, "both 'features' and 'feats'"),
])
def test_import_features_refuses_malformed_bags(tmp_path, capsys, data, phrase):
    with h5py.File(tmp_path / "s.h5", "w") as f:
        for k, v in data.items():
            f[k] = v
        if "coords" not in data:
            f["coords"] = np.zeros((len(data["features"]), 2))
    lego_fails(["import-features", "--src", str(tmp_path / "s.h5"), "--out", str(tmp_path / "o.h5"),
                "--slide-name", "s"], capsys, phrase)


def test_import_features_accepts_a_bytes_status(tmp_path):
    with h5py.File(tmp_path / "s.h5", "w") as f:
        f["features"], f["coords"] = np.ones((3, 4), np.float32), np.zeros((3, 2))
        f.attrs["status"] = np.bytes_(b"ok")
    assert main(["import-features", "--src", str(tmp_path / "s.h5"), "--out", str(tmp_path / "o.h5"),
                 "--slide-name", "s"]) == 0
