"""Train one modality's LegoBlock for one fold (one grid candidate)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from lego.config import block_spec_errors
from lego.data.fold_data import load_fold_modality, target_tensors
from lego.device import resolve_device
from lego.errors import InputError
from lego.io import write_json
from lego.model_selection import validation_score, validation_se
from lego.models import files as model_files
from lego.models.block import BlockConfig, LegoBlock, SingleBlock
from lego.models.fitted import OUT_OF_FOLD, prepare_fitted_encoder, ranking_kept, ranking_penalty, start_monotone
from lego.models.model_kinds import BLOCK, FITTED, HISTORY
from lego.settings import default
from lego.steps.inference import predict
from lego.survival.targets import baseline_hazard_logits, class_prior_logits
from lego.train import TrainConfig, seed_everything, train

log = logging.getLogger(__name__)

# Every BlockConfig field a spec may set (a new field is settable at once). The data fix the
# input width and outputs; init_seed stays shared, since blocks that start apart cannot merge.
ARCH_KEYS = tuple(f for f in BlockConfig.__dataclass_fields__ if f not in ("in_dim", "n_outputs", "init_seed"))
TRAIN_KEYS = tuple(TrainConfig.__dataclass_fields__)
SPEC_KEYS = frozenset(ARCH_KEYS + TRAIN_KEYS + ("max_patches", "n_bins", "preprocess", "seed"))


def check_spec(spec, where: str) -> dict:
    """A block's --spec: a mapping of known settings (a typo must not silently fall back to a default)."""
    if not isinstance(spec, dict):
        raise InputError(f"{where}: the block spec must be a JSON object, got {type(spec).__name__}")
    unknown = sorted(set(spec) - SPEC_KEYS)
    if unknown:
        raise InputError(f"{where}: unknown block setting(s) {unknown}; known: {', '.join(sorted(SPEC_KEYS))}")
    problems = block_spec_errors(spec)
    if problems:
        raise InputError(f"{where}: block spec {problems[0]} (see config/schema.yaml, model and modalities.*.preprocess)")
    return spec


def _block(spec: dict, in_dim: int, n_outputs: int, where: str) -> tuple[BlockConfig, LegoBlock]:
    try:
        cfg = BlockConfig(in_dim=in_dim, n_outputs=n_outputs, **{k: spec[k] for k in ARCH_KEYS if k in spec})
        return cfg, LegoBlock(cfg)
    except ValueError as exc:  # an unknown encoder, a size out of range
        raise InputError(f"{where}: {exc}") from None


def start_head_at_baseline(block: LegoBlock, targets, train_ids: list[str]) -> None:
    """Set a trained head's output bias to what the training patients show with no features (the
    life table's per-bin hazards, or the class frequencies), the weights left as they start.

    Why: from a random bias a neural block's first epochs fit the baseline hazard, which is most
    of what the validation loss rewards; early stopping then kept models that barely ranked
    patients (the SNN baseline-covariate block on AIDS: test C 0.445, Spearman -0.80 with Coxnet
    on one fold). Not for tied heads (every block must keep the same head) or fitted encoders
    (their head starts from the fitted score, see ``start_monotone``)."""
    y = target_tensors(train_ids, targets)
    if targets.task == "survival":
        bias = baseline_hazard_logits(y["bin"].numpy(), y["event"].numpy(), targets.n_outputs)
    else:
        bias = class_prior_logits(y["label"].numpy(), targets.n_outputs)
    with torch.no_grad():
        block.head.fc.bias.copy_(torch.as_tensor(bias, dtype=block.head.fc.bias.dtype))


def train_block(modality: str, kind: str, data: str, *, labels: str, folds: str, fold: int, task: str, spec: dict,
                out_dir: str, categorical: list[str] | None = None, device: str = default("model.train.device")) -> dict:
    """Train one modality's LegoBlock on every training patient of the fold who has the modality."""
    where = f"modality {modality!r}, fold {fold}"
    seed = int(check_spec(spec, where).get("seed", 0))
    inputs = load_fold_modality(modality, kind, data, labels=labels, folds=folds, fold=fold, task=task, spec=spec,
                                where=where, categorical=categorical)
    targets, mod, train_ids, val_ids = inputs.targets, inputs.mod, inputs.train_ids, inputs.val_ids
    if task == "survival" and sum(targets.per_patient[p][1] for p in train_ids) == 0:
        log.warning("%s: no events among training patients; the block learns from censoring only", where)
    seed_everything(seed)
    cfg, block = _block(spec, mod.dim, targets.n_outputs, where)
    tcfg = TrainConfig.from_spec(spec)
    if cfg.frozen_head and cfg.encoder not in FITTED:
        log.warning("%s: a %s encoder under a tied (frozen) head: measured on UCEC, such blocks ranked patients "
                    "worse than chance (0.42-0.53 test C); set model.block.tied_head to auto or false for neural encoders",
                    where, cfg.encoder)
    if cfg.head_start == "baseline" and not cfg.frozen_head and cfg.encoder not in FITTED:
        start_head_at_baseline(block, targets, train_ids)
    fitted, train_mod, penalty, scores = None, mod, None, []
    if cfg.encoder in FITTED:
        fitted, train_mod, scores = prepare_fitted_encoder(cfg.encoder, block.encoder, mod, targets, train_ids=train_ids,
                                                           val_ids=val_ids, where=where, seed=seed)
        penalty = ranking_penalty(block, scores)
        fitted["warm_up_steps"] = start_monotone(block, penalty)
    result = train(SingleBlock(modality, block), {modality: train_mod}, targets, train_ids, val_ids, cfg=tcfg,
                   device=resolve_device(device), where=where, penalty=penalty)
    if fitted is not None:
        fitted["ranking_kept"] = ranking_kept(block, scores)
        # What the block read for each training patient: the out-of-fold score. A tuned merge and
        # a fuse predict training patients from these (out of sample), not from in-sample scores.
        result[OUT_OF_FOLD] = {p: float(train_mod.per_patient[p][0, 0]) for p in sorted(train_ids)}
        block.encoder.takes_score = False  # from now on it reads the modality's features
    config = {
        "kind": BLOCK.architecture, "modality": modality, "modality_kind": kind, "fold": fold, "task": task,
        "block": cfg.to_dict(), "train": tcfg.to_dict(), "preprocess": mod.state, "bins": targets.bins,
        "classes": targets.classes, "n_train": len(train_ids), "n_val": len(val_ids),
        "patients": {"train": sorted(train_ids), "val": sorted(val_ids)},  # evaluation refuses to test on them
        **({"fitted_encoder": fitted} if fitted else {}),
    }
    block.cpu().eval()
    val_pred = predict(block, config, {modality: mod}, val_ids)
    result["val_score"] = validation_score(val_pred, inputs.labels, task)
    result["val_score_se"] = validation_se(val_pred, inputs.labels, task, seed=seed)
    model_files.save(block, config, out_dir)
    write_json(result, Path(out_dir) / HISTORY)
    log.info("%s: %d train / %d val patients, best epoch %d, val loss %.4f",
             where, len(train_ids), len(val_ids), result["best_epoch"], result["best_val_loss"])
    return result
