"""Attention heatmaps of a slide block: per-slide tables, PNGs and QuPath GeoJSON for the fold's test patients."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from lego.cli import main
from lego.data.cohort_table import feature_manifest
from lego.data.folds import make_folds
from lego.slides.features import write_feature_bag
from lego.stages import train_block
from tests.test_fit_protocol import SMALL


def slide_cohort(tmp_path, n=24):
    """Patients with one or two feature bags each (a signal in feature 0), labels and folds."""
    rng = np.random.default_rng(0)
    ids = [f"P{i:03d}" for i in range(n)]
    rows, risk = [], rng.normal(size=n)
    for i, pid in enumerate(ids):
        for s in range(1 + i % 2):
            k = 6 + s
            feats = rng.normal(size=(k, 8)).astype(np.float32)
            feats[0, 0] += 3 * risk[i]
            coords = np.stack([np.arange(k) * 256, np.full(k, 512 * s)], axis=1)
            path = tmp_path / f"{pid}-S{s}.h5"
            write_feature_bag(path, feats, coords, {"encoder": "toy"}, {"patch_size_level0": 256})
            rows.append({"slide_id": f"{pid}-S{s}", "patient_id": pid, "path": str(path)})
    slides = pd.DataFrame(rows)
    manifest = feature_manifest(slides, dict(zip(slides["slide_id"], slides["path"])))
    manifest.to_parquet(tmp_path / "wsi.parquet")
    time = np.exp(-risk) * 20
    labels = pd.DataFrame({"patient_id": ids, "time": time, "event": (rng.random(n) < 0.8).astype(int)})
    labels.to_parquet(tmp_path / "labels.parquet")
    make_folds(labels, n_folds=1, fractions=(0.5, 0.2, 0.3)).to_parquet(tmp_path / "folds.parquet")
    return tmp_path


def test_heatmaps_cover_every_test_slide_and_open_in_qupath(tmp_path):
    d = slide_cohort(tmp_path)
    train_block("wsi", "wsi", str(d / "wsi.parquet"), str(d / "labels.parquet"), str(d / "folds.parquet"), 0, "survival",
                {**SMALL, "encoder": "abmil"}, str(d / "blk"), device="cpu")
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
    train_block("wsi", "wsi", str(d / "wsi.parquet"), str(d / "labels.parquet"), str(d / "folds.parquet"), 0, "survival",
                {**SMALL, "encoder": "none"}, str(d / "blk"), device="cpu")
    assert main(["heatmaps", "--model-dir", str(d / "blk"), "--manifest", str(d / "wsi.parquet"), "--folds",
                 str(d / "folds.parquet"), "--out-dir", str(d / "heat")]) == 0
    assert "no patch attention" in (d / "heat" / "NO_HEATMAPS.txt").read_text()


def test_the_abmil_baselines_saved_model_reloads_and_draws_heatmaps(tmp_path):
    """The baseline's files are a model like any other (safetensors + config.json): reloaded, it gives
    the predictions it was evaluated with, and its attention is drawn as the block's is."""
    import torch

    from lego.data.fold_data import load_fold_modality
    from lego.models import io as model_io
    from lego.stages import predict

    d = slide_cohort(tmp_path)
    args = ["--data", str(d / "wsi.parquet"), "--labels", str(d / "labels.parquet"), "--folds", str(d / "folds.parquet")]
    assert main(["abmil", "--modality", "wsi", *args, "--fold", "0", "--spec", json.dumps(SMALL),
                 "--out-dir", str(d / "abmil"), "--device", "cpu"]) == 0
    model, config = model_io.load(d / "abmil")
    assert config["kind"] == "abmil" and config["fold"] == 0 and config["patients"]["train"]
    inputs = load_fold_modality("wsi", "wsi", *args[1::2], 0, "survival", SMALL, "reload")
    test = [p for p in inputs.ids["test"] if p in inputs.mod.per_patient]
    with torch.no_grad():
        again = predict(model, config, {"wsi": inputs.mod}, test).set_index("patient_id")["risk"]
    saved = pd.read_parquet(d / "abmil" / "predictions.parquet").query("subset == 'test'").set_index("patient_id")["risk"]
    assert np.allclose(again.loc[saved.index], saved, atol=1e-6)
    out = d / "heat"
    assert main(["heatmaps", "--model-dir", str(d / "abmil"), "--manifest", str(d / "wsi.parquet"), "--folds",
                 str(d / "folds.parquet"), "--out-dir", str(out)]) == 0
    index = pd.read_csv(out / "index.tsv", sep="\t")
    assert len(index) and (index["reason"].isna()).all()
    assert all((out / f"{s}.png").is_file() and (out / f"{s}.geojson").is_file() for s in index["slide_id"])
