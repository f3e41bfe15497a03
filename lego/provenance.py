"""What produced a run's results: resolved config, software, code version, input digests, job costs.

Written next to the results at the end of every run, so a table in a paper can be traced back to
the exact inputs and code. Input files are identified by size and SHA-256; files above
``full_hash_limit`` bytes (whole-slide images of several GB) get a *partial* digest -- SHA-256 of
their size, first and last MiB -- which catches replaced or truncated files without reading
terabytes; the ``digest`` column says which kind each row has.
"""

from __future__ import annotations

import hashlib
import logging
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import pandas as pd

from lego.io import write_json, write_tsv

log = logging.getLogger(__name__)

PACKAGES = ("mm-lego-pipeline", "snakemake", "torch", "numpy", "pandas", "pyarrow", "h5py", "openslide-python",
            "openslide-bin", "scikit-survival", "scikit-learn", "safetensors", "opencv-python-headless")
CHUNK = 1 << 20


def file_digest(path: Path, full_hash_limit: int = 256 << 20) -> tuple[str, str]:
    """(kind, hex digest): ``sha256`` of the whole file, or ``sha256-partial`` for big files."""
    size = path.stat().st_size
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if size <= full_hash_limit:
            for block in iter(lambda: f.read(CHUNK), b""):
                h.update(block)
            return "sha256", h.hexdigest()
        h.update(str(size).encode())
        h.update(f.read(CHUNK))
        f.seek(-CHUNK, 2)
        h.update(f.read(CHUNK))
    return "sha256-partial", h.hexdigest()


def input_digests(paths: list[str | Path], full_hash_limit: int = 256 << 20) -> pd.DataFrame:
    rows = []
    for p in sorted({str(p) for p in paths}):
        path = Path(p)
        if path.is_dir():
            files = sorted(f for f in path.rglob("*") if f.is_file())
        else:
            files = [path]
        for f in files:
            kind, digest = file_digest(f, full_hash_limit) if f.exists() else ("missing", "")
            rows.append({"path": str(f), "bytes": f.stat().st_size if f.exists() else None, "digest": kind, "sha256": digest})
    return pd.DataFrame(rows, columns=["path", "bytes", "digest", "sha256"])


def package_versions() -> dict[str, str | None]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_state(repo: Path) -> dict:
    """Commit and whether the working tree differs from it; nulls outside a git checkout."""
    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def job_costs(benchmarks_dir: Path) -> pd.DataFrame:
    """One row per job from Snakemake ``benchmark:`` files: rule, job, wall seconds, peak memory."""
    rows = []
    for f in sorted(benchmarks_dir.rglob("*.tsv")) if benchmarks_dir.exists() else []:
        parts = f.relative_to(benchmarks_dir).with_suffix("").parts  # <rule>/<job...>.tsv, or <rule>.tsv
        row = {"rule": parts[0], "job": "/".join(parts[1:]) or parts[0], "note": ""}
        try:  # one unreadable benchmark file is noted in jobs.tsv, never the end of the provenance
            last = pd.read_table(f).iloc[-1]
            row.update(wall_s=float(last["s"]), max_rss_mb=float(last.get("max_rss", float("nan"))))
        except (OSError, ValueError, KeyError, IndexError, pd.errors.ParserError) as exc:
            # EmptyDataError is a ValueError; IndexError: a header without a row
            row.update(wall_s=float("nan"), max_rss_mb=float("nan"),
                       note=f"unreadable benchmark file: {type(exc).__name__}: {' '.join(str(exc).split())[:120]}")
            log.warning("%s: %s", f, row["note"])
        rows.append(row)
    return pd.DataFrame(rows, columns=["rule", "job", "wall_s", "max_rss_mb", "note"])


def write_provenance(config: dict, inputs: list[str], benchmarks_dir: str, code_dir: str, out_dir: str) -> dict:
    """Write ``run.json``, ``inputs.tsv`` and ``jobs.tsv`` under ``out_dir``; returns run.json's content."""
    out = Path(out_dir)
    jobs = job_costs(Path(benchmarks_dir))
    run = {
        "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": config,
        "git": git_state(Path(code_dir)),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        "jobs": {"n": len(jobs), "wall_s_total": round(float(jobs["wall_s"].sum()), 1),
                 "max_rss_mb_peak": round(float(jobs["max_rss_mb"].max()), 1) if len(jobs) else None},
    }
    write_tsv(input_digests(inputs), out / "inputs.tsv")
    write_tsv(jobs, out / "jobs.tsv")
    write_json(run, out / "run.json")
    return run
