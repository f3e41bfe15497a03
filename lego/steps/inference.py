"""Applying a saved model: predictions, evaluation on the fold's test patients, prediction on a
new cohort, and the checks that a model is never scored on patients it was fitted on."""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

import pandas as pd
import torch

from lego.data.fold_data import ModalityTensors, apply_modality, collate, fold_ids, load_modality_table
from lego.data.labels import require_known_classes, require_outcomes
from lego.errors import InputError
from lego.evaluation.names import METRICS_FILE, PREDICTIONS_FILE
from lego.evaluation.scoring import EvalOptions, write_evaluation
from lego.io import read_frame, write_json
from lego.models import files as model_files
from lego.models.model_kinds import BLOCK, as_predictor, model_inputs
from lego.survival.loss import risk_score, survival_curve

log = logging.getLogger(__name__)


def predict(model: torch.nn.Module, config: dict, mods: dict[str, ModalityTensors], ids: list[str],
            batch_size: int = 32) -> pd.DataFrame:
    """Per-patient predictions: risk and S(t) per bin (survival) or class probabilities."""
    return _prediction_frame(ids, predict_logits(model, config, mods, ids, batch_size), config)


def predict_logits(model: torch.nn.Module, config: dict, mods: dict[str, ModalityTensors], ids: list[str],
                   batch_size: int = 32) -> torch.Tensor:
    """The model's logits (patients, outputs), refused where any is not finite."""
    wrapped = as_predictor(model, config)
    wrapped.eval()
    outs = []
    with torch.no_grad():
        for i in range(0, len(ids), batch_size):
            outs.append(wrapped(collate(ids[i : i + batch_size], mods))[1])
    n_out = len(config["bins"]) - 1 if config["task"] == "survival" else len(config["classes"])
    logits = torch.cat(outs) if outs else torch.zeros(0, n_out)
    bad = ~torch.isfinite(logits).all(dim=1)
    if bad.any():
        first = ids[int(bad.nonzero()[0])]
        raise InputError(f"model for {config.get('modality') or config['kind']} (fold {config.get('fold')}) gives non-finite "
                         f"predictions for {int(bad.sum())} patient(s), e.g. {first}; check that patient's input "
                         "features for extreme values, and retrain the model")
    return logits


def _prediction_frame(ids: list[str], logits: torch.Tensor, config: dict) -> pd.DataFrame:
    df = pd.DataFrame({"patient_id": ids})
    if config["task"] == "survival":
        df["risk"] = risk_score(logits).numpy()
        surv = survival_curve(logits).numpy()
        for k in range(surv.shape[1]):
            df[f"surv_{k}"] = surv[:, k]
    else:
        probs = torch.softmax(logits, dim=1).numpy()
        for k, c in enumerate(config["classes"]):
            df[f"p_{c}"] = probs[:, k]
    return df


def fold_modalities(configs: dict[str, dict], data: dict[str, str], seed: int = 0,
                    ids: dict[str, list[str]] | None = None) -> dict[str, ModalityTensors]:
    """Each block's saved preprocessing applied to its modality table. With the fold's ``ids``, a
    table sharing no patient with the fold is refused: another cohort's table (or IDs written
    differently) would silently drop that modality, leaving the others to score alone."""
    out = {}
    fold_patients = set().union(*ids.values()) if ids is not None else set()
    for m, c in configs.items():
        if m not in data:
            raise InputError(f"no data given for modality {m!r} (needed by the model)")
        try:
            out[m] = apply_modality(m, c["modality_kind"], load_modality_table(c["modality_kind"], data[m]),
                                    c["preprocess"], seed)
        except InputError as exc:
            raise InputError(f"{data[m]} (modality {m!r}): {exc}" if str(data[m]) not in str(exc) else str(exc)) from None
        if ids is not None and out[m].per_patient and not fold_patients & set(out[m].per_patient):
            raise InputError(f"{data[m]} (modality {m!r}): none of its {len(out[m].per_patient)} patients "
                             f"(e.g. {next(iter(out[m].per_patient))}) is in the fold; give the table of this cohort")
    return out


def fitted_patients(config: dict) -> set[str] | None:
    """Patients a model, or any block inside it, was fitted or validated on (None: a model saved
    before they were recorded)."""
    parts = [config] if "patients" in config else list(model_inputs(config).values())
    if any("patients" not in p for p in parts):
        return None
    return set().union(*(set(p["patients"]["train"]) | set(p["patients"]["val"]) for p in parts))


def check_unseen(config: dict, ids: list[str], what: str, fix: str) -> None:
    """Refuse to score a model on patients it was fitted or validated on (a silent leak otherwise)."""
    seen = fitted_patients(config)
    leaked = sorted(seen & set(ids)) if seen is not None else []
    if leaked:
        raise InputError(f"{len(leaked)} {what} patient(s), e.g. {leaked[0]}, were used to fit or validate this "
                         f"model (fold {config.get('fold')}); {fix}")


def evaluate(model_dir: str, data: dict[str, str], *, labels: str, folds: str, out_dir: str, name: str,
             opts: EvalOptions | None = None) -> dict:
    """Predictions and every metric on the fold's test patients, with validation alongside."""
    model, config = model_files.load(model_dir)
    named = re.fullmatch(r"fold(\d+)", Path(out_dir).name)
    if named and int(named.group(1)) != config["fold"]:  # several folds in one call are paired by order
        raise InputError(f"{out_dir} is named for fold {named.group(1)} but {model_dir} is the model of fold "
                         f"{config['fold']}; give the output folders in the order of the model folders")
    lab, ids = read_frame(labels, "labels"), fold_ids(read_frame(folds, "folds"), config["fold"])
    check_unseen(config, ids["test"], f"of the test patients in {folds}",
                 f"evaluate {model_dir} with the folds table it was trained with")
    require_outcomes(lab, config["task"], f"{labels} (evaluating {model_dir})", ids["test"] + ids["val"])
    mods = fold_modalities(model_inputs(config), data, ids=ids)
    can = lambda p: any(p in m.per_patient for m in mods.values())  # noqa: E731
    preds, extra = {}, {}
    for subset in ("test", "val"):
        subset_ids = [p for p in ids[subset] if can(p)]
        preds[subset] = predict(model, config, mods, subset_ids)
        if len(mods) > 1:
            extra[f"{subset}_all_modalities"] = sum(all(p in m.per_patient for m in mods.values()) for p in subset_ids)
    return write_evaluation(preds, lab, ids, task=config["task"], edges=config["bins"] or None,
                            opts=opts or EvalOptions(), name=name, fold=config["fold"], out_dir=out_dir, extra=extra)


def model_name(model_dir: str, config: dict) -> str:
    """A model's name from its folder: ``<name>/fold<k>`` (``blocks/<m>/fold<k>`` for a block) names it by the
    model, not by the fold (two folds of one model summarise as one model)."""
    path = Path(model_dir).resolve()
    if not path.name.startswith("fold"):
        return path.name
    if config.get("kind") == BLOCK.architecture and config.get("modality"):
        return BLOCK.model_name(config["modality"])
    return path.parent.name


def predict_cohort(model_dir: str, data: dict[str, str], out_dir: str, labels: str | None = None,
                   opts: EvalOptions | None = None, name: str | None = None) -> dict:
    """Apply a trained model to a new cohort (external validation or deployment).

    The model's saved preprocessing is reused as is (a column it was trained on and the new
    table lacks is an error, never a silent zero). Every patient with at least one of the
    model's modalities is predicted (a merge or fuse uses the modalities each patient has).
    With ``labels``, the same metrics as evaluation are computed on these patients; metrics that
    need a censoring distribution (Uno's C, the Brier score) estimate it on the new cohort itself.
    """
    from lego.io import write_parquet

    model, config = model_files.load(model_dir)
    mods = fold_modalities(model_inputs(config), data)
    ids = sorted(set().union(*(m.per_patient for m in mods.values())))
    if not ids:
        raise InputError(f"none of the given tables holds a patient for the model in {model_dir}")
    pred = predict(model, config, mods, ids)
    result = {"model": name or model_name(model_dir, config), "model_dir": str(model_dir), "kind": config["kind"],
              "fold": config.get("fold"), "task": config["task"],
              "n": len(ids), "modalities": {m: len(t.per_patient) for m, t in mods.items()}}
    if labels:
        pred = _external_metrics(pred, config, labels, model_dir, opts or EvalOptions(), result)
    write_parquet(pred, Path(out_dir) / PREDICTIONS_FILE)
    write_json(result, Path(out_dir) / METRICS_FILE)
    log.info("%s: predicted %d patients%s", model_dir, len(ids), f"; external {result['external']}" if labels else "")
    return result


def _external_metrics(pred: pd.DataFrame, config: dict, labels: str, model_dir: str, opts: EvalOptions,
                      result: dict) -> pd.DataFrame:
    """Score the labelled predicted patients into ``result``; the predictions with labels merged in."""
    from lego.evaluation.metrics import score_subset

    lab = read_frame(labels, "labels")
    where = f"{labels} (predicting with {model_dir})"
    require_outcomes(lab, config["task"], where)
    if config["task"] == "classification":
        require_known_classes(lab, config["classes"], where)
    known = pred.merge(lab, on="patient_id", how="inner")
    if known.empty:
        raise InputError(f"{labels}: none of its patients is among the {len(pred)} predicted "
                         f"(e.g. {pred['patient_id'].iloc[0]}); check that the labels and the tables use the same patient IDs")
    if len(known) < len(pred):
        log.warning("%s: %d of %d predicted patients have no label; external metrics use the %d labelled",
                    labels, len(pred) - len(known), len(pred), len(known))
    check_unseen(config, list(known["patient_id"]), f"of the labelled patients in {labels}",
                 "external metrics on them would be leaked: leave them out of the labels (or predict without labels)")
    result["labelled"] = len(known)
    # Which patients were scored (a digest): predict-summary averages one model's folds only
    # over one cohort, never a fold applied to another cohort under the same name.
    result["labelled_digest"] = hashlib.sha256("\n".join(sorted(map(str, known["patient_id"]))).encode()).hexdigest()[:16]
    result["external"] = score_subset(known, config["task"], lab, config["bins"] or None, opts.horizons, opts.tau_quantile)
    return pred.merge(lab, on="patient_id", how="left")
