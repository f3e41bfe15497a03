"""Merge weights fitted on a fold's out-of-sample predictions (stacking), for the tuned LegoMerge.

Why: the merge's weights decide whether a strong block is drowned by weak ones. Chosen from ~10-25
validation events they are mostly noise; the blocks' risks on the fold's *out-of-sample* patients
-- every training patient through its cross-fitted score (blocks with a fitted encoder keep them,
see ``lego.models.fitted.OUT_OF_FOLD``) and the validation patients -- hold about five times the
events. The weights maximise the Cox partial likelihood of exactly the form the readout merge
predicts with: a weighted mean of the risks of the blocks a patient has (so a patient missing a
modality is scored as the merge scores them), times one scale. Only the weights' ratios matter, so a penalty on the mean log-weight
fixes their overall level; a block that adds nothing ends near zero (the merge floors it at
1e-4 of the largest weight, as weights must be positive).
"""

from __future__ import annotations

import numpy as np
import torch


def cox_log_likelihood(eta: torch.Tensor, time: torch.Tensor, event: torch.Tensor) -> torch.Tensor:
    """Breslow partial log-likelihood (risk set: everyone whose time is >= the event's time)."""
    order = torch.argsort(time, descending=True, stable=True)
    eta, time, event = eta[order], time[order], event[order]
    log_risk = torch.logcumsumexp(eta, 0)
    # Tied times share one risk set: the log-sum over the whole tie group (its last row in this order).
    _, inverse, counts = torch.unique_consecutive(time, return_inverse=True, return_counts=True)
    last = torch.cumsum(counts, 0) - 1
    return ((eta - log_risk[last[inverse]]) * event).sum()


def stack_weights(risks: np.ndarray, present: np.ndarray, time: np.ndarray, event: np.ndarray,
                  gauge: float = 0.01, steps: int = 100) -> np.ndarray:
    """Weights (summing to 1) of K blocks' risks (N, K; ``present`` marks which a patient has).

    Each block's risk is standardised over the patients who have it first, so a weight compares
    predictive value, not the scale of a block's output; the returned weights are for the
    standardised risks."""
    k = risks.shape[1]
    if not event.any() or k == 1:
        return np.full(k, 1.0 / k)
    pres = torch.tensor(np.asarray(present, dtype=float))
    r = torch.tensor(np.nan_to_num(np.asarray(risks, dtype=float)))
    mean = (r * pres).sum(0) / pres.sum(0).clamp_min(1)
    sd = (((r - mean) ** 2 * pres).sum(0) / pres.sum(0).clamp_min(1)).sqrt()
    z = torch.where(pres > 0, (r - mean) / torch.where(sd > 1e-12, sd, torch.ones_like(sd)), torch.zeros_like(r))
    t, e = torch.tensor(np.asarray(time, dtype=float)), torch.tensor(np.asarray(event, dtype=float))
    log_w = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    log_c = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_w, log_c], lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")
    n_events = float(e.sum())

    def closure():
        opt.zero_grad()
        w = pres * log_w.exp()
        eta = log_c.exp() * (w * z).sum(1) / w.sum(1).clamp_min(1e-12)
        loss = -cox_log_likelihood(eta, t, e) / n_events + gauge * log_w.mean() ** 2
        loss.backward()
        return loss

    opt.step(closure)
    w = log_w.detach().exp().numpy()
    return w / w.sum() if np.isfinite(w).all() and w.sum() > 0 else np.full(k, 1.0 / k)
