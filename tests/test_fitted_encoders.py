"""Encoders fitted inside the fold (coxnet, rsf, coxrsf): fitted on training patients, saved and
reloaded exactly, and the block on top keeps the fitted predictor's ranking."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lego.models import files as model_io
from lego.models.fitted import COX_WEIGHTS, _mix_weight
from tests.helpers import SMALL, trained_blocks


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
    for _ in range(500):  # start_monotone's budget (a tied head stays fixed: only the layers before it move)
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
    from lego.survival.discrimination import c_index

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
