"""The trained multimodal baselines (lego/baselines): as large as the originals at their published
configurations, trained on a fold by `lego train-model`, scored by `lego evaluate`, reloaded to the
same predictions, and predicting patients who lack a modality from what they have."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from lego.cli import main
from tests.helpers import slide_cohort

MODELS = ["healnet", "perceiver", "multimodn", "late-fusion", "late-bilinear", "mcat", "mcat-single"]
TINY = {"healnet": {"latent_rows": 4, "latent_dim": 16, "cross_dim_head": 8},
        "perceiver": {"latent_rows": 4, "latent_dim": 16, "cross_dim_head": 8, "patches": 4}}


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts_equal_the_originals_at_their_published_configurations():
    """Counted from the originals' own classes at their published configurations (the numbers in
    each module's docstring): HEALNet's BLCA configuration and MM-Lego's class defaults, the
    early-fusion Perceiver, MCAT with BLCA's six gene groups (and MM-Lego's one-token port),
    PORPOISE's fusion of a slide and BLCA's 3,062 omics features, MultiModN on BLCA's tables."""
    from lego.baselines.healnet import ARCHITECTURE, SETTINGS, HEALNet
    from lego.baselines.late_fusion import LateFusion
    from lego.baselines.mcat import MCAT
    from lego.baselines.multimodn import MultiModN
    from lego.baselines.perceiver import EarlyFusion

    blca = {k: SETTINGS[k]["default"] for k in ARCHITECTURE}  # the published BLCA configuration
    omics_wsi = {"omics": 3064, "wsi": 2048}  # BLCA's RNA, CNV, age and sex; ResNet-50 patch features
    assert n_params(HEALNet(omics_wsi, 4, **blca)) == 1_053_613
    defaults = dict(latent_rows=512, latent_dim=512, depth=3, cross_heads=1, cross_dim_head=64, self_per_cross_attn=1,
                    latent_heads=8, latent_dim_head=64, attn_dropout=0.0, ff_dropout=0.0, fourier_bands=2, max_freq=2.0)
    assert n_params(HEALNet(omics_wsi, 4, **defaults)) == 34_177_808
    assert n_params(EarlyFusion(omics_wsi, ["wsi"], 4, patches=1, **blca)) == 702_461
    sizes, start, groups = (94, 334, 521, 468, 1496, 479), 0, []
    for size in sizes:
        groups, start = [*groups, list(range(start, start + size))], start + size
    assert n_params(MCAT(groups, {"omics": start}, "wsi", 1024, 4, dropout=0.25, fusion="concat")) == 4_492_038
    assert n_params(MCAT(groups, {"omics": start}, "wsi", 1024, 4, dropout=0.25, fusion="bilinear")) == 4_691_142
    assert n_params(MCAT([list(range(2181))], {"omics": 2181}, "wsi", 1024, 4, dropout=0.25, fusion="concat")) == 3_851_782
    path_omics = {"wsi": 1024, "omics": 3062}
    assert n_params(LateFusion(path_omics, ["wsi"], 4, fusion="concat", dropout=0.25)) == 1_967_109
    assert n_params(LateFusion(path_omics, ["wsi"], 4, fusion="bilinear", dropout=0.25, skip=True)) == 2_297_285
    blca_tables = {"mutation": 371, "cnv": 256, "rna": 1554}
    assert n_params(MultiModN(blca_tables, [], 4, state=50, hidden=[32, 32], decoder=[32, 32], dropout=0.2)) == 85_676


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """The slide cohort plus two tables with gene columns MCAT can group (two patients miss each
    table) and a two-group signatures table."""
    d = slide_cohort(tmp_path_factory.mktemp("trained"), n=40)
    labels = pd.read_parquet(d / "labels.parquet")
    rng = np.random.default_rng(1)
    risk = -np.log(labels["time"] / 20)
    ids = labels["patient_id"]
    rna = pd.DataFrame({"patient_id": ids, "TP53_rnaseq": risk + rng.normal(0, 0.5, len(ids)),
                        **{f"G{i}_rnaseq": rng.normal(size=len(ids)) for i in range(5)}})
    cnv = pd.DataFrame({"patient_id": ids, "MYC_cnv": rng.integers(-1, 2, len(ids)).astype(float),
                        **{f"G{i}_cnv": rng.normal(size=len(ids)) for i in range(3)}})
    rna.iloc[2:].to_parquet(d / "rna.parquet")  # P000, P001 have no RNA
    cnv.drop(index=[3, 4]).to_parquet(d / "cnv.parquet")
    pd.DataFrame({"suppressors": ["TP53", "G0", None], "oncogenes": ["MYC", "G1", "G2"]}).to_csv(d / "sig.csv", index=False)
    return d


def _run(cohort, model: str, spec: dict) -> tuple[list[str], list[str]]:
    data = [f"{m}={cohort / f'{m}.parquet'}" for m in ("wsi", "rna", "cnv")]
    common = ["--labels", str(cohort / "labels.parquet"), "--folds", str(cohort / "folds.parquet"), "--device", "cpu"]
    kinds = json.dumps({"wsi": {"kind": "wsi"}, "rna": {"kind": "tabular"}, "cnv": {"kind": "tabular"}})
    assert main(["train-model", "--model", model, "--data", *data, "--modalities", kinds, "--fold", "0", "--spec",
                 json.dumps(spec), "--out-dir", str(cohort / model), *common]) == 0
    assert main(["evaluate", "--model-dir", str(cohort / model), "--name", model, "--data", *data,
                 "--out-dir", str(cohort / f"{model}-eval"), *common]) == 0
    return data, common


@pytest.mark.parametrize("model", MODELS)
def test_each_baseline_trains_on_a_fold_and_reloads_to_its_predictions(cohort, model):
    from lego.models import files
    from lego.steps.inference import fold_modalities, predict

    spec = {"epochs": 2, "batch_size": 8, **TINY.get(model, {}),
            **({"signatures": str(cohort / "sig.csv")} if model == "mcat" else {})}
    data, _ = _run(cohort, model, spec)
    saved = pd.read_parquet(cohort / f"{model}-eval" / "predictions.parquet").query("subset == 'test'")
    loaded, config = files.load(cohort / model)
    mods = fold_modalities(config["inputs"], dict(d.split("=", 1) for d in data))
    again = predict(loaded, config, mods, list(saved["patient_id"]))
    np.testing.assert_allclose(again["risk"], saved["risk"], atol=1e-6)
    assert saved["risk"].notna().all() and len(saved) > 0


def test_a_patient_without_a_modality_is_predicted_from_what_it_has(cohort):
    """HEALNet keeps the latents and MultiModN the state of a patient through a modality it lacks:
    the absent modality's values (zeros, or anything) change nothing, and a patient's prediction
    does not depend on the others in its batch."""
    from lego.baselines.healnet import HEALNet
    from lego.baselines.multimodn import MultiModN
    from lego.data.fold_data import collate
    from lego.data.tensors import ModalityTensors

    torch.manual_seed(0)
    rna = ModalityTensors("rna", "tabular", {f"P{i}": torch.randn(1, 5) for i in range(1, 4)}, {}, 5)
    wsi = ModalityTensors("wsi", "wsi", {f"P{i}": torch.randn(2 + i, 3) for i in range(4)}, {}, 3)
    models = [HEALNet({"rna": 5, "wsi": 3}, 4, **{**{k: 4 for k in ("latent_rows", "latent_dim", "cross_dim_head")},
                                                   "depth": 2, "cross_heads": 1, "self_per_cross_attn": 1,
                                                   "latent_heads": 2, "latent_dim_head": 4, "attn_dropout": 0.0,
                                                   "ff_dropout": 0.0, "fourier_bands": 2, "max_freq": 2.0}),
              MultiModN({"rna": 5, "wsi": 3}, ["wsi"], 4, state=6, hidden=[8], decoder=[8], dropout=0.0)]
    for model in models:
        model.eval()
        batch = collate(["P0", "P1", "P2", "P3"], {"rna": rna, "wsi": wsi})
        together = model(batch)[1]
        alone = model(collate(["P0"], {"rna": rna, "wsi": wsi}))[1]
        torch.testing.assert_close(together[:1], alone)
        x, mask, present = batch["rna"]
        assert not present[0]
        noisy = {**batch, "rna": (x + torch.randn_like(x) * (~present)[:, None, None], mask, present)}
        torch.testing.assert_close(model(noisy)[1], together)


@pytest.mark.parametrize("model", ["mcat", "late-fusion"])
def test_multimodal_baselines_draw_patch_attention_of_every_test_slide(cohort, model):
    """MCAT's co-attention (per gene group and averaged) and late fusion's ABMIL pooling are drawn
    like a slide block's: one table, PNG and GeoJSON per test slide; each patient's attention (and,
    for MCAT, each group's) is one softmax over all its patches."""
    spec = {"epochs": 1, "batch_size": 8, **TINY.get(model, {}),
            **({"signatures": str(cohort / "sig.csv")} if model == "mcat" else {})}
    data, _ = _run(cohort, model, spec)
    out = cohort / f"{model}-heat"
    assert main(["heatmaps", "--model-dir", str(cohort / model), "--data", *data, "--folds",
                 str(cohort / "folds.parquet"), "--out-dir", str(out)]) == 0
    index = pd.read_csv(out / "index.tsv", sep="\t")
    folds = pd.read_parquet(cohort / "folds.parquet")
    manifest = pd.read_parquet(cohort / "wsi.parquet")
    test = set(folds.loc[folds["subset"] == "test", "patient_id"])
    assert set(index["slide_id"]) == set(manifest.loc[manifest["patient_id"].isin(test), "slide_id"])
    assert index["reason"].isna().all() and (index["modality"] == "wsi").all()
    tables = {s: pd.read_parquet(out / f"{s}.attention.parquet") for s in index["slide_id"]}
    columns = ["attention"] + (["attention_suppressors", "attention_oncogenes"] if model == "mcat" else [])
    for column in columns:
        owner = index.set_index("slide_id")["patient_id"]
        per_patient = pd.Series({s: t[column].sum() for s, t in tables.items()}).groupby(owner).sum()
        np.testing.assert_allclose(per_patient, 1.0, atol=1e-5)
    geo = json.loads((out / f"{index['slide_id'].iloc[0]}.geojson").read_text())
    assert set(columns) <= set(geo["features"][0]["properties"]["measurements"])


def test_heatmaps_of_a_multimodal_model_need_each_modality_it_reads(cohort, capsys):
    from tests.helpers import lego_fails

    spec = {"epochs": 1, "batch_size": 8, **TINY.get("mcat-single", {})}
    _run(cohort, "mcat-single", spec)
    lego_fails(["heatmaps", "--model-dir", str(cohort / "mcat-single"), "--manifest", str(cohort / "wsi.parquet"),
                "--folds", str(cohort / "folds.parquet"), "--out-dir", str(cohort / "x")], capsys, "give each with --data")
    lego_fails(["heatmaps", "--model-dir", str(cohort / "mcat-single"), "--data", f"wsi={cohort / 'wsi.parquet'}",
                "--folds", str(cohort / "folds.parquet"), "--out-dir", str(cohort / "x")], capsys, "no data given for modality")
