"""torch's optimisers, without loading torch.compile's front end into every training job.

Why: ``torch.optim`` guards ``Optimizer.add_param_group``, ``zero_grad``, ``state_dict`` and
``load_state_dict`` with ``torch._disable_dynamo``, and Adam's ``step`` with graph breaks; both
import ``torch._dynamo`` on first use. That import is about 2 CPU seconds in every process that
builds an optimiser (measured on 2 cores: a demo MultiModN fold job's 8.3 s held 2.2 s of it, its
training 1.5 s), and the demo starts about 65 such processes. In eager mode the guards do
nothing: ``disable`` only switches off a compiler that is not running and a graph break outside a
compiled frame is a no-op. lego never calls ``torch.compile``, so the optimisers here run the same
arithmetic with the guards left out (the test proves equal weights after training).

If a later torch renames what this relies on (the guard's cache attribute, ``step.__wrapped__``),
the stock behaviour is kept: slower, never different. Nothing is changed once ``torch._dynamo`` is
already loaded (something in the process may compile).
"""

from __future__ import annotations

import sys

import torch

_GUARD_CACHE = "__dynamo_disable"  # where torch._disable_dynamo's wrapper caches the disabled function


def _skip_disable_guards() -> None:
    """Fill the guards' cache with the plain method, so the first call does not import dynamo."""
    if "torch._dynamo" in sys.modules:
        return
    guard_code = torch._disable_dynamo(lambda: None).__code__
    for attr in vars(torch.optim.Optimizer).values():
        plain = getattr(attr, "__wrapped__", None)
        if plain is not None and getattr(attr, "__code__", None) is guard_code:
            setattr(plain, _GUARD_CACHE, plain)


def _without_graph_breaks(cls: type[torch.optim.Optimizer]) -> type[torch.optim.Optimizer]:
    """``cls`` with a ``step`` that sets grad mode as torch's does, minus dynamo's graph breaks."""
    guarded = cls.step
    plain = getattr(guarded, "__wrapped__", None)
    if plain is None or guarded.__code__.co_name != "_use_grad" or "torch._dynamo" in sys.modules:
        return cls

    def step(self, closure=None):
        with torch.set_grad_enabled(self.defaults["differentiable"]):
            return plain(self, closure)

    step.__doc__ = plain.__doc__
    return type(cls.__name__, (cls,), {"step": step, "__module__": __name__, "__doc__": cls.__doc__})


_skip_disable_guards()
Adam = _without_graph_breaks(torch.optim.Adam)
AdamW = _without_graph_breaks(torch.optim.AdamW)
LBFGS = torch.optim.LBFGS  # its step has no graph breaks; the guards above were its only import
