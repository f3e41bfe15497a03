import numpy as np
import openslide
import pandas as pd
import pytest

from lego.demo.cohort import make_demo_cohort
from tests.helpers import parse_fails


def test_slides_are_aperio_pyramids_with_mpp(demo_slides):
    assert len(demo_slides) >= 8
    mpps = set()
    for path in demo_slides:
        s = openslide.OpenSlide(str(path))
        assert s.properties["openslide.vendor"] == "aperio"
        mpps.add(round(float(s.properties["openslide.mpp-x"]), 2))
        assert s.level_count >= 2, "one page per pyramid level"
        assert "thumbnail" in s.associated_images
        s.close()
    assert mpps <= {0.25, 0.5}


def test_tables_follow_the_mcat_format(demo_dir):
    omics = pd.read_csv(demo_dir / "omics_all_clean.csv.gz")
    for col in ["case_id", "slide_id", "survival_months", "censorship", "age", "is_female", "oncotree_code", "train"]:
        assert col in omics.columns
    assert any(c.endswith("_cnv") for c in omics.columns)
    assert any(c.endswith("_rnaseq") for c in omics.columns)
    assert "TP53" in omics.columns  # unsuffixed binary mutation columns, as in UCEC
    assert set(omics["censorship"]) <= {0, 1}
    clinical = pd.read_csv(demo_dir / "clinical.csv")
    assert clinical["case_id"].is_unique and len(clinical) == 20
    assert clinical["case_id"].str.len().eq(12).all()


def test_missing_modalities_occur(demo_dir, demo_slides):
    clinical = pd.read_csv(demo_dir / "clinical.csv")
    omics = pd.read_csv(demo_dir / "omics_all_clean.csv.gz")
    with_slides = {p.name[:12] for p in demo_slides}
    everyone = set(clinical["case_id"])
    assert everyone - with_slides, "some patients have no slide"
    truth = pd.read_csv(demo_dir / "hidden_factors.csv")
    assert (~truth["has_omics"]).sum() == len(everyone - set(omics["case_id"]))


def test_same_seed_same_cohort(tmp_path):
    a = make_demo_cohort(tmp_path / "a", n_patients=12, seed=11, write_slides=False)
    b = make_demo_cohort(tmp_path / "b", n_patients=12, seed=11, write_slides=False)
    assert a == b
    for name in ("clinical.csv", "omics_all_clean.csv.gz", "hidden_factors.csv", "signatures.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "a" / "omics_all_clean.csv.gz").read_bytes()[4:8] == bytes(4), "gzip header holds no write time"


def test_the_renderer_paints_each_pixel_by_the_documented_rule():
    """Tumour texture where the tumour field is above its threshold, stroma below, background glass
    outside tissue; textures tile the plane. Checked against the rule written out, on regions that
    wrap the texture, cover only glass, and at every level of a 20x and a 40x slide."""
    from lego.demo.cohort import SlideRenderer, SlideSpec

    def by_rule(r, ds, x, y, w, h):
        ds20 = ds / r.scale
        fx = ((x + np.arange(w) + 0.5) * ds20 / 64 - 0.5).astype(np.float32)
        fy = ((y + np.arange(h) + 0.5) * ds20 / 64 - 0.5).astype(np.float32)
        mx, my = np.meshgrid(fx, fy)
        tissue = cv2.remap(r.tissue, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT) > r.tissue_thr
        tumour = cv2.remap(r.tumour, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT) > r.tumour_thr
        stroma, tum = r._tex(ds20)
        ix, iy = (x + np.arange(w)) % stroma.shape[0], (y + np.arange(h)) % stroma.shape[0]
        out = np.where(tumour[..., None], tum[np.ix_(iy, ix)], stroma[np.ix_(iy, ix)])
        return np.where(tissue[..., None], out, r.background), tissue

    import cv2

    seen_glass = seen_tissue = False
    for mpp in (0.5, 0.25):
        r = SlideRenderer(SlideSpec(width=3000, height=2200, mpp=mpp, tumour_fraction=0.4), np.random.default_rng(1))
        for ds in (1, 4, 16):
            for x, y, w, h in ((0, 0, 256, 256), (200, 130, 256, 97), (1000, 700, 181, 256), (37, 1900 // ds, 64, 40)):
                want, tissue = by_rule(r, ds, x, y, w, h)
                got = r(ds, x, y, w, h)
                assert got.dtype == np.uint8 and got.shape == (h, w, 3)
                np.testing.assert_array_equal(got, want, err_msg=f"mpp {mpp}, ds {ds}, region {(x, y, w, h)}")
                seen_glass |= not tissue.any()
                seen_tissue |= tissue.all()
    assert seen_glass and seen_tissue, "the regions cover a glass-only tile and a tissue-only one"


def test_signal_is_split_between_slides_and_omics(tmp_path):
    """u, v, w drive slides, RNA and CNV respectively; survival depends on all three (as documented)."""
    make_demo_cohort(tmp_path, n_patients=400, seed=5, write_slides=False)
    truth = pd.read_csv(tmp_path / "hidden_factors.csv").set_index("case_id")
    omics = pd.read_csv(tmp_path / "omics_all_clean.csv.gz").drop_duplicates("case_id").set_index("case_id")
    t = truth.loc[omics.index]
    rna = omics["ESR1_rnaseq"].clip(-10, 10)
    cnv = omics["MYC_cnv"]
    assert np.corrcoef(rna, t["v"])[0, 1] > 0.6 and abs(np.corrcoef(rna, t["u"])[0, 1]) < 0.2
    assert np.corrcoef(cnv, t["w"])[0, 1] > 0.6 and abs(np.corrcoef(cnv, t["v"])[0, 1]) < 0.2
    clinical = pd.read_csv(tmp_path / "clinical.csv").set_index("case_id")
    from sksurv.metrics import concordance_index_censored

    event = clinical["censorship"].eq(0).to_numpy()
    time = clinical["survival_months"].to_numpy()
    tr = truth.loc[clinical.index]
    single = [concordance_index_censored(event, time, tr[f].to_numpy())[0] for f in "uvw"]
    joint = concordance_index_censored(event, time, (tr["u"] + tr["v"] + tr["w"]).to_numpy())[0]
    assert min(single) > 0.58 and joint > max(single) + 0.05


def test_parallel_slide_writing_gives_identical_files(tmp_path):
    make_demo_cohort(tmp_path / "one", n_patients=8, seed=2, workers=1)
    make_demo_cohort(tmp_path / "two", n_patients=8, seed=2, workers=2)
    one = sorted((tmp_path / "one" / "slides").glob("*.svs"))
    assert one and [p.name for p in one] == [p.name for p in sorted((tmp_path / "two" / "slides").glob("*.svs"))]
    for p in one:
        assert p.read_bytes() == (tmp_path / "two" / "slides" / p.name).read_bytes()


def test_the_demo_generator_checks_its_arguments_and_leaves_no_stale_slide(tmp_path, capsys):
    parse_fails(["make-demo", "--out", str(tmp_path / "d"), "--seed", "-1"], capsys, "argument --seed: -1 is outside [0, ")
    parse_fails(["make-demo", "--out", str(tmp_path / "d"), "--patients", "8", "--prefix", "ab1"], capsys,
                "argument --prefix: ab1 does not match ^[A-Z]{4}$")  # demo.prefix's pattern in the schema
    from lego.demo.cohort import _clear_stale_slides
    from lego.errors import InputError

    slides = tmp_path / "slides"
    slides.mkdir()
    for name in ("DEMO-00-0001-01Z-00-DX1.svs", "DEMO-00-0099-01Z-00-DX1.svs"):
        (slides / name).write_bytes(b"x")
    _clear_stale_slides(slides, {"DEMO-00-0001-01Z-00-DX1.svs"})
    assert [p.name for p in slides.iterdir()] == ["DEMO-00-0001-01Z-00-DX1.svs"]
    (slides / "my_real_slide.svs").write_bytes(b"x")
    with pytest.raises(InputError, match="not a demo slide"):
        _clear_stale_slides(slides, set())
    assert (slides / "my_real_slide.svs").exists(), "never deleted"
