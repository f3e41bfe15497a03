"""Plain ABMIL baseline for a patch-bag modality: the same gated-attention encoder as the WSI
LegoBlock, pooled straight into a linear head -- no Lego latent. It trains on the same patients,
with the same preprocessing, loss, bins, optimiser settings and early stopping as the block, so the
difference between ``abmil-<wsi>`` and ``block-<wsi>`` is the Lego latent alone.
"""

from __future__ import annotations

import logging
from pathlib import Path

from torch import nn

from lego.data.fold_data import load_fold_modality
from lego.evaluation.names import baseline_name
from lego.evaluation.stages import EvalOptions, write_evaluation
from lego.io import atomic_path, write_json
from lego.models.encoders import ABMIL
from lego.train import TrainConfig, seed_everything, train

log = logging.getLogger(__name__)


class PlainABMIL(nn.Module):
    """Gated-attention MIL pooling and a linear head; forward(inputs) -> (pooled, logits)."""

    def __init__(self, modality: str, in_dim: int, n_outputs: int, width: int = 256, dropout: float = 0.25):
        super().__init__()
        self.modality = modality
        self.encoder = ABMIL(in_dim, out_dim=width, dropout=dropout)
        self.head = nn.Linear(width, n_outputs)

    def forward(self, inputs):
        x, mask, _ = inputs[self.modality]
        pooled = self.encoder(x, mask)[0].squeeze(1)
        return pooled, self.head(pooled)


def run_abmil(modality: str, data: str, labels: str, folds: str, fold: int, task: str, spec: dict, opts: EvalOptions,
              out_dir: str, device: str = "auto") -> dict:
    """Train plain ABMIL on one fold (every training patient with the modality) and evaluate it."""
    from safetensors.torch import save_model

    from lego.device import resolve_device
    from lego.stages import predict

    where = f"abmil-{modality}, fold {fold}"
    seed = int(spec.get("seed", 0))
    inputs = load_fold_modality(modality, "wsi", data, labels, folds, fold, task, spec, where)
    lab, ids, targets, mod, train_ids = inputs.labels, inputs.ids, inputs.targets, inputs.mod, inputs.train_ids
    seed_everything(seed)
    model = PlainABMIL(modality, mod.dim, targets.n_outputs, spec.get("encoder_width", 256), spec.get("dropout", 0.25))
    tcfg = TrainConfig(**{k: spec[k] for k in TrainConfig.__dataclass_fields__ if k in spec})
    history = train(model, {modality: mod}, targets, train_ids, inputs.val_ids, tcfg,
                    resolve_device(device), where)
    model = model.cpu().eval()
    config = {"kind": "abmil", "modality": modality, "task": task, "bins": targets.bins, "classes": targets.classes}
    preds = {s: predict(model, config, {modality: mod}, [p for p in ids[s] if p in mod.per_patient]) for s in ("test", "val")}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "model.safetensors") as tmp:  # kept for inspection; evaluation happens here
        save_model(model, str(tmp))
    write_json({**config, "train": tcfg.to_dict(), "preprocess": mod.state, "history": history}, out / "model.json")
    return write_evaluation(preds, lab, ids, task, targets.bins or None, opts, baseline_name("abmil", modality), fold, out,
                            {"n_train": len(train_ids)})
