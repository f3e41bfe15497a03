"""A small synthetic longitudinal cohort for the time-series tests, in counting-process format
(the format of ``../shared/data/longitudinal``): one row per patient and interval, a baseline
category fixed per patient, and a marker measured at each visit whose trend over the first
visits sets the hazard afterwards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

VISITS = (0.0, 2.0, 6.0, 12.0, 18.0)  # months


def series_cohort(n: int = 120, seed: int = 0) -> pd.DataFrame:
    """Columns ``pid, event, time, time2, num_marker, num_other, fac_arm``; some visits missed."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        arm = rng.choice(["A", "B"])
        level, trend = rng.normal(10, 2), rng.normal(0, 0.5)
        hazard = 0.03 * np.exp(-1.2 * trend + 0.3 * (arm == "B"))
        death, censor = rng.exponential(1 / hazard), rng.uniform(3, 30)
        end, event = min(death, censor), int(death <= censor)
        visits = [t for t in VISITS if t < end and (t == 0 or rng.random() > 0.2)]
        for k, t in enumerate(visits):
            stop = visits[k + 1] if k + 1 < len(visits) else end
            last = k + 1 == len(visits)
            other = rng.normal(0, 1) if rng.random() > 0.3 else np.nan
            rows.append({"pid": f"P{i:03d}", "event": event if last else 0, "time": t, "time2": round(stop, 2),
                         "num_marker": level + trend * t + rng.normal(0, 0.3), "num_other": other, "fac_arm": arm})
    return pd.DataFrame(rows)


def write_series_cohort(path: Path, n: int = 120, seed: int = 0) -> Path:
    series_cohort(n, seed).to_csv(path, index=False)
    return path
