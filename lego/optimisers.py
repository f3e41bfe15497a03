"""torch's optimisers, without loading torch.compile's front end into every training job.

Why: ``torch.optim`` guards ``Optimizer.add_param_group``, ``zero_grad``, ``state_dict`` and
``load_state_dict`` with ``torch._disable_dynamo``, and Adam's ``step`` with graph breaks; both
import ``torch._dynamo`` on first use. That import is about 2 CPU seconds in every process that
builds an optimiser (measured on 2 cores: a demo MultiModN fold job's 8.3 s held 2.2 s of it, its
training 1.5 s), and the demo starts about 65 such processes. In eager mode the guards do
nothing: ``disable`` switches off a compiler that is not running, and a graph break outside a
compiled frame is a no-op. lego never calls ``torch.compile``, so its optimisers here are
subclasses that call the guarded methods' own code directly (the test proves the same weights as
torch's, computed in an interpreter that never imported this module).

torch itself is not changed: its optimisers keep their guards. Each method here checks on every
call whether ``torch._dynamo`` is loaded (something in the process may compile) and then takes
torch's guarded path. A method is replaced only when its guard is exactly the wrapper this was
written against (torch 2.13: the same code object and the same names used); a later torch that
changes a guard keeps torch's method: slower, never different.
"""

from __future__ import annotations

import functools
import sys

import torch

GUARDED = ("add_param_group", "zero_grad", "state_dict", "load_state_dict")  # torch._disable_dynamo on Optimizer
_DISABLE_NAMES = ("getattr", "torch._dynamo", "_dynamo", "disable", "__dynamo_disable")  # its wrapper's, torch 2.13
_DISABLE_CODE = torch._disable_dynamo(lambda: None).__code__  # the wrapper's code: shared by every guarded method
_STEP_GUARD = ("_use_grad", ("torch._dynamo", "cast", "Optimizer", "is_grad_enabled", "set_grad_enabled", "defaults",
                             "_dynamo", "graph_break"))  # Adam.step's graph-break wrapper, torch 2.13


def _compiling() -> bool:
    return "torch._dynamo" in sys.modules


def _unguarded_method(guarded):
    """``guarded`` calling its own function directly while dynamo is not loaded; None when its
    guard is not the known ``torch._disable_dynamo`` wrapper."""
    plain = getattr(guarded, "__wrapped__", None)
    if plain is None or guarded.__code__ is not _DISABLE_CODE or _DISABLE_CODE.co_names != _DISABLE_NAMES:
        return None

    @functools.wraps(plain)
    def method(self, *args, **kwargs):
        return guarded(self, *args, **kwargs) if _compiling() else plain(self, *args, **kwargs)

    return method


def _unguarded_step(guarded):
    """``step`` setting grad mode as torch's wrapper does, minus its graph breaks; None when the
    wrapper is not the known one."""
    plain = getattr(guarded, "__wrapped__", None)
    if plain is None or (guarded.__code__.co_name, guarded.__code__.co_names) != _STEP_GUARD:
        return None

    @functools.wraps(plain)
    def step(self, closure=None):
        if _compiling():
            return guarded(self, closure)
        with torch.set_grad_enabled(self.defaults["differentiable"]):
            return plain(self, closure)

    return step


def _without_guards(cls: type[torch.optim.Optimizer]) -> type[torch.optim.Optimizer]:
    """A subclass of ``cls`` whose guarded methods skip the guards in eager mode."""
    methods = {name: _unguarded_method(getattr(cls, name)) for name in GUARDED}
    methods["step"] = _unguarded_step(cls.step)
    methods = {name: m for name, m in methods.items() if m is not None}
    return type(cls.__name__, (cls,), {**methods, "__module__": __name__, "__qualname__": cls.__name__,
                                       "__doc__": cls.__doc__})


Adam = _without_guards(torch.optim.Adam)
AdamW = _without_guards(torch.optim.AdamW)
LBFGS = _without_guards(torch.optim.LBFGS)  # its step only disables grad: the guards are its only import
