"""Shared fixtures: a small demo cohort made once per session, the real data in ../shared, and a labels
table and a trained block for the input-refusal tests."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("LEGO_SHARED", REPO.parent / "shared"))


def shared_path(*parts: str) -> Path:
    """A file under ../shared, or skip the test with the reason when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not available (set LEGO_SHARED to the shared data directory)")
    return path


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    """A 20-patient demo cohort (slides, MCAT omics, clinical), generated once."""
    from lego.demo.cohort import make_demo_cohort

    out = tmp_path_factory.mktemp("demo")
    make_demo_cohort(out, n_patients=20, seed=3)
    return out


@pytest.fixture(scope="session")
def demo_slides(demo_dir) -> list[Path]:
    return sorted((demo_dir / "slides").glob("*.svs"))


@pytest.fixture
def fixtures_dir() -> Path:
    return shared_path("data", "openslide-fixtures")


@pytest.fixture
def labels(tmp_path):
    """A 30-patient survival labels table (parquet), for the commands that only need labels."""
    rng = np.random.default_rng(0)
    ids = [f"P{i:03d}" for i in range(30)]
    path = tmp_path / "labels.parquet"
    pd.DataFrame({"patient_id": ids, "time": rng.uniform(1, 100, 30), "event": [i % 2 for i in range(30)]}).to_parquet(path)
    return path


@pytest.fixture
def block(tmp_path):
    """The small synthetic cohort's paths, with a zeta block trained on fold 0 in tmp_path/blk."""
    from lego.steps.block_training import train_block
    from tests.helpers import SMALL, cohort

    p = cohort(tmp_path)
    train_block("zeta", "tabular", str(p["zeta"]), labels=str(p["labels"]), folds=str(p["folds"]), fold=0, task="survival", spec=SMALL,
                out_dir=str(tmp_path / "blk"), device="cpu")
    return p


from tests.workflow_runs import demo_run  # noqa: E402,F401  (session fixture: one small finished workflow run)
