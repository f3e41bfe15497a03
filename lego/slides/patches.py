"""Patch grids defined in microns, written as HDF5 ``coords`` the way TRIDENT and CLAM do.

A patch is ``patch_px`` pixels at ``patch_mpp`` microns per pixel, whatever the scanner: the
grid is laid out in level-0 pixels and each patch is read from the finest pyramid level that is
not finer than needed, then resized. Coordinates are level-0 top-left corners.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

import lego
from lego.errors import InputError, SlideError
from lego.io import atomic_path
from lego.slides.features import h5_attrs
from lego.slides.params import PatchParams  # noqa: F401  (re-exported: callers import it from here)
from lego.slides.reader import Slide
from lego.slides.tissue import Tissue

PATCH_FILE_ROOT = ("status", "reason", "stage", "lego_version")  # file attributes; the rest sit on coords
MASK_CELLS_PER_PATCH = 16  # mask resolution for tissue fractions: 16x16 cells per patch


@dataclass
class PatchGrid:
    coords: np.ndarray  # (N, 2) int64, level-0 top-left (x, y)
    tissue_fraction: np.ndarray  # (N,) float32
    attrs: dict


def patch_geometry(slide: Slide, params: PatchParams) -> dict:
    """Level-0 patch size, the level to read from and the read size at that level."""
    size0 = patch_size_level0(slide, params)
    level = slide.best_level(params.patch_mpp / slide.mpp)
    read_px = max(1, int(round(size0 / slide.level_downsamples[level])))
    return {
        "patch_px": params.patch_px,
        "patch_mpp": params.patch_mpp,
        "patch_size_level0": size0,
        "read_level": level,
        "read_px": read_px,
        "read_downsample": float(slide.level_downsamples[level]),
        "level0_mpp": slide.mpp,
        "mpp_source": slide.mpp_source,
        "overlap_fraction": params.overlap,
        "slide_width": slide.dimensions[0],
        "slide_height": slide.dimensions[1],
        "slide_name": slide.name,
    }


def patch_size_level0(slide: Slide, params: PatchParams) -> int:
    """A patch's side in level-0 pixels, whole: the grid steps by it, and it is what the files record.

    Why whole: on a scan at 0.2527 µm/px a 256 px @ 0.5 µm patch is 506.53 level-0 px. Placing
    patches at floor(k * 506.53) while recording 507 made TRIDENT's slide encoders (which index
    positions as coords // patch_size_level0) merge neighbouring columns and rows -- 12 patches
    became 6 positions. The patch is then 0.1 % larger than asked, far below any scan's error."""
    return max(1, int(round(params.patch_px * params.patch_mpp / slide.mpp)))


def coords_attrs(geo: dict) -> dict:
    """Every attribute of a patch file's ``coords``: ours plus what TRIDENT and CLAM read."""
    from lego.slides.interop import patch_file_attrs

    return {**geo, **patch_file_attrs(geo)}


def make_patch_grid(slide: Slide, tissue: Tissue, params: PatchParams) -> PatchGrid:
    """Grid of patches over the slide keeping those with enough tissue."""
    geo = patch_geometry(slide, params)
    size0 = geo["patch_size_level0"]
    step = max(1, int(round(size0 * (1.0 - params.overlap))))
    W, H = slide.dimensions
    if size0 > W or size0 > H:
        raise SlideError(slide.path, f"slide ({W}x{H} px) is smaller than one patch ({size0:.0f} px at level 0)")
    xs = np.arange(0, W - size0 + 1, step, dtype=np.int64)
    ys = np.arange(0, H - size0 + 1, step, dtype=np.int64)
    # Tissue fraction per patch from a rasterised mask and its integral image.
    mask_ds = size0 / MASK_CELLS_PER_PATCH
    shape = (int(math.ceil(H / mask_ds)) + 1, int(math.ceil(W / mask_ds)) + 1)
    integral = np.pad(tissue.mask(mask_ds, shape).astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    gx0 = np.round(xs / mask_ds).astype(np.int64)
    gy0 = np.round(ys / mask_ds).astype(np.int64)
    n = MASK_CELLS_PER_PATCH
    x0, y0 = np.meshgrid(gx0, gy0)
    total = integral[y0 + n, x0 + n] - integral[y0, x0 + n] - integral[y0 + n, x0] + integral[y0, x0]
    frac = (total / float(n * n)).astype(np.float32)
    keep = frac >= params.min_tissue_fraction
    px, py = np.meshgrid(xs, ys)
    coords = np.stack([px[keep], py[keep]], axis=1).astype(np.int64)
    if len(coords) == 0:
        raise SlideError(
            slide.path,
            f"no patch has tissue fraction >= {params.min_tissue_fraction}; lower patches.min_tissue_fraction "
            "or check the tissue QC image",
        )
    return PatchGrid(coords, frac[keep], geo)


def write_patches(grid: PatchGrid, path: str | Path) -> None:
    """HDF5 with ``coords`` (attributes on the dataset, as TRIDENT/CLAM) and ``tissue_fraction``."""
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            ds = f.create_dataset("coords", data=grid.coords)
            for k, v in coords_attrs(grid.attrs).items():
                ds.attrs[k] = v
            f.create_dataset("tissue_fraction", data=grid.tissue_fraction)
            f.attrs["status"] = "ok"
            f.attrs["lego_version"] = lego.__version__


def write_failed_patches(slide_name: str, reason: str, path: str | Path, stage: str = "extract_patches") -> None:
    """An explicit failure record: zero coordinates, ``status = failed``, the stage that failed and why."""
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            ds = f.create_dataset("coords", data=np.zeros((0, 2), np.int64))
            ds.attrs["slide_name"] = slide_name
            f.create_dataset("tissue_fraction", data=np.zeros((0,), np.float32))
            f.attrs["status"] = "failed"
            f.attrs["reason"] = reason
            f.attrs["stage"] = stage
            f.attrs["lego_version"] = lego.__version__


def read_patches(path: str | Path) -> PatchGrid:
    """A patch file (ours, TRIDENT's or CLAM's layout); a damaged one is one InputError naming it."""
    try:
        with h5py.File(path, "r") as f:
            coords = f["coords"][:]
            attrs = {**h5_attrs(f["coords"]), **h5_attrs(f)}
            frac = f["tissue_fraction"][:] if "tissue_fraction" in f else np.ones(len(coords), np.float32)
    except (OSError, KeyError, ValueError, TypeError) as exc:  # truncated, not HDF5, or no coords dataset
        raise InputError(f"{path}: not a readable patch file ({' '.join(str(exc).split())[:160]}); "
                         "re-run patch extraction for this slide") from None
    return PatchGrid(coords, frac, attrs)
