"""LegoFuse: a fold's blocks chained and fine-tuned for a few epochs on patients with two or more
modalities, the un-tuned chain kept when fine-tuning does not help on validation."""

from __future__ import annotations

from pathlib import Path

from lego.data.fold_data import fold_ids, make_targets
from lego.device import resolve_device
from lego.errors import InputError
from lego.io import read_frame, read_json, write_json
from lego.model_selection import out_of_sample, reading_scores
from lego.models import files as model_files
from lego.models.fuse import LegoFuse
from lego.models.model_kinds import FUSE, HISTORY
from lego.settings import default, setting
from lego.steps.fold_blocks import check_blocks_fold, combined_config, load_blocks
from lego.steps.inference import fold_modalities
from lego.steps.merging import stacked_weights, tuned_merge_choice
from lego.train import TrainConfig, seed_everything, train

FREEZABLE = setting("model.fuse.freeze").item.choices


def _freeze_set(freeze, where: str) -> set[str]:
    """What a fuse keeps fixed: a list of known names (a string would be read letter by letter)."""
    if not isinstance(freeze, list) or not all(isinstance(f, str) for f in freeze):
        raise InputError(f"{where}: freeze must be a list of names ({', '.join(FREEZABLE)}), got {freeze!r}")
    unknown = sorted(set(freeze) - set(FREEZABLE))
    if unknown:
        raise InputError(f"{where}: unknown freeze name(s) {unknown}; use {', '.join(FREEZABLE)}")
    return set(freeze)


def _merge_start(blocks: dict, configs: dict, block_dirs: list[str], mods: dict, ids: dict, lab, spec: dict):
    """Where a ``merge`` fuse starts: the tuned merge's form and weights; and what it trains on -- each
    training patient's out-of-fold score where the blocks have fitted encoders (in-sample scores
    of a fitted model are over-confident), as the blocks themselves were trained."""
    hists = {m: read_json(Path(d) / HISTORY) for m, d in zip(configs, block_dirs)}
    oos = out_of_sample(blocks, hists, mods, ids)
    head = spec.get("head_method", default("model.merge.head"))
    task = next(iter(configs.values()))["task"]
    best, _ = tuned_merge_choice(blocks, configs, oos, stacked_weights(blocks, configs, oos, lab, task)[0], lab, head)
    start = {"weights": best["config"]["weights"], "merge_method": best["config"]["method"]}
    if "offsets" in best["config"]:
        start["offsets"] = best["config"]["offsets"]
    return start, oos.mods, oos.reads_scores


def _keep_fine_tune(model: LegoFuse, start: dict, configs: dict, mods: dict, val_ids: list[str], lab) -> dict:
    """(Survival.) Keep a ``merge`` fuse's fine-tune only where it ranks the validation patients better than the
    merge it started from by more than one bootstrap SE of the paired gain; else restore the merge.

    Why: early stopping on validation *loss* keeps epochs that improve calibration, and on ~40
    validation patients such an epoch reorders patients by chance (demo: the fine-tuned merge
    lost 0.007 test C against its own start while its validation loss fell in every fold)."""
    from lego.model_selection import prediction_gain
    from lego.steps.inference import predict

    cfg = combined_config(FUSE.architecture, configs, mode=model.mode)
    tuned = predict(model, cfg, mods, val_ids)
    tuned_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(start)
    gain, se = prediction_gain(predict(model, cfg, mods, val_ids), tuned, lab)
    keep = gain is not None and gain > (se or 0.0)
    if keep:
        model.load_state_dict(tuned_state)
    return {"fine_tune": keep, "val_c_gain": gain, "val_c_gain_se": se}


def _fuse_model(blocks: dict, spec: dict, where: str, start_merge: dict) -> tuple[LegoFuse, set[str]]:
    """The chained blocks with the frozen parts' gradients off."""
    try:
        model = LegoFuse(blocks, spec.get("mode", default("model.fuse.mode")), spec.get("head_method", default("model.merge.head")),
                         **start_merge)
    except ValueError as exc:  # an unknown mode or head merge
        raise InputError(f"{where}: {exc}") from None
    frozen = _freeze_set(spec.get("freeze", default("model.fuse.freeze")), where)
    for name, p in model.named_parameters():
        p.requires_grad = not (("encoders" in frozen and ".encoder." in name) or ("latents" in frozen and name.endswith(".latent")))
    return model, frozen


def fuse(block_dirs: list[str], data: dict[str, str], *, labels: str, folds: str, spec: dict, out_dir: str,
         device: str = default("model.train.device")) -> dict:
    """LegoFuse: chain the blocks and fine-tune for a few epochs on patients with >= 2 modalities."""
    blocks, configs = load_blocks(block_dirs)
    first = next(iter(configs.values()))
    fold, task = first["fold"], first["task"]
    where = f"fuse, fold {fold}"
    lab, ids = read_frame(labels, "labels"), fold_ids(read_frame(folds, "folds"), fold)
    check_blocks_fold(configs, ids, lab, folds, labels)
    mods = fold_modalities(configs, data, int(spec.get("seed", 0)), ids)
    targets = make_targets(lab, ids["train"], task, bins=first["bins"] or None, classes=first["classes"] or None)
    seed_everything(int(spec.get("seed", 0)))
    start_merge, train_mods, reads_scores = {}, mods, False
    if spec.get("mode", default("model.fuse.mode")) == "merge":
        start_merge, train_mods, reads_scores = _merge_start(blocks, configs, block_dirs, mods, ids, lab, spec)
    model, frozen = _fuse_model(blocks, spec, where, start_merge)

    def n_mod(p):
        return sum(p in mods[m].per_patient for m in mods)

    train_ids = [p for p in ids["train"] if n_mod(p) >= 2]
    val_ids = [p for p in ids["val"] if n_mod(p) >= 1]
    # The un-tuned chain is a candidate (epoch -1): fusing never ends worse on validation than it started.
    tcfg = TrainConfig.from_spec(spec, keep_initial=True)
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    with reading_scores(list(blocks.values()), reads_scores):
        result = train(model, train_mods, targets, train_ids, val_ids, cfg=tcfg, device=resolve_device(device), where=where)
    if model.mode == "merge" and result["best_epoch"] >= 0 and task == "survival":
        result["kept"] = _keep_fine_tune(model.cpu(), start, configs, mods, val_ids, lab)
        if not result["kept"]["fine_tune"]:  # the history says what the saved weights are: the start
            result.update(best_epoch=-1, best_val_loss=result["history"][0]["val_loss"])
    config = combined_config(FUSE.architecture, configs, mode=model.mode,
                             head_method=spec.get("head_method", default("model.merge.head")),
                             train=tcfg.to_dict(), freeze=sorted(frozen), **start_merge)
    model_files.save(model.cpu(), config, out_dir)
    write_json(result, Path(out_dir) / HISTORY)
    return result
