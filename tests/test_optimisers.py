"""lego's optimisers are torch's, minus the import of torch.compile's front end (lego/optimisers.py)."""

import subprocess
import sys

# Run in a fresh interpreter: the test process may already hold torch._dynamo from another test.
SCRIPT = r"""
import sys
import torch
from lego import optimisers

def net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(16, 2))

def train(make_opt, scheduled):
    model, gen = net(), torch.Generator().manual_seed(1)
    opt = make_opt(model.parameters())
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=7) if scheduled else None
    for _ in range(7):
        x = torch.randn(32, 6, generator=gen)
        opt.zero_grad(set_to_none=True)
        model(x).pow(2).mean().backward()
        opt.step()
        if sched:
            sched.step()
    opt.load_state_dict(opt.state_dict())  # guarded methods too
    assert all(not p.grad.requires_grad for p in model.parameters())
    return torch.cat([p.detach().flatten() for p in model.parameters()])

def lbfgs(cls):
    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = cls([w], lr=0.5, max_iter=20, line_search_fn="strong_wolfe")
    def closure():
        opt.zero_grad()
        loss = ((w - torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)) ** 4).sum() + w.exp().sum()
        loss.backward()
        return loss
    opt.step(closure)
    return w.detach().clone()

ours = [train(lambda p: optimisers.AdamW(p, lr=1e-2, weight_decay=1e-3, fused=True), True),
        train(lambda p: optimisers.Adam(p, lr=1e-2), False), lbfgs(optimisers.LBFGS)]
print("dynamo loaded by lego's optimisers:", "torch._dynamo" in sys.modules)
theirs = [train(lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=1e-3, fused=True), True),
          train(lambda p: torch.optim.Adam(p, lr=1e-2), False), lbfgs(torch.optim.LBFGS)]
print("dynamo loaded by torch's:", "torch._dynamo" in sys.modules)
print("equal:", all(torch.equal(a, b) for a, b in zip(ours, theirs)))
"""


def test_lego_optimisers_take_torchs_steps_without_loading_the_compiler():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["dynamo loaded by lego's optimisers: False",
                                "dynamo loaded by torch's: True",  # the cost this avoids, still there in torch
                                "equal: True"]


def test_training_code_builds_its_optimisers_from_lego_optimisers():
    """One place decides how optimisers are built: a torch.optim optimiser constructed elsewhere in
    lego would bring the 2-second import back into every training job."""
    from pathlib import Path

    import lego

    root = Path(lego.__file__).parent
    direct = [f"{p.relative_to(root)}:{i}" for p in root.rglob("*.py") if p.name != "optimisers.py"
              for i, line in enumerate(p.read_text().splitlines(), 1)
              if any(f"torch.optim.{name}(" in line for name in ("Adam", "AdamW", "SGD", "LBFGS", "RMSprop"))]
    assert direct == []
