"""Per-epoch training time of each trained multimodal baseline against its official implementation
at equal parameter counts, side by side in one process.

Run by hand with checkouts of the official code (not part of this project, never copied into it;
the official HEALNet needs einops, MultiModN torchsummary and torchmetrics, e.g. installed with
``pip install --no-deps --target DEPS einops torchsummary torchmetrics lightning-utilities``):

    PYTHONPATH=DEPS .venv/bin/python bench/bench_official_models.py --healnet PATH/healnet \\
        --mcat PATH/MCAT --porpoise PATH/PORPOISE --multimodn PATH/MultiModN [--device cuda]

Each case builds the official module at its published configuration and ours at the same sizes,
checks that both have the same number of parameters (the run stops otherwise), and times one
training epoch of each over the same synthetic patients, alternating epochs so machine noise hits
both; the median of ``--epochs`` epochs after one warm-up each is reported.

* The official side runs its own code's loop: HEALNet and the early-fusion Perceiver at batch 4
  (HEALNet's configs) with Adam and the L1 penalty; MCAT and PORPOISE one patient at a time with
  gradient accumulation over 32 (their trainers), Adam; MultiModN through its own ``train_epoch``
  at batch 16 with cross-entropy on the bins (its pipelines').
* Our side is the pipeline's trainer itself (``lego.train.train`` through ``fit_module``: batch
  assembly with padded bags and masks, fused AdamW, gradient clipping, the same L1), one epoch per
  call, at the default batch of ``model.train.batch_size``; no validation pass on either side.

Two shims, nothing else changed: MCAT's attention module imports
``torch.nn.modules.linear._LinearWithBias``, which torch 2 removed; it is set to ``nn.Linear`` (what
it was) before the import. PORPOISE's bilinear fusion makes its constant 1 with
``torch.cuda.FloatTensor`` (so it runs on a GPU only); on the CPU that name makes a CPU tensor. Writes bench/results/official_models[_gpu].json.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import time_epochs, write_result  # noqa: E402

BLCA_GROUPS = (94, 334, 521, 468, 1496, 479)  # MCAT's six gene groups on BLCA
BLCA_TABLES = {"mutation": 371, "cnv": 256, "rna": 1554}  # MultiModN on BLCA's tables
HEALNET_BLCA = dict(depth=2, num_freq_bands=2, max_freq=2.0, l_c=25, l_d=119, cross_dim_head=16, latent_dim_head=127,
                    x_heads=1, l_heads=8, attn_dropout=0.083, ff_dropout=0.473, self_per_cross_attn=0)
OURS_HEALNET = dict(depth=2, fourier_bands=2, max_freq=2.0, latent_rows=25, latent_dim=119, cross_dim_head=16,
                    latent_dim_head=127, cross_heads=1, latent_heads=8, attn_dropout=0.083, ff_dropout=0.473,
                    self_per_cross_attn=0)
L1 = 1.2e-5


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("healnet", "mcat", "porpoise", "multimodn"):
        ap.add_argument(f"--{name}", type=Path, required=True, help=f"checkout of the official {name} code")
    ap.add_argument("--patients", type=int, default=96)
    ap.add_argument("--patches", type=int, nargs=2, default=[256, 1024], help="bag sizes: uniform in [low, high]")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--cases", nargs="*", default=None, help="run only these cases")
    return ap.parse_args()


def load_file(path: Path, name: str):
    """A module from one file (the official packages' __init__ files import much more than the model)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_mcat(root: Path):
    from torch import nn
    from torch.nn.modules import linear

    linear._LinearWithBias = nn.Linear  # removed from torch; MCAT's attention imports it
    sys.path.insert(0, str(root))
    try:
        from models.model_coattn import MCAT_Surv
    finally:
        sys.path.remove(str(root))
        for key in [k for k in sys.modules if k == "models" or k.startswith("models.")]:
            del sys.modules[key]
    return MCAT_Surv


# ---------------------------------------------------------------------------------------- data


def synthetic(args, dims: dict[str, int], slides: dict[str, int], equal_bags: bool = False):
    """Patients with random tables (one token each) and bags of random lengths (all of the lower
    bound with ``equal_bags``), as tensors and as the pipeline's fold inputs."""
    import numpy as np
    import torch

    from lego.data.fold_data import ModalityTensors, Targets

    rng = np.random.default_rng(0)
    ids = [f"P{i:03d}" for i in range(args.patients)]
    per = {m: {p: torch.from_numpy(rng.normal(size=(1, d)).astype(np.float32)) for p in ids} for m, d in dims.items()}
    low, high = args.patches
    for m, d in slides.items():
        lengths = [low if equal_bags else int(rng.integers(low, high + 1)) for _ in ids]
        per[m] = {p: torch.from_numpy(rng.normal(size=(n, d)).astype(np.float32)) for p, n in zip(ids, lengths)}
    mods = {m: ModalityTensors(m, "wsi" if m in slides else "tabular", per[m], {}, d) for m, d in {**dims, **slides}.items()}
    y = {p: (int(rng.integers(0, 4)), int(rng.integers(0, 2)), 1.0) for p in ids}
    targets = Targets("survival", y, bins=[0, 1, 2, 3, float("inf")])
    return SimpleNamespace(ids=ids, per=per, mods=mods, targets=targets,
                           bins=torch.tensor([y[p][0] for p in ids]), events=torch.tensor([y[p][1] for p in ids]))


def nll(logits, bins, events, alpha: float = 0.4):
    """Discrete-time survival NLL on hazard logits (the same loss for both sides)."""
    from lego.survival.loss import nll_survival_loss

    return nll_survival_loss(logits, bins, events, alpha)


# ---------------------------------------------------------------------------------------- loops


def ours(model, data, device, l1: float = 0.0, l1_params=None) -> Callable[[], None]:
    """One epoch of the pipeline's trainer (what ``lego train-model`` runs), no validation."""
    import torch

    from lego.baselines._shared import fit_module

    inputs = SimpleNamespace(mods=data.mods, targets=data.targets, train_ids=data.ids, val_ids=[])
    spec = {"epochs": 1, "patience": 1000}
    return lambda: fit_module(model, inputs, spec, torch.device(device), "bench", l1=l1, l1_params=l1_params)


def official_batches(model, data, forward, device, batch: int, l1: float = 0.0) -> Callable[[], None]:
    """HEALNet's loop: shuffled batches, forward, NLL + L1, Adam (the batch is stacked in advance:
    its loaders' cost is not counted)."""
    import torch

    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    stacked = {m: torch.stack([data.per[m][p] for p in data.ids]).to(device) for m in data.per}

    def epoch() -> None:
        model.train()
        for idx in torch.randperm(len(data.ids), generator=gen).split(batch):
            logits = forward(model, {m: t[idx] for m, t in stacked.items()})
            loss = nll(logits, data.bins[idx].to(device), data.events[idx].to(device))
            if l1:
                loss = loss + l1 * sum(p.abs().sum() for p in model.parameters())
            opt.zero_grad()
            loss.backward()
            opt.step()

    return epoch


def official_one_by_one(model, data, forward, device, accumulate: int = 32, l1: float = 0.0) -> Callable[[], None]:
    """MCAT's and PORPOISE's loop: one patient per step, the loss divided by 32, a step every 32."""
    import torch

    opt = torch.optim.Adam(model.parameters(), lr=2e-4, weight_decay=1e-5)
    gen = torch.Generator().manual_seed(0)
    on_device = {m: {p: t.to(device) for p, t in per.items()} for m, per in data.per.items()}

    def epoch() -> None:
        model.train()
        for step, i in enumerate(torch.randperm(len(data.ids), generator=gen).tolist()):
            p = data.ids[i]
            logits = forward(model, {m: per[p] for m, per in on_device.items()})
            loss = nll(logits.reshape(1, -1), data.bins[i : i + 1].to(device), data.events[i : i + 1].to(device))
            if l1:
                loss = loss + l1 * sum(q.abs().sum() for q in model.parameters())
            (loss / accumulate).backward()
            if (step + 1) % accumulate == 0:
                opt.step()
                opt.zero_grad()

    return epoch


# ---------------------------------------------------------------------------------------- cases


def case_healnet(a, device):
    from lego.baselines.healnet import HEALNet

    HealNet = load_file(a.healnet / "healnet" / "models" / "healnet.py", "official_healnet").HealNet
    data = synthetic(a, {"omics": 3064}, {"wsi": 2048}, equal_bags=True)  # HEALNet's batches need one bag length
    official = HealNet(n_modalities=2, channel_dims=[3064, 2048], num_spatial_axes=[1, 1], out_dims=4, **HEALNET_BLCA)
    mine = HEALNet({"omics": 3064, "wsi": 2048}, 4, **OURS_HEALNET)
    fwd = lambda m, x: m([x["omics"], x["wsi"]])  # noqa: E731
    return official, mine, official_batches(official, data, fwd, device, 4, L1), ours(mine, data, device, L1)


def case_perceiver(a, device):
    from lego.baselines.perceiver import EarlyFusion

    HealNet = load_file(a.healnet / "healnet" / "models" / "healnet.py", "official_healnet").HealNet
    data = synthetic(a, {"omics": 3064, "wsi": 2048}, {})  # one 2,048-d patch: the flat token of the original
    official = HealNet(n_modalities=1, channel_dims=[3064 + 2048], num_spatial_axes=[1], out_dims=4, **HEALNET_BLCA)
    mine = EarlyFusion({"omics": 3064, "wsi": 2048}, [], 4, patches=1, **OURS_HEALNET)
    fwd = lambda m, x: m([__import__("torch").cat([x["omics"], x["wsi"]], dim=-1)])  # noqa: E731
    return official, mine, official_batches(official, data, fwd, device, 4, L1), ours(mine, data, device, L1)


def case_mcat(a, device):
    from lego.baselines.mcat import MCAT

    MCAT_Surv = load_mcat(a.mcat)
    total = sum(BLCA_GROUPS)
    data = synthetic(a, {"omics": total}, {"wsi": 1024})
    official = MCAT_Surv(fusion="concat", omic_sizes=list(BLCA_GROUPS), n_classes=4)
    bounds = [sum(BLCA_GROUPS[:k]) for k in range(len(BLCA_GROUPS) + 1)]
    groups = [list(range(bounds[k], bounds[k + 1])) for k in range(len(BLCA_GROUPS))]
    mine = MCAT(groups, {"omics": total}, "wsi", 1024, 4, dropout=0.25, fusion="concat")

    def fwd(m, x):
        omics = x["omics"][0]
        parts = {f"x_omic{k + 1}": omics[bounds[k]:bounds[k + 1]] for k in range(len(BLCA_GROUPS))}
        hazards = m(x_path=x["wsi"], **parts)[0]
        return hazards.clamp(1e-6, 1 - 1e-6).logit()  # back to logits for the shared loss

    return official, mine, official_one_by_one(official, data, fwd, device), ours(mine, data, device)


def case_porpoise(a, device, fusion: str):
    import torch

    from lego.baselines.late_fusion import LateFusion

    PorpoiseMMF = load_file(a.porpoise / "models" / "model_porpoise.py", "official_porpoise").PorpoiseMMF
    if device == "cpu":  # its bilinear fusion makes its constant 1 with torch.cuda.FloatTensor (GPU only)
        torch.cuda.FloatTensor = lambda *shape: torch.empty(*shape)
    data = synthetic(a, {"omics": 3062}, {"wsi": 1024})
    official = PorpoiseMMF(omic_input_dim=3062, fusion=fusion, skip=fusion == "bilinear")
    mine = LateFusion({"wsi": 1024, "omics": 3062}, ["wsi"], 4, fusion=fusion, dropout=0.25, skip=fusion == "bilinear")
    fwd = lambda m, x: m(x_path=x["wsi"], x_omic=x["omics"])  # noqa: E731
    regularised = [p for n, p in mine.named_parameters() if not n.startswith("encoders.wsi.")]
    return (official, mine, official_one_by_one(official, data, fwd, device, l1=1e-5),
            ours(mine, data, device, 1e-5, regularised))


def case_multimodn(a, device):
    import torch

    from lego.baselines.multimodn import MultiModN as Ours

    sys.path.insert(0, str(a.multimodn))
    from multimodn.decoders.decoders import MLPDecoder
    from multimodn.encoders.mlp_encoder import MIMIC_MLPEncoder
    from multimodn.multimodn import MultiModN

    data = synthetic(a, dict(BLCA_TABLES), {})
    encoders = [MIMIC_MLPEncoder(50, d, (32, 32), 0.2) for d in BLCA_TABLES.values()]
    official = MultiModN(50, encoders, [MLPDecoder(50, (32, 32), n_classes=4)], 1.0, 0.0, device=torch.device(device))
    mine = Ours(dict(BLCA_TABLES), [], 4, state=50, hidden=[32, 32], decoder=[32, 32], dropout=0.2)
    rows = [([data.per[m][p][0] for m in BLCA_TABLES], data.bins[i : i + 1]) for i, p in enumerate(data.ids)]
    loader = torch.utils.data.DataLoader(rows, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(official.parameters(), lr=1e-4)
    loss = torch.nn.CrossEntropyLoss()
    return official, mine, lambda: official.train_epoch(loader, opt, loss), ours(mine, data, device)


CASES = {
    "healnet": case_healnet,
    "perceiver": case_perceiver,
    "multimodn": case_multimodn,
    "late-fusion": lambda a, d: case_porpoise(a, d, "concat"),
    "late-bilinear": lambda a, d: case_porpoise(a, d, "bilinear"),
    "mcat": case_mcat,
}


def main() -> None:
    a = parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(a.threads)
    results = {}
    for name, make in CASES.items():
        if a.cases and name not in a.cases:
            continue
        torch.manual_seed(0)
        official, mine, run_official, run_ours = make(a, a.device)
        official.to(a.device)
        mine.to(a.device)
        params = {k: sum(p.numel() for p in m.parameters()) for k, m in (("official", official), ("ours", mine))}
        if params["official"] != params["ours"]:
            raise SystemExit(f"{name}: parameter counts differ: {params}")
        times = time_epochs({"official": run_official, "ours": run_ours}, a.epochs)
        med = {k: float(np.median(v)) for k, v in times.items()}
        results[name] = {"parameters": params["ours"], "median_s_per_epoch": med, "all_s_per_epoch": times,
                         "speed_up": med["official"] / med["ours"]}
        print(f"{name:14s} {params['ours']:>10,d} params  official {med['official']:.3f} s  ours {med['ours']:.3f} s  "
              f"x{med['official'] / med['ours']:.2f}", flush=True)
    write_result("official_models",
                 {"patients": a.patients, "patches": a.patches, "threads": a.threads, "epochs": a.epochs,
                  "device": a.device, "cases": results})


if __name__ == "__main__":
    main()
