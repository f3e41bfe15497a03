"""Hostile or careless inputs found by an adversarial sweep: each is one clear line, or a record in
a batch, never a traceback and never a silently different result."""

from __future__ import annotations

import json

import h5py
import pandas as pd
import pytest

from lego.cli import main
from lego.errors import InputError
from tests.test_fit_protocol import SMALL, cohort


def lego_fails(args: list[str], capsys, *phrases: str) -> str:
    assert main(args) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lego ")]
    assert len(err) == 1 and "Traceback" not in err[0], err
    for phrase in phrases:
        assert phrase in err[0], err[0]
    return err[0]


def test_ids_with_leading_zeros_stay_text(tmp_path):
    from lego.data.labels import ingest_labels
    from lego.tabular.modality import prepare_modality

    (tmp_path / "labels.csv").write_text("case_id,survival_months,censorship\n00012,3,0\n012,4,1\n")
    (tmp_path / "rna.csv").write_text("case_id,g_rnaseq\n00012,1.5\n012,2.5\n")
    assert ingest_labels(tmp_path / "labels.csv")["patient_id"].tolist() == ["00012", "012"]
    assert prepare_modality(tmp_path / "rna.csv", "rna")["patient_id"].tolist() == ["00012", "012"]


@pytest.mark.parametrize("spec, phrase", [
    ({"epochs": 0}, "'epochs': 0 is less than the minimum of 1"),
    ({"epochs": "ten"}, "'epochs': 'ten' is not of type 'integer'"),
    ({"lr": -1}, "'lr': -1 is less than or equal to the minimum of 0"),
    ({"batch_size": 0}, "'batch_size': 0 is less than the minimum of 1"),
    ({"epoch": 1}, "unknown block setting(s) ['epoch']"),
    ({"encoder": "foo"}, "'encoder': 'foo' is not one of"),
    ([1, 2], "must be a JSON object"),
])
def test_a_bad_block_spec_is_one_line(spec, phrase, tmp_path, capsys):
    p = cohort(tmp_path, 60)
    args = ["train-block", "--modality", "zeta", "--kind", "tabular", "--data", str(p["zeta"]), "--labels", str(p["labels"]),
            "--folds", str(p["folds"]), "--fold", "0", "--task", "survival", "--spec", json.dumps(spec),
            "--out-dir", str(tmp_path / "out")]
    lego_fails(args, capsys, phrase)
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_a_patient_in_two_subsets_of_a_fold_is_a_leak_and_refused(tmp_path):
    from lego.data.fold_data import fold_ids

    folds = pd.DataFrame({"patient_id": ["A", "A", "B"], "fold": [0, 0, 0], "subset": ["train", "test", "val"]})
    with pytest.raises(InputError, match="patient A appears 2 times"):
        fold_ids(folds, 0)
    with pytest.raises(InputError, match=r"unknown subset name\(s\) \['validation'\]"):
        fold_ids(folds.assign(patient_id=["A", "B", "C"], subset=["train", "validation", "test"]), 0)


def test_a_nan_validation_score_never_wins():
    from lego.selection import choose

    assert choose([float("nan"), 0.6], [0.1, 0.05], "best")[0] == 1
    assert choose([float("nan"), 0.6], [float("nan"), 0.05], "one_se")[0] == 1


def test_select_block_names_a_damaged_history_file(tmp_path, capsys):
    for i, text in enumerate(['{"val_score": 0.6}', "[1, 2]"]):
        (tmp_path / f"c{i}").mkdir()
        (tmp_path / f"c{i}" / "history.json").write_text(text)
        (tmp_path / f"c{i}" / "config.json").write_text('{"modality": "a", "fold": 0, "task": "survival"}')
    lego_fails(["select-block", "--candidates", str(tmp_path / "c0"), str(tmp_path / "c1"), "--out-dir", str(tmp_path / "o")],
               capsys, "c1/history.json", "expected a JSON dict")


def test_summarise_refuses_the_same_fold_twice(tmp_path):
    from lego.evaluation.summary import summarise

    f = tmp_path / "m" / "metrics.json"
    f.parent.mkdir()
    f.write_text(json.dumps({"model": "block-a", "fold": 0, "task": "survival", "test": {}, "val": {}}))
    with pytest.raises(InputError, match="fold 0 is already given"):
        summarise([str(f), str(f)], tmp_path / "out")


@pytest.mark.parametrize("regex, phrase", [("P\\d+", "no capture group"), ("(P", "not a valid regular expression")])
def test_index_slides_checks_the_patient_regex(regex, phrase, tmp_path):
    from lego.data.slides_index import index_slides

    (tmp_path / "P1.svs").write_bytes(b"x")
    with pytest.raises(InputError, match=phrase):
        index_slides(tmp_path, extensions=[".svs"], regex=regex, patients=["P1"])


def test_import_features_records_a_features_group(tmp_path, capsys):
    from lego.slides.features import bag_info

    with h5py.File(tmp_path / "src.h5", "w") as f:
        f.create_group("features")
    args = ["import-features", "--src", str(tmp_path / "src.h5"), "--out", str(tmp_path / "out.h5"), "--slide-name", "S1"]
    assert main(args + ["--record-failure"]) == 0
    assert bag_info(tmp_path / "out.h5")["status"] == "failed"


def test_extract_records_a_damaged_tissue_file_in_batch_mode(demo_slides, tmp_path):
    from lego.slides.patches import PatchParams, read_patches
    from lego.slides.stages import run_extract

    pd.DataFrame({"a": [1]}).to_parquet(tmp_path / "t.parquet")
    reason = run_extract(demo_slides[0], tmp_path / "t.parquet", tmp_path / "p.h5", PatchParams(), record_failure=True)
    assert reason.startswith("[extract_patches]") and "not a tissue table" in reason
    assert read_patches(tmp_path / "p.h5").attrs["status"] == "failed"
    with pytest.raises(InputError, match="not a tissue table"):
        run_extract(demo_slides[0], tmp_path / "t.parquet", tmp_path / "q.h5", PatchParams())


def test_the_small_spec_used_by_these_tests_is_valid():
    from lego.stages import check_spec

    assert check_spec(dict(SMALL), "x") == SMALL


@pytest.mark.parametrize("args", [
    ["extract", "--slide", "s", "--tissue", "t", "--out", "o", "--patch-px", "0"],
    ["extract", "--slide", "s", "--tissue", "t", "--out", "o", "--overlap", "1"],
    ["make-demo", "--out", "o", "--patients", "0"],
    ["embed", "--slide", "s", "--patches", "p", "--encoder", "stain_texture", "--out", "o", "--batch-size", "0"],
])
def test_out_of_range_numbers_are_refused_by_the_parser(args, capsys):
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2 and "is outside" in capsys.readouterr().err


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


@pytest.mark.parametrize("text, phrase", [
    ('{"nboot": 5}', "unknown evaluation setting(s) ['nboot']"),
    ("[1]", "must be a JSON object"),
    ('{"horizons": "12"}', "evaluation setting horizons='12'"),
    ('{"tau_quantile": 5}', "tau_quantile=5"),
    ('{"n_boot": "many"}', "n_boot='many'"),
])
def test_bad_evaluation_options_are_one_line(text, phrase):
    from lego.errors import ConfigError
    from lego.evaluation.stages import EvalOptions

    with pytest.raises(ConfigError, match=phrase.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(").replace(")", r"\)")):
        EvalOptions.from_json(text)


def test_merge_and_fuse_refuse_one_block_two_of_a_modality_and_bad_specs(tmp_path):
    from lego.stages import fuse, merge
    from tests.test_fit_protocol import trained_blocks

    p, dirs = trained_blocks(tmp_path, SMALL)
    with pytest.raises(InputError, match="at least two modalities"):
        merge(dirs[:1], "harmonic", "slerp", str(tmp_path / "m1"))
    with pytest.raises(InputError, match="hold the same modality"):
        merge([dirs[0], dirs[0], dirs[1]], "harmonic", "slerp", str(tmp_path / "m2"))
    data = {m: str(p[m]) for m in ("zeta", "alpha")}
    for spec, phrase in (({"mode": "foo"}, "unknown fuse mode 'foo'"), ({"freeze": "encoders"}, "freeze must be a list"),
                         ({"freeze": ["encoder"]}, r"unknown freeze name\(s\) \['encoder'\]")):
        with pytest.raises(InputError, match=phrase):
            fuse(dirs, data, str(p["labels"]), str(p["folds"]), {"epochs": 1, **spec}, str(tmp_path / "f"), "cpu")


@pytest.mark.parametrize("name,text", [("labels.csv", "case_id,time,censorship,case_id\nA,1,0,B\n"),
                                       ("omics.tsv", "case_id\tTP53_mut\tTP53_mut\nA\t1\t0\n")])
def test_a_header_naming_a_column_twice_is_refused(name, text, tmp_path):
    """pandas would read the second copy as 'x.1' and use the first without a word."""
    from lego.tabular.tables import read_table

    (tmp_path / name).write_text(text)
    with pytest.raises(InputError, match="appears twice in the header .columns [0-9]+ and [0-9]+.; rename or drop one"):
        read_table(tmp_path / name)


def test_a_folder_given_as_a_table_says_so(tmp_path):
    from lego.tabular.tables import read_table

    with pytest.raises(InputError, match="is a folder, not a table file"):
        read_table(tmp_path)


def test_both_status_columns_given_are_refused_not_one_silently_ignored(tmp_path, capsys):
    table = tmp_path / "labels.csv"
    table.write_text("case_id,survival_months,censorship,event\nA,3,1,1\nB,5,0,0\n")
    assert main(["ingest-labels", "--table", str(table), "--censorship-column", "censorship", "--event-column", "event",
                 "--out", str(tmp_path / "o.parquet")]) == 2
    assert "give one" in capsys.readouterr().err and not (tmp_path / "o.parquet").exists()


def test_a_long_fold_table_keeps_leading_zeros_in_patient_ids(tmp_path):
    from lego.data.folds import make_folds

    ids = [f"00{i:02d}" for i in range(12)]
    (tmp_path / "folds.csv").write_text("patient_id,fold,subset\n" + "".join(
        f"{p},0,{'train' if i < 8 else 'val' if i < 10 else 'test'}\n" for i, p in enumerate(ids)))
    folds = make_folds(pd.DataFrame({"patient_id": ids}), method="file", path=tmp_path / "folds.csv")
    assert sorted(folds["patient_id"]) == ids  # "0011" used to be read as 11 and dropped as unknown


def test_a_feature_file_whose_features_are_a_group_is_one_failed_slide(tmp_path):
    from lego.slides.features import bag_info

    with h5py.File(tmp_path / "s.h5", "w") as f:
        f.create_group("features")
    info = bag_info(tmp_path / "s.h5")
    assert info["status"] == "failed" and "group" in info["reason"]
