"""A small synthetic image cohort for the image-kind tests: per patient one or two photographs
(PNG, JPEG or TIFF) of a textured background with a dark lesion whose size sets the hazard, and a
labels table with a clinical column."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

FORMATS = (".png", ".jpg", ".tif")


def image_cohort(folder: Path, n: int = 40, seed: int = 0, size: tuple[int, int] = (160, 120)) -> pd.DataFrame:
    """Write the images into ``folder`` (``<patient>_<k>.<ext>``); returns the labels table."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    rows = []
    for i in range(n):
        pid = f"IMG{i:03d}"
        lesion = rng.uniform(0.1, 0.45)
        for k in range(1 + int(rng.random() < 0.4)):
            skin = np.clip(rng.normal([200, 160, 140], 12, size=(h, w, 3)), 0, 255)
            cx, cy = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h
            inside = (xx - cx) ** 2 + (yy - cy) ** 2 < (lesion * min(w, h)) ** 2
            skin[inside] = rng.normal([90, 50, 40], 10, size=(int(inside.sum()), 3))
            ext = FORMATS[(i + k) % len(FORMATS)]
            Image.fromarray(skin.astype(np.uint8)).save(folder / f"{pid}_{k}{ext}")
        time = rng.exponential(40 * np.exp(-6 * (lesion - 0.25)))
        censor = rng.uniform(10, 80)
        rows.append({"case_id": pid, "survival_months": round(min(time, censor), 2), "event": int(time <= censor),
                     "age": round(rng.normal(60, 10), 1)})
    return pd.DataFrame(rows)
