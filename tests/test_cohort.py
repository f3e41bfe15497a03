import numpy as np
import pandas as pd
import pytest

from lego.data.cohort_table import build_patients_table
from lego.data.folds import make_folds
from lego.data.slides_index import index_slides, patient_of
from lego.errors import InputError
from tests.helpers import lego_fails


def patients(n=100, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"patient_id": [f"P{i:03d}" for i in range(n)], "time": rng.uniform(1, 50, n), "event": (rng.random(n) < 0.3).astype(int)})


def test_default_folds_follow_the_paper_protocol():
    folds = make_folds(patients())
    assert sorted(folds["fold"].unique()) == [0, 1, 2, 3, 4]
    for _, f in folds.groupby("fold"):
        assert f["patient_id"].is_unique and len(f) == 100  # a partition of all patients
        assert f["subset"].value_counts().to_dict() == {"train": 70, "val": 15, "test": 15}
    pd.testing.assert_frame_equal(folds, make_folds(patients()))  # seeds 1..5: reproducible
    tests = [set(f.loc[f.subset == "test", "patient_id"]) for _, f in folds.groupby("fold")]
    assert len({frozenset(t) for t in tests}) == 5, "different seeds give different splits"


def test_stratified_folds_keep_the_event_rate():
    p = patients(200, seed=1)
    folds = make_folds(p, stratify=True).merge(p, on="patient_id")
    rate = p["event"].mean()
    for _, f in folds.groupby(["fold", "subset"]):
        assert abs(f["event"].mean() - rate) < 0.06


def test_kfold_tests_every_patient_once():
    folds = make_folds(patients(50), method="kfold", n_folds=5, seeds=[3])
    tested = folds[folds.subset == "test"]["patient_id"]
    assert tested.is_unique and len(tested) == 50
    assert (folds.groupby("fold")["subset"].apply(lambda s: (s == "val").sum()) > 0).all()


def test_slides_never_straddle_subsets():
    slides = pd.DataFrame({"slide_id": [f"P{i:03d}-DX{k}" for i in range(100) for k in (1, 2)]})
    slides["patient_id"] = slides["slide_id"].str[:4]
    per_slide = make_folds(patients()).merge(slides, on="patient_id")
    assert (per_slide.groupby(["fold", "patient_id"])["subset"].nunique() == 1).all()


def test_too_few_patients():
    with pytest.raises(InputError, match="empty subset"):
        make_folds(patients(3))


@pytest.mark.parametrize("kwargs, message", [
    ({"n_folds": 0}, "n_folds must be at least 1"),
    ({"method": "kfold", "n_folds": 1}, "kfold needs n_folds >= 2"),
    ({"seeds": []}, "seeds is empty"),
    ({"method": "kfold", "repeats": 0}, "repeats must be at least 1"),
    ({"method": "kfold", "n_folds": 200}, "needs at least 200 patients"),
])
def test_fold_counts_that_make_no_folds_are_refused(kwargs, message):
    with pytest.raises(InputError, match=message):
        make_folds(patients(), **kwargs)


def test_make_folds_cli_exits_2_with_one_line(tmp_path, capsys):
    from lego.cli import main

    n = 20
    patients(n).to_parquet(tmp_path / "labels.parquet")
    assert main(["make-folds", "--labels", str(tmp_path / "labels.parquet"), "--method", "kfold", "--n-folds",
                 str(n + 1), "--out", str(tmp_path / "folds.parquet")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"lego make-folds: error: kfold with {n + 1} folds needs at least {n + 1} patients")
    assert not (tmp_path / "folds.parquet").exists()
    with pytest.raises(SystemExit) as info:  # --n-folds 0 never reaches make_folds: the parser refuses it
        main(["make-folds", "--labels", str(tmp_path / "labels.parquet"), "--n-folds", "0", "--out", str(tmp_path / "f")])
    assert info.value.code == 2 and "is outside" in capsys.readouterr().err


def test_patient_id_rules():
    sid = "TCGA-2F-A9KO-01Z-00-DX1.195576CF-B739-4BD9-B15B-4A70AE287D3E"
    assert patient_of(sid) == "TCGA-2F-A9KO"
    assert patient_of("case17_slideB", regex=r"^(case\d+)_") == "case17"
    assert patient_of("short") is None


def test_index_slides_reports_unmatched_and_ignores_other_files(tmp_path):
    d = tmp_path / "slides"
    d.mkdir()
    for name in ["TCGA-AA-0001-01Z-00-DX1.ABC.svs", "TCGA-AA-0001-01Z-00-DX2.svs", "TCGA-ZZ-9999-01Z.svs", "notes.txt"]:
        (d / name).write_bytes(b"x")
    slides, unmatched = index_slides(d, extensions=[".svs"], patients=["TCGA-AA-0001", "TCGA-AA-0002"])
    assert slides["slide_id"].tolist() == ["TCGA-AA-0001-01Z-00-DX1.ABC", "TCGA-AA-0001-01Z-00-DX2"]
    assert set(slides["patient_id"]) == {"TCGA-AA-0001"}
    assert unmatched["slide_id"].tolist() == ["TCGA-ZZ-9999-01Z"]
    assert "TCGA-ZZ-9999 has no outcome" in unmatched["reason"].iloc[0]


def test_index_slides_records_link_loops_and_brace_names_and_goes_on(tmp_path):
    d = tmp_path / "slides"
    d.mkdir()
    (d / "TCGA-AA-0001-01Z.svs").write_bytes(b"x")
    (d / "TCGA-AA-0002-{x}.svs").write_bytes(b"x")
    (d / "loop.svs").symlink_to(d / "loop.svs")
    (d / "gone.svs").symlink_to(d / "missing.svs")
    slides, unmatched = index_slides(d, extensions=[".svs"], patients=["TCGA-AA-0001", "TCGA-AA-0002"])
    assert slides["slide_id"].tolist() == ["TCGA-AA-0001-01Z"]
    reasons = dict(zip(unmatched["slide_id"], unmatched["reason"]))
    assert "link loop" in reasons["loop"] and "link loop" in reasons["gone"]
    assert "rename the file" in reasons["TCGA-AA-0002-{x}"]


def test_index_slides_stops_when_no_slide_matches_and_names_the_setting(tmp_path, caplog):
    d = tmp_path / "slides"
    d.mkdir()
    for name in ("lab7_P0001_HE.svs", "lab7_P0002_HE.svs"):
        (d / name).write_bytes(b"x")
    with pytest.raises(InputError, match=r'none of the 2 slides .*lab7_P0001_HE.*regex: "\^\.\{5\}\(\.\{5\}\)"'):
        index_slides(d, extensions=[".svs"], patients=["P0001", "P0002"])
    (d / "P0003_HE.svs").write_bytes(b"x")
    with caplog.at_level("WARNING"):
        slides, unmatched = index_slides(d, extensions=[".svs"], prefix_length=5, patients=["P0001", "P0002", "P0003"])
    assert slides["slide_id"].tolist() == ["P0003_HE"] and len(unmatched) == 2
    assert "2 slide(s) match no labelled patient" in caplog.text and "regex" in caplog.text


def test_index_slides_from_a_list_and_duplicates(tmp_path):
    for f in ("a/S1.svs", "b/S2.svs", "b/S1.svs"):
        (tmp_path / f).parent.mkdir(exist_ok=True)
        (tmp_path / f).touch()
    pd.DataFrame({"path": ["a/S1.svs", "b/S2.svs"], "patient_id": ["P1", "P2"]}).to_csv(tmp_path / "list.csv", index=False)
    slides, _ = index_slides(slide_list=tmp_path / "list.csv", patients=["P1", "P2"])
    assert slides["patient_id"].tolist() == ["P1", "P2"] and slides["path"].str.endswith("a/S1.svs").iloc[0]
    pd.DataFrame({"path": ["a/S1.svs", "b/S1.svs"]}).to_csv(tmp_path / "dup.csv", index=False)
    with pytest.raises(InputError, match="'S1' names more than one file"):
        index_slides(slide_list=tmp_path / "dup.csv")


def test_listed_slides_that_are_missing_loops_or_folders_are_recorded_and_the_rest_go_on(tmp_path):
    (tmp_path / "ok.svs").touch()
    (tmp_path / "loop.svs").symlink_to(tmp_path / "loop.svs")
    (tmp_path / "dir.svs").mkdir()
    pd.DataFrame({"path": ["ok.svs", "gone.svs", "loop.svs", "dir.svs"], "patient_id": ["P1"] * 4}).to_csv(
        tmp_path / "list.csv", index=False)
    slides, unmatched = index_slides(slide_list=tmp_path / "list.csv", patients=["P1"])
    assert slides["slide_id"].tolist() == ["ok"]
    reasons = dict(zip(unmatched["slide_id"], unmatched["reason"]))
    assert reasons["gone"].startswith("file not found (listed in") and "line 3" in reasons["gone"]
    assert "link loop" in reasons["loop"] and reasons["dir"].startswith("not a file")


def test_patients_table_counts_only_usable_slides():
    labels = patients(3)
    tab = {"rna": pd.DataFrame({"patient_id": ["P000", "P002"]})}
    manifest = pd.DataFrame({"slide_id": ["a", "b", "c"], "patient_id": ["P000", "P001", "P001"], "status": ["ok", "failed", "ok"]})
    out = build_patients_table(labels, tab, {"wsi": manifest})
    assert out["has_rna"].tolist() == [True, False, True]
    assert out["n_slides_wsi"].tolist() == [1, 1, 0] and out["has_wsi"].tolist() == [True, True, False]
    assert out["n_modalities"].tolist() == [2, 1, 1]


def test_unmatched_slides_warning_on_the_console_names_the_setting_that_would_match(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    d = tmp_path / "slides"
    d.mkdir()
    for name in ["P0001_HE.svs", "XX-P0002_HE.svs"]:
        (d / name).write_bytes(b"x")
    slides, unmatched = index_slides(d, extensions=[".svs"], prefix_length=5, patients=["P0001", "P0002"])
    assert len(unmatched) == 1 and "regex" in unmatched["hint"].iloc[0]
    unmatched.to_csv(tmp_path / "unmatched.tsv", sep="\t", index=False)
    spec = importlib.util.spec_from_file_location("helpers", Path(__file__).parent.parent / "workflow" / "helpers.py")
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    helpers.warn_unmatched(str(tmp_path / "unmatched.tsv"))
    err = capsys.readouterr().err
    assert "1 slide(s) left out" in err and "XX-P0002_HE" in err and 'slides.patient_id: {regex: "^.{3}(.{5})"}' in err


def test_an_unwritable_output_folder_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    # Root ignores permission bits (CI runs as root), so the refusal is simulated where a folder is made.
    from pathlib import Path

    from lego.cli import main

    patients().to_parquet(tmp_path / "labels.parquet")
    real_mkdir = Path.mkdir

    def refuse(self, *args, **kwargs):
        if "locked" in str(self):
            raise PermissionError(13, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", refuse)
    out = tmp_path / "locked" / "folds.parquet"
    assert main(["make-folds", "--labels", str(tmp_path / "labels.parquet"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "locked" in err[0] and "Permission denied; check the folder's permissions" in err[0]


@pytest.mark.parametrize("kind, option", [("modality", "--tabular"), ("manifest", "--wsi"), ("labels", "--labels")])
def test_cohort_table_names_the_columns_its_input_tables_lack(tmp_path, labels, capsys, kind, option):
    """Found by the second hostile sweep (as test_our_tables_missing_their_columns_are_named)."""
    pd.DataFrame({"x": [1]}).to_parquet(tmp_path / "odd.parquet")
    pd.DataFrame({"patient_id": ["P000"], "g": [1.0]}).to_parquet(tmp_path / "mod.parquet")
    args = {"--labels": str(labels), "--tabular": "a=" + str(tmp_path / "mod.parquet")}
    args[option] = str(tmp_path / "odd.parquet") if option == "--labels" else option[2] + "=" + str(tmp_path / "odd.parquet")
    lego_fails(["cohort-table", *[x for kv in args.items() for x in kv], "--out", str(tmp_path / "c.parquet")], capsys,
               f"a {kind} table needs column(s)")


def test_cohort_table_refuses_a_modality_name_given_twice(tmp_path, capsys):
    """Found by the second hostile sweep (as test_a_name_given_twice_is_refused)."""
    lego_fails(["cohort-table", "--labels", "l.parquet", "--tabular", "a=x.parquet", "a=y.parquet", "--out",
                str(tmp_path / "c.parquet")], capsys, "'a' is given twice")


def test_cohort_table_refuses_a_modality_no_labelled_patient_has(tmp_path, capsys):
    labels = tmp_path / "labels.parquet"
    pd.DataFrame({"patient_id": ["P0", "P1"], "time": [1.0, 2.0], "event": [1, 0]}).to_parquet(labels)
    pd.DataFrame({"patient_id": ["P0\t", "P1\t"], "g": [1.0, 2.0]}).to_parquet(tmp_path / "rna.parquet")
    base = ["cohort-table", "--labels", str(labels), "--out", str(tmp_path / "c.parquet")]
    lego_fails([*base, "--tabular", f"rna={tmp_path / 'rna.parquet'}"], capsys, "modality 'rna': no labelled patient")
    lego_fails([*base, "--tabular", f"rna={tmp_path / 'rna.parquet'}", "--wsi", f"rna={tmp_path / 'rna.parquet'}"],
               capsys, "given as tabular and as wsi")
