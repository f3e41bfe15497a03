"""Attention heatmaps of a slide block: per-slide tables, PNGs and QuPath GeoJSON for the fold's test patients."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from lego.cli import main
from lego.steps.block_training import train_block
from tests.helpers import SMALL, _wsi_block, lego_fails, slide_cohort


def test_heatmaps_cover_every_test_slide_and_open_in_qupath(tmp_path):
    d = slide_cohort(tmp_path)
    train_block("wsi", "wsi", str(d / "wsi.parquet"), labels=str(d / "labels.parquet"), folds=str(d / "folds.parquet"), fold=0, task="survival",
                spec={**SMALL, "encoder": "abmil"}, out_dir=str(d / "blk"), device="cpu")
    out = d / "heat"
    assert main(["heatmaps", "--model-dir", str(d / "blk"), "--manifest", str(d / "wsi.parquet"), "--folds",
                 str(d / "folds.parquet"), "--out-dir", str(out)]) == 0
    folds = pd.read_parquet(d / "folds.parquet")
    test = set(folds.loc[folds["subset"] == "test", "patient_id"])
    index = pd.read_csv(out / "index.tsv", sep="\t")
    manifest = pd.read_parquet(d / "wsi.parquet")
    assert set(index["slide_id"]) == set(manifest.loc[manifest["patient_id"].isin(test), "slide_id"])
    per_patient = {}
    for slide_id, pid in zip(index["slide_id"], index["patient_id"]):
        table = pd.read_parquet(out / f"{slide_id}.attention.parquet")
        per_patient[pid] = per_patient.get(pid, 0.0) + table["attention"].sum()
        geo = json.loads((out / f"{slide_id}.geojson").read_text())
        assert geo["type"] == "FeatureCollection" and len(geo["features"]) == len(table)
        first = geo["features"][0]
        ring = first["geometry"]["coordinates"][0]
        assert first["geometry"]["type"] == "Polygon" and ring[0] == ring[-1] and len(ring) == 5
        assert ring[1][0] - ring[0][0] == 256 and first["properties"]["objectType"] == "detection"
        assert first["properties"]["measurements"]["attention"] == table["attention"].iloc[0]
        assert (out / f"{slide_id}.png").read_bytes()[:4] == b"\x89PNG"
    # One softmax over each patient's patches, split across the patient's slides.
    assert all(abs(total - 1.0) < 1e-6 for total in per_patient.values())


def test_a_block_without_attention_says_so_instead_of_failing(tmp_path):
    d = slide_cohort(tmp_path)
    train_block("wsi", "wsi", str(d / "wsi.parquet"), labels=str(d / "labels.parquet"), folds=str(d / "folds.parquet"), fold=0, task="survival",
                spec={**SMALL, "encoder": "none"}, out_dir=str(d / "blk"), device="cpu")
    assert main(["heatmaps", "--model-dir", str(d / "blk"), "--manifest", str(d / "wsi.parquet"), "--folds",
                 str(d / "folds.parquet"), "--out-dir", str(d / "heat")]) == 0
    assert "no patch attention" in (d / "heat" / "NO_HEATMAPS.txt").read_text()


def test_the_abmil_baselines_saved_model_reloads_and_draws_heatmaps(tmp_path):
    """The baseline's files are a model like any other (safetensors + config.json): trained by
    train-model and scored by evaluate, reloaded it gives the predictions it was evaluated with, and
    its attention is drawn as the block's is."""
    import torch

    from lego.data.fold_data import load_fold_modality
    from lego.models import files as model_io
    from lego.steps.inference import predict

    d = slide_cohort(tmp_path)
    common = ["--labels", str(d / "labels.parquet"), "--folds", str(d / "folds.parquet"), "--device", "cpu"]
    assert main(["train-model", "--model", "abmil", "--data", f"wsi={d / 'wsi.parquet'}", "--modalities",
                 json.dumps({"wsi": {"kind": "wsi"}}), "--fold", "0", "--spec", json.dumps(SMALL),
                 "--out-dir", str(d / "abmil"), *common]) == 0
    assert main(["evaluate", "--model-dir", str(d / "abmil"), "--name", "abmil-wsi", "--data", f"wsi={d / 'wsi.parquet'}",
                 "--out-dir", str(d / "eval"), *common]) == 0
    model, config = model_io.load(d / "abmil")
    assert config["kind"] == "abmil" and config["fold"] == 0 and config["patients"]["train"]
    inputs = load_fold_modality("wsi", "wsi", str(d / "wsi.parquet"), labels=str(d / "labels.parquet"),
                                folds=str(d / "folds.parquet"), fold=0, task="survival", spec=SMALL, where="reload")
    test = [p for p in inputs.ids["test"] if p in inputs.mod.per_patient]
    with torch.no_grad():
        again = predict(model, config, {"wsi": inputs.mod}, test).set_index("patient_id")["risk"]
    saved = pd.read_parquet(d / "eval" / "predictions.parquet").query("subset == 'test'").set_index("patient_id")["risk"]
    assert np.allclose(again.loc[saved.index], saved, atol=1e-6)
    out = d / "heat"
    assert main(["heatmaps", "--model-dir", str(d / "abmil"), "--manifest", str(d / "wsi.parquet"), "--folds",
                 str(d / "folds.parquet"), "--out-dir", str(out)]) == 0
    index = pd.read_csv(out / "index.tsv", sep="\t")
    assert len(index) and (index["reason"].isna()).all()
    assert all((out / f"{s}.png").is_file() and (out / f"{s}.geojson").is_file() for s in index["slide_id"])


@pytest.fixture
def heat_inputs(tmp_path):
    from lego.steps.block_training import train_block

    d = slide_cohort(tmp_path)
    train_block("wsi", "wsi", str(d / "wsi.parquet"), labels=str(d / "labels.parquet"), folds=str(d / "folds.parquet"), fold=0,
                task="survival", spec={**SMALL, "encoder": "abmil"}, out_dir=str(d / "blk"), device="cpu")
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


def test_heatmaps_refuse_a_folds_table_the_model_was_not_trained_with(tmp_path, capsys):
    from lego.data.folds import make_folds

    d = slide_cohort(tmp_path)
    _wsi_block(d)
    labels = pd.read_parquet(d / "labels.parquet")
    make_folds(labels, n_folds=1, fractions=(0.5, 0.2, 0.3), seeds=[99]).to_parquet(d / "other_folds.parquet")
    lego_fails(["heatmaps", "--model-dir", str(d / "blk"), "--manifest", str(d / "wsi.parquet"), "--folds",
                str(d / "other_folds.parquet"), "--out-dir", str(d / "h")], capsys,
               "test patients in", "were used to fit or validate this model", "folds table it was trained with")


def test_the_report_previews_are_capped_per_fold_so_its_size_does_not_grow_with_the_cohort(tmp_path):
    from lego.evaluation.heatmaps import PREVIEWS_PER_FOLD, _keep_previews

    (tmp_path / "previews").mkdir()
    names = [f"S{i:03d}.jpg" for i in range(PREVIEWS_PER_FOLD + 5)]
    for n in reversed(names):
        (tmp_path / "previews" / n).write_bytes(b"x")
    _keep_previews(tmp_path)
    assert sorted(p.name for p in (tmp_path / "previews").iterdir()) == names[:PREVIEWS_PER_FOLD]


def test_one_call_draws_every_fold_of_a_model_each_into_its_own_folder(tmp_path, capsys):
    """The workflow draws all folds of a model in one job (torch loads once): each fold's model is
    drawn on that fold's test patients into its own folder, exactly as a call for that fold alone;
    model and output folders that do not pair up are refused."""
    from lego.data.folds import make_folds

    d = slide_cohort(tmp_path)
    make_folds(pd.read_parquet(d / "labels.parquet"), n_folds=2, fractions=(0.5, 0.2, 0.3)).to_parquet(d / "f2.parquet")
    for k in (0, 1):
        train_block("wsi", "wsi", str(d / "wsi.parquet"), labels=str(d / "labels.parquet"), folds=str(d / "f2.parquet"),
                    fold=k, task="survival", spec={**SMALL, "encoder": "abmil", "epochs": 1}, out_dir=str(d / f"blk{k}"),
                    device="cpu")
    common = ["--manifest", str(d / "wsi.parquet"), "--folds", str(d / "f2.parquet")]
    assert main(["heatmaps", "--model-dir", str(d / "blk0"), str(d / "blk1"), *common,
                 "--out-dir", str(d / "h0"), str(d / "h1")]) == 0
    assert main(["heatmaps", "--model-dir", str(d / "blk1"), *common, "--out-dir", str(d / "alone1")]) == 0
    folds, manifest = pd.read_parquet(d / "f2.parquet"), pd.read_parquet(d / "wsi.parquet")
    for k in (0, 1):
        test = set(folds.loc[(folds["fold"] == k) & (folds["subset"] == "test"), "patient_id"])
        index = pd.read_csv(d / f"h{k}" / "index.tsv", sep="\t")
        assert set(index["slide_id"]) == set(manifest.loc[manifest["patient_id"].isin(test), "slide_id"])
    together, alone = pd.read_csv(d / "h1" / "index.tsv", sep="\t"), pd.read_csv(d / "alone1" / "index.tsv", sep="\t")
    pd.testing.assert_frame_equal(together, alone)
    for s in alone["slide_id"]:
        pd.testing.assert_frame_equal(pd.read_parquet(d / "h1" / f"{s}.attention.parquet"),
                                      pd.read_parquet(d / "alone1" / f"{s}.attention.parquet"))
    lego_fails(["heatmaps", "--model-dir", str(d / "blk0"), str(d / "blk1"), *common, "--out-dir", str(d / "h9")],
               capsys, "--model-dir gives 2 folder(s) and --out-dir 1")


def test_a_fold_that_cannot_be_drawn_is_refused_before_any_fold_is_drawn(tmp_path, capsys):
    """One call draws a model's folds: a later fold whose model reads a modality not given is
    refused before the first fold's files are written (nothing half-done is left behind)."""
    import shutil

    d = slide_cohort(tmp_path)
    _wsi_block(d)
    shutil.copytree(d / "blk", d / "other")
    config = json.loads((d / "other" / "config.json").read_text())
    (d / "other" / "config.json").write_text(json.dumps({**config, "modality": "wsi2"}))
    lego_fails(["heatmaps", "--model-dir", str(d / "blk"), str(d / "other"), "--data", f"wsi={d / 'wsi.parquet'}",
                "--folds", str(d / "folds.parquet"), "--out-dir", str(d / "h0"), str(d / "h1")], capsys,
               "no data given for modality 'wsi2'")
    assert not (d / "h0").exists()
