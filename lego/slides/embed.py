"""Batched patch embedding. Network encoders: DataLoader workers read patches with OpenSlide, the
model runs on CUDA with autocast when a GPU is visible and on the CPU otherwise. Array encoders
(no network, see :class:`lego.slides.encoders.Encoder`) read and compute in this process with
numpy alone: their job never imports torch.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import cv2
import numpy as np

from lego.errors import InputError
from lego.settings import default
from lego.slides.encoders import Encoder, chw_uint8
from lego.slides.features import write_feature_bag
from lego.slides.patches import PATCH_FILE_ROOT, read_patches
from lego.slides.reader import open_slide

log = logging.getLogger(__name__)


class PatchReader:
    """Reads patch ``i`` (uint8, channels first) from the slide at the grid's read level, resized
    to the encoder's input. A map-style dataset: a torch DataLoader batches it as it is.

    Each worker opens its own OpenSlide handle lazily (handles are not shared across processes).
    """

    def __init__(self, slide_path: str | Path, coords: np.ndarray, attrs: dict, input_px: int, mpp_fallback: float | None):
        self.slide_path = str(slide_path)
        self.coords = coords
        self.level = int(attrs["read_level"])
        self.read_px = int(attrs["read_px"])
        self.input_px = input_px
        self.mpp_fallback = mpp_fallback
        self._slide = None

    def __len__(self) -> int:
        return len(self.coords)

    def open(self) -> None:
        """Open the slide (once): before threads share the handle, which OpenSlide allows."""
        if self._slide is None:
            self._slide = open_slide(self.slide_path, self.mpp_fallback)

    def __getitem__(self, i: int) -> np.ndarray:
        self.open()
        x, y = self.coords[i]
        region = (int(x), int(y), self.level, (self.read_px, self.read_px))
        size = self.input_px
        if self.read_px == size:  # no resizing: straight to the encoder's channel-first layout
            return self._slide.read_chw(*region)
        patch = self._slide.read_rgb(*region)
        interp = cv2.INTER_AREA if patch.shape[0] > size else cv2.INTER_LINEAR
        return chw_uint8(cv2.resize(patch, (size, size), interpolation=interp))


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
    """Embed every patch of a slide and write the feature bag; return timing stats. An array
    encoder computes on the CPU in this process (``device`` is the network's), its patches read
    by ``num_workers`` threads."""
    grid = read_patches(patches_h5)
    read = read_geometry(grid.attrs, slide_path, mpp_fallback, patches_h5)
    patches = PatchReader(slide_path, grid.coords, {**grid.attrs, **read}, encoder.input_px, mpp_fallback)
    # Reader start-up costs more than reading a few batches in this process: small slides use none.
    workers = num_workers if len(patches) >= 4 * batch_size else 0
    t0 = time.perf_counter()
    if encoder.arrays is not None:
        if device == "cuda":
            log.info("%s: encoder %s has no network; it computes on the CPU (--device %s unused)",
                     Path(slide_path).name, encoder.name, device)
        feats, where = _array_features(patches, encoder, batch_size, workers, progress), "cpu"
    else:
        feats, where = _network_features(patches, encoder, batch_size, workers, device, progress)
    elapsed = time.perf_counter() - t0
    features = np.concatenate(feats) if feats else np.zeros((0, encoder.dim), np.float32)
    attrs = {
        "encoder": encoder.name,
        "dim": encoder.dim,
        "encoder_digest": encoder.digest,
        "encoder_input_px": encoder.input_px,
        "slide_name": Path(slide_path).name,
        "device": where,
    }
    attrs.update({k: v for k, v in grid.attrs.items() if k.startswith(("patch_", "read_", "level0_", "slide_", "mpp_"))})
    geometry = {k: v for k, v in grid.attrs.items() if k not in PATCH_FILE_ROOT}  # the coords attributes, as TRIDENT copies them
    write_feature_bag(out_h5, features, grid.coords, attrs, geometry)
    return {"patches": len(features), "seconds": elapsed, "patches_per_s": len(features) / max(elapsed, 1e-9)}


def _with_progress(batches, total: int, name: str, progress: bool):
    if not progress:
        return batches
    from tqdm import tqdm

    return tqdm(batches, total=total, desc=name, unit="batch")


def _array_features(patches: PatchReader, encoder: Encoder, batch_size: int, workers: int,
                    progress: bool) -> list[np.ndarray]:
    """An array encoder's features, ``batch_size`` patches at a time (bounded memory). Patches are
    read by ``workers`` threads (OpenSlide and OpenCV release the GIL; one slide handle, which
    OpenSlide allows), as networks' are by DataLoader workers; 0: in this thread."""
    from concurrent.futures import ThreadPoolExecutor

    starts = range(0, len(patches), batch_size)
    if len(patches):
        patches.open()
    with ThreadPoolExecutor(max(1, workers)) as pool:
        read = pool.map if workers else map
        batches = (np.stack(list(read(patches.__getitem__, range(s, min(s + batch_size, len(patches)))))) for s in starts)
        return [encoder.arrays(b) for b in _with_progress(batches, len(starts), Path(patches.slide_path).name, progress)]


def _network_features(patches: PatchReader, encoder: Encoder, batch_size: int, workers: int, device: str,
                      progress: bool) -> tuple[list[np.ndarray], str]:
    """A network's features (DataLoader readers, autocast on a GPU), and the device type it ran on."""
    import torch
    from torch.utils.data import DataLoader

    from lego.device import resolve_device

    dev = resolve_device(device)
    encoder.model.to(dev).eval()
    loader = DataLoader(patches, batch_size=batch_size, num_workers=workers, pin_memory=dev.type == "cuda")
    feats = []
    with torch.inference_mode():
        for batch in _with_progress(loader, len(loader), Path(patches.slide_path).name, progress):
            batch = batch.to(dev, non_blocking=True)
            with torch.autocast(device_type="cuda", dtype=_dtype(torch, encoder.autocast_dtype), enabled=dev.type == "cuda"):
                out = encoder.embed(batch)
            feats.append(out.float().cpu().numpy())
    return feats, dev.type


def _dtype(torch, name):
    """The autocast dtype an encoder names ("float16", "bfloat16"); a torch dtype as it is (an
    encoder from a plugin written before the name)."""
    return getattr(torch, name) if isinstance(name, str) else name
