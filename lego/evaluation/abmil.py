"""Plain ABMIL baseline for a patch-bag modality: the same gated-attention encoder as the WSI
LegoBlock, pooled straight into a linear head -- no Lego latent. It trains on the same patients,
with the same preprocessing, loss, bins, optimiser settings and early stopping as the block, so the
difference between ``abmil-<wsi>`` and ``block-<wsi>`` is the Lego latent alone.
"""

from __future__ import annotations

import logging
from pathlib import Path

from lego.data.fold_data import load_fold_modality
from lego.evaluation.names import baseline_name
from lego.evaluation.stages import EvalOptions, write_evaluation
from lego.io import write_json
from lego.models import io as model_io
from lego.models.abmil import PlainABMIL
from lego.train import TrainConfig, seed_everything, train

log = logging.getLogger(__name__)


def run_abmil(modality: str, data: str, labels: str, folds: str, fold: int, task: str, spec: dict, opts: EvalOptions,
              out_dir: str, device: str = "auto") -> dict:
    """Train plain ABMIL on one fold (every training patient with the modality) and evaluate it."""
    from lego.device import resolve_device
    from lego.stages import predict

    where = f"abmil-{modality}, fold {fold}"
    seed = int(spec.get("seed", 0))
    inputs = load_fold_modality(modality, "wsi", data, labels, folds, fold, task, spec, where)
    lab, ids, targets, mod, train_ids = inputs.labels, inputs.ids, inputs.targets, inputs.mod, inputs.train_ids
    seed_everything(seed)
    shape = {"in_dim": mod.dim, "n_outputs": targets.n_outputs, "width": spec.get("encoder_width", 256),
             "dropout": spec.get("dropout", 0.25)}
    model = PlainABMIL(modality, **shape)
    tcfg = TrainConfig(**{k: spec[k] for k in TrainConfig.__dataclass_fields__ if k in spec})
    history = train(model, {modality: mod}, targets, train_ids, inputs.val_ids, tcfg,
                    resolve_device(device), where)
    model = model.cpu().eval()
    config = {"kind": "abmil", "modality": modality, "modality_kind": "wsi", "fold": fold, "task": task, **shape,
              "bins": targets.bins, "classes": targets.classes, "train": tcfg.to_dict(), "preprocess": mod.state,
              "patients": {"train": sorted(train_ids), "val": sorted(inputs.val_ids)}}
    preds = {s: predict(model, config, {modality: mod}, [p for p in ids[s] if p in mod.per_patient]) for s in ("test", "val")}
    out = Path(out_dir)
    model_io.save(model, config, out)  # read back by the heatmaps (and for inspection)
    write_json(history, out / "history.json")
    return write_evaluation(preds, lab, ids, task, targets.bins or None, opts, baseline_name("abmil", modality), fold, out,
                            {"n_train": len(train_ids)})
