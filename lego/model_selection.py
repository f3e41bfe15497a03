"""Choices made on validation patients only: block hyper-parameters, which blocks to merge and
with what weights, and which MM-Lego variant (merge or fuse) a fold reports.

Every choice reads the fold's validation patients and nothing else: test patients are only ever
predicted, after the choice, by the evaluation stage.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from lego.io import copy_atomic, read_json, write_json
from lego.models.model_kinds import CONFIG, HISTORY, MODEL_FILES
from lego.settings import default, setting

log = logging.getLogger(__name__)



def grid_candidates(grid: dict[str, list] | list[dict] | None) -> list[dict]:
    """The hyper-parameter grid as a list of settings.

    A mapping of lists is every combination (keys sorted, so numbering is stable); a list of
    mappings is taken as the candidates themselves, in order (for grids that are not a product,
    e.g. feature selection for some encoders only).
    """
    if not grid:
        return [{}]
    if isinstance(grid, list):
        return [dict(c) for c in grid]
    keys = sorted(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def validation_score(pred: pd.DataFrame, labels: pd.DataFrame, task: str) -> float | None:
    """Harrell's C (survival) or AUC (classification) of predictions on validation patients; None if undefined."""
    from lego.evaluation.metrics import headline

    if pred.empty:
        return None
    score = headline(pred.merge(labels, on="patient_id", how="left"), task)
    return None if score is None or not np.isfinite(score) else float(score)


def _draws(n: int, n_boot: int, seed: int) -> list[np.ndarray]:
    """Bootstrap resamples of ``n`` rows (with replacement, seeded)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, n, n) for _ in range(n_boot)]


def _spread(values) -> float | None:
    values = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.std(values, ddof=1)) if len(values) > 1 else None


def c_index_se(time: np.ndarray, event: np.ndarray, risk: np.ndarray, n_boot: int = 200, seed: int = 0) -> float | None:
    """Bootstrap standard error of Harrell's C (patients resampled with replacement, seeded)."""
    draws = _draws(len(time), n_boot, seed)
    return _spread(_bootstrap_c(np.asarray(time, float), np.asarray(event, bool), np.asarray(risk, float), draws))


def validation_se(pred: pd.DataFrame, labels: pd.DataFrame, task: str, n_boot: int = 200, seed: int = 0) -> float | None:
    """Bootstrap standard error of the validation score (patients resampled with replacement, seeded)."""
    from lego.evaluation.metrics import headline

    if pred.empty:
        return None
    frame = pred.merge(labels, on="patient_id", how="left").reset_index(drop=True)
    if task == "survival":
        return c_index_se(frame["time"].to_numpy(float), frame["event"].to_numpy(bool), frame["risk"].to_numpy(float),
                          n_boot, seed)
    return _spread(headline(frame.iloc[d], task) for d in _draws(len(frame), n_boot, seed))


def _bootstrap_c(time: np.ndarray, event: np.ndarray, risk: np.ndarray, draws: list[np.ndarray]) -> list[float]:
    """Harrell's C of each bootstrap sample from one matrix of pairs (fast: no refit per sample).

    Pairs as scikit-survival counts them: (i, j) is comparable when i had the event before j's
    time, or at j's time with j censored; concordant when i's risk is higher (risks within 1e-8
    count one half). A sample's C weighs each pair by how often both patients were drawn.
    """
    later = (time[:, None] < time[None, :]) | ((time[:, None] == time[None, :]) & ~event[None, :])
    comparable = later & event[:, None]
    diff = risk[:, None] - risk[None, :]
    score = np.where(np.abs(diff) <= 1e-8, 0.5, (diff > 0).astype(float))
    concordant = comparable * score
    out = []
    for d in draws:
        w = np.bincount(d, minlength=len(time)).astype(float)
        pairs = w @ comparable @ w
        out.append(float(w @ concordant @ w / pairs) if pairs > 0 else np.nan)
    return out


def paired_gain_se(time: np.ndarray, event: np.ndarray, risk_a: np.ndarray, risk_b: np.ndarray, n_boot: int = 200,
                   seed: int = 0) -> tuple[float, float | None]:
    """Harrell's C of ``risk_b`` minus that of ``risk_a`` on the same patients, and the bootstrap SE
    of that difference (both scored on each resample, so what the two share cancels)."""
    from lego.survival.discrimination import c_index

    time, event = np.asarray(time, float), np.asarray(event, bool)
    gain = float(c_index(time, event, risk_b) - c_index(time, event, risk_a))
    draws = _draws(len(time), n_boot, seed)
    diffs = np.subtract(_bootstrap_c(time, event, np.asarray(risk_b, float), draws),
                        _bootstrap_c(time, event, np.asarray(risk_a, float), draws))
    return gain, _spread(diffs.tolist())


def prediction_gain(pred_a: pd.DataFrame, pred_b: pd.DataFrame, labels: pd.DataFrame) -> tuple[float | None, float | None]:
    """:func:`paired_gain_se` of two models' survival predictions on the patients both predict
    (None, None where those patients hold no event)."""
    both = pred_a[["patient_id", "risk"]].merge(pred_b[["patient_id", "risk"]], on="patient_id", suffixes=("_a", "_b"))
    both = both.merge(labels, on="patient_id")
    if not both["event"].any():
        return None, None
    return paired_gain_se(both["time"].to_numpy(), both["event"].to_numpy(bool), both["risk_a"].to_numpy(),
                          both["risk_b"].to_numpy())


RULES = setting("model.selection").choices


def choose(scores: list[float | None], ses: list[float | None], rule: str = default("model.selection"),
           losses: list[float | None] | None = None) -> tuple[int, float | None]:
    """Index of the chosen candidate and the score threshold used.

    ``best``: the highest validation score (ties: the lower validation loss, then the first listed). ``one_se`` (Breiman's
    one-standard-error rule): the first listed candidate whose score is within one bootstrap
    standard error of the best. Why: a fold's validation part holds a handful of events, so the
    spread of validation C between candidates is mostly noise (measured on the paper's KIRP folds:
    the validation-best RNA candidate lost 0.18 test C to the first-listed one); listing
    candidates simplest first, the rule only leaves the simplest for a clear gain.
    """
    if rule not in RULES:
        raise ValueError(f"unknown selection rule {rule!r}; use one of {RULES}")
    vals = [float(s) if isinstance(s, (int, float)) and np.isfinite(s) else -np.inf for s in scores]
    neg_loss = [-float(x) if isinstance(x, (int, float)) and np.isfinite(x) else -np.inf for x in (losses or [None] * len(vals))]
    best = max(range(len(vals)), key=lambda i: (vals[i], neg_loss[i]))
    se = ses[best]
    if rule == "best" or not np.isfinite(vals[best]) or not isinstance(se, (int, float)) or not np.isfinite(se):
        return best, None
    threshold = vals[best] - se
    return next(i for i, v in enumerate(vals) if v >= threshold), float(threshold)


def _finite(value) -> float | None:
    """A score, or None where there is none (JSON has no NaN: a NaN written is a file no reader accepts)."""
    return float(value) if isinstance(value, (int, float)) and np.isfinite(value) else None


def _same_block(candidate_dirs: list[str]) -> None:
    """Candidates of one choice are one modality, fold and task (a mixed list is a wiring mistake)."""
    from lego.errors import InputError

    if not candidate_dirs:
        raise InputError("no candidate given; name the grid candidates' model folders")
    seen = {}
    for d in candidate_dirs:
        c = read_json(Path(d) / CONFIG, dict)
        key = tuple(c.get(k) for k in ("modality", "fold", "task"))
        if seen and key not in seen.values():
            first, was = next(iter(seen.items()))
            raise InputError(f"{d}: candidate for modality/fold/task {key}, but {first} is for {was}; "
                             "choose among candidates of one block and fold")
        seen[d] = key


def select_candidate(candidate_dirs: list[str], out_dir: str, rule: str = default("model.selection")) -> dict:
    """Copy the candidate chosen on validation (see :func:`choose`) into ``out_dir``."""
    _same_block(candidate_dirs)
    hists = [read_json(Path(d) / HISTORY, dict) for d in candidate_dirs]
    scores = [_finite(h.get("val_score")) for h in hists]
    chosen, threshold = choose(scores, [h.get("val_score_se") for h in hists], rule, [h.get("best_val_loss") for h in hists])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in MODEL_FILES:
        copy_atomic(Path(candidate_dirs[chosen]) / name, out / name)
    choice = {"chosen": Path(candidate_dirs[chosen]).name, "rule": rule, "threshold": threshold,
              "candidates": {Path(d).name: s for d, s in zip(candidate_dirs, scores)}}
    write_json(choice, out / "selection.json")
    log.info("%s: chose %s by %s (validation %s, threshold %s)", out, choice["chosen"], rule,
             scores[chosen], threshold)
    return choice


def latent_scale(block, mod, ids: list[str]) -> float:
    """RMS magnitude of a block's latent over the given (training) patients who have the modality."""
    import torch  # here, not at the top: select-block and select-variant never need it (a second per job)

    from lego.data.fold_data import collate

    ids = [p for p in ids if p in mod.per_patient]
    if not ids:
        return 1.0
    with torch.no_grad():
        x, mask, _ = collate(ids, {mod.name: mod})[mod.name]
        z = block.latent_from(x, mask)
    return float(z.abs().pow(2).mean().sqrt().clamp_min(1e-6))


def merge_weights(val_scores: dict[str, float | None], floor: float = 0.01) -> dict[str, float]:
    """Weight of each block from its validation score: how far it is above chance (0.5), floored."""
    return {m: max((s if s is not None else 0.5) - 0.5, floor) for m, s in val_scores.items()}


def subsets(names: list[str], max_blocks: int = 6) -> list[list[str]]:
    """Block subsets a tuned merge may choose among: every subset of two or more (all blocks only past max_blocks)."""
    if len(names) > max_blocks:
        return [list(names)]
    return [list(c) for r in range(len(names), 1, -1) for c in itertools.combinations(names, r)]


class OutOfSample:
    """A fold's out-of-sample patients for its blocks, and each block's input for them.

    Where every block has a fitted encoder with cross-fitted training scores (history.json,
    ``OUT_OF_FOLD``), these are the training patients (each through its out-of-fold score) and
    the validation patients; otherwise the validation patients alone. Why: choices made for a
    merge (its weights, its form) on ~5x the events of validation are far less luck."""

    def __init__(self, mods: dict, ids: list[str], what: str, reads_scores: bool):
        self.mods, self.ids, self.what, self.reads_scores = mods, ids, what, reads_scores

    @property
    def cross_fitted(self) -> bool:
        """Whether the training patients are here (through cross-fitted scores), not validation alone.
        The same flag as ``reads_scores``: the fitted blocks' scores are what cross-fitting keeps."""
        return self.reads_scores

    def _predict(self, model, config: dict, modalities: list[str], blocks: list, logits: bool = False):
        from lego.steps.inference import predict, predict_logits

        mods = {m: self.mods[m] for m in modalities}
        with reading_scores(blocks, self.reads_scores):
            return (predict_logits if logits else predict)(model, config, mods, self.patients(modalities))

    def patients(self, modalities: list[str]) -> list[str]:
        """The out-of-sample patients who have any of the modalities: every prediction here is on them."""
        return [p for p in self.ids if any(p in self.mods[m].per_patient for m in modalities)]

    def block_offsets(self, blocks: dict, configs: dict) -> dict[str, list[float]] | None:
        """Each block's mean logits over the out-of-sample patients who have its modality: where a
        readout merge centres it (see :func:`lego.models.merge.merged_output`). None (no centring,
        with a warning, as the ensemble does) where a block has none of these patients."""
        logits = {m: self._predict(b, configs[m], [m], [b], logits=True) for m, b in blocks.items()}
        empty = sorted(m for m, v in logits.items() if len(v) == 0)
        if empty:
            log.warning("no out-of-sample patient has block(s) %s: the readout merge is not centred", ", ".join(empty))
            return None
        return {m: v.mean(0).tolist() for m, v in logits.items()}

    def block_risks(self, block, config: dict, modality: str) -> pd.Series:
        """The block's risk on the out-of-sample patients who have its modality."""
        pred = self._predict(block, config, [modality], [block])
        return pred.set_index("patient_id")["risk"]

    def predict(self, model, config: dict, modalities: list[str]) -> pd.DataFrame:
        """A merged model's predictions on the out-of-sample patients who have any of its modalities."""
        return self._predict(model, config, modalities, [model.blocks[m] for m in modalities])

class reading_scores:  # noqa: N801 (a context manager used like a function)
    """Within it, blocks with a fitted encoder read standardised scores instead of features."""

    def __init__(self, blocks: list, on: bool):
        self.encoders = [b.encoder for b in blocks if on and hasattr(b.encoder, "takes_score")]

    def __enter__(self):
        for e in self.encoders:
            e.takes_score = True

    def __exit__(self, *exc):
        for e in self.encoders:
            e.takes_score = False


def out_of_sample(blocks: dict, hists: dict[str, dict], mods: dict, ids: dict[str, list[str]]) -> OutOfSample:
    """The fold's out-of-sample inputs for its blocks (see :class:`OutOfSample`)."""
    from lego.models.fitted import OUT_OF_FOLD, score_modality

    if all(OUT_OF_FOLD in h for h in hists.values()):
        pool = ids["train"] + ids["val"]
        scored = {m: score_modality(blocks[m].encoder, mods[m], [p for p in pool if p in mods[m].per_patient],
                                    hists[m][OUT_OF_FOLD]) for m in blocks}
        return OutOfSample(scored, pool, "out-of-fold training and validation patients", True)
    return OutOfSample(mods, list(ids["val"]), "validation patients", False)
