"""Patient IDs are text wherever they are read: leading zeros are kept, and invisible characters
(zero-width spaces, byte-order marks, NULs) are stripped before IDs are matched."""

from __future__ import annotations

import logging

import pandas as pd


def test_ids_with_leading_zeros_stay_text(tmp_path):
    from lego.data.labels import ingest_labels
    from lego.tabular.modality import prepare_modality

    (tmp_path / "labels.csv").write_text("case_id,survival_months,censorship\n00012,3,0\n012,4,1\n")
    (tmp_path / "rna.csv").write_text("case_id,g_rnaseq\n00012,1.5\n012,2.5\n")
    assert ingest_labels(tmp_path / "labels.csv")["patient_id"].tolist() == ["00012", "012"]
    assert prepare_modality(tmp_path / "rna.csv", "rna")["patient_id"].tolist() == ["00012", "012"]


def test_a_long_fold_table_keeps_leading_zeros_in_patient_ids(tmp_path):
    from lego.data.folds import make_folds

    ids = [f"00{i:02d}" for i in range(12)]
    (tmp_path / "folds.csv").write_text("patient_id,fold,subset\n" + "".join(
        f"{p},0,{'train' if i < 8 else 'val' if i < 10 else 'test'}\n" for i, p in enumerate(ids)))
    folds = make_folds(pd.DataFrame({"patient_id": ids}), method="file", path=tmp_path / "folds.csv")
    assert sorted(folds["patient_id"]) == ids  # "0011" used to be read as 11 and dropped as unknown


def test_slide_list_ids_stay_text(tmp_path):
    from lego.data.slides_index import index_slides

    (tmp_path / "a.svs").write_bytes(b"x")
    (tmp_path / "list.csv").write_text("path,patient_id\na.svs,0011\n")
    slides, _ = index_slides(slide_list=tmp_path / "list.csv", patients=["0011"])
    assert slides["patient_id"].tolist() == ["0011"]


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


def test_decomposed_and_composed_unicode_ids_are_one_patient(tmp_path):
    """macOS file names and some exports write IDs decomposed (NFD): "Müller-00" must still match."""
    import unicodedata

    from lego.data.labels import ingest_labels
    from lego.tabular.modality import prepare_modality

    nfc, nfd = (unicodedata.normalize(f, "Müller-00") for f in ("NFC", "NFD"))
    assert nfc != nfd
    (tmp_path / "labels.csv").write_text(f"case_id,survival_months,censorship\n{nfc},3,0\nZoë-01,4,1\n", encoding="utf-8")
    (tmp_path / "rna.csv").write_text(f"case_id,g_rnaseq\n{nfd},1.5\n{unicodedata.normalize('NFD', 'Zoë-01')},2.5\n",
                                      encoding="utf-8")
    labels = ingest_labels(tmp_path / "labels.csv")["patient_id"].tolist()
    rna = prepare_modality(tmp_path / "rna.csv", "rna")["patient_id"].tolist()
    assert labels == rna == [nfc, "Zoë-01"]


def test_slide_names_and_listed_patient_ids_are_put_in_composed_form(tmp_path):
    import unicodedata

    from lego.data.slides_index import index_slides

    nfc, nfd = (unicodedata.normalize(f, "Müller-00") for f in ("NFC", "NFD"))
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / f"{nfd}.svs").write_bytes(b"x")
    slides, _ = index_slides(slide_dir=tmp_path / "d", patients=[nfc], prefix_length=len(nfc))
    assert slides["slide_id"].tolist() == [nfc] and slides["patient_id"].tolist() == [nfc]
    (tmp_path / "list.csv").write_text(f"path,patient_id\nd/{nfd}.svs,{nfd}\n", encoding="utf-8")
    slides, _ = index_slides(slide_list=tmp_path / "list.csv", patients=[nfc])
    assert slides["patient_id"].tolist() == [nfc]


def test_an_imported_feature_file_named_in_decomposed_unicode_is_found(tmp_path):
    import unicodedata

    from lego.data.slides_index import named_file

    nfc, nfd = (unicodedata.normalize(f, "Müller-00") for f in ("NFC", "NFD"))
    (tmp_path / f"{nfd}.h5").write_bytes(b"x")
    assert named_file(tmp_path, nfc) == str(tmp_path / f"{nfd}.h5")
    assert named_file(tmp_path, "other") == str(tmp_path / "other.h5")
