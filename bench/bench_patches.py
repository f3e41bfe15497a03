"""Patch extraction throughput: our reader (DataLoader workers over the micron-based grid) versus
a plain OpenSlide ``read_region`` loop over the same coordinates of the same slide.

Run by hand:  .venv/bin/python bench/bench_patches.py [--workers 2]
Writes bench/results/patch_extraction.json (one run each; the ratio is ours / raw).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import bench_slide, write_result  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()

    import openslide
    import torch
    from torch.utils.data import DataLoader

    from lego.slides.embed import PatchDataset
    from lego.slides.encoders import Encoder
    from lego.slides.patches import PatchParams, make_patch_grid
    from lego.slides.reader import open_slide
    from lego.slides.tissue import TissueParams, segment_tissue

    path = bench_slide()
    t0 = time.perf_counter()
    with open_slide(path) as slide:
        tissue = segment_tissue(slide, TissueParams())
        grid = make_patch_grid(slide, tissue, PatchParams())
    t_grid = time.perf_counter() - t0
    coords = grid.coords
    size = int(grid.attrs["read_px"])

    # Raw loop: what a user writes by hand with OpenSlide (RGBA PIL images, converted to RGB arrays).
    osr = openslide.OpenSlide(str(path))
    t0 = time.perf_counter()
    for x, y in coords:
        np.asarray(osr.read_region((int(x), int(y)), 0, (size, size)).convert("RGB"))
    t_raw = time.perf_counter() - t0
    osr.close()

    # Ours: the reader the embedding stage uses, with DataLoader workers, to encoder-ready tensors.
    identity = Encoder("identity", 3, grid.attrs["patch_px"], torch.nn.Identity(), "-", normalise=False)
    ds = PatchDataset(path, coords, grid.attrs, identity, None)
    loader = DataLoader(ds, batch_size=args.batch_size, num_workers=args.workers)
    t0 = time.perf_counter()
    n = sum(len(b) for b in loader)
    t_ours = time.perf_counter() - t0
    assert n == len(coords)

    write_result(
        "patch_extraction",
        {
            "slide": path.name,
            "slide_size": [int(grid.attrs["slide_width"]), int(grid.attrs["slide_height"])],
            "patches": int(len(coords)),
            "patch": f"{grid.attrs['patch_px']} px at {grid.attrs['patch_mpp']} um/px",
            "segment_and_grid_s": round(t_grid, 3),
            "raw_openslide_loop": {"seconds": round(t_raw, 2), "patches_per_s": round(len(coords) / t_raw, 1)},
            "lego_dataloader": {"workers": args.workers, "seconds": round(t_ours, 2), "patches_per_s": round(n / t_ours, 1)},
            "ratio_lego_over_raw": round((n / t_ours) / (len(coords) / t_raw), 2),
        },
    )


if __name__ == "__main__":
    main()
