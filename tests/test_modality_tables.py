"""Omics and clinical tables: how a table is read, and what prepare-modality refuses rather than
turn into silently wrong features (outcome columns, row numbers, repeated headers, odd encodings).
Most cases are regressions found by the adversarial
(hostile-input) sweeps: each was a traceback, a silently wrong result or the wrong cause."""

from __future__ import annotations

import logging

import pandas as pd
import pytest
import yaml

from lego.cli import main
from lego.errors import InputError
from tests.helpers import lego_fails


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


def test_a_table_not_in_utf8_or_a_txt_with_commas_is_named(tmp_path, capsys):
    """Found by the second hostile sweep (as test_unreadable_text_encodings_and_txt_with_commas)."""
    (tmp_path / "u.csv").write_bytes("case_id,g1\nA,1\n".encode("utf-16"))
    (tmp_path / "c.txt").write_text("case_id,g1\nA,1\n")
    base = ["prepare-modality", "--modality", "m", "--out", str(tmp_path / "m.parquet"), "--table"]
    lego_fails([*base, str(tmp_path / "u.csv")], capsys, "not UTF-8 text")
    lego_fails([*base, str(tmp_path / "c.txt")], capsys, "comma-delimited; name it .csv")


@pytest.mark.parametrize("setup, args, phrase", [
    ("semicolon", [], "semicolon-delimited (decimal commas?)"),
    ("categorical", ["--categorical", "nope"], "categorical columns ['nope'] not in the table"),
    ("index", [], None),
])
def test_prepare_modality_names_semicolons_and_unknown_categoricals_and_reads_index_ids(tmp_path, capsys, setup, args, phrase):
    """Found by the third hostile sweep (as test_tables_that_read_wrongly_before): each of these tables
    used to be read wrongly without a word."""
    if setup == "semicolon":
        (tmp_path / "t.csv").write_text("case_id;g1\nA;1,5\nB;2,5\n")
        table = tmp_path / "t.csv"
    elif setup == "categorical":
        (tmp_path / "t.csv").write_text("case_id,g1\nA,1\nB,2\n")
        table = tmp_path / "t.csv"
    else:  # IDs in the parquet's index (pandas' to_parquet keeps a named index)
        pd.DataFrame({"case_id": ["A", "B"], "g1": [1.0, 2.0]}).set_index("case_id").to_parquet(tmp_path / "t.parquet")
        table = tmp_path / "t.parquet"
    argv = ["prepare-modality", "--table", str(table), "--modality", "m", "--out", str(tmp_path / "m.parquet"), *args]
    if phrase is None:
        assert main(argv) == 0 and pd.read_parquet(tmp_path / "m.parquet")["patient_id"].tolist() == ["A", "B"]
    else:
        lego_fails(argv, capsys, phrase)


def _csv(path, df):
    df.to_csv(path, index=False)
    return str(path)


def test_a_modality_table_with_its_own_patient_id_column(tmp_path, capsys):
    table = _csv(tmp_path / "t.csv", pd.DataFrame({"case_id": ["a", "b"], "patient_id": ["x", "y"], "g": [1.0, 2.0]}))
    lego_fails(["prepare-modality", "--table", table, "--modality", "m", "--out", str(tmp_path / "m.parquet")],
               capsys, "a 'patient_id' column besides the ID column 'case_id'")


def test_an_all_empty_modality_table_and_the_id_as_a_category_are_refused(tmp_path, capsys):
    (tmp_path / "t.csv").write_text("case_id,g1,g2\nP1,,\nP2,,\n")
    lego_fails(["prepare-modality", "--table", str(tmp_path / "t.csv"), "--modality", "m", "--out",
                str(tmp_path / "m.parquet")], capsys, "every selected cell is empty (2 rows, 2 column(s))")
    (tmp_path / "c.csv").write_text("case_id,g1\nP1,1\nP2,2\n")
    lego_fails(["prepare-modality", "--table", str(tmp_path / "c.csv"), "--modality", "m", "--categorical", "case_id",
                "--out", str(tmp_path / "m.parquet")], capsys, "the ID column 'case_id' is listed as categorical")


def test_a_hand_made_modality_table_with_a_patient_twice_is_refused(tmp_path):
    from lego.data.fold_data import load_modality_table
    from lego.errors import InputError

    pd.DataFrame({"patient_id": ["P0", "P0"], "g": [1.0, 2.0]}).to_parquet(tmp_path / "m.parquet")
    with pytest.raises(InputError, match="patient_id 'P0' has more than one row"):
        load_modality_table("tabular", tmp_path / "m.parquet")


def test_row_numbers_and_r_row_names_are_not_features(tmp_path):
    """Review findings: a filtered frame saved with its (unnamed) row numbers, and R's
    write.table row names, must not become columns; a named index (IDs) is kept."""
    from lego.tabular.modality import prepare_modality

    df = pd.DataFrame({"case_id": list("ABCD"), "age": [1.0, 2.0, 3.0, 4.0]})
    df[df["case_id"].isin(["A", "C", "D"])].to_parquet(tmp_path / "f.parquet")
    assert list(prepare_modality(tmp_path / "f.parquet", "m", exclude=[]).columns) == ["patient_id", "age"]
    (tmp_path / "r.csv").write_text("case_id,age\n1,A,50\n2,B,60\n")
    out = prepare_modality(tmp_path / "r.csv", "m", exclude=[])  # none left out (MCAT's metadata, age among them, by default)
    assert out["patient_id"].tolist() == ["A", "B"] and out["age"].tolist() == [50.0, 60.0]


def test_outcome_columns_are_never_features(tmp_path, capsys, caplog):
    """A clinical table that also holds the outcome (non-MCAT names) used to train on the answer
    (test C 0.98, exit 0)."""
    table = _csv(tmp_path / "clin.csv", pd.DataFrame({"case_id": ["a", "b", "c"], "age": [50, 60, 70],
                                                      "OS_months": [1.0, 2.0, 3.0], "OS_event": [1, 0, 1]}))
    out = tmp_path / "clin.parquet"
    with caplog.at_level(logging.WARNING):
        assert main(["prepare-modality", "--table", table, "--modality", "clinical", "--out", str(out),
                     "--outcome-columns", "OS_months", "OS_event", "--exclude"]) == 0  # none (the default leaves out MCAT's age)
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
