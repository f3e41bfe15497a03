"""Tabular LegoBlock training speed against the official MM-Lego block, side by side in one process.

Run by hand, with a checkout of the official code (not part of this project; it needs einops,
POT, lightning, tensorly importable, e.g. via PYTHONPATH):

    PYTHONPATH=/path/to/mm-lego:/path/to/its/deps .venv/bin/python bench/bench_official_block.py

Sizes are the official code's defaults for an SNN-wrapped tabular block ("snn-block": SNN
2,189 -> 4 x 256, latent 64 x 64, depth 2, 8 heads x 64; its ``weight_sharing=True`` default
builds two separate layers -- the flag is inverted in that code), 300 patients, batch 64, 2
threads; our block is built at the same sizes (two unshared layers: 1.519 M vs 1.520 M
parameters). Both run the same epoch: shuffled batches, forward, the discrete-time survival NLL,
backward, AdamW step. Ours is timed twice: the bare loop (as the official block) and through our
trainer's batch assembly (``collate``), which is what a pipeline job pays. Epochs alternate
between the two models so machine noise hits both.
Writes bench/results/official_block.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import time_epochs, write_result  # noqa: E402

if TYPE_CHECKING:
    import torch

N, DIM, BATCH = 300, 2189, 64


def official_block():
    from mm_lego.models import SNN
    from mm_lego.models import LegoBlock as Official

    enc = SNN(input_dim=DIM, n_classes=4, final_head=False)
    return Official(in_shape=(1, DIM), num_classes=4, encoder=enc)


def our_block():
    from lego.models.block import BlockConfig, LegoBlock

    cfg = BlockConfig(in_dim=DIM, n_outputs=4, encoder="snn", encoder_width=256, latent_rows=64, latent_dim=64,
                      depth=2, heads=8, head_dim=64, dropout=0.0, share_weights=False)
    return LegoBlock(cfg)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    return ap.parse_args()


def synthetic_data() -> dict:
    """300 patients of random features and survival targets, as tensors and as the trainer's inputs."""
    import numpy as np
    import torch

    from lego.data.fold_data import ModalityTensors, Targets

    rng = np.random.default_rng(0)
    ids = [f"P{i:03d}" for i in range(N)]
    x = torch.from_numpy(rng.normal(size=(N, 1, DIM)).astype(np.float32))
    y = {"bin": torch.from_numpy(rng.integers(0, 4, N)), "event": torch.from_numpy(rng.integers(0, 2, N))}
    mod = ModalityTensors("rna", "tabular", {p: x[i] for i, p in enumerate(ids)}, {}, DIM)
    targets = Targets("survival", {p: (int(y["bin"][i]), int(y["event"][i]), 1.0) for i, p in enumerate(ids)},
                      bins=[0, 1, 2, 3, float("inf")])
    return {"ids": ids, "x": x, "y": y, "mod": mod, "targets": targets}


def epoch_bare(model: torch.nn.Module, opt: torch.optim.Optimizer, official: bool, data: dict,
               gen: torch.Generator) -> None:
    """One epoch over shuffled index batches of the raw tensors (the official block's own loop)."""
    import torch

    from lego.survival.loss import nll_survival_loss

    x, y = data["x"], data["y"]
    model.train()
    for idx in torch.randperm(N, generator=gen).split(BATCH):
        out = model(x[idx]) if official else model(x[idx], torch.ones(len(idx), 1, dtype=torch.bool))[1]
        loss = nll_survival_loss(out, y["bin"][idx], y["event"][idx], 0.4)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def epoch_trainer(model: torch.nn.Module, opt: torch.optim.Optimizer, data: dict, gen: torch.Generator) -> None:
    """One epoch through our trainer's batch assembly (``collate``), as a pipeline job runs it."""
    from lego.data.fold_data import collate, target_tensors
    from lego.survival.loss import nll_survival_loss
    from lego.train import batches

    model.train()
    for b in batches(data["ids"], BATCH, gen):
        xb, mb, _ = collate(b, {"rna": data["mod"]})["rna"]
        yb = target_tensors(b, data["targets"])
        loss = nll_survival_loss(model(xb, mb)[1], yb["bin"], yb["event"], 0.4)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def main() -> None:
    a = parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    data = synthetic_data()
    models = {"official": official_block(), "ours": our_block()}
    # Each with its own code's optimiser: ours is the trainer's fused AdamW, the official one plain AdamW.
    opts = {"official": torch.optim.AdamW(models["official"].parameters(), lr=1e-4),
            "ours": torch.optim.AdamW(models["ours"].parameters(), lr=1e-4, fused=True)}
    gen = torch.Generator().manual_seed(0)
    runs = {"official": lambda: epoch_bare(models["official"], opts["official"], True, data, gen),
            "ours_bare": lambda: epoch_bare(models["ours"], opts["ours"], False, data, gen),
            "ours_trainer": lambda: epoch_trainer(models["ours"], opts["ours"], data, gen)}
    times = time_epochs(runs, a.epochs)
    med = {k: float(np.median(v)) for k, v in times.items()}
    params = {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()}
    result = {"patients": N, "features": DIM, "batch": BATCH, "threads": a.threads, "epochs": a.epochs,
              "parameters": params, "median_s_per_epoch": med, "all_s_per_epoch": times,
              "ours_trainer_vs_official": med["ours_trainer"] / med["official"]}
    for k, v in med.items():
        print(f"{k:14s} {v:.3f} s/epoch")
    print("parameters", params)
    write_result("official_block", result)


if __name__ == "__main__":
    main()
