"""LegoFuse: chain N blocks into one model, then fine-tune briefly (default 2 epochs).

* ``stack``: block 1's latent (back in the state domain) is block 2's initial state, and so on;
  a patient missing a modality skips that block (its state passes through unchanged).
* ``weave``: layer by layer, the state passes through each block's layer i in turn.
* ``merge`` (beyond the paper): the tuned LegoMerge itself -- each block reads its own modality,
  the latents are merged in the tuned merge's form and with its weights (``readout``: each latent
  read by its block's own head, centred at the merge's offsets, logits averaged) -- fine-tuned.
  Why: fine-tuning a chain that starts far from any trained model on ~100-200 paired
  patients lost test C on every demo fold (0.680 against the merge's 0.735); started from the
  merge, with the merge itself a candidate (epoch -1), a fine-tune can only keep or improve what
  validation sees.

The head starts as the merged head of the blocks (as in LegoMerge); the ``readout`` form reads
each block's own head instead, and fine-tunes those. Initial states are arguments,
never written into a block's parameters, so the blocks stay reusable.
"""

from __future__ import annotations

import torch
from torch import nn

from lego.models.block import LegoBlock, fft
from lego.models.merge import merge_heads, merged_output, offsets_tensor
from lego.settings import default, setting


class LegoFuse(nn.Module):
    def __init__(self, blocks: dict[str, LegoBlock], mode: str = default("model.fuse.mode"),
                 head_method: str = default("model.merge.head"), weights: dict[str, float] | None = None,
                 merge_method: str = "readout", offsets: dict[str, list[float]] | None = None):
        super().__init__()
        if len(blocks) < 2:
            raise ValueError("LegoFuse needs at least two blocks")
        if mode not in setting("model.fuse.mode").choices:
            raise ValueError(f"unknown fuse mode {mode!r}; use {' or '.join(setting('model.fuse.mode').choices)}")
        cfgs = {(b.cfg.latent_rows, b.cfg.latent_dim, b.cfg.n_outputs, b.cfg.depth) for b in blocks.values()}
        if len(cfgs) != 1:
            raise ValueError(f"blocks must share latent shape, outputs and depth to fuse; got {sorted(cfgs)}")
        self.modalities = list(blocks)
        self.blocks = nn.ModuleDict(blocks)
        self.mode = mode
        self.weights = [float((weights or {}).get(m, 1.0)) for m in self.modalities]
        self.merge_method = merge_method
        self.head = merge_heads([b.head for b in blocks.values()], head_method, torch.tensor(self.weights))
        self.offsets = offsets_tensor(offsets, self.modalities, next(iter(blocks.values())).cfg.n_outputs)

    def _first_state(self, inputs) -> torch.Tensor:
        """Each patient starts from the latent array of the first block it has."""
        batch = next(iter(inputs.values()))[0].shape[0]
        state = None
        for m in reversed(self.modalities):
            pres = inputs[m][2][:, None, None]
            init = self.blocks[m].initial_state(batch)
            state = init if state is None else torch.where(pres, init, state)
        return state

    def _merged(self, inputs) -> tuple[torch.Tensor, torch.Tensor]:
        """The blocks' latents merged as the tuned merge does, over the blocks a patient has."""
        latents = torch.stack([self.blocks[m].latent_from(inputs[m][0], inputs[m][1]) for m in self.modalities])
        present = torch.stack([inputs[m][2] for m in self.modalities])
        return merged_output(latents, present, self.head, self.merge_method, torch.tensor(self.weights),
                             [self.blocks[m].head for m in self.modalities], self.offsets)

    def forward(self, inputs: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mode == "merge":
            return self._merged(inputs)
        state = self._first_state(inputs)
        spec = fft(state, dim=1)
        if self.mode == "stack":
            for m in self.modalities:
                x, mask, pres = inputs[m]
                new = self.blocks[m].latent_from(x, mask, state)
                spec = torch.where(pres[:, None, None], new, spec)
                state = torch.fft.ifft(spec, dim=1).real
        else:
            ctx = {m: self.blocks[m].encode(inputs[m][0], inputs[m][1]) for m in self.modalities}
            for i in range(len(self.blocks[self.modalities[0]].layers)):
                for m in self.modalities:
                    pres = inputs[m][2][:, None, None]
                    new = self.blocks[m].layer_step(i, state, *ctx[m])
                    spec = torch.where(pres, new, spec)
                    state = torch.fft.ifft(spec, dim=1).real
        return spec, self.head(spec)
