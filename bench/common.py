"""Shared set-up for the benchmarks: a reproducible benchmark slide and a results writer."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
RESULTS = Path(os.environ.get("BENCH_RESULTS", HERE / "results"))


def demo_block() -> dict:
    """The demo config's LegoBlock architecture (config/config.yaml, model.block): the size benchmarks train."""
    import yaml

    return dict(yaml.safe_load((HERE.parent / "config" / "config.yaml").read_text())["model"]["block"])


def bench_slide(width: int = 16384, height: int = 12288, seed: int = 0) -> Path:
    """A 20x Aperio-style slide (about 100 mm2 of tissue at 0.5 um/px), built once and cached."""
    from lego.demo.aperio import write_aperio_tiff
    from lego.demo.cohort import SlideRenderer, SlideSpec

    path = CACHE / f"bench_{width}x{height}_{seed}.svs"
    if not path.exists():
        CACHE.mkdir(exist_ok=True)
        spec = SlideSpec(width, height, 0.5, 0.4)
        t0 = time.perf_counter()
        write_aperio_tiff(path, width, height, SlideRenderer(spec, np.random.default_rng(seed)), mpp=0.5, app_mag=20)
        print(f"wrote {path.name} in {time.perf_counter() - t0:.1f} s")
    return path


def machine() -> dict:
    import torch

    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.is_available(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch_threads": torch.get_num_threads(),
    }


def gpu_peak_mb() -> int | None:
    """Peak GPU memory allocated by torch in this process (None on the CPU)."""
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**20) if torch.cuda.is_available() else None


def write_result(name: str, result: dict) -> Path:
    """Write ``results/NAME.json`` (``NAME_gpu.json`` when a GPU was used, so CPU numbers stay)."""
    import torch

    if torch.cuda.is_available():
        name += "_gpu"
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": name, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(), **result}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return path


def time_epochs(runs: dict[str, Callable[[], None]], epochs: int) -> dict[str, list[float]]:
    """Seconds per epoch of each run after one warm-up each; epochs alternate so machine noise hits
    every run alike (on a GPU each epoch is timed to its last kernel)."""
    import torch

    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    times = {k: [] for k in runs}
    for fn in runs.values():
        fn()  # warm-up
    for _ in range(epochs):
        for k, fn in runs.items():
            sync()
            t = time.perf_counter()
            fn()
            sync()
            times[k].append(time.perf_counter() - t)
    return times
