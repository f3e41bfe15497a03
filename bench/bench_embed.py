"""Embedding throughput of each registered encoder on real slide patches (CPU or GPU as found).

Run by hand:  .venv/bin/python bench/bench_embed.py [--patches 256] [--batch-size 32] [--workers 1]
              [--encoders uni ...] [--result embedding_foundation]
Writes bench/results/<result>.json (<result>_gpu.json on a GPU). resnet50_trunc and the foundation
encoders (``--encoders uni``; default: the encoders that need no downloaded weights) run with random
weights in their published layout; speed does not depend on the weight values.

Per encoder, after one warm-up batch (so neither side pays the one-off start-up):
- ``pipeline``: ``embed_slide`` as the workflow runs it -- DataLoader reader workers, batches of
  ``--batch-size``, uint8 transfer, autocast on CUDA -- over ``--patches`` patches;
- ``one_at_a_time``: the obvious loop -- read one patch with OpenSlide, resize, embed it alone --
  over the first ``--loop-patches`` of the same patches, same precision;
- ``compute_only``: the model alone on patches already in memory at batch sizes 1, 8, 32 (and 128
  on a GPU), which separates what batching buys the model from what the reader costs.
Peak memory: the process's ru_maxrss after each encoder, and torch's peak GPU allocation per phase.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import bench_slide, gpu_peak_mb, write_result  # noqa: E402

if TYPE_CHECKING:
    import torch

    from lego.slides.patches import PatchGrid


def _reset_gpu_peak() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _embed(enc, batch, dev):
    import torch

    with torch.autocast(device_type="cuda", dtype=getattr(torch, enc.autocast_dtype), enabled=dev.type == "cuda"):
        out = enc.embed(batch.to(dev, non_blocking=True))
    return out.float().cpu()  # the pipeline also brings every batch back to the host


def one_at_a_time(path, grid, enc, dev, n: int) -> float:
    """Seconds for the naive loop: read a patch, resize, embed it alone (first ``n`` patches)."""
    import cv2
    import torch

    from lego.slides.encoders import to_chw_uint8
    from lego.slides.reader import open_slide

    level, px = int(grid.attrs["read_level"]), int(grid.attrs["read_px"])
    t0 = time.perf_counter()
    with open_slide(path) as slide, torch.inference_mode():
        for x, y in grid.coords[:n]:
            patch = slide.read_rgb(int(x), int(y), level, (px, px))
            if patch.shape[0] != enc.input_px:
                patch = cv2.resize(patch, (enc.input_px, enc.input_px), interpolation=cv2.INTER_AREA)
            _embed(enc, to_chw_uint8(patch).unsqueeze(0), dev)
    return time.perf_counter() - t0


def compute_only(enc, dev, batch_sizes: list[int], n: int) -> dict[str, float]:
    """Patches/s of the model alone on random uint8 patches held in memory, per batch size."""
    import torch

    gen = torch.Generator().manual_seed(0)
    out = {}
    with torch.inference_mode():
        for bs in batch_sizes:
            batch = torch.randint(0, 256, (bs, 3, enc.input_px, enc.input_px), dtype=torch.uint8, generator=gen)
            _embed(enc, batch, dev)  # warm-up at this shape (cuDNN picks its kernels here)
            reps = max(1, n // bs)
            t0 = time.perf_counter()
            for _ in range(reps):
                _embed(enc, batch, dev)
            out[str(bs)] = round(reps * bs / (time.perf_counter() - t0), 1)
    return out


@dataclass
class Setup:
    """What every encoder's timing shares: the slide, its patch grid (on disk in ``tmp``), the device."""

    path: Path
    grid: PatchGrid
    tmp: Path
    dev: torch.device
    sizes: list[int]  # batch sizes of the compute-only measurement
    n_loop: int  # patches of the one-at-a-time loop


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--patches", type=int, default=256)
    ap.add_argument("--loop-patches", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--slide-size", type=int, nargs=2, default=[16384, 12288], metavar=("WIDTH", "HEIGHT"),
                    help="level-0 size of the synthetic benchmark slide (default 16384 12288)")
    ap.add_argument("--encoders", nargs="*", default=None, help="encoders to time (default: those without downloaded weights)")
    ap.add_argument("--result", default="embedding", help="result file name under bench/results/")
    return ap.parse_args()


def prepare(args: argparse.Namespace) -> Setup:
    """Benchmark slide, its first ``--patches`` patches written to a temporary folder, random ResNet50 weights."""
    import torch

    from lego.device import resolve_device
    from lego.slides.encoders.resnet50_trunc import ResNet50Trunc
    from lego.slides.patches import PatchGrid, PatchParams, make_patch_grid, write_patches
    from lego.slides.reader import open_slide
    from lego.slides.tissue import TissueParams, segment_tissue

    dev = resolve_device("auto")
    path = bench_slide(*args.slide_size)
    tmp = Path(tempfile.mkdtemp())
    with open_slide(path) as slide:
        grid = make_patch_grid(slide, segment_tissue(slide, TissueParams()), PatchParams())
    grid = PatchGrid(grid.coords[: args.patches], grid.tissue_fraction[: args.patches], grid.attrs)
    write_patches(grid, tmp / "patches.h5")
    torch.save(ResNet50Trunc().state_dict(), tmp / "r50.pth")
    sizes = [1, 8, 32] + ([128] if dev.type == "cuda" else [])
    return Setup(path, grid, tmp, dev, sizes, min(args.patches, args.loop_patches))


def load_encoder(name: str, setup: Setup, batch_size: int):
    """The encoder on the device after one warm-up batch; foundation models get random weights."""
    import torch

    from lego.slides.encoders import create_encoder
    from lego.slides.encoders.foundation import FOUNDATION, network

    checkpoint = str(setup.tmp / "r50.pth") if name == "resnet50_trunc" else None
    if name in FOUNDATION:  # random weights in the published layout (the real ones are gated downloads)
        from safetensors.torch import save_file

        checkpoint = str(setup.tmp / f"{name}.safetensors")
        save_file({k: v.contiguous() for k, v in network(FOUNDATION[name]).state_dict().items()}, checkpoint)
    enc = create_encoder(name, checkpoint)
    if enc.model is not None:  # an array encoder (stain_texture) computes with numpy on the CPU
        enc.model.to(setup.dev).eval()
    with torch.inference_mode():
        _embed(enc, torch.zeros((batch_size, 3, enc.input_px, enc.input_px), dtype=torch.uint8), setup.dev)
    return enc


def time_pipeline(name: str, enc, setup: Setup, args: argparse.Namespace) -> tuple[dict, float, int | None]:
    """``embed_slide`` as the workflow runs it: its stats, wall seconds and peak GPU memory."""
    from lego.slides.embed import embed_slide

    _reset_gpu_peak()
    t0 = time.perf_counter()
    stats = embed_slide(setup.path, setup.tmp / "patches.h5", enc, setup.tmp / f"{name}.h5", batch_size=args.batch_size,
                        num_workers=args.workers)
    wall = time.perf_counter() - t0
    return stats, wall, gpu_peak_mb()


def encoder_result(name: str, enc, setup: Setup, args: argparse.Namespace) -> dict:
    """All three measurements of one encoder, in this order: pipeline, one at a time, compute only."""
    dev, n_loop = setup.dev, setup.n_loop
    stats, wall, pipeline_gpu_mb = time_pipeline(name, enc, setup, args)
    _reset_gpu_peak()
    loop_s = one_at_a_time(setup.path, setup.grid, enc, dev, n_loop)
    loop_gpu_mb = gpu_peak_mb()
    compute = compute_only(enc, dev, setup.sizes, 1024 if dev.type == "cuda" else max(64, args.batch_size * 4))
    model_s = stats["patches"] / max(compute.get(str(args.batch_size), max(compute.values())), 1e-9)
    return {
        "dim": enc.dim,
        "input_px": enc.input_px,
        "patches": stats["patches"],
        "pipeline_s": round(wall, 2),
        "pipeline_patches_per_s": round(stats["patches"] / wall, 1),
        "one_at_a_time_patches": n_loop,
        "one_at_a_time_patches_per_s": round(n_loop / loop_s, 1),
        "speedup_vs_one_at_a_time": round((stats["patches"] / wall) / (n_loop / loop_s), 2),
        "compute_only_patches_per_s_by_batch": compute,
        # Share of the pipeline's time not explained by the model at this batch size: reading,
        # decoding, resizing and transfers the model waits for (0 = the model is the limit).
        "reader_wait_share_estimate": round(max(0.0, 1 - model_s / wall), 3),
        "peak_rss_mb_after": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "pipeline_gpu_peak_mb": pipeline_gpu_mb,
        "one_at_a_time_gpu_peak_mb": loop_gpu_mb,
    }


def main() -> None:
    args = parse_args()

    from lego.slides.encoders import list_encoders

    setup = prepare(args)
    results = {}
    from lego.slides.encoders.foundation import FOUNDATION

    for name in args.encoders or [n for n in list_encoders() if n not in FOUNDATION]:
        enc = load_encoder(name, setup, args.batch_size)
        results[name] = encoder_result(name, enc, setup, args)
        print(name, results[name], flush=True)
    write_result(args.result, {"slide": setup.path.name, "batch_size": args.batch_size, "workers": args.workers,
                               "device": str(setup.dev), "encoders": results})


if __name__ == "__main__":
    main()
