"""Pre-fitted encoders: classical models fitted on a fold's training patients, then frozen inside
a LegoBlock (the block's latent, layers and head are trained on top of them as usual).

Only the fold's training patients fit the model; its one hyper-parameter (the elastic-net
penalty) is chosen on the fold's validation patients, as for the Coxnet baseline.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import torch

from lego.errors import InputError
from lego.models.encoders import CoxLinear

log = logging.getLogger(__name__)


def _dense(mod, ids: list[str]) -> np.ndarray:
    return np.concatenate([mod.per_patient[p].numpy() for p in ids]).astype(np.float64)


def _surv(targets, ids: list[str]):
    from sksurv.util import Surv

    return Surv.from_arrays(np.array([bool(targets.per_patient[p][1]) for p in ids]),
                            np.array([targets.per_patient[p][2] for p in ids], dtype=float))


def cross_fitted_scores(encoder: CoxLinear, mod, targets, train_ids: list[str], path: list[float],
                        n_splits: int = 5, seed: int = 0) -> dict[str, float]:
    """Out-of-fold standardised linear predictor of each training patient (each part's model
    fitted on the other parts along ``path``, down to the chosen penalty), on the full model's scale."""
    from sklearn.model_selection import StratifiedKFold
    from sksurv.linear_model import CoxnetSurvivalAnalysis

    x, y = _dense(mod, train_ids), _surv(targets, train_ids)
    n_splits = max(2, min(n_splits, int(y["event"].sum()), int((~y["event"]).sum()) or n_splits))
    out = np.zeros(len(train_ids))
    for fit, held in StratifiedKFold(n_splits, shuffle=True, random_state=seed).split(x, y["event"]):
        # The full path (warm starts down to the chosen penalty): one small alpha alone can diverge.
        est = CoxnetSurvivalAnalysis(l1_ratio=0.5, alphas=path, max_iter=100000)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est.fit(x[fit], y[fit])
        out[held] = x[held] @ est.coef_[:, -1]
    return {p: (v - float(encoder.center)) / float(encoder.scale) for p, v in zip(train_ids, out)}


def fit_cox_encoder(encoder: CoxLinear, mod, targets, train_ids: list[str], val_ids: list[str],
                    where: str) -> tuple[dict, list[float]]:
    """Fit an elastic-net Cox model (l1_ratio 0.5) and write its coefficients into ``encoder``.

    Returns what was chosen and the penalty path down to it (which cross-fitting refits along).
    Survival task only: the encoder is a Cox linear predictor.
    """
    from sksurv.linear_model import CoxnetSurvivalAnalysis

    from lego.survival.metrics import c_index

    if targets.task != "survival":
        raise InputError(f"{where}: the coxnet encoder needs a survival task; use linear or snn for classification")
    y = _surv(targets, train_ids)
    if not y["event"].any():
        raise InputError(f"{where}: the coxnet encoder needs at least one event among the training patients")
    x = _dense(mod, train_ids)
    est = CoxnetSurvivalAnalysis(l1_ratio=0.5, alpha_min_ratio=0.01, n_alphas=30, max_iter=100000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(x, y)
    coefs = est.coef_  # (features, alphas)
    best, score = coefs.shape[1] // 2, None
    yv = _surv(targets, val_ids)
    if val_ids and yv["event"].any():
        xv = _dense(mod, val_ids)
        lps = [xv @ coefs[:, j] for j in range(coefs.shape[1])]
        scores = [c_index(yv["time"], yv["event"], lp) if np.ptp(lp) > 0 else 0.5 for lp in lps]
        scores = np.nan_to_num(scores, nan=0.5)  # no comparable pair: as uninformative as a constant
        best, score = int(np.argmax(scores)), float(np.max(scores))
    coef = coefs[:, best]
    lp = x @ coef
    encoder.coef.copy_(torch.as_tensor(coef, dtype=torch.float32))
    encoder.center.fill_(float(lp.mean()))
    encoder.scale.fill_(float(lp.std()) if lp.std() > 1e-8 else 1.0)
    chosen = {"alpha": float(est.alphas_[best]), "alpha_index": best, "nonzero": int((coef != 0).sum()), "val_score": score}
    log.info("%s: coxnet encoder alpha %.4g, %d non-zero coefficients, validation C %s",
             where, chosen["alpha"], chosen["nonzero"], score)
    return chosen, [float(a) for a in est.alphas_[: best + 1]]


def score_modality(encoder: CoxLinear, mod, ids: list[str], overrides: dict[str, float]):
    """A one-feature modality holding each patient's standardised predictor (``overrides`` first)."""
    from lego.data.fold_data import ModalityTensors

    with torch.no_grad():
        full = {p: float((mod.per_patient[p][0] @ encoder.coef - encoder.center) / encoder.scale) for p in ids}
    per = {p: torch.tensor([[overrides.get(p, full[p])]], dtype=torch.float32) for p in ids}
    return ModalityTensors(mod.name, mod.kind, per, mod.state, 1)


def prepare_cox_encoder(encoder: CoxLinear, mod, targets, train_ids: list[str], val_ids: list[str], where: str,
                        seed: int = 0):
    """Fit the encoder and switch it to reading scores; returns (what was chosen, the training
    modality of scores -- cross-fitted for training patients, full-model for validation -- and
    every predictor value the block will meet, for its ranking constraint)."""
    fitted, path = fit_cox_encoder(encoder, mod, targets, train_ids, val_ids, where)
    oof = cross_fitted_scores(encoder, mod, targets, train_ids, path, seed=seed)
    train_mod = score_modality(encoder, mod, train_ids + val_ids, oof)
    full = score_modality(encoder, mod, train_ids, {})
    encoder.takes_score = True
    return fitted, train_mod, train_mod.dense.flatten().tolist() + full.dense.flatten().tolist()


def _score_grid(scores: list[float], n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Evenly spaced predictor values over (a little beyond) the range the block will see."""
    lo, hi = min(scores), max(scores)
    pad = 0.1 * (hi - lo) + 1e-3
    grid = torch.linspace(lo - pad, hi + pad, n).view(n, 1, 1)
    return grid, torch.ones(n, 1, dtype=torch.bool)


def ranking_penalty(block, scores: list[float], weight: float = 10.0):
    """A training-loss term that keeps the block's risk non-decreasing in the fitted predictor.

    Why: the block only sees one number per patient, so its risk is a function of that number;
    left free, a few epochs on ~100 noisy out-of-fold scores bend it (measured: the Coxnet
    predictor's validation C 0.73 became 0.40 through the block). Monotone, the block keeps
    the fitted model's ranking (its C) and learns the survival curve's calibration.
    """
    from lego.survival.loss import risk_score

    grid, mask = _score_grid(scores)

    def penalty() -> torch.Tensor:
        risk = risk_score(block(grid.to(block.latent.device), mask.to(block.latent.device))[1].float())
        return weight * torch.relu(risk[:-1] - risk[1:]).sum()

    return penalty


def ranking_kept(block, scores: list[float]) -> float:
    """Share of predictor-grid pairs (lower, higher) whose risk does not fall (1 = monotone, ~0 = reversed)."""
    from lego.survival.loss import risk_score

    grid, mask = _score_grid(scores)
    grid, mask = grid.to(block.latent.device), mask.to(block.latent.device)
    was = block.training
    block.eval()
    with torch.no_grad():
        risk = risk_score(block(grid, mask)[1].float())
    block.train(was)
    upper = torch.triu(torch.ones(len(risk), len(risk), dtype=torch.bool, device=risk.device), diagonal=1)
    return float((risk[None, :] >= risk[:, None] - 1e-6)[upper].float().mean())
