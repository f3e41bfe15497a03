"""Model fitting protocol on a small synthetic cohort: fold files, LegoFuse reload and fallback,
validation-chosen blocks and merges (issue: MM-Lego that earns its place)."""

from __future__ import annotations

import json

from pathlib import Path
import numpy as np
import pandas as pd
import pytest
import torch

from lego.data.fold_data import fold_ids, make_targets
from lego.data.folds import make_folds, n_folds_in
from lego.errors import InputError
from lego.models import io as model_io
from lego.models.fitted import COX_WEIGHTS, _mix_weight
from lego.stages import _fold_modalities, fuse, train_block
from lego.train import TrainConfig, evaluate_loss


def cohort(tmp_path, n=90, seed=0, prefix="P"):
    """Labels, two tabular modalities carrying signal, and 70/15/15 folds, as parquet files."""
    rng = np.random.default_rng(seed)
    ids = [f"{prefix}{i:03d}" for i in range(n)]
    a, b = rng.normal(size=(n, 5)), rng.normal(size=(n, 4))
    hazard = np.exp(0.9 * a[:, 0] + 0.7 * b[:, 1])
    time = rng.exponential(30 / hazard)
    cens = rng.exponential(60, n)
    labels = pd.DataFrame({"patient_id": ids, "time": np.minimum(time, cens), "event": (time <= cens).astype(int)})
    paths = {"labels": tmp_path / "labels.parquet", "folds": tmp_path / "folds.parquet"}
    labels.to_parquet(paths["labels"])
    make_folds(labels, n_folds=2).to_parquet(paths["folds"])
    for name, x in (("zeta", a), ("alpha", b)):  # training order zeta -> alpha; sorted order differs
        df = pd.DataFrame(x, columns=[f"{name}{j}" for j in range(x.shape[1])]).astype(np.float32)
        df.insert(0, "patient_id", ids)
        paths[name] = tmp_path / f"{name}.parquet"
        df.to_parquet(paths[name])
    return paths


SMALL = {"latent_rows": 4, "latent_dim": 16, "encoder_width": 16, "heads": 2, "head_dim": 8, "epochs": 3, "batch_size": 16}


def test_reloaded_fuse_reproduces_its_best_validation_loss(tmp_path):
    p = cohort(tmp_path)
    dirs = []
    for m in ("zeta", "alpha"):
        d = tmp_path / "blocks" / m
        train_block(m, "tabular", str(p[m]), str(p["labels"]), str(p["folds"]), 0, "survival", SMALL, str(d), device="cpu")
        dirs.append(str(d))
    data = {m: str(p[m]) for m in ("zeta", "alpha")}
    spec = {"epochs": 3, "lr": 1e-3, "batch_size": 16, "patience": 3, "freeze": []}
    result = fuse(dirs, data, str(p["labels"]), str(p["folds"]), spec, str(tmp_path / "fuse"), "cpu")
    model, config = model_io.load(tmp_path / "fuse")
    assert config["order"] == ["zeta", "alpha"] and list(model.modalities) == ["zeta", "alpha"]
    ids = fold_ids(pd.read_parquet(p["folds"]), 0)
    mods = _fold_modalities(config["blocks"], data)
    targets = make_targets(pd.read_parquet(p["labels"]), ids["train"], "survival", bins=config["bins"])
    val_ids = [i for i in ids["val"] if any(i in m.per_patient for m in mods.values())]
    loss = evaluate_loss(model, val_ids, mods, targets, TrainConfig(batch_size=16), torch.device("cpu"))
    assert loss == pytest.approx(result["best_val_loss"], rel=1e-5)
    # The un-tuned chain was a candidate: the history starts at epoch -1 and nothing beats the best.
    hist = json.loads((tmp_path / "fuse" / "history.json").read_text())["history"]
    assert hist[0]["epoch"] == -1 and min(h["val_loss"] for h in hist) == pytest.approx(result["best_val_loss"])


def test_a_fuse_config_without_order_is_refused(tmp_path):
    with pytest.raises(InputError, match="no block 'order'"):
        model_io.block_order({"kind": "fuse", "blocks": {"a": {}, "b": {}}})


# ----------------------------------------------------------------- folds from files

def labels_for(ids):
    return pd.DataFrame({"patient_id": ids, "time": np.arange(len(ids)) + 1.0, "event": [i % 2 for i in range(len(ids))]})


def write_mcat_splits(folder, ids, k=3):
    folder.mkdir()
    for f in range(k):
        test = ids[f::k]
        train = [i for i in ids if i not in test]
        col = pd.Series(test + [None] * (len(train) - len(test)))
        pd.DataFrame({"train": train, "val": col}).to_csv(folder / f"splits_{f}.csv")


def test_mcat_split_files_test_their_val_column_and_carve_validation_from_train(tmp_path, caplog):
    ids = [f"P{i:02d}" for i in range(40)]
    write_mcat_splits(tmp_path / "splits", ids + ["GHOST"])
    labels = labels_for(ids + ["NOSPLIT"])
    assert n_folds_in(tmp_path / "splits") == 3
    folds = make_folds(labels, "file", path=tmp_path / "splits", stratify=True, fractions=(0.7, 0.15, 0.15))
    assert "1 patient(s) in the split file have no labels" in caplog.text and "GHOST" in caplog.text
    assert "1 labelled patient(s) are in no split" in caplog.text
    for f in range(3):
        sub = folds[folds.fold == f]
        assert set(sub.loc[sub.subset == "test", "patient_id"]) == set((ids + ["GHOST"])[f::3]) - {"GHOST"}
        assert (sub.subset == "val").sum() > 0 and not sub.patient_id.duplicated().any()
    again = make_folds(labels, "file", path=tmp_path / "splits", stratify=True)
    pd.testing.assert_frame_equal(folds, again)  # seeded


def test_split_files_with_a_test_column_keep_their_validation(tmp_path):
    ids = [f"P{i:02d}" for i in range(30)]
    (tmp_path / "s").mkdir()
    pd.DataFrame({"train": ids[:20], "val": ids[20:25] + [None] * 15, "test": ids[25:] + [None] * 15}).to_csv(tmp_path / "s" / "splits_0.csv")
    folds = make_folds(labels_for(ids), "file", path=tmp_path / "s")
    assert sorted(folds.loc[folds.subset == "val", "patient_id"]) == ids[20:25]
    assert sorted(folds.loc[folds.subset == "test", "patient_id"]) == ids[25:]


def test_long_fold_table_and_its_errors(tmp_path):
    ids = [f"P{i:02d}" for i in range(12)]
    rows = [(p, 0, "train" if i < 8 else "val" if i < 10 else "test") for i, p in enumerate(ids)]
    path = tmp_path / "folds.csv"
    pd.DataFrame(rows, columns=["patient_id", "fold", "subset"]).to_csv(path, index=False)
    assert n_folds_in(path) == 1
    assert len(make_folds(labels_for(ids), "file", path=path)) == 12
    pd.DataFrame(rows + [("P00", 0, "test")], columns=["patient_id", "fold", "subset"]).to_csv(path, index=False)
    with pytest.raises(InputError, match="P00 appears in more than one subset of fold 0"):
        make_folds(labels_for(ids), "file", path=path)
    with pytest.raises(InputError, match="no splits_<k>.csv"):
        n_folds_in(tmp_path)


def test_repeated_kfold_tests_every_patient_once_per_repeat():
    labels = labels_for([f"P{i:02d}" for i in range(50)])
    folds = make_folds(labels, "kfold", n_folds=5, repeats=3, stratify=True)
    assert sorted(folds.fold.unique()) == list(range(15))
    test = folds[folds.subset == "test"]
    for r in range(3):
        rep = test[test.fold.between(5 * r, 5 * r + 4)]
        assert sorted(rep.patient_id) == sorted(labels.patient_id)
    assert set(test[test.fold < 5].groupby("patient_id").fold.first().items()) != set(
        (p, f - 5) for p, f in test[test.fold.between(5, 9)].groupby("patient_id").fold.first().items())


# ----------------------------------------------------------------- choices on validation

def test_grid_candidates_are_every_combination_in_a_stable_order():
    from lego.selection import grid_candidates

    assert grid_candidates({}) == [{}]
    grid = grid_candidates({"lr": [0.1, 0.2], "encoder": ["linear", "snn"]})
    assert grid == [{"encoder": "linear", "lr": 0.1}, {"encoder": "linear", "lr": 0.2},
                    {"encoder": "snn", "lr": 0.1}, {"encoder": "snn", "lr": 0.2}]


def test_select_candidate_keeps_the_best_validation_score(tmp_path):
    from lego.selection import select_candidate

    dirs = []
    for i, score in enumerate([0.61, None, 0.74, 0.74]):
        d = tmp_path / f"c{i}"
        d.mkdir()
        (d / "model.safetensors").write_bytes(bytes([i]))
        (d / "config.json").write_text("{}")
        (d / "history.json").write_text(json.dumps({"val_score": score, "best_val_loss": 1.0 - i / 10}))
        dirs.append(str(d))
    choice = select_candidate(dirs, str(tmp_path / "out"), rule="best")
    # c2 and c3 tie on the score; c3 has the lower validation loss.
    assert choice["chosen"] == "c3" and (tmp_path / "out" / "model.safetensors").read_bytes() == bytes([3])
    assert json.loads((tmp_path / "out" / "selection.json").read_text())["candidates"]["c1"] is None


def test_one_se_rule_keeps_the_first_candidate_within_one_standard_error():
    from lego.selection import choose

    scores, ses = [0.70, None, 0.74, 0.80], [0.05, None, 0.05, 0.08]
    assert choose(scores, ses, "best") == (3, None)
    index, threshold = choose(scores, ses, "one_se")
    # 0.70 is not within 0.80 - 0.08 but 0.74 is: the first listed within reach wins.
    assert index == 2 and threshold == pytest.approx(0.72)
    assert choose([0.70, 0.79, 0.80], [0.01, 0.01, 0.02], "one_se")[0] == 1
    assert choose([0.79, 0.70, 0.80], [0.01, 0.01, 0.02], "one_se")[0] == 0
    # Without a standard error the rule falls back to the best score.
    assert choose([0.6, 0.7], [None, None], "one_se") == (1, None)
    with pytest.raises(ValueError, match="one_se"):
        choose([0.6], [0.1], "median")


def test_validation_se_is_a_seeded_bootstrap_that_shrinks_with_more_patients():
    from lego.selection import validation_se

    rng = np.random.default_rng(0)

    def frames(n):
        risk = rng.normal(size=n)
        time = np.exp(-risk + rng.normal(size=n))
        pred = pd.DataFrame({"patient_id": [f"p{i}" for i in range(n)], "risk": risk})
        return pred, pd.DataFrame({"patient_id": pred.patient_id, "time": time, "event": rng.random(n) < 0.6})

    small, big = frames(40), frames(400)
    from lego.selection import _bootstrap_c
    from lego.survival.metrics import c_index

    whole = small[1].merge(small[0], on="patient_id")
    t, e, r = whole["time"].to_numpy(), whole["event"].to_numpy(bool), whole["risk"].to_numpy()
    assert _bootstrap_c(t, e, r, [np.arange(len(t))])[0] == pytest.approx(c_index(t, e, r), abs=1e-12)
    for _ in range(50):  # tied times and tied risks, counted as scikit-survival counts them
        t, e, r = rng.integers(1, 5, 12).astype(float), rng.random(12) < 0.6, rng.integers(0, 4, 12).astype(float)
        if e.any() and np.isfinite(c_index(t, e, r)):
            assert _bootstrap_c(t, e, r, [np.arange(12)])[0] == pytest.approx(c_index(t, e, r), abs=1e-12)
    assert validation_se(*small, "survival") == validation_se(*small, "survival")  # seeded
    assert validation_se(*big, "survival") < validation_se(*small, "survival")
    assert validation_se(small[0].iloc[:0], small[1], "survival") is None


def trained_blocks(tmp_path, spec=SMALL, names=("zeta", "alpha"), n=90):
    p = cohort(tmp_path, n)
    dirs = []
    for m in names:
        d = tmp_path / "blocks" / m
        train_block(m, "tabular", str(p[m]), str(p["labels"]), str(p["folds"]), 0, "survival", spec, str(d), device="cpu")
        dirs.append(str(d))
    return p, dirs


def test_tuned_merge_never_reads_test_patients_and_records_its_choice(tmp_path, monkeypatch):
    from lego import stages

    p, dirs = trained_blocks(tmp_path)
    data = {m: str(p[m]) for m in ("zeta", "alpha")}
    test_ids = set(fold_ids(pd.read_parquet(p["folds"]), 0)["test"])
    seen = []
    real_predict = stages.predict
    monkeypatch.setattr(stages, "predict", lambda m, c, mods, ids, **k: seen.extend(ids) or real_predict(m, c, mods, ids, **k))
    config = stages.merge_tuned(dirs, data, str(p["labels"]), str(p["folds"]), str(tmp_path / "tuned"), search=True)
    assert seen and not (set(seen) & test_ids), "only validation patients are predicted"
    tried = config["selection"]["tried"]
    assert {tuple(t["blocks"]) for t in tried} == {("zeta", "alpha")} and {t["method"] for t in tried} == {"harmonic", "mean", "readout"}
    assert set(config["weights"]) == set(config["scales"]) == set(config["order"])
    model, cfg = model_io.load(tmp_path / "tuned")  # the weights and scales rebuild the same model
    assert model.weights == [cfg["weights"][m] for m in cfg["order"]]
    plain = stages.merge_tuned(dirs, data, str(p["labels"]), str(p["folds"]), str(tmp_path / "plain"))
    assert [(t["blocks"], t["method"]) for t in plain["selection"]["tried"]] == [(["zeta", "alpha"], "mean"), (["zeta", "alpha"], "readout")]


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


def test_merge_weights_and_scales_change_the_merge():
    from lego.models.block import BlockConfig, LegoBlock
    from lego.models.merge import LegoMerge
    from lego.data.fold_data import ModalityTensors, collate
    from lego.selection import merge_weights

    assert merge_weights({"a": 0.7, "b": 0.45, "c": None}) == pytest.approx({"a": 0.2, "b": 0.01, "c": 0.01})
    torch.manual_seed(0)
    blocks = {m: LegoBlock(BlockConfig(3, 4, latent_rows=4, latent_dim=8, heads=1, head_dim=4, encoder_width=8, init_seed=i)).eval()
              for i, m in enumerate("ab")}
    mods = {m: ModalityTensors(m, "tabular", {"p": torch.randn(1, 3)}, {}, 3) for m in "ab"}
    inputs = collate(["p"], mods)
    plain = LegoMerge(blocks, "mean", "linear")(inputs)[1]
    only_a = LegoMerge(blocks, "mean", "linear", weights={"a": 1.0, "b": 1e-9})(inputs)[0]
    torch.testing.assert_close(only_a, blocks["a"].latent_from(*inputs["a"][:2]), rtol=1e-4, atol=1e-5)
    scaled = LegoMerge(blocks, "mean", "linear", scales={"a": 2.0, "b": 1.0})(inputs)[1]
    assert not torch.allclose(plain, scaled)
    with pytest.raises(ValueError, match="positive"):
        LegoMerge(blocks, weights={"a": 0.0, "b": 1.0})
    # readout: each latent through the merged head, logits averaged with the weights.
    readout = LegoMerge(blocks, "readout", "linear", weights={"a": 3.0, "b": 1.0})
    per = [readout.head(blocks[m].latent_from(*inputs[m][:2])) for m in "ab"]
    torch.testing.assert_close(readout(inputs)[1], (3 * per[0] + per[1]) / 4)
    only_b = collate(["q"], {"a": ModalityTensors("a", "tabular", {}, {}, 3), "b": ModalityTensors("b", "tabular", {"q": torch.randn(1, 3)}, {}, 3)})
    torch.testing.assert_close(readout(only_b)[1], readout.head(blocks["b"].latent_from(*only_b["b"][:2])))


def test_select_variant_uses_validation_only(tmp_path):
    from lego.stages import select_variant

    files = []
    for name, val, test in (("merge", 0.60, 0.90), ("merge-tuned", 0.70, 0.50), ("fuse", None, 0.99)):
        d = tmp_path / name
        d.mkdir()
        pd.DataFrame({"patient_id": ["p"], "subset": ["test"], "risk": [test]}).to_parquet(d / "predictions.parquet")
        (d / "metrics.json").write_text(json.dumps({"model": name, "fold": 0, "task": "survival",
                                                     "val": {"c_index": val}, "test": {"c_index": test}}))
        files.append(str(d / "metrics.json"))
    chosen = select_variant(files, str(tmp_path / "lego"))
    assert chosen["variant"] == "merge-tuned" and chosen["model"] == "lego" and chosen["test"]["c_index"] == 0.5
    assert pd.read_parquet(tmp_path / "lego" / "predictions.parquet")["risk"].tolist() == [0.5]


def _variant(tmp_path, name: str, risk_val: np.ndarray, time: np.ndarray, event: np.ndarray, test_c: float) -> str:
    from lego.evaluation.metrics import headline

    d = tmp_path / name
    d.mkdir(parents=True)
    val = pd.DataFrame({"patient_id": [f"p{i}" for i in range(len(time))], "subset": "val", "risk": risk_val,
                        "time": time, "event": event})
    val.to_parquet(d / "predictions.parquet")
    (d / "metrics.json").write_text(json.dumps({"model": name, "fold": 0, "task": "survival",
                                                 "val": {"c_index": headline(val, "survival")}, "test": {"c_index": test_c}}))
    return str(d / "metrics.json")


def test_select_variant_prefers_the_tuned_merge_unless_another_is_clearly_better(tmp_path):
    from lego.stages import select_variant

    rng = np.random.default_rng(0)
    n = 60
    time, event, signal = rng.exponential(10, n), rng.random(n) < 0.5, rng.normal(size=n)
    truth = -np.log(time)  # higher risk, shorter time
    files = [_variant(tmp_path, "fuse", truth + 1.5 * signal, time, event, 0.9),  # listed first: order is by name
             _variant(tmp_path, "merge-tuned", truth + 1.8 * signal, time, event, 0.6),
             _variant(tmp_path, "merge", truth + 3 * rng.normal(size=n), time, event, 0.5)]
    scores = {json.loads(open(f).read())["model"]: json.loads(open(f).read())["val"]["c_index"] for f in files}
    assert scores["fuse"] > scores["merge-tuned"] > scores["merge"]
    one_se = select_variant(files, str(tmp_path / "one_se"))
    assert one_se["variant"] == "merge-tuned" and one_se["threshold"] <= scores["merge-tuned"]
    assert one_se["variant_val_se"]["fuse"] > 0
    assert select_variant(files, str(tmp_path / "best"), rule="best")["variant"] == "fuse"
    # A clear gain on validation still wins.
    clear = [files[0], _variant(tmp_path / "noise", "merge-tuned", rng.normal(size=n), time, event, 0.6)]
    assert select_variant(clear, str(tmp_path / "clear"))["variant"] == "fuse"


def test_coxnet_encoder_is_fitted_in_fold_saved_and_reloaded(tmp_path):
    spec = {**SMALL, "encoder": "coxnet"}
    p, dirs = trained_blocks(tmp_path, spec, names=("zeta",), n=400)
    block, config = model_io.load(dirs[0])
    fitted = config["fitted_encoder"]
    assert fitted["nonzero"] >= 1 and fitted["alpha"] > 0
    coef = block.encoder.coef
    assert coef.abs().sum() > 0 and int((coef != 0).sum()) == fitted["nonzero"]
    # zeta0 carries the hazard in the synthetic cohort: it has the largest coefficient.
    assert int(coef.abs().argmax()) == 0
    hist = json.loads((tmp_path / "blocks" / "zeta" / "history.json").read_text())
    assert hist["val_score"] is not None and 0 <= hist["val_score"] <= 1



def test_a_fitted_score_block_keeps_the_predictors_ranking(tmp_path):
    # Noisy cohort, many epochs at a high learning rate: free, the block bends the one-number map.
    spec = {**SMALL, "encoder": "coxnet", "epochs": 30, "patience": 30, "lr": 0.01}
    p, dirs = trained_blocks(tmp_path, spec, names=("alpha",), n=160)
    block, config = model_io.load(dirs[0])
    assert config["fitted_encoder"]["ranking_kept"] == 1.0
    hist = json.loads((tmp_path / "blocks" / "alpha" / "history.json").read_text())
    # The block's validation C is the fitted Cox predictor's own (no ranking lost to the block).
    assert hist["val_score"] == pytest.approx(config["fitted_encoder"]["val_score"], abs=1e-9)
    assert hist["val_score_se"] > 0


def test_ranking_penalty_is_zero_for_a_monotone_block_and_positive_otherwise():
    from lego.models.block import BlockConfig, LegoBlock
    from lego.models.fitted import ranking_kept, ranking_penalty

    torch.manual_seed(0)
    block = LegoBlock(BlockConfig(in_dim=3, n_outputs=4, encoder="coxnet", latent_rows=2, latent_dim=8,
                                  encoder_width=8, heads=1, head_dim=4))
    block.encoder.takes_score = True
    scores = list(np.linspace(-3, 3, 50))
    opt = torch.optim.Adam(block.parameters(), lr=0.01)
    penalty = ranking_penalty(block, scores)
    # Push the risk to fall with the score, then let the penalty undo it.
    grid = torch.linspace(-3, 3, 16).view(-1, 1, 1)
    for _ in range(30):
        logits = block(grid, torch.ones(16, 1, dtype=torch.bool))[1]
        loss = (logits.sum(1) * grid.view(-1)).mean()  # high score -> low hazard logits
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert ranking_kept(block, scores) < 0.5 and penalty().item() > 0
    for _ in range(200):
        opt.zero_grad()
        penalty().backward()
        opt.step()
    assert ranking_kept(block, scores) == 1.0 and penalty().item() == pytest.approx(0.0, abs=1e-6)


def test_forest_encoder_reproduces_scikit_survival_and_survives_a_reload(tmp_path):
    from safetensors.torch import load_model, save_model
    from sksurv.ensemble import RandomSurvivalForest
    from sksurv.util import Surv

    from lego.models.encoders import ForestScore
    from lego.models.fitted import FOREST_LEAVES, fit_rsf

    rng = np.random.default_rng(1)
    x = rng.normal(size=(160, 12))
    x[:, :4] = x[:, :4] > 0.8  # binary columns, as in mutation tables: thresholds at 0.5
    y = Surv.from_arrays(rng.random(160) < 0.6, rng.exponential(10 * np.exp(-x[:, 0] - x[:, 5])))
    enc = ForestScore(12, 8)
    chosen, oob = fit_rsf(enc, x[:100], y[:100], x[100:130], y[100:130], seed=0)
    assert chosen["min_samples_leaf"] in FOREST_LEAVES and chosen["val_score"] > 0.5
    reference = RandomSurvivalForest(n_estimators=100, min_samples_leaf=chosen["min_samples_leaf"], max_features="sqrt",
                                     random_state=0).fit(x[:100], y[:100])
    new = torch.tensor(x[130:], dtype=torch.float32).unsqueeze(1)
    expected = reference.predict(x[130:].astype(np.float32))
    np.testing.assert_allclose(enc.raw_score(new)[:, 0].numpy(), expected, rtol=1e-5)
    # Out-of-bag training scores: out-of-sample, so less concordant with the training outcome than in-sample ones.
    from lego.survival.metrics import c_index

    assert oob.shape == (100,) and np.isfinite(oob).all()
    assert c_index(y["time"][:100], y["event"][:100], oob) < c_index(y["time"][:100], y["event"][:100], reference.predict(x[:100]))
    save_model(enc, str(tmp_path / "forest.safetensors"))
    again = ForestScore(12, 8)  # node tables sized from the file
    load_model(again, str(tmp_path / "forest.safetensors"))
    assert torch.equal(again.raw_score(new), enc.raw_score(new))


def test_rsf_block_trains_reloads_and_keeps_the_forests_ranking(tmp_path):
    p, dirs = trained_blocks(tmp_path, {**SMALL, "encoder": "rsf"}, names=("zeta",), n=160)
    block, config = model_io.load(dirs[0])
    hist = json.loads((tmp_path / "blocks" / "zeta" / "history.json").read_text())
    assert config["fitted_encoder"]["ranking_kept"] == 1.0
    assert hist["val_score"] == pytest.approx(config["fitted_encoder"]["val_score"], abs=1e-9)


def test_a_trained_merge_predicts_a_new_cohort_with_external_metrics(tmp_path, capsys):
    from lego.cli import main
    from lego.stages import merge

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


def test_coxrsf_encoder_mixes_both_standardised_scores_and_reloads(tmp_path):
    p, dirs = trained_blocks(tmp_path, {**SMALL, "encoder": "coxrsf"}, names=("zeta",), n=200)
    block, config = model_io.load(dirs[0])
    fitted = config["fitted_encoder"]
    assert set(fitted) >= {"coxnet", "rsf", "val_score", "oof_agreement", "ranking_kept", "cox_weight"}
    assert fitted["ranking_kept"] == 1.0 and fitted["coxnet"]["nonzero"] >= 1
    enc = block.encoder
    w = float(enc.cox_weight)
    assert w == fitted["cox_weight"] and w in COX_WEIGHTS and set(fitted["out_of_sample_c_by_weight"]) == {str(v) for v in COX_WEIGHTS}
    x = torch.randn(50, 1, enc.cox.coef.shape[0])
    with torch.no_grad():
        expected = w * (x[:, 0] @ enc.cox.coef - enc.cox.center) / enc.cox.scale \
            + (1 - w) * (enc.forest.raw_score(x)[:, 0] - enc.forest.center) / enc.forest.scale
        torch.testing.assert_close(enc.raw_score(x)[:, 0], expected)
    # Both parts are standardised by their own out-of-sample scores (never 0/1 defaults).
    assert float(enc.cox.scale) != 1.0 and float(enc.forest.scale) != 1.0
    hist = json.loads((tmp_path / "blocks" / "zeta" / "history.json").read_text())
    assert hist["val_score"] == pytest.approx(fitted["val_score"], abs=1e-9)


@pytest.mark.parametrize("informative,allowed", [("cox", {0.75, 1.0}), ("forest", {0.0, 0.25}), ("both", {0.5}),
                                                 ("weak", {0.5})])
def test_coxrsf_weight_follows_the_out_of_sample_ranking(informative, allowed):
    """The mix is chosen on training out-of-fold and validation scores together, by the one-SE
    rule: the part that clearly ranks the outcome gets the weight; when both rank it equally, or
    one is better by less than the noise (weak), the even mix stays."""
    rng = np.random.default_rng(0)
    n, nv = 300, 60
    risk = rng.normal(size=n + nv)
    time = np.exp(-risk + rng.normal(scale=0.2, size=n + nv))
    event = rng.random(n + nv) < 0.7
    y = {"time": time[:n], "event": event[:n]}
    yv = {"time": time[n:], "event": event[n:]}
    noise, other = rng.normal(size=n + nv), rng.normal(size=n + nv)
    cox = risk if informative in ("cox", "both") else 0.1 * risk + noise if informative == "weak" else noise
    forest = risk if informative in ("forest", "both") else other if informative == "weak" else noise
    weight, by_weight, se = _mix_weight([cox[:n], forest[:n]], y, [cox[n:], forest[n:]], yv)
    assert weight in allowed and 0 < se < 0.05, (by_weight, se)
    if informative == "weak":  # Cox alone is the best mix here, but by less than one SE
        assert max(by_weight, key=by_weight.get) != "0.5"


def test_a_coxrsf_model_saved_before_the_weight_loads_as_the_even_mix(tmp_path):
    from safetensors.torch import load_file, save_file

    p, dirs = trained_blocks(tmp_path, {**SMALL, "encoder": "coxrsf"}, names=("zeta",), n=120)
    tensors = load_file(Path(dirs[0]) / "model.safetensors")
    key = next(k for k in tensors if k.endswith("cox_weight"))
    save_file({k: v for k, v in tensors.items() if k != key}, Path(dirs[0]) / "model.safetensors")
    block, _ = model_io.load(dirs[0])
    assert float(block.encoder.cox_weight) == 0.5


def test_coxrsf_never_leans_on_a_constant_part():
    from lego.models.fitted import _usable_weights

    assert _usable_weights(True, False) == (0.0,)
    assert _usable_weights(False, True) == (1.0,)
    assert _usable_weights(False, False) == COX_WEIGHTS
    assert _usable_weights(True, True) == (0.5,)
