"""Batched patch embedding: DataLoader workers read patches with OpenSlide, the model runs on
CUDA with autocast when a GPU is visible and on the CPU otherwise.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lego.device import resolve_device
from lego.errors import InputError
from lego.settings import default
from lego.slides.encoders import Encoder, to_chw_uint8
from lego.slides.features import write_feature_bag
from lego.slides.patches import PATCH_FILE_ROOT, read_patches
from lego.slides.reader import open_slide

log = logging.getLogger(__name__)


class PatchDataset(Dataset):
    """Reads patch ``i`` from the slide at the grid's read level and resizes it for the encoder.

    Each worker opens its own OpenSlide handle lazily (handles are not shared across processes).
    """

    def __init__(self, slide_path: str | Path, coords: np.ndarray, attrs: dict, encoder: Encoder, mpp_fallback: float | None):
        self.slide_path = str(slide_path)
        self.coords = coords
        self.level = int(attrs["read_level"])
        self.read_px = int(attrs["read_px"])
        self.encoder = encoder
        self.mpp_fallback = mpp_fallback
        self._slide = None

    def __len__(self) -> int:
        return len(self.coords)

    def __getitem__(self, i: int) -> torch.Tensor:
        if self._slide is None:
            self._slide = open_slide(self.slide_path, self.mpp_fallback)
        x, y = self.coords[i]
        region = (int(x), int(y), self.level, (self.read_px, self.read_px))
        size = self.encoder.input_px
        if self.read_px == size:  # no resizing: straight to the encoder's channel-first layout
            return torch.from_numpy(self._slide.read_chw(*region))
        patch = self._slide.read_rgb(*region)
        interp = cv2.INTER_AREA if patch.shape[0] > size else cv2.INTER_LINEAR
        return to_chw_uint8(cv2.resize(patch, (size, size), interpolation=interp))


def read_geometry(attrs: dict, slide_path: str | Path, mpp_fallback: float | None, where) -> dict:
    """The pyramid level and the square read there for each patch, from a patch file of ours,
    TRIDENT's or CLAM's: ours records ``read_level``/``read_px`` (the slide is not opened);
    TRIDENT records the level-0 square (``patch_size_level0``) and its size at the target
    magnification (``patch_size``), read here from the finest level not finer than needed; CLAM
    reads ``patch_size`` pixels at ``patch_level``."""
    if "read_level" in attrs and "read_px" in attrs:
        return {"read_level": int(attrs["read_level"]), "read_px": int(attrs["read_px"])}
    if not attrs.get("patch_size_level0") and not (attrs.get("patch_size") and "patch_level" in attrs):
        raise InputError(f"{where}: the patch file records no patch size (read_level/read_px, TRIDENT's "
                         "patch_size_level0 or CLAM's patch_level/patch_size); make the patches with `lego extract`")
    with open_slide(slide_path, mpp_fallback) as slide:
        downsamples = slide.level_downsamples
        if attrs.get("patch_size_level0"):
            size0 = float(attrs["patch_size_level0"])
            level = slide.best_level(size0 / float(attrs.get("patch_size") or size0))
            return {"read_level": level, "read_px": max(1, int(round(size0 / downsamples[level])))}
    level = int(attrs["patch_level"])
    if level >= len(downsamples):
        raise InputError(f"{where}: patch_level {level} but the slide has {len(downsamples)} level(s); "
                         "give the patch file made from this slide")
    return {"read_level": level, "read_px": int(attrs["patch_size"])}


def embed_slide(
    slide_path: str | Path,
    patches_h5: str | Path,
    encoder: Encoder,
    out_h5: str | Path,
    *,
    batch_size: int = default("embedding.batch_size"),
    num_workers: int = 1,
    device: str = default("embedding.device"),
    mpp_fallback: float | None = None,
    progress: bool = False,
) -> dict:
    """Embed every patch of a slide and write the feature bag; return timing stats."""
    grid = read_patches(patches_h5)
    read = read_geometry(grid.attrs, slide_path, mpp_fallback, patches_h5)
    dev = resolve_device(device)
    encoder.model.to(dev).eval()
    ds = PatchDataset(slide_path, grid.coords, {**grid.attrs, **read}, encoder, mpp_fallback)
    # Worker start-up costs more than reading a few batches in-process: small slides skip workers.
    workers = num_workers if len(ds) >= 4 * batch_size else 0
    loader = DataLoader(ds, batch_size=batch_size, num_workers=workers, pin_memory=dev.type == "cuda")
    feats = []
    t0 = time.perf_counter()
    it = loader
    if progress:
        from tqdm import tqdm

        it = tqdm(loader, desc=Path(slide_path).name, unit="batch")
    with torch.inference_mode():
        for batch in it:
            batch = batch.to(dev, non_blocking=True)
            with torch.autocast(device_type="cuda", dtype=encoder.autocast_dtype, enabled=dev.type == "cuda"):
                out = encoder.embed(batch)
            feats.append(out.float().cpu().numpy())
    elapsed = time.perf_counter() - t0
    features = np.concatenate(feats) if feats else np.zeros((0, encoder.dim), np.float32)
    attrs = {
        "encoder": encoder.name,
        "dim": encoder.dim,
        "encoder_digest": encoder.digest,
        "encoder_input_px": encoder.input_px,
        "slide_name": Path(slide_path).name,
        "device": dev.type,
    }
    attrs.update({k: v for k, v in grid.attrs.items() if k.startswith(("patch_", "read_", "level0_", "slide_", "mpp_"))})
    geometry = {k: v for k, v in grid.attrs.items() if k not in PATCH_FILE_ROOT}  # the coords attributes, as TRIDENT copies them
    write_feature_bag(out_h5, features, grid.coords, attrs, geometry)
    return {"patches": len(features), "seconds": elapsed, "patches_per_s": len(features) / max(elapsed, 1e-9)}
