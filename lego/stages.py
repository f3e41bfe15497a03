"""Model stages of the workflow: train a block, merge, fuse, evaluate, summarise.

Each function reads plain files (parquet tables, model directories) and writes plain files, so
the Snakemake rules stay thin and every stage can be run by hand through the ``lego`` CLI.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lego.config import block_spec_errors
from lego.data.fold_data import (ModalityTensors, apply_modality, collate, fold_ids, load_fold_modality,
                                 load_modality_table, make_targets)
from lego.data.labels import require_known_classes, require_outcomes
from lego.errors import InputError
from lego.evaluation.metrics import HEADLINE, prediction_columns
from lego.evaluation.names import block_name
from lego.io import copy_atomic, read_frame, read_json, write_json
from lego.models import io as model_io
from lego.models.block import BlockConfig, LegoBlock
from lego.models.encoders import FITTED
from lego.models.fitted import prepare_fitted_encoder, ranking_kept, ranking_penalty, start_monotone
from lego.models.fuse import LegoFuse
from lego.models.merge import LegoMerge
from lego.device import resolve_device
from lego.survival.loss import risk_score, survival_curve
from lego.evaluation.stages import EvalOptions, write_evaluation
from lego.selection import choose, latent_scale, merge_weights, subsets, validation_score, validation_se
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


class SingleBlock(torch.nn.Module):
    """Adapter: a block driven by the multi-modality input dict used by the trainer."""

    def __init__(self, modality: str, block: LegoBlock):
        super().__init__()
        self.modality, self.block = modality, block

    def forward(self, inputs):
        x, mask, _ = inputs[self.modality]
        return self.block(x, mask)


def _inputs_for(config: dict) -> dict[str, dict]:
    return {config["modality"]: config} if config["kind"] in ("block", "abmil") else config["blocks"]


def train_block(modality: str, kind: str, data: str, labels: str, folds: str, fold: int, task: str, spec: dict,
                out_dir: str, categorical: list[str] | None = None, device: str = "auto") -> dict:
    """Train one modality's LegoBlock on every training patient of the fold who has the modality."""
    where = f"modality {modality!r}, fold {fold}"
    seed = int(check_spec(spec, where).get("seed", 0))
    inputs = load_fold_modality(modality, kind, data, labels, folds, fold, task, spec, where, categorical)
    targets, mod, train_ids, val_ids = inputs.targets, inputs.mod, inputs.train_ids, inputs.val_ids
    if task == "survival" and sum(targets.per_patient[p][1] for p in train_ids) == 0:
        log.warning("%s: no events among training patients; the block learns from censoring only", where)
    seed_everything(seed)
    try:
        cfg = BlockConfig(in_dim=mod.dim, n_outputs=targets.n_outputs, **{k: spec[k] for k in ARCH_KEYS if k in spec})
        block = LegoBlock(cfg)
    except ValueError as exc:  # an unknown encoder, a size out of range
        raise InputError(f"{where}: {exc}") from None
    tcfg = TrainConfig(**{k: spec[k] for k in TRAIN_KEYS if k in spec})
    dev = resolve_device(device)
    fitted, train_mod, penalty, scores = None, mod, None, []
    if cfg.encoder in FITTED:
        fitted, train_mod, scores = prepare_fitted_encoder(cfg.encoder, block.encoder, mod, targets, train_ids, val_ids,
                                                           where, seed)
        penalty = ranking_penalty(block, scores)
        fitted["warm_up_steps"] = start_monotone(block, penalty)
    result = train(SingleBlock(modality, block), {modality: train_mod}, targets, train_ids, val_ids, tcfg, dev, where,
                   penalty=penalty)
    if fitted is not None:
        fitted["ranking_kept"] = ranking_kept(block, scores)
        block.encoder.takes_score = False  # from now on it reads the modality's features
    config = {
        "kind": "block", "modality": modality, "modality_kind": kind, "fold": fold, "task": task,
        "block": cfg.to_dict(), "train": tcfg.to_dict(), "preprocess": mod.state, "bins": targets.bins,
        "classes": targets.classes, "n_train": len(train_ids), "n_val": len(val_ids),
        "patients": {"train": sorted(train_ids), "val": sorted(val_ids)},  # evaluation refuses to test on them
        **({"fitted_encoder": fitted} if fitted else {}),
    }
    block.cpu().eval()
    val_pred = predict(block, config, {modality: mod}, val_ids)
    result["val_score"] = validation_score(val_pred, inputs.labels, task)
    result["val_score_se"] = validation_se(val_pred, inputs.labels, task, seed=seed)
    model_io.save(block, config, out_dir)
    write_json(result, Path(out_dir) / "history.json")
    log.info("%s: %d train / %d val patients, best epoch %d, val loss %.4f",
             where, len(train_ids), len(val_ids), result["best_epoch"], result["best_val_loss"])
    return result


MERGE_SHAPE = ("latent_rows", "latent_dim", "depth", "heads", "head_dim", "n_outputs")  # what merge and fuse combine


def _load_blocks(block_dirs: list[str]) -> tuple[dict[str, LegoBlock], dict[str, dict]]:
    blocks, configs = {}, {}
    for d in block_dirs:
        block, config = model_io.load(d)
        if config["kind"] != "block":
            raise InputError(f"{d}: a {config['kind']} model, not a block; merge and fuse take LegoBlock folders "
                             "(blocks/<modality>/fold<k>)")
        blocks[config["modality"]] = block
        configs[config["modality"]] = config
    folds = {c["fold"] for c in configs.values()}
    bins = {tuple(c["bins"]) for c in configs.values()}
    if len(folds) != 1 or len(bins) != 1:
        raise InputError(f"blocks come from different folds or bin edges ({sorted(folds)}); merge blocks of one fold only")
    if len(blocks) < len(block_dirs):
        raise InputError(f"two of the block folders {block_dirs} hold the same modality; give one block per modality")
    if len(blocks) < 2:
        raise InputError(f"merging and fusing need blocks of at least two modalities; got {sorted(blocks)} "
                         f"from {len(block_dirs)} folder(s) (one block per modality)")
    shapes = {m: tuple(c["block"][k] for k in MERGE_SHAPE) for m, c in configs.items()}
    if len(set(shapes.values())) > 1:
        shown = "; ".join(f"{m}: {dict(zip(MERGE_SHAPE, v))}" for m, v in shapes.items())
        raise InputError(f"blocks of different shapes cannot merge ({shown}); train them with one model.block setting")
    return blocks, configs


def check_blocks_fold(configs: dict[str, dict], ids: dict[str, list[str]], lab: pd.DataFrame, folds: str,
                      labels: str) -> None:
    """The folds table is the one the blocks were trained with, and the labels are valid, before a
    tuned merge or a fuse uses the fold's training and validation patients. Why: another split of
    the same cohort would fine-tune or choose on patients that are test patients of the blocks' fold."""
    task, fold = next(iter(configs.values()))["task"], next(iter(configs.values()))["fold"]
    require_outcomes(lab, task, f"{labels} (fold {fold})", ids["train"] + ids["val"])
    for m, c in configs.items():
        fix = f"use the folds table block {m!r} was trained with"
        check_unseen(c, ids["test"], f"of the test patients in {folds}", fix)
        for subset in ("train", "val"):
            check_recorded_patients(c, subset, ids[subset], folds, fix)


def check_recorded_patients(config: dict, subset: str, fold_patients: list[str] | set[str], folds: str, fix: str) -> None:
    """The model's recorded ``subset`` (train or val) patients are that subset of the fold in
    ``folds``: another folds table of the same cohort would otherwise pass unseen (a model saved
    before its patients were recorded is not checked)."""
    stray = sorted(set(config.get("patients", {}).get(subset, ())) - set(fold_patients))
    if stray:
        raise InputError(f"{len(stray)} of the model's {subset} patients (e.g. {stray[0]}) are not {subset} patients "
                         f"of fold {config['fold']} in {folds}; {fix}")


def _combined_config(kind: str, configs: dict[str, dict], **extra) -> dict:
    first = next(iter(configs.values()))
    return {"kind": kind, "fold": first["fold"], "task": first["task"], "bins": first["bins"],
            "classes": first["classes"], "blocks": configs, "order": list(configs), **extra}


def merge(block_dirs: list[str], method: str, head_method: str, out_dir: str) -> None:
    """LegoMerge of a fold's blocks: no training, no data."""
    blocks, configs = _load_blocks(block_dirs)
    model = LegoMerge(blocks, method, head_method)
    model_io.save(model, _combined_config("merge", configs, method=method, head_method=head_method), out_dir)
    log.info("merged %s (%s latents, %s heads)", ", ".join(blocks), method, head_method)


def merge_tuned(block_dirs: list[str], data: dict[str, str], labels: str, folds: str, out_dir: str,
                head_method: str = "slerp", search: bool = False) -> dict:
    """LegoMerge that uses what validation knows (still no training).

    Each block's latent is divided by its RMS on the fold's training patients, and blocks are
    weighted (latents and heads) by how far their validation score is above chance: a block no
    better than chance on validation keeps a floor weight of 0.01, i.e. it is all but left out.
    Two merges of all blocks are tried and the better on validation kept: the weighted mean of
    the latents, and ``readout`` (each latent read by the merged head, logits averaged).
    ``search`` also tries every subset of two or more blocks and the harmonic merge -- off by
    default: with 10-25 validation events, the best of ~30 tries is mostly luck, and the merge's
    validation score (which chooses the reported MM-Lego variant) would be inflated.
    """
    blocks, configs = _load_blocks(block_dirs)
    first = next(iter(configs.values()))
    lab, ids = read_frame(labels, "labels"), fold_ids(read_frame(folds, "folds"), first["fold"])
    check_blocks_fold(configs, ids, lab, folds, labels)
    mods = _fold_modalities(configs, data, ids=ids)
    scales = {m: latent_scale(blocks[m], mods[m], ids["train"]) for m in blocks}
    block_scores = {m: read_json(Path(d) / "history.json").get("val_score")
                    for m, d in zip(configs, block_dirs)}
    weights = merge_weights(block_scores)
    methods = ("mean", "readout", "harmonic") if search else ("mean", "readout")
    options = [(s, m) for s in (subsets(list(blocks)) if search else [list(blocks)]) for m in methods]
    tried = []
    for subset, method in options:
        model = LegoMerge({m: blocks[m] for m in subset}, method, head_method, weights, scales)
        cfg = _combined_config("merge", {m: configs[m] for m in subset}, method=method, head_method=head_method,
                               weights={m: weights[m] for m in subset}, scales={m: scales[m] for m in subset})
        val_ids = [p for p in ids["val"] if any(p in mods[m].per_patient for m in subset)]
        score = validation_score(predict(model, cfg, {m: mods[m] for m in subset}, val_ids), lab, first["task"])
        tried.append({"blocks": subset, "method": method, "val_score": score, "model": model, "config": cfg})
    best = max(tried, key=lambda t: (-np.inf if t["val_score"] is None else t["val_score"], len(t["blocks"])))
    config = {**best["config"], "selection": {"block_val_scores": block_scores, "tried": [
        {k: t[k] for k in ("blocks", "method", "val_score")} for t in tried]}}
    model_io.save(best["model"], config, out_dir)
    log.info("tuned merge of fold %s: %s (%s), validation %s", first["fold"], best["blocks"], best["method"], best["val_score"])
    return config


VARIANT_ORDER = ("merge-tuned", "merge", "fuse")  # the one-SE rule's preference: training-free merges before the fine-tune


def _variant_se(metrics_file: str, task: str) -> float | None:
    """Bootstrap SE of a variant's validation score, from its saved validation predictions (which carry the labels)."""
    path = Path(metrics_file).with_name("predictions.parquet")
    if not path.exists():
        return None
    pred = pd.read_parquet(path)
    pred = pred[pred["subset"] == "val"] if "subset" in pred else pred.iloc[0:0]
    outputs = prediction_columns(pred)
    return validation_se(pred[["patient_id", *outputs]], pred.drop(columns=outputs), task)


def select_variant(metrics_files: list[str], out_dir: str, name: str = "lego", rule: str = "one_se") -> dict:
    """The MM-Lego variant (merge, tuned merge, fuse) a fold reports, chosen on validation; its test results are copied.

    ``one_se`` (default): variants in :data:`VARIANT_ORDER`, the first within one bootstrap SE of
    the best validation score. Why: a fold's validation part holds ~10-25 events, and the
    fine-tuned fuse, fitted on the same small data, wins validation by luck more often than the
    training-free merges (measured on the paper's UCEC folds: the validation-best fuse lost 0.10
    test C to the tuned merge in one of five folds). ``best``: the highest validation score.
    """
    rows = [read_json(f) for f in metrics_files]
    if len({r["fold"] for r in rows}) != 1:
        raise InputError(f"variants come from different folds: {sorted({r['fold'] for r in rows})}")
    rank = {v: i for i, v in enumerate(VARIANT_ORDER)}
    order = sorted(range(len(rows)), key=lambda i: rank.get(rows[i]["model"], len(rank)))
    rows, metrics_files = [rows[i] for i in order], [metrics_files[i] for i in order]
    task = rows[0]["task"]
    key = HEADLINE[task]
    scores = [r["val"].get(key) for r in rows]
    ses = [_variant_se(f, task) for f in metrics_files] if rule == "one_se" else [None] * len(rows)
    best, threshold = choose(scores, ses, rule)
    chosen = {**rows[best], "model": name, "variant": rows[best]["model"], "rule": rule, "threshold": threshold,
              "variant_val_scores": {r["model"]: r["val"].get(key) for r in rows},
              "variant_val_se": {r["model"]: se for r, se in zip(rows, ses)}}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    copy_atomic(Path(metrics_files[best]).with_name("predictions.parquet"), out / "predictions.parquet")
    write_json(chosen, out / "metrics.json")
    log.info("fold %s: %s chose %s on validation (%s)", rows[0]["fold"], name, chosen["variant"], rule)
    return chosen


def _fold_modalities(configs: dict[str, dict], data: dict[str, str], seed: int = 0,
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


def _model_name(model_dir: str, config: dict) -> str:
    """A model's name from its folder: ``<name>/fold<k>`` (``blocks/<m>/fold<k>`` for a block) names it by the
    model, not by the fold (two folds of one model summarise as one model)."""
    path = Path(model_dir).resolve()
    if not path.name.startswith("fold"):
        return path.name
    return block_name(config["modality"]) if config.get("kind") == "block" and config.get("modality") else path.parent.name


def predict_cohort(model_dir: str, data: dict[str, str], out_dir: str, labels: str | None = None,
                   opts: EvalOptions | None = None, name: str | None = None) -> dict:
    """Apply a trained block, merge or fuse to a new cohort (external validation or deployment).

    The model's saved preprocessing is reused as is (a column it was trained on and the new
    table lacks is an error, never a silent zero). Every patient with at least one of the
    model's modalities is predicted (a merge or fuse uses the modalities each patient has).
    With ``labels``, the same metrics as evaluation are computed on these patients; metrics that
    need a censoring distribution (Uno's C, the Brier score) estimate it on the new cohort itself.
    """
    from lego.evaluation.metrics import score_subset
    from lego.io import write_parquet

    model, config = model_io.load(model_dir)
    mods = _fold_modalities(_inputs_for(config), data)
    ids = sorted(set().union(*(m.per_patient for m in mods.values())))
    if not ids:
        raise InputError(f"none of the given tables holds a patient for the model in {model_dir}")
    pred = predict(model, config, mods, ids)
    result = {"model": name or _model_name(model_dir, config), "model_dir": str(model_dir), "kind": config["kind"],
              "fold": config.get("fold"), "task": config["task"],
              "n": len(ids), "modalities": {m: len(t.per_patient) for m, t in mods.items()}}
    if labels:
        lab = read_frame(labels, "labels")
        require_outcomes(lab, config["task"], f"{labels} (predicting with {model_dir})")
        if config["task"] == "classification":
            require_known_classes(lab, config["classes"], f"{labels} (predicting with {model_dir})")
        known = pred.merge(lab, on="patient_id", how="inner")
        if known.empty:
            raise InputError(f"{labels}: none of its patients is among the {len(ids)} predicted (e.g. {ids[0]}); "
                             "check that the labels and the tables use the same patient IDs")
        if len(known) < len(pred):
            log.warning("%s: %d of %d predicted patients have no label; external metrics use the %d labelled",
                        labels, len(pred) - len(known), len(pred), len(known))
        check_unseen(config, list(known["patient_id"]), f"of the labelled patients in {labels}",
                     "external metrics on them would be leaked: leave them out of the labels (or predict without labels)")
        result["labelled"] = len(known)
        # Which patients were scored (a digest): predict-summary averages one model's folds only
        # over one cohort, never a fold applied to another cohort under the same name.
        result["labelled_digest"] = hashlib.sha256("\n".join(sorted(map(str, known["patient_id"]))).encode()).hexdigest()[:16]
        result["external"] = score_subset(known, config["task"], lab, config["bins"] or None,
                                          (opts or EvalOptions()).horizons, (opts or EvalOptions()).tau_quantile)
        pred = pred.merge(lab, on="patient_id", how="left")
    write_parquet(pred, Path(out_dir) / "predictions.parquet")
    write_json(result, Path(out_dir) / "metrics.json")
    log.info("%s: predicted %d patients%s", model_dir, len(ids),
             f"; external {result['external']}" if labels else "")
    return result


FREEZABLE = ("encoders", "latents")


def _freeze_set(freeze, where: str) -> set[str]:
    """What a fuse keeps fixed: a list of known names (a string would be read letter by letter)."""
    if not isinstance(freeze, list) or not all(isinstance(f, str) for f in freeze):
        raise InputError(f"{where}: freeze must be a list of names ({', '.join(FREEZABLE)}), got {freeze!r}")
    unknown = sorted(set(freeze) - set(FREEZABLE))
    if unknown:
        raise InputError(f"{where}: unknown freeze name(s) {unknown}; use {', '.join(FREEZABLE)}")
    return set(freeze)


def fuse(block_dirs: list[str], data: dict[str, str], labels: str, folds: str, spec: dict, out_dir: str, device: str = "auto") -> dict:
    """LegoFuse: chain the blocks and fine-tune for a few epochs on patients with >= 2 modalities."""
    blocks, configs = _load_blocks(block_dirs)
    first = next(iter(configs.values()))
    fold, task = first["fold"], first["task"]
    where = f"fuse, fold {fold}"
    lab, ids = read_frame(labels, "labels"), fold_ids(read_frame(folds, "folds"), fold)
    check_blocks_fold(configs, ids, lab, folds, labels)
    mods = _fold_modalities(configs, data, int(spec.get("seed", 0)), ids)
    targets = make_targets(lab, ids["train"], task, bins=first["bins"] or None, classes=first["classes"] or None)
    seed_everything(int(spec.get("seed", 0)))
    try:
        model = LegoFuse(blocks, spec.get("mode", "stack"), spec.get("head_method", "slerp"))
    except ValueError as exc:  # an unknown mode or head merge
        raise InputError(f"{where}: {exc}") from None
    frozen = _freeze_set(spec.get("freeze", ["encoders"]), where)
    for name, p in model.named_parameters():
        p.requires_grad = not (("encoders" in frozen and ".encoder." in name) or ("latents" in frozen and name.endswith(".latent")))
    def n_mod(p):
        return sum(p in mods[m].per_patient for m in mods)
    train_ids = [p for p in ids["train"] if n_mod(p) >= 2]
    val_ids = [p for p in ids["val"] if n_mod(p) >= 1]
    # The un-tuned chain is a candidate (epoch -1): fusing never ends worse on validation than it started.
    tcfg = TrainConfig(**{"keep_initial": True, **{k: spec[k] for k in TRAIN_KEYS if k in spec}})
    result = train(model, mods, targets, train_ids, val_ids, tcfg, resolve_device(device), where)
    config = _combined_config("fuse", configs, mode=model.mode, head_method=spec.get("head_method", "slerp"),
                              train=tcfg.to_dict(), freeze=sorted(frozen))
    model_io.save(model.cpu(), config, out_dir)
    write_json(result, Path(out_dir) / "history.json")
    return result


def predict(model: torch.nn.Module, config: dict, mods: dict[str, ModalityTensors], ids: list[str], batch_size: int = 32) -> pd.DataFrame:
    """Per-patient predictions: risk and S(t) per bin (survival) or class probabilities."""
    wrapped = SingleBlock(config["modality"], model) if config["kind"] == "block" else model
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


def fitted_patients(config: dict) -> set[str] | None:
    """Patients a model, or any block inside it, was fitted or validated on (None: a model saved
    before they were recorded)."""
    blocks = _inputs_for(config).values()
    if any("patients" not in b for b in blocks):
        return None
    return set().union(*(set(b["patients"]["train"]) | set(b["patients"]["val"]) for b in blocks))


def check_unseen(config: dict, ids: list[str], what: str, fix: str) -> None:
    """Refuse to score a model on patients it was fitted or validated on (a silent leak otherwise)."""
    seen = fitted_patients(config)
    leaked = sorted(seen & set(ids)) if seen is not None else []
    if leaked:
        raise InputError(f"{len(leaked)} {what} patient(s), e.g. {leaked[0]}, were used to fit or validate this "
                         f"model (fold {config.get('fold')}); {fix}")


def evaluate(model_dir: str, data: dict[str, str], labels: str, folds: str, out_dir: str, name: str,
             opts: EvalOptions | None = None) -> dict:
    """Predictions and every metric on the fold's test patients, with validation alongside."""
    model, config = model_io.load(model_dir)
    lab, ids = read_frame(labels, "labels"), fold_ids(read_frame(folds, "folds"), config["fold"])
    check_unseen(config, ids["test"], f"of the test patients in {folds}",
                 f"evaluate {model_dir} with the folds table it was trained with")
    require_outcomes(lab, config["task"], f"{labels} (evaluating {model_dir})", ids["test"] + ids["val"])
    mods = _fold_modalities(_inputs_for(config), data, ids=ids)
    can = lambda p: any(p in m.per_patient for m in mods.values())  # noqa: E731
    preds, extra = {}, {}
    for subset in ("test", "val"):
        subset_ids = [p for p in ids[subset] if can(p)]
        preds[subset] = predict(model, config, mods, subset_ids)
        if len(mods) > 1:
            extra[f"{subset}_all_modalities"] = sum(all(p in m.per_patient for m in mods.values()) for p in subset_ids)
    return write_evaluation(preds, lab, ids, config["task"], config["bins"] or None, opts or EvalOptions(), name,
                            config["fold"], out_dir, extra)
