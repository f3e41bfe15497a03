"""Running the Snakemake workflow from tests: a small demo run shared by the workflow test modules."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent

BIN = Path(sys.executable).parent


def snakemake(workdir: Path, *args: str, check: bool = True, timeout: int = 900,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env or {})}
    cmd = [str(BIN / "snakemake"), "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(workdir / "config.yaml"), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=workdir)  # plugins write .snakemake/ to the cwd
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def write_config(workdir: Path, **overrides) -> dict:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["demo"]["n_patients"] = 30
    config["folds"]["n_folds"] = 2
    config["model"] = {"train": {"epochs": 3}, "block": {"latent_rows": 4, "latent_dim": 16, "encoder_width": 32}}
    for key, value in overrides.items():
        config[key] = value
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    return config


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("demo_run")
    write_config(workdir)
    snakemake(workdir, "--cores", "2")
    return workdir


def dry_run_jobs(workdir: Path, *args: str) -> Counter:
    """Rule -> job count of what ``snakemake -n`` would run (from its "Job stats" table)."""
    proc = snakemake(workdir, "-n", *args)
    text = proc.stdout + proc.stderr
    if "Nothing to be done" in text:
        return Counter()
    table = text.split("Job stats:", 1)[1].splitlines()[3:]
    jobs = Counter()
    for line in table:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        if parts[0] != "total":
            jobs[parts[0]] = int(parts[1])
    return jobs
