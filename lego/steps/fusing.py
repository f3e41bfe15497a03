"""LegoFuse: a fold's blocks chained and fine-tuned for a few epochs on patients with two or more
modalities, the un-tuned chain kept when fine-tuning does not help on validation."""

from __future__ import annotations

from pathlib import Path

from lego.data.fold_data import fold_ids, make_targets
from lego.device import resolve_device
from lego.errors import InputError
from lego.io import read_frame, write_json
from lego.models import files as model_files
from lego.models.fuse import LegoFuse
from lego.models.model_kinds import FUSE, HISTORY
from lego.settings import default, setting
from lego.steps.fold_blocks import check_blocks_fold, combined_config, load_blocks
from lego.steps.inference import fold_modalities
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


def _fuse_model(blocks: dict, spec: dict, where: str) -> tuple[LegoFuse, set[str]]:
    """The chained blocks with the frozen parts' gradients off."""
    try:
        model = LegoFuse(blocks, spec.get("mode", default("model.fuse.mode")), spec.get("head_method", default("model.merge.head")))
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
    model, frozen = _fuse_model(blocks, spec, where)

    def n_mod(p):
        return sum(p in mods[m].per_patient for m in mods)

    train_ids = [p for p in ids["train"] if n_mod(p) >= 2]
    val_ids = [p for p in ids["val"] if n_mod(p) >= 1]
    # The un-tuned chain is a candidate (epoch -1): fusing never ends worse on validation than it started.
    tcfg = TrainConfig.from_spec(spec, keep_initial=True)
    result = train(model, mods, targets, train_ids, val_ids, cfg=tcfg, device=resolve_device(device), where=where)
    config = combined_config(FUSE.architecture, configs, mode=model.mode,
                             head_method=spec.get("head_method", default("model.merge.head")),
                             train=tcfg.to_dict(), freeze=sorted(frozen))
    model_files.save(model.cpu(), config, out_dir)
    write_json(result, Path(out_dir) / HISTORY)
    return result
