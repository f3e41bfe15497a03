"""The method's raison d'être on a small synthetic task: the survival signal is split across two
modalities, so LegoMerge and LegoFuse (which see both) must beat each single-modality block."""

import json

import numpy as np
import pandas as pd
import pytest

from lego.data.folds import make_folds
from lego.errors import InputError
from lego.evaluation.summary import summarise
from lego.steps.block_training import train_block
from lego.steps.fusing import fuse
from lego.steps.inference import evaluate
from lego.steps.merging import merge

SPEC = {"epochs": 20, "lr": 1e-3, "patience": 6, "batch_size": 32, "latent_rows": 8, "latent_dim": 32,
        "heads": 2, "head_dim": 16, "encoder_width": 64, "dropout": 0.1}


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    d = tmp_path_factory.mktemp("split")
    rng = np.random.default_rng(0)
    n = 800
    u, v = rng.normal(size=n), rng.normal(size=n)
    ids = [f"P{i:04d}" for i in range(n)]
    t_event = rng.exponential(20 / np.exp(1.5 * u + 1.5 * v))
    t_cens = rng.uniform(5, 60, n)
    labels = pd.DataFrame({"patient_id": ids, "time": np.minimum(t_event, t_cens), "event": (t_event <= t_cens).astype(int)})
    labels.to_parquet(d / "labels.parquet")
    noise = lambda k: rng.normal(size=(n, k))  # noqa: E731
    a = pd.DataFrame(np.column_stack([u + 0.2 * rng.normal(size=n), noise(7)]), columns=[f"a{i}" for i in range(8)])
    b = pd.DataFrame(np.column_stack([v + 0.2 * rng.normal(size=n), noise(7)]), columns=[f"b{i}" for i in range(8)])
    a.insert(0, "patient_id", ids)
    b.insert(0, "patient_id", ids)
    a.drop(index=range(0, n, 10)).to_parquet(d / "a.parquet")  # 10 % miss modality a
    b.to_parquet(d / "b.parquet")
    # One large test set (240 patients) keeps the comparison well above the c-index's sampling noise.
    make_folds(labels, n_folds=1, fractions=(0.5, 0.2, 0.3)).to_parquet(d / "folds.parquet")
    return d


def test_merge_and_fuse_beat_every_single_block(task):
    d = task
    data = {"a": str(d / "a.parquet"), "b": str(d / "b.parquet")}
    metrics = []
    for fold in (0,):
        dirs = []
        for m in ("a", "b"):
            out = d / f"block-{m}" / f"fold{fold}"
            train_block(m, "tabular", data[m], labels=str(d / "labels.parquet"), folds=str(d / "folds.parquet"), fold=fold,
                        task="survival", spec=SPEC, out_dir=str(out))
            dirs.append(str(out))
        merge(dirs, "harmonic", "slerp", str(d / "merge" / f"fold{fold}"))
        # The default fuse: the tuned merge, fine-tuned.
        fuse(dirs, data, labels=str(d / "labels.parquet"), folds=str(d / "folds.parquet"), spec={"epochs": 2, "lr": 1e-4},
             out_dir=str(d / "fuse" / f"fold{fold}"))
        for name in ("block-a", "block-b", "merge", "fuse"):
            out = d / "eval" / name / f"fold{fold}"
            evaluate(str(d / name / f"fold{fold}"), data, labels=str(d / "labels.parquet"), folds=str(d / "folds.parquet"), out_dir=str(out), name=name)
            metrics.append(str(out / "metrics.json"))
    tables = summarise(metrics, d / "summary", n_boot=300)
    table = tables["metrics"].query("metric == 'c_index'").set_index("model")
    blocks = table.loc[["block-a", "block-b"], "test_mean"]
    assert blocks.min() > 0.62, f"each block learns its half of the signal: {blocks.to_dict()}"
    assert table.loc["merge", "test_mean"] > blocks.max() + 0.03, table.to_string()
    assert table.loc["fuse", "test_mean"] > blocks.max() + 0.03, table.to_string()
    # Paired comparisons on the test patients both models predict (block a: only those with a).
    comp = tables["comparisons"].set_index(["model", "reference"])
    assert comp.loc[("merge", "block-a"), "n_paired"] == table.loc["block-a", "n_test"] < 240
    for model in ("merge", "fuse"):
        for block in ("block-a", "block-b"):
            row = comp.loc[(model, block)]
            assert row["paired_difference"] > 0.03 and row["ci_low"] > 0, tables["comparisons"].to_string()
    m = json.loads((d / "eval" / "merge" / "fold0" / "metrics.json").read_text())
    assert m["test"]["n"] == 240 and m["test_all_modalities"] < 240, "patients missing modality a are predicted too"


def test_zero_training_patients_names_modality_and_fold(task, tmp_path):
    d = task
    folds = pd.read_parquet(d / "folds.parquet")
    only_test = folds[(folds.fold == 0) & (folds.subset != "train")]["patient_id"]  # noqa: F841 (read by query)
    pd.read_parquet(d / "a.parquet").query("patient_id in @only_test").to_parquet(tmp_path / "a.parquet")
    with pytest.raises(InputError, match="modality 'a', fold 0: modality 'a' has zero training patients"):
        train_block("a", "tabular", str(tmp_path / "a.parquet"), labels=str(d / "labels.parquet"),
                    folds=str(d / "folds.parquet"), fold=0, task="survival", spec=SPEC, out_dir=str(tmp_path / "m"))


def test_a_block_evaluated_on_a_different_feature_set(task, tmp_path):
    d = task
    train_block("a", "tabular", str(d / "a.parquet"), labels=str(d / "labels.parquet"), folds=str(d / "folds.parquet"), fold=0, task="survival",
                spec={**SPEC, "epochs": 1}, out_dir=str(tmp_path / "m"))
    pd.read_parquet(d / "a.parquet").drop(columns=["a3"]).to_parquet(tmp_path / "other.parquet")
    with pytest.raises(InputError, match="different feature set"):
        evaluate(str(tmp_path / "m"), {"a": str(tmp_path / "other.parquet")}, labels=str(d / "labels.parquet"),
                 folds=str(d / "folds.parquet"), out_dir=str(tmp_path / "e"), name="block-a")


def test_classification_task_reports_auc_from_scores(tmp_path):
    rng = np.random.default_rng(1)
    n = 300
    u, v = rng.normal(size=n), rng.normal(size=n)
    ids = [f"P{i:04d}" for i in range(n)]
    score = u + v + 0.3 * rng.normal(size=n)
    grade = np.array(["G1", "G2", "G3"])[np.searchsorted(np.quantile(score, [1 / 3, 2 / 3]), score)]
    labels = pd.DataFrame({"patient_id": ids, "label": grade})
    labels.to_parquet(tmp_path / "labels.parquet")
    for name, factor in (("a", u), ("b", v)):
        df = pd.DataFrame(np.column_stack([factor, rng.normal(size=(n, 5))]), columns=[f"{name}{i}" for i in range(6)])
        df.insert(0, "patient_id", ids)
        df.to_parquet(tmp_path / f"{name}.parquet")
    make_folds(labels, n_folds=1, fractions=(0.5, 0.2, 0.3)).to_parquet(tmp_path / "folds.parquet")
    data = {m: str(tmp_path / f"{m}.parquet") for m in "ab"}
    dirs = []
    for m in "ab":
        train_block(m, "tabular", data[m], labels=str(tmp_path / "labels.parquet"), folds=str(tmp_path / "folds.parquet"), fold=0,
                    task="classification", spec=SPEC, out_dir=str(tmp_path / m))
        dirs.append(str(tmp_path / m))
    merge(dirs, "harmonic", "slerp", str(tmp_path / "merge"))
    results = {}
    for name, d in (("block-a", dirs[0]), ("block-b", dirs[1]), ("merge", str(tmp_path / "merge"))):
        results[name] = evaluate(d, data, labels=str(tmp_path / "labels.parquet"), folds=str(tmp_path / "folds.parquet"),
                                 out_dir=str(tmp_path / "e" / name), name=name)
    for r in results.values():
        assert r["task"] == "classification" and 0.5 < r["test"]["auc"] <= 1.0
    preds = pd.read_parquet(tmp_path / "e" / "merge" / "predictions.parquet")
    np.testing.assert_allclose(preds[["p_G1", "p_G2", "p_G3"]].sum(axis=1), 1.0, rtol=1e-5)
