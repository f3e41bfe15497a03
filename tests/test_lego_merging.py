"""Contracts of the mergeable LegoBlocks (issue 26): tied heads, merge weights stacked on the
fold's out-of-sample patients, fitted encoders over patch bags, and the fuse that starts
from the tuned merge."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from lego.data.fold_data import ModalityTensors, collate, fold_ids
from lego.models import files as model_io
from lego.models.block import BlockConfig, LegoBlock
from lego.models.stacking import SHRINKAGE, choose_shrinkage, cox_log_likelihood, stack_weights
from tests.helpers import SMALL, trained_blocks

COX = {**SMALL, "encoder": "coxnet", "epochs": 2}


def test_cox_log_likelihood_matches_the_breslow_formula_with_ties():
    rng = np.random.default_rng(0)
    time = rng.integers(1, 6, 40).astype(float)  # many ties
    event = rng.random(40) < 0.6
    eta = rng.normal(size=40)
    expected = sum(eta[i] - np.log(np.exp(eta[time >= time[i]]).sum()) for i in range(40) if event[i])
    got = cox_log_likelihood(torch.tensor(eta), torch.tensor(time), torch.tensor(event, dtype=torch.float64))
    assert float(got) == pytest.approx(expected, rel=1e-10)


def test_stacking_leaves_a_noise_block_near_zero_and_splits_two_equal_blocks_about_evenly():
    rng = np.random.default_rng(1)
    n = 600
    a, b, noise = rng.normal(size=(3, n))
    time = rng.exponential(np.exp(-(a + b)))
    event = rng.random(n) < 0.7
    risks = np.stack([a, b, noise], axis=1) * np.array([1.0, 5.0, 1.0])  # b's scale must not matter
    w = stack_weights(risks, np.ones_like(risks, bool), time, event)
    assert w.sum() == pytest.approx(1.0) and (w > 0).all()
    assert w[2] < 0.05 and abs(w[0] - w[1]) < 0.15
    # A patient without a modality is scored by the blocks they have: weights still come out.
    present = np.ones_like(risks, bool)
    present[: n // 2, 0] = False
    partial = stack_weights(np.where(present, risks, np.nan), present, time, event)
    assert partial[2] < 0.25 * partial[:2].min()


def _signal_and_noise(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two blocks' risks, the first carrying the hazard and the second noise, and the outcome."""
    rng = np.random.default_rng(seed)
    signal, noise = rng.normal(size=(2, n))
    return np.stack([signal, noise], axis=1), rng.exponential(np.exp(-signal)), rng.random(n) < 0.6


def test_shrunk_weights_lie_between_the_free_fit_and_equal_weights_and_move_monotonically():
    risks, time, event = _signal_and_noise(60, seed=2)
    present = np.ones_like(risks, bool)
    noise_weight = [stack_weights(risks, present, time, event, shrink=s)[1] for s in SHRINKAGE]
    assert noise_weight[-1] == pytest.approx(0.5)  # an infinite penalty: equal weights
    assert all(a <= b + 1e-6 for a, b in zip(noise_weight, noise_weight[1:])), noise_weight
    assert noise_weight[0] < 0.2  # unpenalised, the noise block is all but dropped


def test_cross_validation_shrinks_to_equal_weights_where_the_blocks_cannot_be_told_apart():
    risks, time, event = _signal_and_noise(80, seed=3)
    twins = np.stack([risks[:, 0], risks[:, 0]], axis=1)  # the likelihood cannot tell their weights apart
    z, pres = (torch.tensor(twins), torch.ones(twins.shape, dtype=torch.float64))
    t, e = torch.tensor(time), torch.tensor(event, dtype=torch.float64)
    assert choose_shrinkage(z, pres, t, e) == float("inf")  # ties go to the larger penalty
    # With the hazard in one block and 300 events, the cross-validated weights all but drop the noise.
    risks, time, event = _signal_and_noise(500, seed=4)
    w = stack_weights(risks, np.ones_like(risks, bool), time, event)
    assert w[1] < 0.15 and w.sum() == pytest.approx(1.0)
    assert np.array_equal(w, stack_weights(risks, np.ones_like(risks, bool), time, event))  # seeded parts


def test_tied_heads_stay_identical_and_readout_averages_the_blocks_own_predictions(tmp_path):
    p, dirs = trained_blocks(tmp_path, {**SMALL, "tied_head": True})
    blocks = {m: model_io.load(d)[0] for m, d in zip(("zeta", "alpha"), dirs)}
    heads = [b.head.state_dict() for b in blocks.values()]
    fresh = LegoBlock(BlockConfig(3, 4, **{k: SMALL[k] for k in ("latent_rows", "latent_dim", "heads", "head_dim", "encoder_width")}))
    for name, value in heads[0].items():
        torch.testing.assert_close(value, heads[1][name])
        torch.testing.assert_close(value, fresh.head.state_dict()[name])  # never trained
    from lego.models.merge import LegoMerge

    mods = {m: ModalityTensors(m, "tabular", {"p": torch.randn(1, b.cfg.in_dim)}, {}, b.cfg.in_dim) for m, b in blocks.items()}
    inputs = collate(["p"], mods)
    merged = LegoMerge(blocks, "readout", "slerp", weights={"zeta": 3.0, "alpha": 1.0})
    own = [blocks[m](*inputs[m][:2])[1] for m in ("zeta", "alpha")]
    torch.testing.assert_close(merged(inputs)[1], (3 * own[0] + own[1]) / 4, rtol=1e-5, atol=1e-6)


def test_fitted_blocks_record_out_of_fold_scores_and_the_tuned_merge_chooses_on_them(tmp_path):
    from lego.steps import merging

    p, dirs = trained_blocks(tmp_path, COX, n=160)
    hist = json.loads((tmp_path / "blocks" / "zeta" / "history.json").read_text())
    _, config = model_io.load(dirs[0])
    assert sorted(hist["out_of_fold_scores"]) == config["patients"]["train"]
    data = {m: str(p[m]) for m in ("zeta", "alpha")}
    ids = fold_ids(pd.read_parquet(p["folds"]), 0)
    tuned = merging.merge_tuned(dirs, data, labels=str(p["labels"]), folds=str(p["folds"]), out_dir=str(tmp_path / "tuned"))
    sel = tuned["selection"]
    assert sel["chosen_on"].startswith("out-of-fold") and sel["n_patients"] == len(ids["train"]) + len(ids["val"])
    forms = [(t["method"], t["weights"]) for t in sel["tried"]]
    assert forms == [(m, sel["stacked_weights"]) for m in ("readout", "harmonic", "mean")]
    # The first listed form within one SE of the paired gain of the best out-of-sample form is kept.
    scores = [t["score"] for t in sel["tried"]]
    chosen = next(i for i, t in enumerate(sel["tried"]) if (tuned["method"], tuned["weights"]) == forms[i])
    best = scores.index(max(scores))
    assert chosen <= best and all(t["gain_of_best"] > t["gain_se"] for t in sel["tried"][:chosen])
    # zeta carries the hazard in the synthetic cohort: stacking weighs it above alpha.
    assert sel["stacked_weights"]["zeta"] > sel["stacked_weights"]["alpha"]
    assert sel["stacking_shrinkage"] in [*(s for s in SHRINKAGE if math.isfinite(s)), "equal"]
    model, cfg = model_io.load(tmp_path / "tuned")
    assert cfg["method"] == "readout" and all(not b.encoder.takes_score for b in model.blocks.values())
    assert cfg["selection"]["stacking_shrinkage"] == sel["stacking_shrinkage"]  # saved with the model


def test_the_tuned_merge_records_the_shrinkage_its_weights_were_fitted_with(tmp_path, monkeypatch):
    from lego.models import stacking
    from lego.steps import merging

    p, dirs = trained_blocks(tmp_path, COX, n=160)
    data = {m: str(p[m]) for m in ("zeta", "alpha")}
    weights = {}
    for chosen, recorded in ((0.3, 0.3), (math.inf, "equal")):
        monkeypatch.setattr(stacking, "choose_shrinkage", lambda *a, c=chosen, **k: c)
        tuned = merging.merge_tuned(dirs, data, labels=str(p["labels"]), folds=str(p["folds"]),
                                    out_dir=str(tmp_path / f"tuned{chosen}"))
        assert tuned["selection"]["stacking_shrinkage"] == recorded
        weights[recorded] = tuned["selection"]["stacked_weights"]
    assert weights[0.3] != weights["equal"]  # the recorded penalty is the one the weights came from


def test_the_tuned_merge_never_predicts_test_patients(tmp_path, monkeypatch):
    from lego import model_selection

    p, dirs = trained_blocks(tmp_path, COX, n=160)
    test_ids = set(fold_ids(pd.read_parquet(p["folds"]), 0)["test"])
    seen = []
    real = model_selection.OutOfSample.patients
    monkeypatch.setattr(model_selection.OutOfSample, "patients",
                        lambda self, *a: (lambda ids: seen.extend(ids) or ids)(real(self, *a)))
    from lego.steps.merging import merge_tuned

    merge_tuned(dirs, {m: str(p[m]) for m in ("zeta", "alpha")}, labels=str(p["labels"]), folds=str(p["folds"]),
                out_dir=str(tmp_path / "tuned"))
    assert seen and not set(seen) & test_ids


def test_a_coxnet_block_reads_a_bag_as_its_mean_patch_and_its_heatmap_decomposes_the_score():
    from lego.models.encoders import CoxLinear

    enc = CoxLinear(5, out_dim=8)
    enc.coef.copy_(torch.tensor([1.0, -2.0, 0.0, 0.5, 0.0]))
    enc.center.fill_(0.3)
    enc.scale.fill_(2.0)
    x = torch.randn(2, 7, 5)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, 4:] = False  # padding
    x[1, 4:] = 100.0  # padded rows must not count
    tokens, out_mask = enc(x, mask)
    assert tokens.shape == (2, 1, 8) and out_mask.tolist() == [[True], [True]]
    mean_patch = torch.stack([x[0].mean(0), x[1, :4].mean(0)]).unsqueeze(1)
    torch.testing.assert_close(tokens, enc.proj(enc.score(mean_patch).unsqueeze(-1)))
    _, per_patch = enc.attention(x, mask)
    torch.testing.assert_close(per_patch[1, :4].mean(), enc.score(mean_patch)[1, 0])
    assert (per_patch[1, 4:] == 0).all()


def test_a_merge_fuse_starts_from_the_tuned_merge_and_trains_on_out_of_fold_scores(tmp_path):
    from lego.steps.fusing import fuse
    from lego.steps.inference import fold_modalities, predict

    p, dirs = trained_blocks(tmp_path, COX, n=160)
    data = {m: str(p[m]) for m in ("zeta", "alpha")}
    common = {"labels": str(p["labels"]), "folds": str(p["folds"])}
    from lego.steps.merging import merge_tuned

    tuned = merge_tuned(dirs, data, out_dir=str(tmp_path / "tuned"), **common)
    result = fuse(dirs, data, spec={"mode": "merge", "epochs": 2, "lr": 1e-3, "batch_size": 16}, out_dir=str(tmp_path / "fuse"),
                  device="cpu", **common)
    model, config = model_io.load(tmp_path / "fuse")
    assert config["mode"] == "merge" and config["weights"] == tuned["weights"] and config["merge_method"] == tuned["method"]
    assert result["history"][0]["epoch"] == -1  # the merge itself was a candidate
    if result["best_epoch"] == -1:  # kept as it started: the fuse predicts as the tuned merge does
        merged, mcfg = model_io.load(tmp_path / "tuned")
        ids = fold_ids(pd.read_parquet(p["folds"]), 0)["test"]
        mods = fold_modalities(config["blocks"], data)
        pd.testing.assert_frame_equal(predict(model, config, mods, ids), predict(merged, mcfg, mods, ids))
    assert all(not b.encoder.takes_score for b in model.blocks.values())


@pytest.mark.parametrize("method", ["readout", "harmonic", "mean"])
def test_a_merge_fuse_before_fine_tuning_predicts_exactly_as_the_merge_it_starts_from(method):
    from lego.models.fuse import LegoFuse
    from lego.models.merge import LegoMerge

    torch.manual_seed(0)
    blocks = {m: LegoBlock(BlockConfig(3, 4, latent_rows=4, latent_dim=8, heads=1, head_dim=4, encoder_width=8)).eval() for m in "ab"}
    mods = {"a": ModalityTensors("a", "tabular", {"p": torch.randn(1, 3), "q": torch.randn(1, 3)}, {}, 3),
            "b": ModalityTensors("b", "tabular", {"p": torch.randn(1, 3), "r": torch.randn(1, 3)}, {}, 3)}
    inputs = collate(["p", "q", "r"], mods)  # q lacks b, r lacks a
    weights = {"a": 0.7, "b": 0.3}
    merged = LegoMerge(blocks, method, "slerp", weights)(inputs)[1]
    fused = LegoFuse(blocks, "merge", "slerp", weights, merge_method=method)(inputs)[1]
    torch.testing.assert_close(fused, merged)
