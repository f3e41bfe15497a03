"""Where a LegoBlock's trained head starts (model.block.head_start): at what the training patients
show with no features, so that training goes into ranking them (docs/lego_method.md)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lego.survival.loss import classification_loss, nll_survival_loss
from lego.survival.targets import baseline_hazard_logits, class_prior_logits
from tests.helpers import SMALL, trained_blocks


def _best_constant(loss, n_outputs: int) -> float:
    """The lowest loss any featureless prediction (one logit vector for everyone) reaches."""
    logits = torch.zeros(n_outputs, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([logits], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        value = loss(logits)
        value.backward()
        return value

    opt.step(closure)
    return float(loss(logits.detach()))


def test_the_baseline_start_is_the_best_prediction_without_features():
    rng = np.random.default_rng(3)
    n, k = 400, 4
    bins, events = rng.integers(0, k, n), rng.random(n) < 0.4
    b, e = torch.tensor(bins), torch.tensor(events.astype(float))
    loss = lambda lg: nll_survival_loss(lg.expand(n, k), b, e, alpha=0.0)  # noqa: E731
    start = torch.tensor(baseline_hazard_logits(bins, events, k), dtype=torch.float64)
    assert float(loss(start)) - _best_constant(loss, k) < 1e-3  # the life table, smoothed by half an event
    assert float(loss(torch.zeros(k, dtype=torch.float64))) - float(loss(start)) > 0.01  # a random-like start is not


def test_the_class_start_is_the_best_prediction_without_features():
    labels = np.random.default_rng(4).choice(3, size=300, p=[0.6, 0.3, 0.1])
    y = torch.tensor(labels)
    loss = lambda lg: classification_loss(lg.expand(len(y), 3), y)  # noqa: E731
    start = torch.tensor(class_prior_logits(labels, 3), dtype=torch.float64)
    assert float(loss(start)) - _best_constant(loss, 3) < 1e-3


def _bias_at_training_start(tmp_path, monkeypatch, spec):
    """The head bias a block has when its training begins, and the life table of its training patients."""
    import lego.steps.block_training as bt
    from lego.data.fold_data import target_tensors

    seen = {}
    original = bt.train

    def spy(model, modalities, targets, train_ids, val_ids, **kw):
        y = target_tensors(train_ids, targets)
        seen["bias"] = model.block.head.fc.bias.detach().clone()
        seen["table"] = baseline_hazard_logits(y["bin"].numpy(), y["event"].numpy(), targets.n_outputs)
        seen["fresh"] = type(model.block)(model.block.cfg).head.fc.bias.detach().clone()  # the seeded start
        return original(model, modalities, targets, train_ids, val_ids, **kw)

    monkeypatch.setattr(bt, "train", spy)
    trained_blocks(tmp_path, spec={**SMALL, **spec}, names=("zeta",))
    return seen


@pytest.mark.parametrize("encoder", ["snn", "gru"])
def test_a_trained_neural_head_starts_at_the_training_patients_life_table(tmp_path, monkeypatch, encoder):
    seen = _bias_at_training_start(tmp_path, monkeypatch, {"encoder": encoder, "tied_head": False})
    assert np.allclose(seen["bias"].numpy(), seen["table"], atol=1e-6)
    assert not np.allclose(seen["fresh"].numpy(), seen["table"], atol=1e-3)


@pytest.mark.parametrize("spec", [{"encoder": "snn", "tied_head": False, "head_start": "random"},  # the paper's start
                                  {"encoder": "snn", "tied_head": True},  # every block keeps the same head
                                  {"encoder": "coxnet"}])  # a fitted encoder's head starts from its score
def test_the_paper_start_tied_heads_and_fitted_encoders_keep_the_seeded_head(tmp_path, monkeypatch, spec):
    seen = _bias_at_training_start(tmp_path, monkeypatch, spec)
    assert torch.equal(seen["bias"], seen["fresh"])
