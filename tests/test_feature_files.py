"""Feature files: import-features takes other tools' bags (TRIDENT, CLAM, STAMP, .pt) and refuses,
or in batch mode records, a malformed one; export-features writes what those tools read.
Most cases are regressions found by the adversarial
(hostile-input) sweeps: each was a traceback, a silently wrong result or the wrong cause."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from lego.cli import main
from tests.helpers import lego_fails


def stamp(path, coords=None, **attrs):
    with h5py.File(path, "w") as f:
        f["feats"] = np.ones((3, 4), np.float32)
        if coords is not False:
            f["coords"] = np.array([[0.0, 0.0], [256.0, 0.0], [0.0, 256.0]]) if coords is None else coords
        f.attrs.update(attrs)
    return path


def imp(tmp_path, src, *extra):
    return ["import-features", "--src", str(src), "--out", str(tmp_path / "o.h5"), "--slide-name", "s", *extra]


def _h5(path, status):
    with h5py.File(path, "w") as f:
        f["features"] = np.ones((3, 4), np.float32)
        f["coords"] = np.zeros((3, 2), np.int64)
        f.attrs["status"] = status
    return str(path)


def test_import_features_records_a_features_group(tmp_path, capsys):
    from lego.slides.features import bag_info

    with h5py.File(tmp_path / "src.h5", "w") as f:
        f.create_group("features")
    args = ["import-features", "--src", str(tmp_path / "src.h5"), "--out", str(tmp_path / "out.h5"), "--slide-name", "S1"]
    assert main(args + ["--record-failure"]) == 0
    assert bag_info(tmp_path / "out.h5")["status"] == "failed"


def test_a_feature_file_whose_features_are_a_group_is_one_failed_slide(tmp_path):
    from lego.slides.features import bag_info

    with h5py.File(tmp_path / "s.h5", "w") as f:
        f.create_group("features")
    info = bag_info(tmp_path / "s.h5")
    assert info["status"] == "failed" and "group" in info["reason"]


def test_a_feature_group_instead_of_a_dataset_is_one_line(tmp_path, capsys):
    with h5py.File(tmp_path / "g.h5", "w") as f:
        f.create_group("features")
    lego_fails(["import-features", "--src", str(tmp_path / "g.h5"), "--out", str(tmp_path / "o.h5"), "--slide-name", "s"],
               capsys, "'features' is an HDF5 group, not a dataset")


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


@pytest.mark.parametrize("make", ["sparse", "complex", "bool", "bytes_coords", "complex_h5"])
def test_feature_files_of_the_wrong_kind_are_recorded_failures(tmp_path, make):
    src = tmp_path / ("s.pt" if make in ("sparse", "complex", "bool") else "s.h5")
    if make == "sparse":
        torch.save(torch.eye(3, 4).to_sparse(), src)
    elif make == "complex":
        torch.save(torch.ones(3, 4, dtype=torch.complex64), src)
    elif make == "bool":
        torch.save(torch.ones(3, 4, dtype=torch.bool), src)
    else:
        with h5py.File(src, "w") as f:
            f["features"] = np.ones((3, 4), np.complex64 if make == "complex_h5" else np.float32)
            f["coords"] = np.array([[b"0", b"0"]] * 3)
    out = tmp_path / "o.h5"
    assert main(["import-features", "--src", str(src), "--out", str(out), "--slide-name", "s", "--record-failure"]) == 0
    with h5py.File(out) as f:
        assert f.attrs["status"] == "failed", "recorded; the batch goes on"
    assert main(["import-features", "--src", str(src), "--out", str(tmp_path / "x.h5"), "--slide-name", "s"]) != 0


def test_a_refused_import_leaves_nothing_behind(tmp_path, capsys):
    t = torch.ones(3, 4)
    t[1, 1] = float("nan")
    torch.save(t, tmp_path / "nan.pt")
    lego_fails(imp(tmp_path, tmp_path / "nan.pt"), capsys, "nan.pt: features contain NaN")
    assert not (tmp_path / "o.h5").exists(), "no status=ok file of NaN features for the manifest to pick up"


def test_an_empty_slide_name_is_refused(tmp_path, capsys):
    lego_fails(["import-features", "--src", _h5(tmp_path / "s.h5", "ok"), "--out", str(tmp_path / "o.h5"),
                "--slide-name", " "], capsys, "--slide-name is empty")


def test_a_slide_name_near_the_file_name_limit_is_written(tmp_path):
    torch.save(torch.ones(3, 4), tmp_path / "b.pt")
    name = "S" * 245
    assert main(["import-features", "--src", str(tmp_path / "b.pt"), "--out", str(tmp_path / f"{name}.h5"),
                 "--slide-name", name]) == 0
    assert (tmp_path / f"{name}.h5").exists() and len(list(tmp_path.iterdir())) == 2, "no temporary left"


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


def test_imported_patch_geometry_must_be_positive(tmp_path, capsys):
    """Found by the sixth hostile sweep (as test_exported_geometry_must_be_positive): a NaN level-0
    mpp in a TRIDENT-style file is refused at import, before any export could use it."""
    import h5py

    src = tmp_path / "t.h5"
    with h5py.File(src, "w") as f:
        f["features"] = np.ones((3, 4), np.float32)
        f["coords"] = np.arange(6).reshape(3, 2) * 256
        f["coords"].attrs["level0_mpp"] = float("nan")
        f["coords"].attrs["patch_size_level0"] = 256
    lego_fails(["import-features", "--src", str(src), "--out", str(tmp_path / "o.h5"), "--slide-name", "t"], capsys,
               "level0_mpp = nan is not a positive number")


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
