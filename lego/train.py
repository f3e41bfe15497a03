"""Training loop shared by LegoBlocks and LegoFuse.

Per-epoch training and validation; early stopping on validation loss with the best weights
really restored (a deep copy of the state dict, not a reference); optional cosine or plateau
schedule stepped per epoch; seeded shuffling, so the same config and seed give the same model on
the CPU; CUDA with autocast when present. Model selection uses validation patients only.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from lego import optimisers
from lego.data.fold_data import ModalityTensors, Targets, collate, target_tensors
from lego.errors import ConfigError, LegoError
from lego.settings import default, require
from lego.survival.loss import classification_loss, nll_survival_loss

log = logging.getLogger(__name__)


def _train_default(key: str):
    return default(f"model.train.{key}")


@dataclass
class TrainConfig:
    """Training settings (config ``model.train``: its defaults and ranges)."""

    epochs: int = _train_default("epochs")
    batch_size: int = _train_default("batch_size")
    lr: float = _train_default("lr")
    weight_decay: float = _train_default("weight_decay")
    patience: int = _train_default("patience")
    scheduler: str = _train_default("scheduler")
    alpha: float = _train_default("alpha")
    seed: int = _train_default("seed")
    # The starting weights are a candidate too (epoch -1): fine-tuning (LegoFuse) then can never
    # end worse on validation than the model it started from.
    keep_initial: bool = False

    def __post_init__(self) -> None:
        """Settings that would train nothing, or crash mid-run, fail here with the key's name."""
        require("model.train", {k: v for k, v in asdict(self).items() if k != "keep_initial"}, "training setting",
                ConfigError)

    @classmethod
    def from_spec(cls, spec: dict, **fixed) -> TrainConfig:
        """The training settings a block or model spec holds (its other keys are not training's)."""
        return cls(**{**fixed, **{k: spec[k] for k in cls.__dataclass_fields__ if k in spec}})

    def to_dict(self) -> dict:
        return asdict(self)


def seed_everything(seed: int) -> None:
    """Seed torch and switch on its deterministic kernels (same config and seed, same metrics)."""
    torch.manual_seed(seed)
    switch = getattr(torch._C, "_set_deterministic_algorithms", None)
    if switch is None or "torch._inductor.config" in sys.modules:
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:  # the public call also imports the compiler's config (about 1 s per job) for a flag of
        switch(True, warn_only=True)  # torch.compile, which this project never uses


def compute_loss(logits: torch.Tensor, y: dict[str, torch.Tensor], task: str, alpha: float) -> torch.Tensor:
    if task == "survival":
        return nll_survival_loss(logits.float(), y["bin"], y["event"], alpha)
    return classification_loss(logits.float(), y["label"])


def batches(ids: list[str], size: int, generator: torch.Generator | None = None) -> list[list[str]]:
    order = torch.randperm(len(ids), generator=generator).tolist() if generator is not None else range(len(ids))
    ids = [ids[i] for i in order]
    return [ids[i : i + size] for i in range(0, len(ids), size)]


def evaluate_loss(model: nn.Module, ids: list[str], modalities: dict[str, ModalityTensors], targets: Targets,
                  cfg: TrainConfig, device: torch.device) -> float:
    model.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for b in batches(ids, cfg.batch_size):
            inputs = _to(collate(b, modalities), device)
            y = {k: v.to(device) for k, v in target_tensors(b, targets).items()}
            total += compute_loss(model(inputs)[1], y, targets.task, cfg.alpha).item() * len(b)
            n += len(b)
    return total / max(n, 1)


def _to(inputs: dict, device: torch.device) -> dict:
    return {m: tuple(t.to(device) for t in v) for m, v in inputs.items()}


def train(model: nn.Module, modalities: dict[str, ModalityTensors], targets: Targets, train_ids: list[str],
          val_ids: list[str], *, cfg: TrainConfig, device: torch.device, where: str, params: list | None = None,
          penalty: Callable[[], torch.Tensor] | None = None) -> dict:
    """Fit ``model`` (forward(inputs) -> (latent, logits)); returns the per-epoch history.

    ``penalty``: an extra training-loss term (a shape constraint, e.g. a fitted score's ranking
    kept), added at every step; validation loss and early stopping use the task loss only.
    """
    if not train_ids:
        raise LegoError(f"{where}: no training patients")
    if not val_ids:
        log.warning("%s: no validation patients, so early stopping and the kept epoch follow the training loss "
                    "(it keeps falling: up to %d epochs); give the folds a validation part (folds.fractions) to stop "
                    "on held-out patients", where, cfg.epochs)
    seed_everything(cfg.seed)
    model.to(device)
    params = params if params is not None else [p for p in model.parameters() if p.requires_grad]
    opt, sched = _optimiser(params, cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    best = {"val_loss": math.inf, "epoch": -1, "state": None}
    history = []
    if cfg.keep_initial and val_ids:
        val = evaluate_loss(model, val_ids, modalities, targets, cfg, device)
        history.append({"epoch": -1, "train_loss": None, "val_loss": val, "lr": 0.0})
        best = {"val_loss": val, "epoch": -1, "state": _snapshot(model)}
    use_amp = device.type == "cuda"
    progress = _progress(cfg.epochs, where)
    for epoch in range(cfg.epochs):
        model.train()
        run, n = 0.0, 0
        for b in batches(train_ids, cfg.batch_size, gen):
            inputs = _to(collate(b, modalities), device)
            y = {k: v.to(device) for k, v in target_tensors(b, targets).items()}
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_amp):
                logits = model(inputs)[1]
            loss = _training_loss(model, logits, y, targets.task, cfg.alpha)
            if not torch.isfinite(loss):
                raise LegoError(
                    f"{where}: loss became {loss.item()} at epoch {epoch}; lower the learning rate "
                    "or check the inputs for extreme values"
                )
            opt.zero_grad(set_to_none=True)
            (loss + penalty() if penalty is not None else loss).backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            run += loss.item() * len(b)
            n += len(b)
        val = evaluate_loss(model, val_ids, modalities, targets, cfg, device) if val_ids else run / n
        history.append({"epoch": epoch, "train_loss": run / n, "val_loss": val, "lr": opt.param_groups[0]["lr"]})
        if val < best["val_loss"] - 1e-6:
            best = {"val_loss": val, "epoch": epoch, "state": _snapshot(model)}
        if sched is not None:
            sched.step(val) if cfg.scheduler == "plateau" else sched.step()
        log.info("%s: epoch %d train loss %.4f val loss %.4f (best %.4f at epoch %d)",
                 where, epoch, run / n, val, best["val_loss"], best["epoch"])
        progress.update(1)
        progress.set_postfix(train=f"{run / n:.3f}", val=f"{val:.3f}")
        if epoch - best["epoch"] >= cfg.patience:
            break
    progress.close()
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    return {"history": history, "best_epoch": best["epoch"], "best_val_loss": best["val_loss"],
            "stopped_on": "validation loss" if val_ids else "training loss"}


def _training_loss(model: nn.Module, logits: torch.Tensor, y: dict, task: str, alpha: float) -> torch.Tensor:
    """The task loss of the batch, or the model's own training loss built from it (``training_loss``:
    e.g. MultiModN's average over every step's prediction). Validation always uses the task loss."""
    task_loss = lambda lg, yy: compute_loss(lg, yy, task, alpha)  # noqa: E731
    own = getattr(model, "training_loss", None)
    return own(logits, y, task_loss) if own is not None else task_loss(logits, y)


def _optimiser(params: list, cfg: TrainConfig):
    """AdamW and the optional per-epoch schedule. The fused AdamW kernel (CPU and CUDA) updates
    all parameters in one pass: same maths, fewer copies."""
    opt = optimisers.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    if cfg.scheduler == "cosine":
        return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.epochs, 1))
    if cfg.scheduler == "plateau":
        return opt, torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=max(1, cfg.patience // 3))
    return opt, None


def _snapshot(model: nn.Module) -> dict:
    """A deep copy of the weights (a plain state_dict would keep following the live tensors)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _progress(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="epoch", disable=not sys.stderr.isatty(), leave=False)
