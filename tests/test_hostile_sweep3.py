"""A third adversarial sweep (289 hostile calls on the new surfaces: feature import/export,
heatmaps, foundation checkpoints, predict summaries): each case below exited 0 with a wrong or
misleading result, stopped a batch, or crashed; each is now one line or a recorded skip."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from lego.cli import main
from tests.test_hostile_inputs import lego_fails


def stamp(path, coords=None, **attrs):
    with h5py.File(path, "w") as f:
        f["feats"] = np.ones((3, 4), np.float32)
        if coords is not False:
            f["coords"] = np.array([[0.0, 0.0], [256.0, 0.0], [0.0, 256.0]]) if coords is None else coords
        f.attrs.update(attrs)
    return path


def imp(tmp_path, src, *extra):
    return ["import-features", "--src", str(src), "--out", str(tmp_path / "o.h5"), "--slide-name", "s", *extra]


def test_a_refused_import_leaves_nothing_behind(tmp_path, capsys):
    t = torch.ones(3, 4)
    t[1, 1] = float("nan")
    torch.save(t, tmp_path / "nan.pt")
    lego_fails(imp(tmp_path, tmp_path / "nan.pt"), capsys, "nan.pt: features contain NaN")
    assert not (tmp_path / "o.h5").exists(), "no status=ok file of NaN features for the manifest to pick up"


@pytest.mark.parametrize("attrs, coords, phrase", [
    ({"unit": "mm", "tile_size_um": 0.256}, None, "unit 'mm'"),
    ({"unit": "um", "tile_size_um": -256.0}, None, "tile_size_um = -256.0 is not a tile size"),
    ({"unit": "um", "tile_size_um": 256.0}, np.zeros((3, 3)), "coords must be (patches x 2)"),
    ({"unit": "um", "tile_size_um": 256.0}, np.array([[1e30, 0], [0, 0], [0, 0]]), "impossibly large"),
])
def test_stamp_geometry_that_would_be_silently_misread(tmp_path, capsys, attrs, coords, phrase):
    lego_fails(imp(tmp_path, stamp(tmp_path / "s.h5", coords, **attrs)), capsys, phrase)


def test_mpp_out_of_range_is_refused_and_a_missing_geometry_is_said(tmp_path, capsys):
    src = stamp(tmp_path / "s.h5", unit="um", tile_size_um=256.0)
    with pytest.raises(SystemExit) as exc:
        main(imp(tmp_path, src, "--mpp", "0"))
    assert exc.value.code == 2 and "--mpp: 0.0 is outside" in capsys.readouterr().err
    no_coords = stamp(tmp_path / "n.h5", False, unit="um", tile_size_um=256.0)
    assert main(imp(tmp_path, no_coords)) == 0
    with h5py.File(tmp_path / "o.h5") as f:
        assert f["coords"].attrs["unit"] == "none", "zeros stand in for absent coordinates, and say so"


def test_a_trident_import_with_mpp_exports_to_stamp(tmp_path):
    with h5py.File(tmp_path / "t.h5", "w") as f:
        f["features"] = np.ones((3, 4), np.float32)
        f.create_dataset("coords", data=np.array([[0, 0], [512, 0], [0, 512]])).attrs["patch_size_level0"] = 512
    assert main(imp(tmp_path, tmp_path / "t.h5", "--mpp", "0.25")) == 0
    assert main(["export-features", "--src", str(tmp_path / "o.h5"), "--format", "stamp", "--out",
                 str(tmp_path / "x.h5")]) == 0
    with h5py.File(tmp_path / "x.h5") as f:
        assert f.attrs["tile_size_um"] == 128.0 and f["coords"][1].tolist() == [128.0, 0.0]


def test_exports_to_unwritable_places_name_the_destination(tmp_path, capsys):
    torch.save(torch.ones(3, 4), tmp_path / "b.pth")  # .pth is a .pt bag too
    assert main(imp(tmp_path, tmp_path / "b.pth")) == 0
    lego_fails(["export-features", "--src", str(tmp_path / "o.h5"), "--format", "clam-pt", "--out", "/proc/x.pt"],
               capsys, "/proc/x.pt")


@pytest.fixture
def heat_inputs(tmp_path):
    from lego.stages import train_block
    from tests.test_fit_protocol import SMALL
    from tests.test_heatmaps import slide_cohort

    d = slide_cohort(tmp_path)
    train_block("wsi", "wsi", str(d / "wsi.parquet"), str(d / "labels.parquet"), str(d / "folds.parquet"), 0,
                "survival", {**SMALL, "encoder": "abmil"}, str(d / "blk"), device="cpu")
    folds = pd.read_parquet(d / "folds.parquet")
    test = sorted(folds.loc[folds["subset"] == "test", "patient_id"])
    return d, pd.read_parquet(d / "wsi.parquet"), test


def heat(d, manifest):
    manifest.to_parquet(d / "m.parquet")
    return ["heatmaps", "--model-dir", str(d / "blk"), "--manifest", str(d / "m.parquet"), "--folds",
            str(d / "folds.parquet"), "--out-dir", str(d / "heat")]


def test_one_unreadable_slide_does_not_stop_the_heatmaps(heat_inputs):
    d, m, test = heat_inputs
    broken = m.index[m["patient_id"] == test[0]][0]
    m.loc[broken, "features"] = str(d / "deleted.h5")
    assert main(heat(d, m)) == 0
    index = pd.read_table(d / "heat" / "index.tsv").fillna({"reason": ""})
    assert "not a readable HDF5" in index.loc[index["slide_id"] == m.loc[broken, "slide_id"], "reason"].iloc[0]
    drawn = index[index["reason"] == ""]
    assert set(drawn["patient_id"]) == set(test[1:]) and all((d / "heat" / f"{s}.png").exists() for s in drawn["slide_id"])


def test_heatmaps_refuse_slide_ids_that_leave_the_folder_and_repeated_rows(heat_inputs, capsys):
    d, m, test = heat_inputs
    lego_fails(heat(d, pd.concat([m, m.iloc[[0]]])), capsys, "is listed twice")
    m.loc[m.index[0], "slide_id"] = "../../escape"
    lego_fails(heat(d, m), capsys, "'../../escape' is not a file name")
    assert not (d.parent / "escape.png").exists()


def test_no_usable_slide_is_said_not_silent(heat_inputs):
    d, m, _ = heat_inputs
    assert main(heat(d, m.assign(status="failed"))) == 0
    assert "no usable slide" in (d / "heat" / "NO_HEATMAPS.txt").read_text()


def test_checkpoints_are_read_by_content_and_refused_where_none_is_taken(tmp_path, capsys):
    from safetensors.torch import save_file

    from lego.slides.encoders import load_state_dict

    save_file({"w": torch.ones(2)}, str(tmp_path / "st_as.bin"))  # a safetensors file under another name
    assert set(load_state_dict(str(tmp_path / "st_as.bin"))) == {"w"}
    (tmp_path / "rand.bin").write_bytes(np.random.default_rng(0).bytes(4096))
    base = ["embed", "--slide", "s.svs", "--patches", "p.h5", "--out", "o.h5"]
    lego_fails([*base, "--encoder", "uni", "--checkpoint", str(tmp_path / "rand.bin")], capsys,
               "neither a safetensors nor a torch weights file")
    lego_fails([*base, "--encoder", "stain_texture", "--checkpoint", str(tmp_path / "st_as.bin")], capsys,
               "encoder 'stain_texture' has no weights")


def test_predict_summary_refuses_what_it_would_miscount(tmp_path, capsys):
    import json

    good = {"model": "m", "fold": 0, "labelled": 9, "external": {"n": 9, "c_index": 0.7, "uno_c": None}}
    cases = {"dup": good, "none": {**good, "fold": 1, "external": None}, "nomodel": {**good, "fold": 2, "model": None},
             "text": {**good, "fold": 3, "external": {"c_index": "0.7"}}}
    for name, body in cases.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(body))
    run = lambda *f: ["predict-summary", "--metrics", *[str(tmp_path / f"{x}.json") for x in f], "--out", str(tmp_path / "s.tsv")]  # noqa: E731
    lego_fails(run("dup", "dup"), capsys, "fold 0 is already given")
    lego_fails(run("none"), capsys, "needs model, fold and external")
    lego_fails(run("nomodel"), capsys, "needs model, fold and external")
    lego_fails(run("text"), capsys, "external c_index = '0.7' is not a number")
    assert main(run("dup")) == 0 and pd.read_table(tmp_path / "s.tsv").set_index("metric").loc["c_index", "folds"] == 1


@pytest.mark.parametrize("setup, args, phrase", [
    ("semicolon", [], "semicolon-delimited (decimal commas?)"),
    ("categorical", ["--categorical", "nope"], "categorical columns ['nope'] not in the table"),
    ("index", [], None),
])
def test_tables_that_read_wrongly_before(tmp_path, capsys, setup, args, phrase):
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


def test_cohort_table_refuses_a_modality_no_labelled_patient_has(tmp_path, capsys):
    labels = tmp_path / "labels.parquet"
    pd.DataFrame({"patient_id": ["P0", "P1"], "time": [1.0, 2.0], "event": [1, 0]}).to_parquet(labels)
    pd.DataFrame({"patient_id": ["P0\t", "P1\t"], "g": [1.0, 2.0]}).to_parquet(tmp_path / "rna.parquet")
    base = ["cohort-table", "--labels", str(labels), "--out", str(tmp_path / "c.parquet")]
    lego_fails([*base, "--tabular", f"rna={tmp_path / 'rna.parquet'}"], capsys, "modality 'rna': no labelled patient")
    lego_fails([*base, "--tabular", f"rna={tmp_path / 'rna.parquet'}", "--wsi", f"rna={tmp_path / 'rna.parquet'}"],
               capsys, "given as tabular and as wsi")


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
    assert list(prepare_modality(tmp_path / "f.parquet", "m").columns) == ["patient_id", "age"]
    (tmp_path / "r.csv").write_text("case_id,age\n1,A,50\n2,B,60\n")
    out = prepare_modality(tmp_path / "r.csv", "m")
    assert out["patient_id"].tolist() == ["A", "B"] and out["age"].tolist() == [50.0, 60.0]
