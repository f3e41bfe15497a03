"""Slides and patch files: slide indexing, the segment/extract/embed stages refusing or recording a
wrong input, and the slide-QC table.
Most cases are regressions found by the adversarial
(hostile-input) sweeps: each was a traceback, a silently wrong result or the wrong cause."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lego.cli import main
from lego.errors import InputError
from tests.helpers import lego_fails


@pytest.mark.parametrize("regex, phrase", [("P\\d+", "no capture group"), ("(P", "not a valid regular expression")])
def test_index_slides_checks_the_patient_regex(regex, phrase, tmp_path):
    from lego.data.slides_index import index_slides

    (tmp_path / "P1.svs").write_bytes(b"x")
    with pytest.raises(InputError, match=phrase):
        index_slides(tmp_path, extensions=[".svs"], regex=regex, patients=["P1"])


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


def test_extract_records_a_damaged_tissue_file_in_batch_mode(demo_slides, tmp_path):
    from lego.slides.patches import PatchParams, read_patches
    from lego.slides.slide_jobs import run_extract

    pd.DataFrame({"a": [1]}).to_parquet(tmp_path / "t.parquet")
    reason = run_extract(demo_slides[0], tmp_path / "t.parquet", tmp_path / "p.h5", PatchParams(), record_failure=True)
    assert reason.startswith("[extract_patches]") and "not a tissue table" in reason
    assert read_patches(tmp_path / "p.h5").attrs["status"] == "failed"
    with pytest.raises(InputError, match="not a tissue table"):
        run_extract(demo_slides[0], tmp_path / "t.parquet", tmp_path / "q.h5", PatchParams())


def test_patches_of_another_slide_are_refused(demo_slides, tmp_path, capsys):
    from lego.slides.patches import PatchParams
    from lego.slides.slide_jobs import run_extract, run_segment
    from lego.slides.tissue import TissueParams

    a, b = demo_slides[0], demo_slides[1]
    assert run_segment(a, tmp_path / "t.parquet", tmp_path / "t.png", TissueParams(seg_downsample=16)) == "ok"
    lego_fails(["extract", "--slide", str(b), "--tissue", str(tmp_path / "t.parquet"), "--out", str(tmp_path / "p.h5")],
               capsys, f"made from slide {a.name!r}, not {b.name!r}")
    assert run_extract(a, tmp_path / "t.parquet", tmp_path / "p.h5", PatchParams()) == "ok"
    lego_fails(["embed", "--slide", str(b), "--patches", str(tmp_path / "p.h5"), "--encoder", "stain_texture",
                "--out", str(tmp_path / "f.h5")], capsys, f"made from slide {a.name!r}, not {b.name!r}")


def test_a_damaged_patch_file_is_a_recorded_failure_and_other_slips_are_one_line(demo_slides, tmp_path, capsys):
    import h5py

    (tmp_path / "p.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    assert main(["embed", "--slide", str(demo_slides[0]), "--patches", str(tmp_path / "p.h5"), "--encoder",
                 "stain_texture", "--out", str(tmp_path / "f.h5"), "--record-failure"]) == 0
    with h5py.File(tmp_path / "f.h5") as f:
        assert f.attrs["status"] == "failed" and "not a readable patch file" in f.attrs["reason"]
    with h5py.File(tmp_path / "s.h5", "w") as f:
        f["features"] = np.ones((3, 4), np.float32)
        f["coords"] = np.full((3, 2), -1)
    lego_fails(["import-features", "--src", str(tmp_path / "s.h5"), "--out", str(tmp_path / "o.h5"), "--slide-name", "s"],
               capsys, "coords hold negative positions")
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["features"] = np.ones((3, 4), np.float32)
        f.attrs["status"] = np.array([b"failed", b"ok"])
    lego_fails(["import-features", "--src", str(tmp_path / "a.h5"), "--out", str(tmp_path / "o.h5"), "--slide-name", "s"],
               capsys, "says neither success nor failure")
    (tmp_path / "real" / "slides").mkdir(parents=True)
    (tmp_path / "real" / "clinical.csv").write_text("my,real,clinical\n")
    (tmp_path / "real" / "slides" / "patient7.svs").write_bytes(b"x")
    lego_fails(["make-demo", "--out", str(tmp_path / "real"), "--patients", "8"], capsys, "not a demo slide")
    assert (tmp_path / "real" / "clinical.csv").read_text() == "my,real,clinical\n", "nothing written first"


def test_collect_qc_with_the_wrong_file_names_it(tmp_path, capsys):
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    lego_fails(["collect-qc", "--unmatched", str(tmp_path / "x.csv"), "--out", str(tmp_path / "qc.tsv")], capsys,
               "x.csv: a slide-QC table needs column(s) ['slide_id', 'patient_id', 'reason']", "lego index-slides")
    good = tmp_path / "unmatched.tsv"
    good.write_text("slide_id\tpatient_id\tpath\treason\nS1\t\t/x/S1.svs\tno patient ID could be derived\n")
    assert main(["collect-qc", "--unmatched", str(good), "--out", str(tmp_path / "qc.tsv")]) == 0
    qc = pd.read_table(tmp_path / "qc.tsv")
    assert qc["slide_id"].tolist() == ["S1"] and qc["stage"].tolist() == ["index_slides"]


@pytest.mark.parametrize("name", ["..svs", "...svs", ".svs"])
def test_a_slide_whose_id_would_be_a_path_component_is_refused_with_the_fix(name, tmp_path):
    from lego.data.slides_index import index_slides

    (tmp_path / name).write_bytes(b"x")
    (tmp_path / "P1-slide.svs").write_bytes(b"x")
    slides, left_out = index_slides(slide_dir=tmp_path, patients=["P1"], prefix_length=2)
    assert slides["slide_id"].tolist() == ["P1-slide"]
    assert left_out["reason"].str.contains("path component").tolist() == [True]


def test_an_unreadable_slide_fails_its_job_and_is_never_recorded_as_not_a_slide(demo_slides, tmp_path, monkeypatch):
    """Issue 27 class 8: a permission problem is the environment's, fixed by chmod (which keeps the
    mtime, so nothing would rerun): never cache it as the slide's format failure."""
    import os

    from lego.slides.slide_jobs import run_segment
    from lego.slides.tissue import TissueParams

    slide = demo_slides[0]
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if str(p) == str(slide) else real(p, mode, *a, **k))
    with pytest.raises(InputError, match="permission denied.*chmod"):
        run_segment(slide, tmp_path / "t.parquet", tmp_path / "t.png", TissueParams(), record_failure=True)
    assert not (tmp_path / "t.parquet").exists() and not (tmp_path / "t.png").exists()
    monkeypatch.setattr(os, "access", real)
    assert run_segment(slide, tmp_path / "t.parquet", tmp_path / "t.png", TissueParams(), record_failure=True) == "ok"
