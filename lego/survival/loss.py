"""Losses: discrete-time survival NLL (MCAT/MM-Lego convention) and cross-entropy."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lego.settings import default


def survival_curve(logits: torch.Tensor) -> torch.Tensor:
    """S(t_k) = prod_{j<=k} (1 - h_j) with hazards h = sigmoid(logits); shape (B, n_bins)."""
    return torch.cumprod(1.0 - torch.sigmoid(logits), dim=1)


def risk_score(logits: torch.Tensor) -> torch.Tensor:
    """Risk = -sum_k S(t_k): higher means earlier expected death."""
    return -survival_curve(logits).sum(dim=1)


def nll_survival_loss(logits: torch.Tensor, bin_idx: torch.Tensor, event: torch.Tensor,
                      alpha: float = default("model.train.alpha"), eps: float = 1e-7) -> torch.Tensor:
    """Discrete-time negative log-likelihood.

    uncensored: -log S(t_{y-1}) - log h_y;  censored: -log S(t_y);
    loss = (1 - alpha) * (censored + uncensored) + alpha * uncensored, averaged over the batch.
    """
    hazards = torch.sigmoid(logits).clamp(eps, 1 - eps)
    surv = torch.cumprod(1.0 - hazards, dim=1)
    surv_pad = torch.cat([torch.ones_like(surv[:, :1]), surv], dim=1)  # S(t_{-1}) = 1
    y = bin_idx.long().view(-1, 1)
    e = event.float().view(-1, 1)
    s_prev = torch.gather(surv_pad, 1, y).clamp_min(eps)
    h_y = torch.gather(hazards, 1, y)
    s_y = torch.gather(surv_pad, 1, y + 1).clamp_min(eps)
    uncensored = -e * (torch.log(s_prev) + torch.log(h_y))
    censored = -(1 - e) * torch.log(s_y)
    return ((1 - alpha) * (censored + uncensored) + alpha * uncensored).mean()


def classification_loss(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, label.long())
