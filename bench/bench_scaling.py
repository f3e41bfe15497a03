"""Modality scaling: LegoBlocks + LegoMerge against pairwise cross-attention fusion, 2 -> 8 modalities.

Run by hand:  .venv/bin/python bench/bench_scaling.py [--patients 256] [--tokens 16]
Writes bench/results/modality_scaling.json.

Every modality is a bag of 16 tokens of dimension 64 for each of 256 synthetic patients. MM-Lego
fits one block per modality (one epoch each; the blocks are independent) and merges them without
training; the comparison model, implemented minimally here, is the usual early-interaction fusion:
one cross-attention module per *ordered pair* of modalities (each modality attends to every
other), pooled and fed to one head, trained jointly for one epoch. Parameters and time of Lego grow
linearly with the number of modalities M; the pairwise model has M(M-1) attention modules.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import demo_block, write_result  # noqa: E402

BLOCK = demo_block()  # the demo config's block


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--patients", type=int, default=256)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--modalities", type=int, nargs="+", default=[2, 3, 5, 8])
    return ap.parse_args()


def pairwise_model(names: list[str], dim: int, width: int = 64, heads: int = 2):
    """The comparison model; a factory so that torch is imported only when a benchmark runs."""
    import torch
    from torch import nn

    class PairwiseCrossAttention(nn.Module):
        """Each modality's tokens attend to every other modality's (M(M-1) modules), then pool."""

        def __init__(self, names: list[str], dim: int, width: int = 64, heads: int = 2):
            super().__init__()
            self.names = names
            self.proj = nn.ModuleDict({m: nn.Linear(dim, width) for m in names})
            self.cross = nn.ModuleDict({f"{a}->{b}": nn.MultiheadAttention(width, heads, batch_first=True)
                                        for a in names for b in names if a != b})
            self.head = nn.Linear(width * len(names), 4)

        def forward(self, inputs):
            tok = {m: self.proj[m](inputs[m][0]) for m in self.names}
            pooled = []
            for a in self.names:
                mixed = tok[a] + sum(self.cross[f"{a}->{b}"](tok[a], tok[b], tok[b], need_weights=False)[0]
                                     for b in self.names if b != a)
                pooled.append(mixed.mean(dim=1))
            return None, self.head(torch.cat(pooled, dim=1))

    return PairwiseCrossAttention(names, dim, width, heads)


def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def epoch(model, mods, targets, ids, forward) -> float:
    """Seconds for one training epoch (batches of 16, same shuffling seed for every model)."""
    import torch

    from lego.data.fold_data import collate, target_tensors
    from lego.survival.loss import nll_survival_loss
    from lego.train import batches

    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for b in batches(ids, 16, gen):
        y = target_tensors(b, targets)
        loss = nll_survival_loss(forward(collate(b, mods)), y["bin"], y["event"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def synthetic_modalities(names: list[str], ids: list[str], tokens: int, dim: int, rng) -> dict:
    """One bag of ``tokens`` random tokens per patient and modality, drawn modality by modality."""
    import numpy as np
    import torch

    from lego.data.fold_data import ModalityTensors

    return {m: ModalityTensors(m, "wsi", {p: torch.from_numpy(rng.normal(size=(tokens, dim)).astype(np.float32))
                                         for p in ids}, {}, dim) for m in names}


def fit_blocks(names: list[str], mods: dict, targets, ids: list[str], dim: int) -> tuple[dict, float]:
    """One LegoBlock per modality, each trained one epoch on its own modality; total fit seconds."""
    from lego.models.block import BlockConfig, LegoBlock

    blocks, fit_s = {}, 0.0
    for m in names:
        block = LegoBlock(BlockConfig(in_dim=dim, n_outputs=4, encoder="none", **BLOCK))
        fit_s += epoch(block, {m: mods[m]}, targets, ids, lambda inp, blk=block, m=m: blk(inp[m][0], inp[m][1])[1])
        blocks[m] = block
    return blocks, fit_s


def inference_times(merged, pairwise, mods: dict, ids: list[str]) -> tuple[float, float]:
    """Seconds for one forward pass of each model over the first 64 patients."""
    import torch

    from lego.data.fold_data import collate

    with torch.no_grad():
        batch = collate(ids[:64], mods)
        t0 = time.perf_counter()
        merged(batch)
        lego_infer = time.perf_counter() - t0
        pairwise.eval()
        t0 = time.perf_counter()
        pairwise(batch)
        pair_infer = time.perf_counter() - t0
    return lego_infer, pair_infer


def scaling_row(m_count: int, args: argparse.Namespace, ids: list[str], targets, rng) -> dict:
    """Fit, merge and time both approaches for ``m_count`` modalities."""
    from lego.models.merge import LegoMerge
    from lego.train import seed_everything

    seed_everything(0)
    names = [f"m{k}" for k in range(m_count)]
    mods = synthetic_modalities(names, ids, args.tokens, args.dim, rng)
    blocks, fit_s = fit_blocks(names, mods, targets, ids, args.dim)
    t0 = time.perf_counter()
    merged = LegoMerge(blocks, "harmonic", "slerp").eval()
    merge_s = time.perf_counter() - t0
    pairwise = pairwise_model(names, args.dim)
    pair_s = epoch(pairwise, mods, targets, ids, lambda inp, model=pairwise: model(inp)[1])
    lego_infer, pair_infer = inference_times(merged, pairwise, mods, ids)
    return {"modalities": m_count, "lego_fit_s": round(fit_s, 3), "lego_merge_s": round(merge_s, 4),
            "lego_parameters": n_params(merged), "lego_inference_64_s": round(lego_infer, 4),
            "pairwise_fit_s": round(pair_s, 3), "pairwise_parameters": n_params(pairwise),
            "pairwise_modules": m_count * (m_count - 1), "pairwise_inference_64_s": round(pair_infer, 4)}


def growth_first_to_last(rows: list[dict]) -> dict:
    first, last = rows[0], rows[-1]
    growth = {k: round(last[k] / first[k], 2) for k in ("lego_fit_s", "lego_parameters", "pairwise_fit_s", "pairwise_parameters")}
    growth["modalities"] = round(last["modalities"] / first["modalities"], 2)
    return growth


def main() -> None:
    args = parse_args()

    import numpy as np
    import torch

    from lego.data.fold_data import Targets

    torch.set_num_threads(1)  # one core: the growth with M is the point, not parallel speed-up
    rng = np.random.default_rng(0)
    ids = [f"P{i:04d}" for i in range(args.patients)]
    targets = Targets("survival", {p: (int(rng.integers(0, 4)), int(rng.integers(0, 2)), 1.0) for p in ids},
                      bins=[0, 1, 2, 3, float("inf")])
    rows = []
    for m_count in args.modalities:
        row = scaling_row(m_count, args, ids, targets, rng)
        print(row)
        rows.append(row)
    write_result("modality_scaling", {"patients": args.patients, "tokens": args.tokens, "dim": args.dim, "rows": rows,
                                      "growth_first_to_last": growth_first_to_last(rows)})


if __name__ == "__main__":
    main()
