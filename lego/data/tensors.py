"""One modality of one fold as tensors: what every model reads, whatever the modality's kind."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ModalityTensors:
    """One modality of one fold: (T, D) float tensor per patient who has it."""

    name: str
    kind: str
    per_patient: dict[str, torch.Tensor]
    state: dict  # fitted preprocessing, JSON-serialisable
    dim: int

    def __post_init__(self) -> None:
        # Tables have one token per patient: keep them as one dense matrix too, so a batch is a
        # single index_select instead of a Python loop (most of a tabular epoch's time otherwise).
        self.index: dict[str, int] = {}
        self.dense: torch.Tensor | None = None
        if self.per_patient and all(t.shape[0] == 1 for t in self.per_patient.values()):
            self.index = {pid: i for i, pid in enumerate(self.per_patient)}
            self.dense = torch.cat([self.per_patient[p] for p in self.index]).unsqueeze(1)
            self.per_patient = {pid: self.dense[i] for pid, i in self.index.items()}  # views: one copy in memory
