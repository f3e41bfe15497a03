"""MM-Lego models: modality encoders, LegoBlock, LegoMerge and LegoFuse (any number of modalities).

The architectures are imported when first named (``from lego.models import LegoBlock``), so the
light model-kind registry (:mod:`lego.models.model_kinds`) loads without torch.
"""

from __future__ import annotations

import importlib

_WHERE = {"BlockConfig": "block", "LegoBlock": "block", "LegoMerge": "merge", "LegoFuse": "fuse"}
__all__ = list(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"lego.models.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'lego.models' has no attribute {name!r}")
