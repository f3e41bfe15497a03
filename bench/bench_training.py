"""Block training cost: seconds per epoch, samples/s, peak memory and the data-loading share.

Run by hand:  .venv/bin/python bench/bench_training.py [--epochs 3] [--device auto]
Writes bench/results/block_training.json (block_training_gpu.json on a GPU).

Three configurations, each in its own process (so its peak RSS is its own): a tabular block
(SNN encoder, 2,000 features, 512 patients) and bag blocks (ABMIL encoder, 1,024-dim patch
features, 32 patients) with bags of 1,000 and of 10,000 patches. The epoch loop is the trainer's
(``collate`` -> forward -> discrete-time NLL -> AdamW step) with each part timed: "loading" is
batch assembly and padding (``collate`` and the host-to-device copy), "compute" the rest. The
demo's architecture (``config/config.yaml``, model.block) is used throughout.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import demo_block, gpu_peak_mb, write_result  # noqa: E402

CASES = {
    "tabular_2000_features": {"kind": "tabular", "patients": 512, "dim": 2000, "tokens": 1, "batch": 16},
    "bag_1000_patches": {"kind": "wsi", "patients": 32, "dim": 1024, "tokens": 1000, "batch": 8},
    "bag_10000_patches": {"kind": "wsi", "patients": 32, "dim": 1024, "tokens": 10000, "batch": 8},
}
BLOCK = demo_block()  # the demo config's block


def one_case(name: str, epochs: int, device: str) -> dict:
    import numpy as np
    import torch

    from lego.data.fold_data import ModalityTensors, Targets, collate, target_tensors
    from lego.device import resolve_device
    from lego.models.block import BlockConfig, LegoBlock
    from lego.survival.loss import nll_survival_loss
    from lego.train import batches, seed_everything

    case = CASES[name]
    seed_everything(0)
    rng = np.random.default_rng(0)
    ids = [f"P{i:04d}" for i in range(case["patients"])]
    per = {p: torch.from_numpy(rng.normal(size=(case["tokens"], case["dim"])).astype(np.float32)) for p in ids}
    mod = ModalityTensors("m", case["kind"], per, {}, case["dim"])
    targets = Targets("survival", {p: (int(rng.integers(0, 4)), int(rng.integers(0, 2)), 1.0) for p in ids}, bins=[0, 1, 2, 3, float("inf")])
    dev = resolve_device(device)
    encoder = "abmil" if case["kind"] == "wsi" else "snn"
    block = LegoBlock(BlockConfig(in_dim=case["dim"], n_outputs=4, encoder=encoder, **BLOCK)).to(dev)
    opt = torch.optim.AdamW(block.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    load_s = compute_s = 0.0
    epoch_s = []
    for _ in range(epochs):
        t_epoch = time.perf_counter()
        for b in batches(ids, case["batch"], gen):
            t0 = time.perf_counter()
            x, mask, _ = collate(b, {"m": mod})["m"]
            x, mask = x.to(dev), mask.to(dev)
            y = {k: v.to(dev) for k, v in target_tensors(b, targets).items()}
            t1 = time.perf_counter()
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=dev.type == "cuda"):  # as the trainer
                logits = block(x, mask)[1]
            loss = nll_survival_loss(logits.float(), y["bin"], y["event"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t2 = time.perf_counter()
            load_s += t1 - t0
            compute_s += t2 - t1
        epoch_s.append(time.perf_counter() - t_epoch)
    steady = epoch_s[1:] or epoch_s  # the first epoch includes one-off allocation
    return {
        **case, "encoder": encoder, "device": str(dev), "epochs": epochs,
        "seconds_per_epoch": round(float(np.mean(steady)), 4),
        "samples_per_s": round(case["patients"] / float(np.mean(steady)), 1),
        "loading_share": round(load_s / (load_s + compute_s), 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "gpu_peak_mb": gpu_peak_mb(),
        "input_mb": round(case["patients"] * case["tokens"] * case["dim"] * 4 / 2**20),
        "parameters": sum(p.numel() for p in block.parameters()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case in this process
    args = ap.parse_args()
    if args.case:
        print(json.dumps(one_case(args.case, args.epochs, args.device)))
        return
    rows = {}
    for name in CASES:
        out = subprocess.run([sys.executable, __file__, "--case", name, "--epochs", str(args.epochs), "--device", args.device],
                             capture_output=True, text=True, check=True)
        rows[name] = json.loads(out.stdout.strip().splitlines()[-1])
        print(name, rows[name])
    write_result("block_training", {"cases": rows})


if __name__ == "__main__":
    main()
