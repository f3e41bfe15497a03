"""What evaluate, predict and ensemble accept or refuse: labels, data tables and features that do not
fit the model, and the leakage refusals (a model is never scored on patients it was fitted or
validated on, nor on another split of its cohort).
Most cases are regressions found by the adversarial
(hostile-input) sweeps: each was a traceback, a silently wrong result or the wrong cause."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from lego.cli import main
from tests.helpers import SMALL, _evaluated, _wsi_block, cohort, lego_fails, slide_cohort, trained_blocks


def test_a_trained_merge_predicts_a_new_cohort_with_external_metrics(tmp_path, capsys):
    from lego.cli import main
    from lego.steps.merging import merge

    (tmp_path / "train").mkdir()
    (tmp_path / "new").mkdir()
    _, dirs = trained_blocks(tmp_path / "train", {**SMALL, "encoder": "coxnet", "epochs": 5}, n=200)
    merge(dirs, "harmonic", "slerp", str(tmp_path / "merge"))
    new = cohort(tmp_path / "new", n=200, seed=5, prefix="N")  # a second, freshly drawn cohort: no folds needed
    data = [f"{m}={new[m]}" for m in ("zeta", "alpha")]
    assert main(["predict", "--model-dir", str(tmp_path / "merge"), "--data", *data, "--labels", str(new["labels"]),
                 "--out-dir", str(tmp_path / "ext")]) == 0
    result = json.loads((tmp_path / "ext" / "metrics.json").read_text())
    assert result["n"] == 200 and result["labelled"] == 200 and result["external"]["c_index"] > 0.6
    pred = pd.read_parquet(tmp_path / "ext" / "predictions.parquet")
    assert len(pred) == 200 and pred["risk"].notna().all()
    # Without labels: predictions only. A table lacking a trained-on column: one clear line.
    assert main(["predict", "--model-dir", dirs[0], "--data", f"zeta={new['zeta']}", "--out-dir", str(tmp_path / "p")]) == 0
    pd.read_parquet(new["zeta"]).drop(columns="zeta0").to_parquet(tmp_path / "short.parquet")
    capsys.readouterr()
    assert main(["predict", "--model-dir", dirs[0], "--data", f"zeta={tmp_path / 'short.parquet'}",
                 "--out-dir", str(tmp_path / "q")]) == 2
    assert "lacks 1 feature(s)" in capsys.readouterr().err


def test_predict_names_a_fold_model_by_the_model(tmp_path):
    p, dirs = trained_blocks(tmp_path, names=("zeta",))
    fold_dir = tmp_path / "blocks_run" / "blocks" / "zeta" / "fold0"
    fold_dir.parent.mkdir(parents=True)
    shutil.copytree(dirs[0], fold_dir)
    assert main(["predict", "--model-dir", str(fold_dir), "--data", f"zeta={p['zeta']}", "--out-dir", str(tmp_path / "p")]) == 0
    assert json.loads((tmp_path / "p" / "metrics.json").read_text())["model"] == "block-zeta"


def test_a_patient_with_no_value_in_a_hand_made_table_is_not_scored(tmp_path):
    p, dirs = trained_blocks(tmp_path, {**SMALL, "epochs": 1}, names=("zeta",))
    table = pd.read_parquet(p["zeta"])
    empty = table["patient_id"].iloc[0]
    table.loc[table["patient_id"] == empty, [c for c in table.columns if c != "patient_id"]] = np.nan
    table.to_parquet(tmp_path / "new.parquet")
    assert main(["predict", "--model-dir", dirs[0], "--data", f"zeta={tmp_path / 'new.parquet'}",
                 "--out-dir", str(tmp_path / "p")]) == 0
    scored = pd.read_parquet(tmp_path / "p" / "predictions.parquet")["patient_id"]
    assert empty not in set(scored) and len(scored) == len(table) - 1


def test_a_trained_column_empty_in_a_new_cohort_is_an_error(tmp_path, capsys):
    p, dirs = trained_blocks(tmp_path, names=("zeta",))
    new = pd.read_parquet(p["zeta"])
    new["zeta0"] = np.nan
    new.to_parquet(tmp_path / "new.parquet")
    lego_fails(["predict", "--model-dir", dirs[0], "--data", f"zeta={tmp_path / 'new.parquet'}",
                "--out-dir", str(tmp_path / "p")], capsys, "['zeta0'] are empty in all 90 rows")


def _categorical_block(tmp_path, stage_values):
    p = cohort(tmp_path)
    table = pd.read_parquet(p["alpha"])
    table["stage"] = pd.array(stage_values, dtype="string")
    table.to_parquet(tmp_path / "cat.parquet")
    from lego.steps.block_training import train_block

    train_block("alpha", "tabular", str(tmp_path / "cat.parquet"), labels=str(p["labels"]), folds=str(p["folds"]), fold=0, task="survival",
                spec=SMALL, out_dir=str(tmp_path / "blk"), categorical=["stage"], device="cpu")
    return table


def test_categories_spelled_differently_are_an_error_and_a_missing_one_no_crash(tmp_path, capsys):
    values = [str(1 + i % 3) for i in range(90)]
    values[5] = None  # a missing category used to crash training (boolean value of NA is ambiguous)
    table = _categorical_block(tmp_path, values)
    spelled = table.assign(stage=table["stage"].map(lambda v: None if pd.isna(v) else f"{v}.0"))
    spelled.to_parquet(tmp_path / "spelled.parquet")
    lego_fails(["predict", "--model-dir", str(tmp_path / "blk"), "--data", f"alpha={tmp_path / 'spelled.parquet'}",
                "--out-dir", str(tmp_path / "p")], capsys, "categorical column 'stage'", "write the categories as in training")
    assert main(["predict", "--model-dir", str(tmp_path / "blk"), "--data", f"alpha={tmp_path / 'cat.parquet'}",
                 "--out-dir", str(tmp_path / "ok")]) == 0


def test_predict_with_class_labels_the_model_does_not_know(tmp_path, capsys):
    from lego.steps.block_training import train_block

    p = cohort(tmp_path)
    lab = pd.read_parquet(p["labels"])
    lab = pd.DataFrame({"patient_id": lab["patient_id"], "label": np.where(lab["time"] > lab["time"].median(), "1", "0")})
    lab.to_parquet(tmp_path / "cls.parquet")
    train_block("zeta", "tabular", str(p["zeta"]), labels=str(tmp_path / "cls.parquet"), folds=str(p["folds"]), fold=0, task="classification",
                spec=SMALL, out_dir=str(tmp_path / "blk"), device="cpu")
    lab.assign(label=lab["label"] + ".0").to_parquet(tmp_path / "ext.parquet")
    lego_fails(["predict", "--model-dir", str(tmp_path / "blk"), "--data", f"zeta={p['zeta']}", "--labels",
                str(tmp_path / "ext.parquet"), "--out-dir", str(tmp_path / "p")], capsys,
               "class label(s) ['0.0', '1.0'] are not among the model's classes")


def test_evaluate_refuses_labels_of_another_task_or_missing_test_patients(tmp_path, block, capsys):
    lab = pd.read_parquet(block["labels"])
    folds = pd.read_parquet(block["folds"])
    test = folds[(folds["fold"] == 0) & (folds["subset"] == "test")]["patient_id"]
    lab[~lab["patient_id"].isin(test)].to_parquet(tmp_path / "notest.parquet")
    pd.DataFrame({"patient_id": lab["patient_id"], "label": "a"}).to_parquet(tmp_path / "cls.parquet")
    base = ["evaluate", "--model-dir", str(tmp_path / "blk"), "--data", f"zeta={block['zeta']}", "--folds",
            str(block["folds"]), "--out-dir", str(tmp_path / "ev"), "--name", "block-zeta", "--labels"]
    lego_fails([*base, str(tmp_path / "cls.parquet")], capsys, "a survival model needs outcome column(s)")
    lego_fails([*base, str(tmp_path / "notest.parquet")], capsys, f"{len(test)} of the", "have no label")


def test_predict_refuses_labels_that_match_no_predicted_patient(tmp_path, block, capsys):
    z = pd.read_parquet(block["zeta"]).assign(patient_id=lambda d: "N" + d["patient_id"].str[1:])
    z.to_parquet(tmp_path / "new.parquet")
    lego_fails(["predict", "--model-dir", str(tmp_path / "blk"), "--data", f"zeta={tmp_path / 'new.parquet'}",
                "--labels", str(block["labels"]), "--out-dir", str(tmp_path / "pr")], capsys,
               "none of its patients is among the 90 predicted")


def test_a_data_table_sharing_no_patient_with_the_fold_is_refused(tmp_path, capsys):
    p, dirs = trained_blocks(tmp_path, {**SMALL, "epochs": 1})
    renamed = pd.read_parquet(p["zeta"]).assign(patient_id=lambda t: t["patient_id"].str.replace("P", "Q"))
    renamed.to_parquet(tmp_path / "zeta_q.parquet")
    assert main(["merge", "--blocks", *dirs, "--out-dir", str(tmp_path / "m")]) == 0
    lego_fails(["evaluate", "--model-dir", str(tmp_path / "m"), "--name", "merge", "--data",
                f"zeta={tmp_path / 'zeta_q.parquet'}", f"alpha={p['alpha']}", "--labels", str(p["labels"]),
                "--folds", str(p["folds"]), "--out-dir", str(tmp_path / "ev")], capsys,
               "none of its 90 patients (e.g. Q000) is in the fold")


def test_a_slide_block_refuses_features_of_another_encoder_of_the_same_width(tmp_path, capsys):
    """UNI, Phikon-v2 and ResNet50-trunc are all 1024-d: the width cannot tell them apart."""
    from lego.data.cohort_table import feature_manifest
    from lego.slides.features import read_feature_bag, write_feature_bag

    d = slide_cohort(tmp_path)
    _wsi_block(d)
    assert json.loads((d / "blk" / "config.json").read_text())["preprocess"]["features"]["encoder"] == "toy"
    manifest = pd.read_parquet(d / "wsi.parquet")
    other = {}
    for sid, path in zip(manifest["slide_id"], manifest["features"]):
        bag = read_feature_bag(path)
        other[sid] = str(d / f"{sid}.other.h5")
        write_feature_bag(other[sid], bag.features, bag.coords, {"encoder": "other_enc"}, bag.coords_attrs)
    slides = manifest[["slide_id", "patient_id"]].assign(path="")
    feature_manifest(slides, other).to_parquet(d / "other.parquet")
    lego_fails(["predict", "--model-dir", str(d / "blk"), "--data", f"wsi={d / 'other.parquet'}", "--out-dir",
                str(d / "p")], capsys, "features of encoder 'other_enc'", "where 'toy'")
    lego_fails(["heatmaps", "--model-dir", str(d / "blk"), "--manifest", str(d / "other.parquet"), "--folds",
                str(d / "folds.parquet"), "--out-dir", str(d / "h")], capsys, "features of encoder 'other_enc'")


def test_the_ensemble_refuses_blocks_with_different_bin_edges(tmp_path, capsys):
    p = cohort(tmp_path)
    metrics = []
    for k, edges in enumerate(([0, 5.0, 20.0, np.inf], [0, 1.0, 2.0, np.inf])):
        d = tmp_path / f"b{k}"
        d.mkdir()
        (d / "metrics.json").write_text(json.dumps({"model": f"block-{k}", "fold": 0, "task": "survival",
                                                    "bins": [e if np.isfinite(e) else "inf" for e in edges]}))
        pd.DataFrame({"patient_id": ["P000"], "subset": ["test"], "risk": [0.1]}).to_parquet(d / "predictions.parquet")
        metrics.append(str(d / "metrics.json"))
    lego_fails(["ensemble", "--block-metrics", *metrics, "--labels", str(p["labels"]), "--folds", str(p["folds"]),
                "--out-dir", str(tmp_path / "e")], capsys, "different survival bin edges")


def test_an_ensemble_given_one_model_name_twice_is_refused(tmp_path, capsys):
    p, dirs = trained_blocks(tmp_path, {**SMALL, "epochs": 1})
    common = ["--labels", str(p["labels"]), "--folds", str(p["folds"])]
    for d, m in zip(dirs, ("zeta", "alpha")):
        assert main(["evaluate", "--model-dir", d, "--name", "zeta", "--data", f"{m}={p[m]}", *common,
                     "--out-dir", str(tmp_path / f"ev_{m}")]) == 0
    metrics = [str(tmp_path / f"ev_{m}" / "metrics.json") for m in ("zeta", "alpha")]
    lego_fails(["ensemble", "--block-metrics", *metrics, *common, "--out-dir", str(tmp_path / "ens")], capsys,
               "model 'zeta' more than once")


# ----------------------------------------------------------------- leakage refusals


def test_a_model_is_never_scored_on_patients_it_was_fitted_or_validated_on(tmp_path, capsys):
    """A folds table other than the training one (or the training cohort's labels given to
    predict as an "external" cohort) would put training patients into the metrics: refused."""
    from lego.cli import main
    from lego.data.folds import make_folds

    p, dirs = trained_blocks(tmp_path, {**SMALL, "encoder": "linear", "epochs": 2}, names=("zeta",))
    labels = pd.read_parquet(p["labels"])
    make_folds(labels, seeds=[7]).to_parquet(tmp_path / "other_folds.parquet")
    base = ["--model-dir", dirs[0], "--data", f"zeta={p['zeta']}", "--labels", str(p["labels"])]
    capsys.readouterr()
    assert main(["evaluate", *base, "--folds", str(tmp_path / "other_folds.parquet"), "--name", "b",
                 "--out-dir", str(tmp_path / "ev")]) == 2
    err = capsys.readouterr().err
    assert "were used to fit or validate this model" in err and "folds table it was trained with" in err
    assert not (tmp_path / "ev" / "metrics.json").exists()
    assert main(["evaluate", *base, "--folds", str(p["folds"]), "--name", "b", "--out-dir", str(tmp_path / "ok")]) == 0
    assert main(["predict", *base, "--out-dir", str(tmp_path / "pr")]) == 2
    assert "external metrics on them would be leaked" in capsys.readouterr().err


def _other_folds(p, tmp_path):
    from lego.data.folds import make_folds

    make_folds(pd.read_parquet(p["labels"]), n_folds=2, seeds=[77, 78]).to_parquet(tmp_path / "other_folds.parquet")
    return str(tmp_path / "other_folds.parquet")


def test_fuse_merge_tuned_and_ensemble_refuse_another_split_of_the_cohort(tmp_path, capsys):
    p, dirs, metrics = _evaluated(tmp_path)
    other = _other_folds(p, tmp_path)
    data = ["--data", f"zeta={p['zeta']}", f"alpha={p['alpha']}", "--labels", str(p["labels"]), "--folds", other]
    lego_fails(["fuse", "--blocks", *dirs, *data, "--spec", '{"epochs": 1}', "--out-dir", str(tmp_path / "fu"),
                "--device", "cpu"], capsys, "use the folds table")
    lego_fails(["merge-tuned", "--blocks", *dirs, *data, "--out-dir", str(tmp_path / "mt")], capsys, "use the folds table")
    lego_fails(["ensemble", "--block-metrics", *metrics, "--labels", str(p["labels"]), "--folds", other,
                "--out-dir", str(tmp_path / "en")], capsys, "evaluated on other test/validation patients than fold 0")


def test_one_evaluate_call_scores_several_folds_as_separate_calls_do(tmp_path, capsys):
    """The workflow scores all folds of a model in one process (a job's start costs more than a
    fold's scoring): each fold's files must be those a call for that fold alone writes, an output
    folder per model folder is required, and a folder named for another fold than its model's is refused."""
    from lego.steps.block_training import train_block

    p = cohort(tmp_path)
    dirs = [str(tmp_path / "blk" / f"fold{k}") for k in (0, 1)]
    for k, d in enumerate(dirs):
        train_block("zeta", "tabular", str(p["zeta"]), labels=str(p["labels"]), folds=str(p["folds"]), fold=k,
                    task="survival", spec={**SMALL, "epochs": 1}, out_dir=d, device="cpu")
    common = ["--name", "block-zeta", "--data", f"zeta={p['zeta']}", "--labels", str(p["labels"]), "--folds",
              str(p["folds"])]
    together = [str(tmp_path / "together" / f"fold{k}") for k in (0, 1)]
    assert main(["evaluate", "--model-dir", *dirs, *common, "--out-dir", *together]) == 0
    for k, d in enumerate(dirs):
        alone = tmp_path / "alone" / f"fold{k}"
        assert main(["evaluate", "--model-dir", d, *common, "--out-dir", str(alone)]) == 0
        got, want = (json.loads((Path(t) / "metrics.json").read_text()) for t in (together[k], alone))
        assert got == want and got["fold"] == k
        pd.testing.assert_frame_equal(pd.read_parquet(Path(together[k]) / "predictions.parquet"),
                                      pd.read_parquet(alone / "predictions.parquet"))
    lego_fails(["evaluate", "--model-dir", *dirs, *common, "--out-dir", together[0]], capsys,
               "--model-dir gives 2 folder(s) and --out-dir 1")
    lego_fails(["evaluate", "--model-dir", *dirs, *common, "--out-dir", together[0], together[0]], capsys,
               "same path")
    lego_fails(["evaluate", "--model-dir", *dirs, *common, "--out-dir", *reversed(together)], capsys,
               "is named for fold 1 but", "is the model of fold 0")
