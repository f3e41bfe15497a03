import shutil

import h5py
import numpy as np
import pytest

from lego.errors import SlideError
from lego.io import atomic_path
from lego.slides.patches import PatchParams, make_patch_grid, read_patches
from lego.slides.reader import open_slide
from lego.slides.slide_jobs import run_extract, run_segment
from lego.slides.tissue import Tissue, TissueParams, read_tissue, segment_tissue, write_tissue


def test_real_vendor_fixtures_open(fixtures_dir):
    with open_slide(fixtures_dir / "small.svs") as s:
        assert s.vendor == "aperio" and s.mpp == pytest.approx(0.499, abs=1e-3) and s.mpp_source == "metadata"
    with open_slide(fixtures_dir / "boxes_0.dcm") as s:
        assert s.vendor == "dicom"


@pytest.mark.parametrize(
    "name, message",
    [
        ("unreadable.svs", "cannot read pixels"),
        ("boxes.png", "not a whole-slide image"),
        ("boxes.tiff", "no microns-per-pixel.*mpp_fallback"),
        ("absent.svs", "does not exist"),
    ],
)
def test_bad_slides_give_clear_errors(fixtures_dir, name, message):
    with pytest.raises(SlideError, match=message) as info:
        open_slide(fixtures_dir / name)
    assert name in str(info.value)


def test_mpp_fallback_for_slides_without_metadata(fixtures_dir):
    with open_slide(fixtures_dir / "boxes.tiff", mpp_fallback=0.25) as s:
        assert s.mpp == 0.25 and s.mpp_source == "fallback"


def test_a_non_slide_file_with_a_slide_extension(tmp_path):
    fake = tmp_path / "TCGA-AA-0000-01Z.svs"
    fake.write_text("patient_id,age\nTCGA-AA-0000,50\n")
    with pytest.raises(SlideError, match="not a whole-slide image"):
        open_slide(fake)


def test_segmentation_finds_tissue_and_holes_in_microns(demo_slides):
    with open_slide(demo_slides[0]) as slide:
        tissue = segment_tissue(slide, TissueParams(seg_downsample=16, min_tissue_area_um2=20_000))
        W, H = slide.dimensions
    assert tissue.n_tissue >= 1
    for c in tissue.contours:
        assert c[:, 0].min() >= 0 and c[:, 0].max() <= W and c[:, 1].max() <= H
    frac = tissue.meta["tissue_area_um2"] / (W * H * slide.mpp**2)
    assert 0.2 < frac < 0.8  # the generator fills about 45 % of the slide with tissue


def test_blank_slide_has_no_tissue(demo_slides):
    blank = next(p for p in demo_slides if p.stem.endswith("DX9"))
    with open_slide(blank) as slide, pytest.raises(SlideError, match="no tissue found"):
        segment_tissue(slide, TissueParams())


def test_a_tissue_table_reads_back_as_written_holes_and_empty_tables_included(tmp_path):
    square = np.array([[0, 0], [100, 0], [100, 80], [0, 80]], np.int32)
    tissue = Tissue([square * 3, square + 10, square.astype(np.int64) * 7 + 2**33], [False, True, False], [-1, 0, -1],
                    {"slide": "s.svs", "status": "ok", "tissue_area_um2": 1.5})
    for written in (tissue, Tissue([], [], [], {"slide": "s.svs", "status": "failed", "reason": "blank"})):
        write_tissue(written, tmp_path / "t.parquet")
        back = read_tissue(tmp_path / "t.parquet")
        assert back.is_hole == written.is_hole and back.parent == written.parent and back.meta == written.meta
        assert len(back.contours) == len(written.contours)
        for a, b in zip(back.contours, written.contours):
            np.testing.assert_array_equal(a, b.astype(np.int64))
    import pandas as pd  # other tools read it as a table

    assert pd.read_parquet(tmp_path / "t.parquet").columns.tolist() == ["contour_id", "is_hole", "parent", "x", "y"]


def test_the_per_slide_jobs_import_neither_torch_nor_pandas(demo_slides, tmp_path):
    """Each slide is segmented, patched and embedded in its own job: importing torch (2-3 s of CPU)
    or pandas (0.5 s) would be most of a small slide's work, times every slide of the cohort."""
    import subprocess
    import sys

    slide, d = str(demo_slides[0]), tmp_path
    steps = [["segment", "--slide", slide, "--out-tissue", f"{d}/t.parquet", "--out-png", f"{d}/t.png"],
             ["extract", "--slide", slide, "--tissue", f"{d}/t.parquet", "--out", f"{d}/p.h5"],
             ["embed", "--slide", slide, "--patches", f"{d}/p.h5", "--encoder", "stain_texture", "--out", f"{d}/f.h5",
              "--threads", "1"]]
    code = (f"import sys; from lego.cli import main; assert [main(a) for a in {steps!r}] == [0, 0, 0]; "
            "print(sorted(m for m in ('torch', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
    assert read_patches(d / "p.h5").coords.shape[0] > 0


def test_otsu_option_runs(demo_slides):
    with open_slide(demo_slides[0]) as slide:
        tissue = segment_tissue(slide, TissueParams(method="otsu", min_tissue_area_um2=0))
    assert tissue.meta["method"] == "otsu" and tissue.meta["threshold"] > 0


class FakeSlide:
    """Just enough of Slide for patch-grid geometry tests."""

    def __init__(self, w, h, mpp, downsamples=(1.0, 4.0)):
        self.dimensions = (w, h)
        self.mpp = mpp
        self.mpp_source = "metadata"
        self.level_downsamples = list(downsamples)
        self.name = "fake.svs"
        self.path = "fake.svs"

    def best_level(self, ds):
        return max(i for i, d in enumerate(self.level_downsamples) if d <= ds * 1.001)


def square(x0, y0, x1, y1):
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.int64)


def test_patch_grid_is_defined_in_microns():
    tissue = Tissue([square(0, 0, 4096, 4096)], [False], [-1], {})
    g20 = make_patch_grid(FakeSlide(4096, 4096, 0.5), tissue, PatchParams(256, 0.5, 0.5))
    g40 = make_patch_grid(FakeSlide(4096, 4096, 0.25), tissue, PatchParams(256, 0.5, 0.5))
    assert g20.attrs["patch_size_level0"] == 256 and g40.attrs["patch_size_level0"] == 512
    assert len(g20.coords) == 16 * 16 and len(g40.coords) == 8 * 8
    # 10x patches from a 40x slide: read from the 4x-downsampled level at 256 px, no resize needed.
    g10 = make_patch_grid(FakeSlide(8192, 8192, 0.25), Tissue([square(0, 0, 8192, 8192)], [False], [-1], {}), PatchParams(256, 1.0))
    assert g10.attrs["read_level"] == 1 and g10.attrs["read_px"] == 256


def test_tissue_fraction_filter_and_holes():
    # Tissue covers the left half; a hole punches out one patch-sized square.
    tissue = Tissue([square(0, 0, 1024, 2048), square(256, 256, 512, 512)], [False, True], [-1, 0], {})
    grid = make_patch_grid(FakeSlide(2048, 2048, 0.5), tissue, PatchParams(256, 0.5, 0.5))
    xs = grid.coords[:, 0]
    assert xs.max() < 1024, "patches right of the tissue are dropped"
    assert not ((grid.coords == [256, 256]).all(axis=1)).any(), "the hole's patch is dropped"
    assert len(grid.coords) == 4 * 8 - 1
    assert (grid.tissue_fraction >= 0.5).all()


def test_overlap_gives_a_denser_grid():
    tissue = Tissue([square(0, 0, 2048, 2048)], [False], [-1], {})
    plain = make_patch_grid(FakeSlide(2048, 2048, 0.5), tissue, PatchParams(256, 0.5, 0.5, 0.0))
    dense = make_patch_grid(FakeSlide(2048, 2048, 0.5), tissue, PatchParams(256, 0.5, 0.5, 0.5))
    assert len(dense.coords) == 15 * 15 and len(plain.coords) == 64


def test_slide_smaller_than_a_patch(fixtures_dir):
    with open_slide(fixtures_dir / "small.svs") as slide, pytest.raises(SlideError, match="smaller than one patch"):
        make_patch_grid(slide, Tissue([square(0, 0, 16, 16)], [False], [-1], {}), PatchParams())


def test_patches_h5_has_trident_style_attributes(demo_slides, tmp_path):
    slide = demo_slides[0]
    assert run_segment(slide, tmp_path / "t.parquet", tmp_path / "t.png", TissueParams(seg_downsample=16)) == "ok"
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"
    assert read_tissue(tmp_path / "t.parquet").meta["status"] == "ok"
    assert run_extract(slide, tmp_path / "t.parquet", tmp_path / "p.h5", PatchParams()) == "ok"
    with h5py.File(tmp_path / "p.h5") as f:
        attrs = dict(f["coords"].attrs)
        assert f.attrs["status"] == "ok"
        assert f["coords"].dtype == np.int64 and f["coords"].shape[1] == 2
    for key in ("patch_px", "patch_mpp", "patch_size_level0", "read_level", "level0_mpp", "slide_width", "slide_height"):
        assert key in attrs
    grid = read_patches(tmp_path / "p.h5")
    with open_slide(slide) as s:
        W, H = s.dimensions
    assert (grid.coords[:, 0] + attrs["patch_size_level0"] <= W).all()
    assert (grid.coords[:, 1] + attrs["patch_size_level0"] <= H).all()


def test_batch_mode_records_bad_slides_and_propagates(fixtures_dir, tmp_path):
    bad = tmp_path / "TCGA-XX-0001-01Z.svs"
    shutil.copy(fixtures_dir / "unreadable.svs", bad)
    with pytest.raises(SlideError):
        run_segment(bad, tmp_path / "t.parquet", tmp_path / "t.png", TissueParams())
    assert not (tmp_path / "t.parquet").exists(), "no artefact after a failure outside batch mode"
    reason = run_segment(bad, tmp_path / "t.parquet", tmp_path / "t.png", TissueParams(), record_failure=True)
    assert reason.startswith("[segment_tissue]") and "cannot read pixels" in reason
    assert read_tissue(tmp_path / "t.parquet").meta["status"] == "failed"
    assert run_extract(bad, tmp_path / "t.parquet", tmp_path / "p.h5", PatchParams(), record_failure=True) == reason
    with h5py.File(tmp_path / "p.h5") as f:
        assert f.attrs["status"] == "failed" and f["coords"].shape == (0, 2)
        # The failing stage travels as its own field (collect-qc reads it; no "[stage]" string to parse).
        assert f.attrs["stage"] == "segment_tissue" and not f.attrs["reason"].startswith("[")


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.h5"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed mid-write")
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_reading_past_the_slide_edge_gives_white(fixtures_dir):
    with open_slide(fixtures_dir / "small.svs") as s:
        region = s.read_rgb(-4, -4, 0, (8, 8))
    assert region.shape == (8, 8, 3) and region.dtype == np.uint8
    assert (region[:4] == 255).all() and (region[:, :4] == 255).all()
    assert (region[4:, 4:] < 255).any(), "the scanned area keeps its pixels"


@pytest.mark.parametrize("origin", [(-4, -4), (16, 16)], ids=["past-the-edge", "inside"])
def test_channel_first_read_matches_rgb_read(fixtures_dir, origin):
    """The embedding reader's fast channel-first path must give exactly the pixels of read_rgb."""
    with open_slide(fixtures_dir / "small.svs") as s:
        rgb = s.read_rgb(*origin, 0, (24, 16))
        chw = s.read_chw(*origin, 0, (24, 16))
    assert rgb.shape == (16, 24, 3) and chw.shape == (3, 16, 24) and chw.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(chw, rgb.transpose(2, 0, 1))


@pytest.mark.parametrize("command", ["extract", "embed"])
def test_a_missing_upstream_file_is_one_line_exit_2(command, demo_slides, tmp_path, capsys):
    from lego.cli import main

    slide = str(demo_slides[0])
    args = (["extract", "--slide", slide, "--tissue", str(tmp_path / "none.parquet"), "--out", str(tmp_path / "p.h5")]
            if command == "extract" else
            ["embed", "--slide", slide, "--patches", str(tmp_path / "none.h5"), "--encoder", "stain_texture", "--out", str(tmp_path / "f.h5")])
    assert main(args) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lego ")]
    assert len(err) == 1 and "none." in err[0] and "Traceback" not in err[0]


@pytest.mark.parametrize("mpp", [0.2527, 0.2431, 0.4990, 0.25])
def test_the_grid_steps_by_the_recorded_patch_size_so_positions_never_merge(mpp):
    """Issue 27 class 20: TRIDENT's slide encoders index a patch as coords // patch_size_level0."""
    tissue = Tissue([square(0, 0, 8192, 8192)], [False], [-1], {})
    grid = make_patch_grid(FakeSlide(8192, 8192, mpp), tissue, PatchParams(256, 0.5, 0.5))
    size = grid.attrs["patch_size_level0"]
    cells = {tuple(c) for c in grid.coords // size}
    assert len(cells) == len(grid.coords), "two patches fall in one grid position"
    assert (grid.coords % size == 0).all()
