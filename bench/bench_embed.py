"""Embedding throughput of each registered encoder on real slide patches (CPU or GPU as found).

Run by hand:  .venv/bin/python bench/bench_embed.py [--patches 256] [--batch-size 32]
Writes bench/results/embedding.json. resnet50_trunc runs with random weights (its real weights
are user-supplied); speed does not depend on the weight values.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import bench_slide, write_result  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--patches", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()

    import torch

    from lego.slides.embed import embed_slide
    from lego.slides.encoders import create_encoder, list_encoders
    from lego.slides.encoders.resnet50_trunc import ResNet50Trunc
    from lego.slides.patches import PatchGrid, PatchParams, make_patch_grid, write_patches
    from lego.slides.reader import open_slide
    from lego.slides.tissue import TissueParams, segment_tissue

    path = bench_slide()
    tmp = Path(tempfile.mkdtemp())
    with open_slide(path) as slide:
        grid = make_patch_grid(slide, segment_tissue(slide, TissueParams()), PatchParams())
    grid = PatchGrid(grid.coords[: args.patches], grid.tissue_fraction[: args.patches], grid.attrs)
    write_patches(grid, tmp / "patches.h5")
    torch.save(ResNet50Trunc().state_dict(), tmp / "r50.pth")

    results = {}
    for name in list_encoders():
        enc = create_encoder(name, str(tmp / "r50.pth") if name == "resnet50_trunc" else None)
        t0 = time.perf_counter()
        stats = embed_slide(path, tmp / "patches.h5", enc, tmp / f"{name}.h5", batch_size=args.batch_size, num_workers=args.workers)
        wall = time.perf_counter() - t0
        results[name] = {
            "dim": enc.dim,
            "input_px": enc.input_px,
            "patches": stats["patches"],
            "seconds": round(wall, 2),
            "patches_per_s": round(stats["patches"] / wall, 1),
        }
        print(name, results[name], flush=True)
    write_result("embedding", {"slide": path.name, "batch_size": args.batch_size, "workers": args.workers,
                               "device": "cuda" if torch.cuda.is_available() else "cpu", "encoders": results})


if __name__ == "__main__":
    main()
