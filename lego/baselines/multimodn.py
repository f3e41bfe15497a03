"""MultiModN (Swamy et al., NeurIPS 2023): a state vector updated by one encoder per modality in
turn; one decoder reads the state after every step; the loss averages every step's.

Re-implemented from the paper and the facts of its public code (MIT), none copied: a learned
initial state (N(0, 1), size 50); per modality, in the config's order, an encoder
[input ; state] -> dropout 0.2 -> Linear 32 -> ReLU -> Linear 32 -> ReLU -> Linear to the state ->
ReLU that replaces the state; one decoder (Linear 32 -> ReLU -> Linear 32 -> ReLU -> Linear to the
bins) applied to the initial state and after each encoder. 50 + 2,820 + sum over modalities of
(32 d + 4,338) parameters for d input features (85,676 for BLCA's mutation, CNV and RNA tables).

As the paper describes (and its code does only for a whole batch): a patient without a modality
skips that encoder -- its state passes through unchanged. A patch bag enters as the mean of its
patches. The loss at every step is the pipeline's survival NLL (the ports of HEALNet and MM-Lego
used cross-entropy on one-hot bins, which ignores censoring); a step a patient skips counts 0, the
initial state's prediction counts too, as in the original. The prediction is the last step's.
"""

from __future__ import annotations

import torch
from torch import nn

from lego.baselines._shared import bag_modalities, dims_of, fit_module, ordered, own_settings
from lego.models.model_kinds import ModelKind, register


class MultiModN(nn.Module):
    """forward(inputs) -> (final state, final logits); ``training_loss`` averages every step's loss."""

    def __init__(self, dims: dict[str, int], slides: list[str], n_outputs: int, *, state: int, hidden: list[int],
                 decoder: list[int], dropout: float):
        super().__init__()
        self.order, self.slides = list(dims), set(slides)
        self.state0 = nn.Parameter(torch.randn(state))
        self.encoders = nn.ModuleDict({m: _mlp([d + state, *hidden, state], dropout, last_relu=True)
                                       for m, d in dims.items()})
        self.decoder = _mlp([state, *decoder, n_outputs], 0.0, last_relu=False)
        self.steps: tuple[torch.Tensor, torch.Tensor] | None = None

    def _vector(self, m: str, inputs: dict) -> torch.Tensor:
        x, mask, _ = inputs[m]
        if m not in self.slides:
            return x[:, 0]
        weights = mask.float() / mask.float().sum(1, keepdim=True).clamp_min(1)
        return torch.einsum("bt,btd->bd", weights, x)

    def forward(self, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        first = inputs[self.order[0]][0]
        s = self.state0.expand(first.shape[0], -1)
        logits, present = [self.decoder(s)], [torch.ones(first.shape[0], dtype=torch.bool, device=first.device)]
        for m in self.order:
            has = inputs[m][2]
            s = torch.where(has[:, None], self.encoders[m](torch.cat([self._vector(m, inputs), s], dim=1)), s)
            logits.append(self.decoder(s))
            present.append(has)
        self.steps = (torch.stack(logits), torch.stack(present))
        return s, logits[-1]

    def training_loss(self, logits: torch.Tensor, y: dict, loss_fn) -> torch.Tensor:
        """Every step's loss over the patients it encoded (a skipped step counts 0), averaged over all
        steps and patients -- ``loss_fn(logits, y)`` is the task loss of a set of rows."""
        steps, present = self.steps
        rows = present.flatten()
        picked = {k: v.repeat(len(steps))[rows] for k, v in y.items()}
        return loss_fn(steps.flatten(0, 1)[rows], picked) * rows.float().mean()


def _mlp(sizes: list[int], dropout: float, last_relu: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Dropout(dropout)] if dropout else []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2 or last_relu:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


# The original's MIMIC configuration (its paper's main experiments).
SETTINGS = {
    "state": {"type": "integer", "minimum": 1, "maximum": 4096, "default": 50, "description": "State vector size."},
    "hidden": {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 4096}, "minItems": 1,
               "default": [32, 32], "description": "Each encoder's hidden layers."},
    "decoder": {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 4096}, "minItems": 0,
                "default": [32, 32], "description": "The decoder's hidden layers."},
    "dropout": {"type": "number", "minimum": 0, "exclusiveMaximum": 1, "default": 0.2,
                "description": "Dropout on each encoder's input."},
}


def build(config: dict) -> MultiModN:
    return MultiModN(dict(config["dims"]), config["slides"], config["n_outputs"], **config["architecture"])


def fit(inputs, spec: dict, device, where: str):
    arch, dims, slides = own_settings(spec, SETTINGS), dims_of(inputs), bag_modalities(inputs)
    model = MultiModN(dims, slides, inputs.targets.n_outputs, **arch)
    history = fit_module(model, inputs, spec, device, where)
    return model, {"dims": ordered(dims), "slides": slides, "n_outputs": inputs.targets.n_outputs, "architecture": arch}, history


MULTIMODN = register(ModelKind("multimodn", "baseline", "multimodn", build, fit=fit, default=False, settings=SETTINGS,
                               description="MultiModN: a state updated by one encoder per modality in turn"))
