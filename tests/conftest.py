"""Shared fixtures: a small demo cohort made once per session, and the real data in ../shared."""

from __future__ import annotations

import os
from pathlib import Path

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


from tests.workflow_runs import demo_run  # noqa: E402,F401  (session fixture: one small finished workflow run)
