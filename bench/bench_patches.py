"""Patch extraction: our reader versus a plain OpenSlide ``read_region`` loop over the same
coordinates of the same slide, single-process and with 1 and 2 worker processes, on a 16k and a
32k streamed synthetic slide.

Run by hand:  .venv/bin/python bench/bench_patches.py [--sizes 16384x12288 32768x24576] [--repeats 3] [--tag NAME]
Writes bench/results/patch_extraction[_NAME].json; run it with PYTHONPATH=OTHER_CHECKOUT to measure
another version of the reader on the same slides.

Each mode runs ``--repeats`` times (interleaved) and the median run is kept; every
measurement runs in its own process, so its peak memory (ru_maxrss of the process and of its
reader workers) is its own. Each run covers the whole stage for that slide: open, tissue
segmentation, the micron-based patch grid, and reading every patch to an RGB array (ours: to the
encoder-ready uint8 tensor the embedding stage consumes). ``ratio`` is our patches/s over the raw
loop's, measured back to back on the same slide. Slides are generated once into bench/.cache
(the 32k one takes a few minutes and about 130 MB).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import bench_slide, write_result  # noqa: E402

MODES = ["raw", "lego-0", "lego-1", "lego-2"]  # lego-N: N DataLoader reader workers (0 = in-process)


def one_run(path: Path, mode: str, batch_size: int) -> dict:
    """The whole extraction of one slide in this process; returns timings and peak memory."""
    import numpy as np
    import openslide
    from torch.utils.data import DataLoader

    from lego.slides.embed import PatchReader
    from lego.slides.patches import PatchParams, make_patch_grid
    from lego.slides.reader import open_slide
    from lego.slides.tissue import TissueParams, segment_tissue

    # Imports stay outside the timings (the raw loop's process imports torch too, so the two
    # processes match); the timed read covers opening the slide and every patch.
    t0 = time.perf_counter()
    with open_slide(path) as slide:
        grid = make_patch_grid(slide, segment_tissue(slide, TissueParams()), PatchParams())
    t_grid = time.perf_counter() - t0
    coords, size = grid.coords, int(grid.attrs["read_px"])
    t0 = time.perf_counter()
    if mode == "raw":  # what a user writes by hand: RGBA PIL images, converted to RGB arrays
        osr = openslide.OpenSlide(str(path))
        for x, y in coords:
            np.asarray(osr.read_region((int(x), int(y)), 0, (size, size)).convert("RGB"))
        osr.close()
        n = len(coords)
    else:  # the reader the embedding stage uses, to encoder-ready uint8 tensors
        loader = DataLoader(PatchReader(path, coords, grid.attrs, grid.attrs["patch_px"], None), batch_size=batch_size,
                            num_workers=int(mode.split("-")[1]))
        n = sum(len(b) for b in loader)
        assert n == len(coords)
    t_read = time.perf_counter() - t0
    return {
        "patches": int(n),
        "segment_and_grid_s": round(t_grid, 3),
        "read_s": round(t_read, 3),
        "patches_per_s": round(n / t_read, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        # Largest reader worker (forked, so it counts the parent's pages it shares); None without workers.
        "workers_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
        if mode.startswith("lego-") and mode != "lego-0" else None,
    }


def _median_run(runs: list[dict]) -> dict:
    """The run with the median throughput, plus every run's throughput."""
    ordered = sorted(runs, key=lambda r: r["patches_per_s"])
    return {**ordered[len(ordered) // 2], "all_patches_per_s": [r["patches_per_s"] for r in runs]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", nargs="+", default=["16384x12288", "32768x24576"])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--tag", default="", help="suffix of the results file, e.g. 'before' for another code version")
    ap.add_argument("--repeats", type=int, default=3, help="runs per mode; the median run is reported")
    ap.add_argument("--case", nargs=2, help=argparse.SUPPRESS)  # internal: PATH MODE in this process
    args = ap.parse_args()
    if args.case:
        print(json.dumps(one_run(Path(args.case[0]), args.case[1], args.batch_size)))
        return
    slides = []
    for size in args.sizes:
        w, h = (int(v) for v in size.split("x"))
        path = bench_slide(w, h)
        runs: dict[str, list[dict]] = {m: [] for m in MODES}
        for _ in range(args.repeats):  # modes interleaved, so a slow spell of the machine hits all alike
            for mode in MODES:
                out = subprocess.run([sys.executable, __file__, "--case", str(path), mode, "--batch-size", str(args.batch_size)],
                                     capture_output=True, text=True, check=True)
                runs[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(size, mode, runs[mode][-1], flush=True)
        rows = {m: _median_run(r) for m, r in runs.items()}
        raw = rows["raw"]["patches_per_s"]
        slides.append({
            "slide": path.name, "slide_px": [w, h], "file_mb": round(path.stat().st_size / 2**20, 1),
            "runs": rows,
            "ratio_over_raw": {m: round(rows[m]["patches_per_s"] / raw, 2) for m in MODES[1:]},
            "worker_scaling_1_to_2": round(rows["lego-2"]["patches_per_s"] / rows["lego-1"]["patches_per_s"], 2),
        })
    growth = None
    if len(slides) >= 2:
        first, last = slides[0], slides[-1]
        growth = {
            "area": round(last["slide_px"][0] * last["slide_px"][1] / (first["slide_px"][0] * first["slide_px"][1]), 1),
            "patches": round(last["runs"]["lego-0"]["patches"] / first["runs"]["lego-0"]["patches"], 2),
            "peak_rss_lego_0": round(last["runs"]["lego-0"]["peak_rss_mb"] / first["runs"]["lego-0"]["peak_rss_mb"], 2),
            "peak_rss_raw": round(last["runs"]["raw"]["peak_rss_mb"] / first["runs"]["raw"]["peak_rss_mb"], 2),
        }
    write_result("patch_extraction" + (f"_{args.tag}" if args.tag else ""), {"patch": "256 px at 0.5 um/px", "batch_size": args.batch_size, "slides": slides,
                                      "growth_first_to_last": growth})


if __name__ == "__main__":
    main()
