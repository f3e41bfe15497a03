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
    assert (tmp_path / "a" / "clinical.csv").read_bytes() == (tmp_path / "b" / "clinical.csv").read_bytes()
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "a" / "omics_all_clean.csv.gz"), pd.read_csv(tmp_path / "b" / "omics_all_clean.csv.gz")
    )


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
