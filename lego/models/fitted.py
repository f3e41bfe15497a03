"""Pre-fitted encoders: classical models fitted on a fold's training patients, then frozen inside
a LegoBlock (the block's latent, layers and head are trained on top of them as usual).

Only the fold's training patients fit the model; its one hyper-parameter (the elastic-net
penalty, the forest's leaf size) is chosen on the fold's validation patients, as for the
Coxnet and RSF baselines. Each fitter returns what it chose and the training patients'
out-of-sample raw scores (cross-fitted for the elastic net, out-of-bag for the forest), which
the block trains on.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable

import numpy as np
import torch

from lego import optimisers
from lego.errors import InputError
from lego.models.encoders import CoxForest, CoxLinear, FittedScore, ForestScore

log = logging.getLogger(__name__)

Refit = Callable[[np.ndarray, np.ndarray], Callable[[np.ndarray], np.ndarray]]
FOREST_LEAVES = (5, 15, 30)  # the RSF baseline's grid
OUT_OF_FOLD = "out_of_fold_scores"  # history.json key: each training patient's cross-fitted standardised score


def _row(t: torch.Tensor) -> torch.Tensor:
    """A patient's one row: the table's row, or a bag's mean token (see encoders.pool_bag)."""
    return t.mean(0, keepdim=True) if t.shape[0] > 1 else t


def _dense(mod, ids: list[str]) -> np.ndarray:
    return np.concatenate([_row(mod.per_patient[p]).numpy() for p in ids]).astype(np.float64)


def _surv(targets, ids: list[str]):
    from sksurv.util import Surv

    return Surv.from_arrays(np.array([bool(targets.per_patient[p][1]) for p in ids]),
                            np.array([targets.per_patient[p][2] for p in ids], dtype=float))


def _quiet_fit(est, x, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return est.fit(x, y)


def _val_c(scores: list[np.ndarray], yv) -> list[float]:
    from lego.survival.discrimination import c_index

    out = [c_index(yv["time"], yv["event"], s) if np.ptp(s) > 0 else 0.5 for s in scores]
    return list(np.nan_to_num(out, nan=0.5))  # no comparable pair: as uninformative as a constant


def _standardise(encoder: FittedScore, train_scores: np.ndarray) -> None:
    encoder.center.fill_(float(train_scores.mean()))
    encoder.scale.fill_(float(train_scores.std()) if train_scores.std() > 1e-8 else 1.0)


def _cross_fit(refit: Refit, x: np.ndarray, y, n_splits: int = 5, seed: int = 0) -> np.ndarray:
    """Out-of-fold raw score of each training patient: each part scored by the model refitted on
    the other parts with the chosen hyper-parameter (stratified on the event, seeded)."""
    from sklearn.model_selection import StratifiedKFold

    n_splits = max(2, min(n_splits, int(y["event"].sum()), int((~y["event"]).sum()) or n_splits))
    out = np.zeros(len(x))
    for fit, held in StratifiedKFold(n_splits, shuffle=True, random_state=seed).split(x, y["event"]):
        out[held] = refit(x[fit], y[fit])(x[held])
    return out


def fit_coxnet(encoder: CoxLinear, x, y, xv, yv, seed: int) -> tuple[dict, np.ndarray]:
    """Elastic-net Cox (l1_ratio 0.5) along a 30-penalty path; the penalty chosen on validation.

    Returns what was chosen and the training patients' cross-fitted (out-of-fold) raw scores."""
    from sksurv.linear_model import CoxnetSurvivalAnalysis

    est = _quiet_fit(CoxnetSurvivalAnalysis(l1_ratio=0.5, alpha_min_ratio=0.01, n_alphas=30, max_iter=100000), x, y)
    coefs = est.coef_  # (features, alphas)
    best, score = coefs.shape[1] // 2, None
    if yv is not None:
        scores = _val_c([xv @ coefs[:, j] for j in range(coefs.shape[1])], yv)
        best, score = int(np.argmax(scores)), float(np.max(scores))
    coef = coefs[:, best]
    encoder.coef.copy_(torch.as_tensor(coef, dtype=torch.float32))
    _standardise(encoder, x @ coef)
    path = [float(a) for a in est.alphas_[: best + 1]]

    def refit(xf, yf):
        # The full path (warm starts down to the chosen penalty): one small alpha alone can diverge.
        part = _quiet_fit(CoxnetSurvivalAnalysis(l1_ratio=0.5, alphas=path, max_iter=100000), xf, yf)
        return lambda xh: xh @ part.coef_[:, -1]

    chosen = {"alpha": float(est.alphas_[best]), "alpha_index": best, "nonzero": int((coef != 0).sum()), "val_score": score}
    return chosen, _cross_fit(refit, x, y, seed=seed)


def _forest(leaf: int, seed: int):
    from sksurv.ensemble import RandomSurvivalForest

    # low_memory: trees keep one risk per leaf instead of a cumulative hazard curve (the same
    # predictions, measured identical; ~20 % faster to fit and far smaller on 700-patient folds).
    # oob_score: each training patient's out-of-bag risk (the trees that never saw it), an
    # out-of-sample score for free where cross-fitting would refit five forests.
    return RandomSurvivalForest(n_estimators=100, min_samples_leaf=leaf, max_features="sqrt", n_jobs=1,
                                random_state=seed, low_memory=True, oob_score=True)


def store_forest(encoder: ForestScore, forest, x: np.ndarray) -> None:
    """Write a fitted scikit-survival forest into the encoder's node tables.

    A leaf's value is the tree's prediction for a training row that lands in it (every leaf holds
    in-bag training rows); the forest's risk is the mean over trees, as scikit-survival's.
    """
    trees = [t.tree_ for t in forest.estimators_]
    n = max(t.node_count for t in trees)
    tables = {name: np.zeros((len(trees), n), dtype=np.float64) for name in ForestScore.TABLES}
    for i, (est, t) in enumerate(zip(forest.estimators_, trees)):
        own = np.arange(n)
        leaf = np.ones(n, bool)
        leaf[: t.node_count] = t.children_left == -1
        tables["left"][i] = np.where(leaf, own, np.pad(t.children_left, (0, n - t.node_count)))
        tables["right"][i] = np.where(leaf, own, np.pad(t.children_right, (0, n - t.node_count)))
        tables["feature"][i] = np.where(leaf, 0, np.pad(t.feature, (0, n - t.node_count)))
        tables["threshold"][i] = np.where(leaf, np.inf, np.pad(t.threshold, (0, n - t.node_count)))
        reached, pred = est.apply(x.astype(np.float32)), est.predict(x)
        tables["value"][i, reached] = pred
    for name, dtype in ForestScore.TABLES.items():
        encoder._buffers[name] = torch.as_tensor(tables[name]).to(dtype)
    encoder.steps.fill_(max(t.max_depth for t in trees))


def fit_rsf(encoder: ForestScore, x, y, xv, yv, seed: int) -> tuple[dict, np.ndarray]:
    """Random survival forest (100 trees, sqrt features); the leaf size chosen on validation.

    Returns what was chosen and the training patients' out-of-bag raw scores.

    Known and kept: out-of-bag scores rank an unrelated outcome a little below chance (C 0.479
    against 0.499 for cross-fitted scores; 40 synthetic draws of 300 patients), which tilts
    coxrsf's mix towards the Cox part on weak modalities. Cross-fitting the forest instead (and
    ranking within parts) was tried on the paper's UCEC, KIRP and BLCA folds: blocks moved by
    -0.003 to +0.008, the reported MM-Lego model by -0.014 +- 0.013 (paired, 15 folds), so the
    cheaper out-of-bag scores stay."""
    forests = [_quiet_fit(_forest(leaf, seed), x, y) for leaf in FOREST_LEAVES]
    best, score = 1, None
    if yv is not None:
        scores = _val_c([f.predict(xv) for f in forests], yv)
        best, score = int(np.argmax(scores)), float(np.max(scores))
    store_forest(encoder, forests[best], x)
    _standardise(encoder, forests[best].predict(x))
    chosen = {"min_samples_leaf": FOREST_LEAVES[best], "nodes": int(encoder.left.shape[1]), "val_score": score}
    return chosen, np.asarray(forests[best].oob_prediction_, dtype=np.float64)


def _raw_scores(encoder: FittedScore, x: np.ndarray, standardised: bool = False) -> np.ndarray:
    """The encoder's score (un-standardised unless asked) of each row of a dense feature matrix."""
    with torch.no_grad():
        rows = torch.as_tensor(x, dtype=torch.float32).unsqueeze(1)
        return (encoder.score(rows) if standardised else encoder.raw_score(rows))[:, 0].double().numpy()


COX_WEIGHTS = (0.5, 0.25, 0.75, 0.0, 1.0)  # the Cox model's share; a tie keeps the earlier (the even mix first)


def _mix_weight(train_parts: list[np.ndarray], y, val_parts: list[np.ndarray], yv,
                weights: tuple[float, ...] = COX_WEIGHTS) -> tuple[float, dict[str, float], float | None]:
    """The Cox share (among ``weights``) chosen on the fold's out-of-sample scores (Harrell's C over
    the training patients' out-of-fold scores and the validation patients' scores together) by the
    one-standard-error rule: the first listed share (the even mix first) whose C is within one
    bootstrap SE of the best. Why: the shares' Cs differ by less than their noise on a weak
    modality, and there picking the best is picking noise; the even mix is the lower-variance
    ensemble of the two models. Returns the share, each share's C and the SE."""
    from lego.model_selection import c_index_se

    time = np.concatenate([y["time"]] + ([yv["time"]] if val_parts else []))
    event = np.concatenate([y["event"]] + ([yv["event"]] if val_parts else []))
    cox = np.concatenate([train_parts[0]] + val_parts[:1])
    forest = np.concatenate([train_parts[1]] + val_parts[1:])
    mixes = [w * cox + (1 - w) * forest for w in weights]
    scores = _val_c(mixes, {"time": time, "event": event})
    best = int(np.argmax(scores))
    se = c_index_se(time, event, mixes[best]) or 0.0
    chosen = next(i for i, c in enumerate(scores) if c >= scores[best] - se)
    return weights[chosen], {str(w): round(float(c), 4) for w, c in zip(weights, scores)}, round(se, 4)


def _usable_weights(flat_cox: bool, flat_forest: bool) -> tuple[float, ...]:
    """Mixes that do not lean on a part whose fitted model is constant.

    Why: the elastic net may keep no feature at all on the full training set while its
    cross-fitted models kept some; their out-of-fold scores then vary, and may even rank well by
    chance, but the model that predicts is constant (KIRP clinical, one fold: the Cox-only mix
    won out of sample and gave every test patient the same risk, C 0.50)."""
    usable = tuple(w for w in COX_WEIGHTS if not (flat_cox and w > 0) and not (flat_forest and w < 1))
    return usable or (0.5,)


def fit_coxrsf(encoder: CoxForest, x, y, xv, yv, seed: int) -> tuple[dict, np.ndarray]:
    """Both models fitted as above (each its hyper-parameter on validation), each part
    standardised by its out-of-fold training scores, and the Cox share of the mix chosen on the
    fold's out-of-sample scores (:func:`_mix_weight`)."""
    cox, cox_oof = fit_coxnet(encoder.cox, x, y, xv, yv, seed)
    forest, forest_oof = fit_rsf(encoder.forest, x, y, xv, yv, seed)
    part, val_part = [], []
    for scorer, oof in ((encoder.cox, cox_oof), (encoder.forest, forest_oof)):
        _standardise(scorer, oof)
        part.append((oof - float(scorer.center)) / float(scorer.scale))
        if yv is not None:
            val_part.append(_raw_scores(scorer, xv, standardised=True))
    flat = [np.ptp(_raw_scores(scorer, x)) == 0 for scorer in (encoder.cox, encoder.forest)]
    weight, by_weight, se = _mix_weight(part, y, val_part, yv, _usable_weights(*flat))
    encoder.cox_weight.fill_(weight)
    _standardise(encoder, _raw_scores(encoder, x))
    score = float(_val_c([_raw_scores(encoder, xv)], yv)[0]) if yv is not None else None
    agreement = float(np.corrcoef(*part)[0, 1]) if np.ptp(part[0]) > 0 and np.ptp(part[1]) > 0 else None
    chosen = {"coxnet": cox, "rsf": forest, "cox_weight": weight, "out_of_sample_c_by_weight": by_weight,
              "out_of_sample_c_se": se,
              "val_score": score, "oof_agreement": agreement}
    return chosen, weight * part[0] + (1 - weight) * part[1]


FITTERS = {"coxnet": fit_coxnet, "rsf": fit_rsf, "coxrsf": fit_coxrsf}


def fit_encoder(name: str, encoder: FittedScore, mod, targets, *, train_ids: list[str], val_ids: list[str], where: str,
                seed: int = 0) -> tuple[dict, dict[str, float]]:
    """Fit the classical model ``name`` on the training patients into ``encoder`` (survival only).

    Returns what was chosen and each training patient's out-of-sample score, standardised on the
    full model's scale (in-sample predictions of a fitted model are over-confident)."""
    if targets.task != "survival":
        raise InputError(f"{where}: the {name} encoder needs a survival task; use linear or snn for classification")
    y = _surv(targets, train_ids)
    if not y["event"].any():
        raise InputError(f"{where}: the {name} encoder needs at least one event among the training patients")
    yv = _surv(targets, val_ids) if val_ids else None
    yv = yv if yv is not None and yv["event"].any() else None
    chosen, oof = FITTERS[name](encoder, _dense(mod, train_ids), y, _dense(mod, val_ids) if yv is not None else None,
                                yv, seed)
    log.info("%s: %s encoder %s", where, name, chosen)
    return chosen, {p: (v - float(encoder.center)) / float(encoder.scale) for p, v in zip(train_ids, oof)}


def score_modality(encoder: FittedScore, mod, ids: list[str], overrides: dict[str, float]):
    """A one-feature modality holding each patient's standardised score (``overrides`` first)."""
    from lego.data.fold_data import ModalityTensors

    with torch.no_grad():
        full = encoder.score(torch.cat([_row(mod.per_patient[p]) for p in ids]).unsqueeze(1))[:, 0].tolist()
    per = {p: torch.tensor([[overrides.get(p, full[i])]], dtype=torch.float32) for i, p in enumerate(ids)}
    return ModalityTensors(mod.name, mod.kind, per, mod.state, 1)


def prepare_fitted_encoder(name: str, encoder: FittedScore, mod, targets, *, train_ids: list[str], val_ids: list[str],
                           where: str, seed: int = 0):
    """Fit the encoder and switch it to reading scores; returns (what was chosen, the training
    modality of scores -- cross-fitted for training patients, full-model for validation -- and
    every score value the block will meet, for its ranking constraint)."""
    fitted, oof = fit_encoder(name, encoder, mod, targets, train_ids=train_ids, val_ids=val_ids, where=where, seed=seed)
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


def _grid_risk(block, grid: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The block's risk at each grid score (the block reads scores: ``takes_score`` is on)."""
    from lego.survival.loss import risk_score

    device = block.latent.device
    return risk_score(block(grid.to(device), mask.to(device))[1].float())


def ranking_penalty(block, scores: list[float], weight: float = 10.0):
    """A training-loss term that keeps the block's risk non-decreasing in the fitted predictor.

    Why: the block only sees one number per patient, so its risk is a function of that number;
    left free, a few epochs on ~100 noisy out-of-fold scores bend it (measured: the Coxnet
    predictor's validation C 0.73 became 0.40 through the block). Monotone, the block keeps
    the fitted model's ranking (its C) and learns the survival curve's calibration.
    """
    grid, mask = _score_grid(scores)

    def penalty() -> torch.Tensor:
        risk = _grid_risk(block, grid, mask)
        return weight * torch.relu(risk[:-1] - risk[1:]).sum()

    return penalty


def start_monotone(block, penalty, max_steps: int = 500, lr: float = 0.01) -> int:
    """Fit the untrained block to the constraint alone before training (steps taken).

    Why: early stopping may keep an early epoch, and a random initial map from score to risk is
    as likely to fall as to rise; started monotone, every epoch's block keeps the ranking."""
    opt = optimisers.Adam([p for p in block.parameters() if p.requires_grad], lr=lr)
    for step in range(max_steps):
        loss = penalty()
        if loss.item() == 0.0:
            return step
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return max_steps


def ranking_kept(block, scores: list[float]) -> float:
    """Share of predictor-grid pairs (lower, higher) whose risk does not fall (1 = monotone, ~0 = reversed)."""
    was = block.training
    block.eval()
    with torch.no_grad():
        risk = _grid_risk(block, *_score_grid(scores))
    block.train(was)
    upper = torch.triu(torch.ones(len(risk), len(risk), dtype=torch.bool, device=risk.device), diagonal=1)
    return float((risk[None, :] >= risk[:, None] - 1e-6)[upper].float().mean())
