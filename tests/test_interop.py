"""Files TRIDENT, CLAM/MCAT and STAMP read, both ways. Each reader check re-states what that tool's
own code reads (sources: TRIDENT IO.read_coords / WSI.extract_patch_features and its slide
encoders; CLAM dataset_h5.Whole_Slide_Bag_FP and dataset_generic; MCAT dataset_survival;
STAMP modeling/data.get_coords and BagDataset), so a layout change that breaks them fails here."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from lego.cli import main
from lego.slides.encoders import create_encoder
from lego.slides.features import import_feature_file, read_feature_bag
from lego.slides.interop import stamp_geometry
from lego.slides.patches import PatchParams
from lego.slides.reader import open_slide
from lego.slides.slide_jobs import run_embed, run_extract, run_segment
from lego.slides.tissue import TissueParams
from tests.helpers import lego_fails


@pytest.fixture(scope="module")
def embedded(demo_slides, tmp_path_factory):
    """A demo slide scanned at 40x (read from a coarser pyramid level), its patches and features."""
    d = tmp_path_factory.mktemp("interop")
    slide = next(s for s in demo_slides if open_slide(s).mpp < 0.3)
    run_segment(slide, d / "t.parquet", d / "t.png", TissueParams(seg_downsample=16))
    run_extract(slide, d / "t.parquet", d / "p.h5", PatchParams(patch_px=64, patch_mpp=2.0))
    run_embed(slide, d / "p.h5", create_encoder("stain_texture"), d / "f.h5")
    return slide, d


def trident_level0_read(attrs: dict) -> int:
    """TRIDENT's patcher: level-0 read size from patch_size at target vs level-0 magnification."""
    return round(attrs["patch_size"] * attrs["level0_magnification"] / attrs["target_magnification"])


def test_our_patch_file_reads_in_trident_and_clam(embedded):
    slide, d = embedded
    with h5py.File(d / "p.h5") as f:
        coords, attrs = f["coords"][:], dict(f["coords"].attrs)  # TRIDENT IO.read_coords
    assert coords.dtype == np.int64 and coords.ndim == 2 and coords.shape[1] == 2
    size0 = attrs["patch_size_level0"]
    # TRIDENT: patch_size, level0_magnification, target_magnification (else it falls back to CLAM's keys).
    assert abs(trident_level0_read(attrs) - size0) <= 1
    assert isinstance(attrs["overlap"], (int, np.integer))  # pixels at target magnification
    # CLAM: read_region(xy, patch_level, (patch_size, patch_size)) must cover the same level-0 square.
    with open_slide(slide) as s:
        downsample = s.level_downsamples[int(attrs["patch_level"])]
        assert attrs["patch_level"] > 0, "the 40x slide is read from a coarser level"
    assert abs(attrs["patch_size"] * downsample - size0) <= downsample
    assert attrs["name"] == slide.stem and attrs["level0_width"] > 0


def test_our_feature_file_reads_in_trident_and_clam(embedded):
    _, d = embedded
    with h5py.File(d / "f.h5") as f, h5py.File(d / "p.h5") as p:
        feats, coords, attrs = f["features"][:], f["coords"][:], dict(f["coords"].attrs)
        # TRIDENT copies the patch file's coords attributes onto the features' coords; its slide
        # encoders (GigaPath, Titan, CARE) need patch_size_level0.
        assert set(p["coords"].attrs) <= set(attrs)
        assert int(attrs["patch_size_level0"]) == p["coords"].attrs["patch_size_level0"]
        assert f["features"].attrs["encoder"] == "stain_texture"
    assert feats.dtype == np.float32 and feats.ndim == 2 and len(coords) == len(feats)  # CLAM: features + coords


def test_export_to_stamp_reads_as_stamp_does(embedded, tmp_path):
    _, d = embedded
    assert main(["export-features", "--src", str(d / "f.h5"), "--format", "stamp", "--out", str(tmp_path / "s.h5")]) == 0
    ours = read_feature_bag(d / "f.h5")
    with h5py.File(tmp_path / "s.h5") as f:
        feats, coords, attrs = f["feats"][:], f["coords"][:], dict(f.attrs)
    assert "stamp_version" not in attrs, "STAMP refuses a file newer than itself"
    assert attrs["feat_type"] == "tile" and attrs["extractor"] == "stain_texture" and attrs["tile_size_px"] > 0
    um, tile_um = stamp_geometry(attrs, coords)  # STAMP's get_coords: tile_size_um present -> um
    mpp = ours.attrs["level0_mpp"]
    np.testing.assert_allclose(um, ours.coords * mpp, rtol=1e-6)
    assert tile_um == pytest.approx(ours.attrs["patch_size_level0"] * mpp)
    np.testing.assert_array_equal(feats, ours.features)
    # ... and back, with the slide's mpp: the same level-0 pixels.
    back = import_feature_file(tmp_path / "s.h5", tmp_path / "b.h5", "s", mpp=mpp)
    np.testing.assert_array_equal(back.coords, ours.coords)
    assert back.coords_attrs["unit"] == "px" and back.coords_attrs["patch_size_level0"] == ours.attrs["patch_size_level0"]


def test_export_to_clam_pt_loads_as_clam_and_mcat_do(embedded, tmp_path):
    _, d = embedded
    assert main(["export-features", "--src", str(d / "f.h5"), "--format", "clam-pt", "--out", str(tmp_path / "x.pt")]) == 0
    bag = torch.load(tmp_path / "x.pt", weights_only=True)  # torch >= 2.6's default, and safe
    assert isinstance(bag, torch.Tensor) and bag.dtype == torch.float32 and bag.ndim == 2
    assert torch.cat([bag, bag], dim=0).shape[0] == 2 * len(bag)  # collate_MIL / MCAT concatenate slides
    back = import_feature_file(tmp_path / "x.pt", tmp_path / "b.h5", "x")
    np.testing.assert_array_equal(back.features, read_feature_bag(d / "f.h5").features)
    assert back.coords_attrs["unit"] == "none", "a .pt bag has no coordinates: said, not faked"


def test_trident_import_keeps_the_patch_geometry(tmp_path):
    attrs = {"patch_size": 256, "patch_size_level0": 512, "level0_magnification": 40, "target_magnification": 20,
             "overlap": 0, "name": "s"}
    with h5py.File(tmp_path / "t.h5", "w") as f:
        f["features"] = np.ones((3, 4), np.float32)
        ds = f.create_dataset("coords", data=np.array([[0, 0], [512, 0], [0, 512]], np.int64))
        ds.attrs.update(attrs)
    out = import_feature_file(tmp_path / "t.h5", tmp_path / "o.h5", "s")
    assert {k: out.coords_attrs[k] for k in attrs} == attrs and out.coords_attrs["unit"] == "px"


@pytest.mark.parametrize("version", ["v2", "v2-dev", "v1"])
def test_stamp_coordinates_are_read_in_micrometres(tmp_path, version):
    um = np.array([[0.0, 0.0], [256.0, 0.0], [0.0, 256.0]])
    with h5py.File(tmp_path / "s.h5", "w") as f:
        f["feats"] = np.ones((3, 4), np.float16)
        if version == "v2":
            f["coords"] = um.astype(np.float32)
            f.attrs.update({"unit": "um", "tile_size_um": 256.0, "tile_size_px": 224, "extractor": "uni"})
        elif version == "v2-dev":
            f["coords"] = um.astype(np.float32)
            f.attrs.update({"unit": "um", "tile_size": 256.0})
        else:  # STAMP 1: 224-px steps of 256-um tiles, no unit
            f["coords"] = (um / 256 * 224).astype(np.int64)
    kept = import_feature_file(tmp_path / "s.h5", tmp_path / "k.h5", "s")
    assert kept.coords_attrs["unit"] == "um" and kept.coords_attrs["tile_size_um"] == 256.0
    np.testing.assert_array_equal(kept.coords, um)
    px = import_feature_file(tmp_path / "s.h5", tmp_path / "p.h5", "s", mpp=0.5)
    np.testing.assert_array_equal(px.coords, um / 0.5)
    assert px.coords_attrs["patch_size_level0"] == 512


def test_a_trident_pt_bag_is_refused_without_unpickling(tmp_path, capsys):
    torch.save(np.ones((3, 4), np.float32), tmp_path / "t.pt")  # TRIDENT's saveas='pt': a pickled ndarray
    lego_fails(["import-features", "--src", str(tmp_path / "t.pt"), "--out", str(tmp_path / "o.h5"), "--slide-name", "t"],
               capsys, "import its .h5 file instead")


def test_a_stamp_import_exports_back_exactly(tmp_path):
    """Issue 27 class 22: micrometres and the tile size come back as the source had them, and no
    tile_size_px is invented where the source has none."""
    um = np.array([[0.0, 0.0], [255.7, 0.0], [0.0, 511.4]])
    with h5py.File(tmp_path / "s.h5", "w") as f:
        f["feats"], f["coords"] = np.ones((3, 4), np.float32), um.astype(np.float32)
        f.attrs.update({"unit": "um", "tile_size_um": 64.0, "extractor": "uni"})
    import_feature_file(tmp_path / "s.h5", tmp_path / "k.h5", "s")
    assert main(["export-features", "--src", str(tmp_path / "k.h5"), "--format", "stamp", "--out", str(tmp_path / "x.h5")]) == 0
    with h5py.File(tmp_path / "x.h5") as f:
        np.testing.assert_allclose(f["coords"][:], um.astype(np.float32))
        assert f.attrs["tile_size_um"] == 64.0 and "tile_size_px" not in f.attrs and f.attrs["extractor"] == "uni"


def test_a_clam_file_without_a_patch_size_says_why_it_cannot_become_a_stamp_file(tmp_path, capsys):
    with h5py.File(tmp_path / "c.h5", "w") as f:
        f["features"], f["coords"] = np.ones((2, 4), np.float32), np.array([[0, 0], [256, 0]], np.int64)
    import_feature_file(tmp_path / "c.h5", tmp_path / "k.h5", "s", mpp=0.5)
    lego_fails(["export-features", "--src", str(tmp_path / "k.h5"), "--format", "stamp", "--out", str(tmp_path / "x.h5")],
               capsys, "records no patch size")


@pytest.mark.parametrize("ours, stamps", [("conch_v15", "conch1_5"), ("h_optimus_0", "h-optimus-0"),
                                          ("h_optimus_1", "h-optimus-1"), ("uni2_h", "uni2"), ("uni", "uni")])
def test_stamp_exports_name_the_extractor_as_stamp_does(embedded, tmp_path, ours, stamps):
    """Issue 27 class 21: STAMP's slide encoders (TITAN: "extracted with one of [conch1_5]") check this name."""
    from lego.slides.interop import write_stamp

    bag = read_feature_bag(embedded[1] / "f.h5")
    write_stamp(bag.features, bag.coords, {**bag.attrs, **bag.coords_attrs, "encoder": ours}, tmp_path / "x.h5")
    with h5py.File(tmp_path / "x.h5") as f:
        assert f.attrs["extractor"] == stamps


@pytest.mark.parametrize("layout", ["trident", "clam"])
def test_lego_embed_reads_trident_and_clam_patch_files(embedded, tmp_path, layout):
    """Issue 27 class 23: coordinates from TRIDENT or CLAM embed with our encoders, giving the
    features our own patch file gives."""
    slide, d = embedded
    with h5py.File(d / "p.h5") as f:
        coords, ours = f["coords"][:], dict(f["coords"].attrs)
    keep = {"trident": ("patch_size", "patch_size_level0", "level0_magnification", "target_magnification", "overlap", "name"),
            "clam": ("patch_size", "patch_level", "downsample", "name")}[layout]
    with h5py.File(tmp_path / "theirs.h5", "w") as f:  # no status, no read_level: their layout only
        f.create_dataset("coords", data=coords).attrs.update({k: ours[k] for k in keep})
    assert main(["embed", "--slide", str(slide), "--patches", str(tmp_path / "theirs.h5"), "--encoder", "stain_texture",
                 "--out", str(tmp_path / "f.h5")]) == 0
    np.testing.assert_array_equal(read_feature_bag(tmp_path / "f.h5").features, read_feature_bag(d / "f.h5").features)


def test_embedding_execution_settings_do_not_change_the_features(embedded, tmp_path):
    """Issue 27 class 14: batch size and workers are execution settings (no rerun trigger), so they
    must not change what is computed."""
    from lego.slides.embed import embed_slide

    slide, d = embedded
    ref = read_feature_bag(d / "f.h5").features
    embed_slide(slide, d / "p.h5", create_encoder("stain_texture"), tmp_path / "b3.h5", batch_size=3, num_workers=0)
    np.testing.assert_allclose(read_feature_bag(tmp_path / "b3.h5").features, ref, rtol=1e-5, atol=1e-6)
