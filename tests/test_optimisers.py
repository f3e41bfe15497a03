"""lego's optimisers are torch's, minus the import of torch.compile's front end (lego/optimisers.py)."""

import subprocess
import sys

# Each side runs in its own fresh interpreter: the reference never imports lego.optimisers (so a
# fault there cannot reach it), and neither side starts with torch._dynamo loaded by another test.
TRAIN = r"""
import sys
import torch

def net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(16, 2))

def train(make_opt, schedule, closure=False):
    model, gen = net(), torch.Generator().manual_seed(1)
    opt = make_opt(model.parameters())
    sched = schedule(opt) if schedule else None
    for epoch in range(7):
        x = torch.randn(32, 6, generator=gen)
        def loss_fn():
            opt.zero_grad(set_to_none=epoch % 2 == 0)  # both ways of clearing
            loss = model(x).pow(2).mean()
            loss.backward()
            return loss
        if closure:
            opt.step(loss_fn)
        else:
            loss = loss_fn()
            opt.step()
        if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            sched.step(1.0)
        elif sched:
            sched.step()
    state = opt.state_dict()
    opt.load_state_dict(state)
    opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2))]})
    assert torch.is_grad_enabled(), "grad mode restored after every step"
    return [torch.cat([p.detach().flatten() for p in model.parameters()]),
            torch.tensor([g["lr"] for g in opt.param_groups])]

def lbfgs(cls):
    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = cls([w], lr=0.5, max_iter=20, line_search_fn="strong_wolfe")
    def closure():
        opt.zero_grad()
        loss = ((w - torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)) ** 4).sum() + w.exp().sum()
        loss.backward()
        return loss
    opt.step(closure)
    return [w.detach().clone()]

def runs(o):
    cosine = lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=7)
    plateau = lambda opt: torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=1)
    return (train(lambda p: o.AdamW(p, lr=1e-2, weight_decay=1e-3, fused=True), cosine)
            + train(lambda p: o.Adam(p, lr=1e-2), plateau, closure=True)
            + lbfgs(o.LBFGS))

if sys.argv[1] == "lego":
    from lego import optimisers as o
    out = runs(o)
    print("dynamo loaded:", "torch._dynamo" in sys.modules,
          "torch's classes changed:", any(hasattr(getattr(torch.optim.Optimizer, m).__wrapped__, "__dynamo_disable")
                                          for m in o.GUARDED))
else:
    out = runs(torch.optim)
    print("dynamo loaded:", "torch._dynamo" in sys.modules)
torch.save(out, sys.argv[2])
"""


def _train(which: str, out) -> str:
    return subprocess.run([sys.executable, "-c", TRAIN, which, str(out)], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_lego_optimisers_take_torchs_steps_without_loading_the_compiler(tmp_path):
    import torch

    assert _train("lego", tmp_path / "lego.pt") == "dynamo loaded: False torch's classes changed: False"
    assert _train("torch", tmp_path / "torch.pt") == "dynamo loaded: True"  # the cost avoided, still in torch
    ours = torch.load(tmp_path / "lego.pt", weights_only=True)
    theirs = torch.load(tmp_path / "torch.pt", weights_only=True)
    assert len(ours) == len(theirs) == 5
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)


def test_lego_optimisers_take_torchs_guarded_path_once_the_compiler_is_loaded():
    """A process that compiles (torch._dynamo loaded) gets torch's own methods, guards included."""
    code = ("import sys, torch, torch._dynamo; from unittest import mock; from lego import optimisers as o\n"
            "m = torch.nn.Linear(2, 1); opt = o.AdamW(m.parameters())\n"
            "with mock.patch.object(torch._dynamo, 'graph_break', wraps=torch._dynamo.graph_break) as gb:\n"
            "    m(torch.ones(1, 2)).sum().backward(); opt.step()\n"
            "print(gb.call_count)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "2"  # torch's step wrapper: a graph break before and after


def test_training_code_builds_its_optimisers_from_lego_optimisers():
    """One place decides how optimisers are built: a torch.optim optimiser constructed elsewhere in
    lego would bring the 2-second import back into every training job."""
    from pathlib import Path

    import lego

    root = Path(lego.__file__).parent
    direct = [f"{p.relative_to(root)}:{i}" for p in root.rglob("*.py") if p.name != "optimisers.py"
              for i, line in enumerate(p.read_text().splitlines(), 1)
              if "from torch.optim import" in line
              or any(f"optim.{name}(" in line for name in ("Adam", "AdamW", "SGD", "LBFGS", "RMSprop"))]
    assert direct == []
