"""End-to-end runs of the Snakemake workflow on tiny inputs (real OpenSlide, real rules)."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.workflow_runs import snakemake, write_config

pytestmark = pytest.mark.slow

def test_demo_front_half_runs_end_to_end(demo_run):
    out = demo_run / "results" / "demo"
    patients = pd.read_parquet(out / "cohort" / "patients.parquet")
    assert len(patients) == 30
    for m in ("wsi", "rna", "cnv"):
        assert f"has_{m}" in patients.columns
    assert not patients["has_wsi"].all() and patients["n_modalities"].min() >= 1
    table = pd.read_table(out / "summary" / "metrics.tsv")
    summary = table[table["metric"] == "c_index"].set_index("model")
    lego = ["block-wsi", "block-cnv", "block-rna", "merge", "merge-tuned", "fuse", "lego"]
    baselines = ["coxnet-early", "rsf-early"]  # the demo config fits baselines on all modalities only
    trained = ["healnet", "perceiver", "multimodn", "late-fusion", "late-bilinear", "mcat", "mcat-single"]  # the paper's
    assert set(summary.index) == set(lego + baselines + trained + ["abmil-wsi", "ensemble"])
    # 30 patients: a fold's test set may hold one or two slide patients, too few for a C-index.
    assert (summary.loc[["block-cnv", "block-rna", "merge", "merge-tuned", "fuse", "lego"], "folds"] == 2).all()
    # A metric is there for every fold, or its missing folds say why.
    assert ((table["folds"] == 2) | table["missing"].str.contains("fold", na=False)).all(), table.to_string()
    assert {"c_index", "uno_c", "mean_auc", "ibs", "auc_12"} <= set(table["metric"])
    for model in lego + ["ensemble", "coxnet-early", "abmil-wsi"]:
        preds = pd.read_parquet(out / "eval" / model / "fold0" / "predictions.parquet")
        assert set(preds["subset"]) <= {"test", "val"} and preds["risk"].notna().all()
    comparisons = pd.read_table(out / "summary" / "comparisons.tsv")
    assert {"merge", "merge-tuned", "fuse", "lego", "ensemble"} <= set(comparisons["model"])
    assert "classical baseline (all modalities)" in set(comparisons["reference_is"])
    against = comparisons.set_index(["model", "reference"])["reference_is"]
    for name in trained:  # the paper's head-to-head: lego and fuse paired with each end-to-end model
        assert against[("lego", name)] == against[("fuse", name)] == "trained multimodal baseline"
    assert against[("lego", "abmil-wsi")] == "trained baseline (one modality)"
    for fold in (0, 1):  # the variant each fold reports was chosen on validation and is named
        chosen = json.loads((out / "eval" / "lego" / f"fold{fold}" / "metrics.json").read_text())
        assert chosen["variant"] in ("merge", "merge-tuned", "fuse") and set(chosen["variant_val_scores"]) == {"merge", "merge-tuned", "fuse"}
    for name in ("risk_groups", "folds", "merge_vs_ensemble", "qc_thumbnails"):
        assert (out / "summary" / "figures" / f"{name}.png").stat().st_size > 5000
    folds = pd.read_parquet(out / "cohort" / "folds.parquet")
    assert set(folds["fold"]) == {0, 1} and set(folds["subset"]) == {"train", "val", "test"}
    manifest = pd.read_parquet(out / "modalities" / "wsi.parquet")
    assert (manifest.loc[manifest.status == "ok", "n_patches"] > 0).all()
    for f in manifest.loc[manifest.status == "ok", "features"]:
        assert (demo_run / f).exists() or Path(f).exists()
    assert list((out / "benchmarks" / "segment_tissue").glob("*.tsv")), "heavy rules write benchmark files"
    run = json.loads((out / "provenance" / "run.json").read_text())
    assert run["config"]["demo"]["n_patients"] == 30 and run["jobs"]["n"] > 10 and run["packages"]["snakemake"]
    inputs = pd.read_table(out / "provenance" / "inputs.tsv")
    assert inputs["path"].str.endswith(".svs").sum() == len(list((demo_run / "results" / "demo_input" / "slides").glob("*.svs")))


def test_report_embeds_every_figure_and_table(demo_run, tmp_path):
    report = tmp_path / "report.html"
    snakemake(demo_run, "--report", str(report))
    html = report.read_text()
    figures = demo_run / "results" / "demo" / "summary" / "figures"
    for name in ("risk_groups", "folds", "merge_vs_ensemble", "qc_thumbnails"):
        png = base64.b64encode((figures / f"{name}.png").read_bytes()).decode()
        assert png in html, f"{name}.png is not embedded in the report"
    for table in ("metrics.tsv", "folds.tsv", "comparisons.tsv"):
        assert table in html
    heat = sorted((demo_run / "results" / "demo" / "heatmaps" / "block-wsi").glob("fold*/*.png"))
    assert heat, "the slide block's test heatmaps are drawn"
    preview = heat[0].parent / "previews" / f"{heat[0].stem}.jpg"
    assert base64.b64encode(preview.read_bytes()).decode() in html, "and shown in the report as a small preview"
    assert base64.b64encode(heat[0].read_bytes()).decode() not in html, "never the full PNG (issue 27: a 79 MB report)"
    previews = list((demo_run / "results" / "demo" / "heatmaps").glob("*/fold*/previews/*.jpg"))
    assert previews and max(p.stat().st_size for p in previews) < 60_000


def test_heatmaps_of_the_test_slides(demo_run):
    out = demo_run / "results" / "demo"
    folds = pd.read_parquet(out / "cohort" / "folds.parquet")
    manifest = pd.read_parquet(out / "modalities" / "wsi.parquet")
    for fold in (0, 1):
        test = folds[(folds["fold"] == fold) & (folds["subset"] == "test")]["patient_id"]
        expected = set(manifest[(manifest["status"] == "ok") & manifest["patient_id"].isin(test)]["slide_id"])
        for name in ("block-wsi", "abmil-wsi", "mcat"):  # the models the demo config names in evaluation.heatmaps
            d = out / "heatmaps" / name / f"fold{fold}"
            index = pd.read_table(d / "index.tsv")
            assert set(index["slide_id"]) == expected
            for s in expected:
                geo = json.loads((d / f"{s}.geojson").read_text())
                table = pd.read_parquet(d / f"{s}.attention.parquet")
                assert geo["type"] == "FeatureCollection" and len(geo["features"]) == len(table)
                if name == "mcat":  # one map per gene group's co-attention, besides their mean
                    built = json.loads((out / "baselines" / "mcat" / f"fold{fold}" / "config.json").read_text())
                    groups = {f"attention_{g}" for g in built["group_names"]}  # those with a selected gene
                    assert 2 <= len(groups) <= 6 and groups == {c for c in table.columns if c.startswith("attention_")}
        assert not (out / "heatmaps" / "late-fusion").exists(), "a model not listed is not drawn"


def test_blank_slide_is_recorded_not_fatal(demo_run):
    failed = pd.read_table(demo_run / "results" / "demo" / "qc" / "failed.tsv")
    assert len(failed) == 1
    row = failed.iloc[0]
    assert row["slide_id"].endswith("DX9") and row["stage"] == "segment_tissue" and "no tissue" in row["reason"]


def test_nothing_to_do_after_a_finished_run(demo_run):
    proc = snakemake(demo_run, "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr and "Summary (" not in proc.stdout
    # A real run with nothing to do still shows the results (Snakemake skips onsuccess then).
    proc = snakemake(demo_run, "--cores", "1")
    assert "Nothing to be done" in proc.stdout + proc.stderr and "Summary (" in proc.stdout


def test_batch_with_bad_slides_carries_on(demo_run, tmp_path, fixtures_dir):
    """Corrupt, non-slide, no-mpp and unknown-patient files are recorded; good slides are processed."""
    demo_input = demo_run / "results" / "demo_input"
    slides = tmp_path / "slides"
    slides.mkdir()
    good = sorted((demo_input / "slides").glob("*DX1.svs"))[:2]
    for p in good:
        shutil.copy(p, slides / p.name)
    others = sorted(set(pd.read_csv(demo_input / "clinical.csv")["case_id"]) - {p.name[:12] for p in good})
    corrupt, not_slide, no_mpp = (f"{pid}-01Z-00-DX7" for pid in others[:3])
    shutil.copy(fixtures_dir / "unreadable.svs", slides / f"{corrupt}.svs")
    shutil.copy(demo_input / "clinical.csv", slides / f"{not_slide}.svs")
    shutil.copy(fixtures_dir / "boxes.tiff", slides / f"{no_mpp}.tiff")
    shutil.copy(good[0], slides / "ZZZZ-00-9999-01Z-00-DX1.svs")
    (slides / "README.txt").write_text("not a slide and not listed")
    config = write_config(tmp_path, slides={"dir": str(slides)})
    config["model"]["build"] = []  # slides only: no models
    config["evaluation"].update(baselines=["coxnet", "rsf", "abmil"], heatmaps=False)
    config["cohort"]["name"] = "bad"
    config["cohort"]["labels"]["path"] = str(demo_input / "clinical.csv")
    config["modalities"] = {"wsi": {"kind": "wsi"}, "clinical": {"kind": "tabular", "path": str(demo_input / "clinical.csv"), "columns": ["age"]}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    snakemake(tmp_path, "--cores", "2")
    failed = pd.read_table(tmp_path / "results" / "bad" / "qc" / "failed.tsv").set_index("slide_id")
    assert "cannot read pixels" in failed.loc[corrupt, "reason"]
    assert "not a whole-slide image" in failed.loc[not_slide, "reason"]
    assert "mpp_fallback" in failed.loc[no_mpp, "reason"]
    assert failed.loc["ZZZZ-00-9999-01Z-00-DX1", "stage"] == "index_slides"
    manifest = pd.read_parquet(tmp_path / "results" / "bad" / "modalities" / "wsi.parquet").set_index("slide_id")
    assert (manifest.loc[[p.name[:-4] for p in good], "status"] == "ok").all()
    patients = pd.read_parquet(tmp_path / "results" / "bad" / "cohort" / "patients.parquet").set_index("patient_id")
    assert not any(c.startswith("has_rna") for c in patients.columns), "a --configfile replaces the demo config"
    assert not patients.loc[corrupt[:12], "has_wsi"], "a patient whose only slide failed has no WSI modality"
    assert patients.loc[good[0].name[:12], "has_wsi"]


def test_existing_feature_files_skip_extraction(demo_run, tmp_path):
    """A WSI modality from TRIDENT/CLAM ('features') and STAMP ('feats') files, with no slides at all."""
    import h5py
    import numpy as np

    demo_input = demo_run / "results" / "demo_input"
    feats = tmp_path / "trident_features"
    feats.mkdir()
    pids = pd.read_csv(demo_input / "clinical.csv")["case_id"].tolist()[:4]
    rng = np.random.default_rng(0)
    for i, pid in enumerate(pids):
        with h5py.File(feats / f"{pid}-01Z-00-DX1.h5", "w") as f:
            f["feats" if i % 2 else "features"] = rng.normal(size=(7, 16)).astype(np.float32)
            f["coords"] = np.arange(14).reshape(7, 2)
    config = write_config(tmp_path, slides={})
    config["model"]["build"] = ["blocks"]
    config["cohort"]["name"] = "imported"
    config["cohort"]["labels"]["path"] = str(demo_input / "clinical.csv")
    config["modalities"] = {"uni": {"kind": "wsi", "features_dir": str(feats)}}
    # Per-modality baselines on 4 patients cannot be fitted: they must be reported, not crash the run.
    config["evaluation"] = {"baseline_inputs": ["each"]}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    proc = snakemake(tmp_path, "--cores", "2")
    assert "segment_tissue" not in proc.stdout + proc.stderr and "embed_patches" not in proc.stdout + proc.stderr
    manifest = pd.read_parquet(tmp_path / "results" / "imported" / "modalities" / "uni.parquet")
    assert (manifest["status"] == "ok").all() and manifest["n_patches"].eq(7).all() and manifest["dim"].eq(16).all()
    patients = pd.read_parquet(tmp_path / "results" / "imported" / "cohort" / "patients.parquet")
    assert patients["has_uni"].sum() == 4
    table = pd.read_table(tmp_path / "results" / "imported" / "summary" / "metrics.tsv").set_index(["model", "metric"])
    assert "not fitted" in table.loc[("coxnet-uni", "c_index"), "missing"]
    assert (tmp_path / "results" / "imported" / "summary" / "figures" / "risk_groups.png").exists()

    # A second imported modality whose folder lacks one slide and has one the first lacks: both
    # folders are indexed, and each missing file is that modality's failed slide, not a stopped DAG.
    feats2 = tmp_path / "conch_features"
    feats2.mkdir()
    extra = pd.read_csv(demo_input / "clinical.csv")["case_id"].tolist()[4]
    for name in [p.name for p in sorted(feats.glob("*.h5"))][1:] + [f"{extra}-01Z-00-DX1.h5"]:
        with h5py.File(feats2 / name, "w") as f:
            f["features"] = rng.normal(size=(5, 8)).astype(np.float32)
    config["modalities"]["conch"] = {"kind": "wsi", "features_dir": str(feats2)}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "results" / "imported"
    snakemake(tmp_path, "--cores", "2", "results/imported/qc/failed.tsv", "results/imported/cohort/patients.parquet")
    first = sorted(feats.glob("*.h5"))[0].name[:-3]
    conch = pd.read_parquet(out / "modalities" / "conch.parquet").set_index("slide_id")
    uni = pd.read_parquet(out / "modalities" / "uni.parquet").set_index("slide_id")
    assert len(conch) == len(uni) == 5 and conch.loc[first, "status"] == "failed"
    assert uni.loc[f"{extra}-01Z-00-DX1", "status"] == "failed" and (conch["status"] == "ok").sum() == 4
    failed = pd.read_table(out / "qc" / "failed.tsv")
    assert {first, f"{extra}-01Z-00-DX1"} <= set(failed["slide_id"]) and failed["reason"].str.contains("no feature file").any()
    patients = pd.read_parquet(out / "cohort" / "patients.parquet").set_index("patient_id")
    assert not patients.loc[first[:12], "has_conch"] and patients.loc[first[:12], "has_uni"]


def test_config_typo_fails_fast_with_the_key_path(tmp_path):
    config = write_config(tmp_path)
    config["patches"]["patch_mmp"] = 0.5
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    proc = snakemake(tmp_path, "-n", check=False)
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert "config key 'patches'" in output and "'patch_mmp' was unexpected" in output


def test_workflow_lint_is_clean(tmp_path):
    write_config(tmp_path)
    proc = snakemake(tmp_path, "--lint", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Lints for rule" not in proc.stdout + proc.stderr


def test_a_failed_jobs_message_reaches_the_console(tmp_path):
    config = write_config(tmp_path)
    (tmp_path / "labels.csv").write_text("case_id;survival_months;censorship\nP1;3;0\n")
    config["cohort"]["labels"]["path"] = str(tmp_path / "labels.csv")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    proc = snakemake(tmp_path, "--cores", "1", f"results/{config['cohort']['name']}/cohort/labels.parquet", check=False)
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert "rule ingest_labels failed" in output and "lego ingest-labels: error:" in output
    assert "semicolon-delimited" in output


def test_duplicate_config_keys_stop_the_workflow(tmp_path):
    write_config(tmp_path)
    text = (tmp_path / "config.yaml").read_text()
    (tmp_path / "config.yaml").write_text(text + "results_dir: elsewhere\n")
    proc = snakemake(tmp_path, "-n", check=False)
    assert proc.returncode != 0 and "key 'results_dir' appears twice" in proc.stdout + proc.stderr


def test_a_results_dir_with_spaces_and_quotes_works(tmp_path):
    config = write_config(tmp_path, results_dir="my results/it's here")
    text = (tmp_path / "config.yaml").read_text().replace("results/demo_input", "my results/it's here/demo_input")
    (tmp_path / "config.yaml").write_text(text)
    out = f"my results/it's here/{config['cohort']['name']}"
    targets = [f"{out}/cohort/folds.parquet", f"{out}/modalities/rna.parquet"]
    snakemake(tmp_path, "--cores", "2", *targets)
    assert all((tmp_path / t).exists() for t in targets)


def test_models_of_one_demo_cohort_predict_a_second_one(demo_run, tmp_path):
    """External validation end to end: a freshly generated cohort (another seed and ID prefix)
    is prepared by the same rules and scored by the first run's trained models, every fold."""
    trained = demo_run / "results" / "demo"
    config = write_config(tmp_path)
    config["demo"].update({"seed": 11, "prefix": "DEMB"})
    config["predict"] = {"from": str(trained), "models": ["merge-tuned", "block-rna"]}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    snakemake(tmp_path, "--cores", "2")
    out = tmp_path / "results" / "demo"
    assert not (out / "blocks").exists(), "nothing is trained in predict mode"
    summary = pd.read_table(out / "predict" / "summary.tsv").set_index(["model", "metric"])
    for model in ("merge-tuned", "block-rna"):
        assert summary.loc[(model, "c_index"), "folds"] == 2 and 0 <= summary.loc[(model, "c_index"), "mean"] <= 1
        preds = pd.read_parquet(out / "predict" / model / "fold0" / "predictions.parquet")
        assert preds["patient_id"].str.startswith("DEMB").all() and preds["risk"].notna().all()
    labels = pd.read_parquet(out / "cohort" / "labels.parquet")
    merged = pd.read_parquet(out / "predict" / "merge-tuned" / "fold1" / "predictions.parquet")
    assert len(merged) == len(labels), "a merge predicts every patient with at least one of its modalities"
