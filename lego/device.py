"""Where training and inference run: one rule for every stage (embedding, blocks, fuse, ABMIL)."""

from __future__ import annotations

import logging
import os
import warnings

import torch

from lego.settings import default

log = logging.getLogger(__name__)


def resolve_device(device: str = default("model.train.device")) -> torch.device:
    """``auto`` picks CUDA when visible, else CPU with a warning if a GPU was expected."""
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            warnings.warn("device 'cuda' requested but no GPU is visible; running on CPU", stacklevel=2)
            return torch.device("cpu")
        return torch.device("cuda")
    allocated = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    if device == "auto" and allocated not in ("", "-1", "NoDevFiles"):
        # A scheduler (e.g. SLURM --gpus) assigned a GPU, but this torch build or node cannot use it.
        log.warning("GPU %s was allocated to this job (CUDA_VISIBLE_DEVICES) but torch sees no CUDA device; "
                    "running on the CPU", allocated)
    return torch.device("cpu")
