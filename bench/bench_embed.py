"""Embedding throughput of each registered encoder on real slide patches (CPU or GPU as found).

Run by hand:  .venv/bin/python bench/bench_embed.py [--patches 256] [--batch-size 32]
Writes bench/results/embedding.json. resnet50_trunc runs with random weights (its real weights
are user-supplied); speed does not depend on the weight values.

Per encoder: the pipeline (`embed_slide`: DataLoader reader workers, batches of ``--batch-size``,
inference mode) against the obvious loop -- read one patch with OpenSlide, embed it alone -- over
the same patches, with the ratio, and the peak RSS growth of each (ru_maxrss before/after).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import bench_slide, write_result  # noqa: E402


def one_at_a_time(path, grid, enc, n: int) -> float:
    """Seconds for the naive loop: read a patch, resize, embed it alone (first ``n`` patches)."""
    import cv2
    import torch

    from lego.slides.encoders import to_chw_uint8
    from lego.slides.reader import open_slide

    level, px = int(grid.attrs["read_level"]), int(grid.attrs["read_px"])
    enc.model.eval()
    t0 = time.perf_counter()
    with open_slide(path) as slide, torch.inference_mode():
        for x, y in grid.coords[:n]:
            patch = slide.read_rgb(int(x), int(y), level, (px, px))
            if patch.shape[0] != enc.input_px:
                patch = cv2.resize(patch, (enc.input_px, enc.input_px), interpolation=cv2.INTER_AREA)
            enc.embed(to_chw_uint8(patch).unsqueeze(0))
    return time.perf_counter() - t0


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
        loop_s = one_at_a_time(path, grid, enc, min(args.patches, 64))
        n_loop = min(args.patches, 64)
        results[name] = {
            "dim": enc.dim,
            "input_px": enc.input_px,
            "patches": stats["patches"],
            "seconds": round(wall, 2),
            "patches_per_s": round(stats["patches"] / wall, 1),
            "one_at_a_time_patches_per_s": round(n_loop / loop_s, 1),
            "speedup_vs_one_at_a_time": round((stats["patches"] / wall) / (n_loop / loop_s), 2),
            "peak_rss_mb_after": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        }
        print(name, results[name], flush=True)
    write_result("embedding", {"slide": path.name, "batch_size": args.batch_size, "workers": args.workers,
                               "device": "cuda" if torch.cuda.is_available() else "cpu", "encoders": results})


if __name__ == "__main__":
    main()
