"""Small helpers the rules use (kept out of the .smk files so they are testable)."""

from __future__ import annotations

import functools
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import pandas as pd


def cli_args(options: dict[str, Any], skip: tuple[str, ...] = ()) -> str:
    """Config section -> ``lego`` CLI flags: ``{seg_downsample: 16}`` -> ``--seg-downsample 16``.

    Config keys and CLI flags share names, so a rule passes its whole section without listing
    keys; ``None`` is left out, booleans become bare flags, lists become repeated values. Keys in
    sorted order: the string is a rerun trigger (``params:``), and the same settings in another
    key order, or a default written out, must give the same string.
    """
    parts: list[str] = []
    for key, value in sorted(options.items()):
        if key in skip or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            parts.append(flag)
        elif isinstance(value, (list, tuple)):
            parts.append(flag + " " + " ".join(shlex.quote(str(v)) for v in value))
        else:
            parts.append(f"{flag} {shlex.quote(str(value))}")
    return " ".join(parts)


@functools.lru_cache(maxsize=8)
def _read(path: str, mtime: float) -> pd.DataFrame:
    return pd.read_parquet(path)


def slide_table(path: str) -> pd.DataFrame:
    """The slide index, cached per file version (input functions call this once per job)."""
    return _read(str(path), os.path.getmtime(path))


def failed_job_messages(snakemake_log: str, tail: int = 3) -> list[str]:
    """For each "Error in rule" of a Snakemake log, the rule and the last lines of its job logs.

    Why: Snakemake prints only "check log file(s)"; the one-line, actionable message every
    ``lego`` command writes sits in the job's log. ``lego ... error:`` lines are shown alone.
    """
    lines = Path(snakemake_log).read_text(errors="replace").splitlines()
    started = run_start(snakemake_log)
    out: list[str] = []
    rule = None
    for line in lines:
        if line.startswith("Error in rule "):
            rule = line[len("Error in rule "):].rstrip(":")
        elif rule and line.strip().startswith("log: "):
            paths = line.strip()[len("log: "):].split(" (check log")[0]
            for path in (p.strip() for p in paths.split(",")):
                if os.path.exists(path) and started is not None and os.path.getmtime(path) < started:
                    out.append(f"rule {rule} failed before its job wrote a log ({path} is from an earlier run): the job "
                               f"never started -- a failed submission (sbatch, sacct) or scheduler error; its reason is "
                               f"in the Snakemake log {snakemake_log}")
                    continue
                text = Path(path).read_text(errors="replace").splitlines() if os.path.exists(path) else []
                errors = [t for t in text if t.startswith("lego ") and ": error: " in t]
                shown = errors[-1:] or [t for t in text if t.strip()][-tail:] or ["(empty log)"]
                out.append(f"rule {rule} failed ({path}):\n  " + "\n  ".join(shown))
            rule = None
    return out


def run_start(snakemake_log: str) -> float | None:
    """When the run of a Snakemake log began (its name is the start time, local clock), or None."""
    from datetime import datetime

    try:
        return datetime.strptime(Path(snakemake_log).name[:24], "%Y-%m-%dT%H%M%S.%f").timestamp()
    except ValueError:
        return None


def report_failed_jobs(snakemake_logs) -> None:
    """``onerror``: print what each failed job's log says (see :func:`failed_job_messages`)."""
    for path in [snakemake_logs] if isinstance(snakemake_logs, str) else list(snakemake_logs or []):
        if os.path.exists(path):
            for message in failed_job_messages(path):
                print(message, file=sys.stderr)


_WARNED: set[str] = set()


def warn_unmatched(path: str) -> None:
    """Print, once per run, how many slides were left out by indexing (the QC table's count,
    an example and its reason): a log file alone is where nobody looks."""
    if path in _WARNED or not os.path.exists(path):
        return
    _WARNED.add(path)
    table = pd.read_csv(path, sep="\t")
    if len(table):
        hints = table["hint"].dropna() if "hint" in table else []
        print(f"WARNING: {len(table)} slide(s) left out at indexing ({path}), e.g. {table['slide_id'].iloc[0]}: "
              f"{table['reason'].iloc[0]}" + (f"; {hints.iloc[0]}" if len(hints) else ""), file=sys.stderr)


def put_python_bin_on_path() -> None:
    """Let jobs find the ``lego`` installed beside the Python running Snakemake.

    This makes ``.venv/bin/snakemake --cores 2`` work without activating the environment.
    """
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"


def print_summary(path: str) -> None:
    """Print the headline metric per model and the paired comparisons at the end of a run."""
    if not os.path.exists(path):
        return
    table = pd.read_table(path)
    headline = table[table["metric"] == table["metric"].iloc[0]].drop(columns=["missing"], errors="ignore")
    fmt = lambda v: f"{v:.0f}" if float(v).is_integer() and abs(v) >= 1 else f"{v:.3f}"  # noqa: E731  (counts stay counts)
    print(f"\nSummary ({path}; every metric there, per fold in folds.tsv):")
    print(headline.to_string(index=False, float_format=fmt))
    comparisons = Path(path).with_name("comparisons.tsv")
    if comparisons.exists():
        print(f"\nPaired comparisons on shared test patients ({comparisons}):")
        print(pd.read_table(comparisons).to_string(index=False, float_format=fmt))


_SCHEDULER_MODULE = "snakemake.scheduling.job_scheduler"  # where the re-evaluation timers are armed


def cancel_rescheduling_timers() -> None:
    """Cancel the scheduler's pending re-evaluation timers when a run ends (``onsuccess``/``onerror``,
    and at interpreter exit: see :func:`cancel_rescheduling_timers_at_exit`).

    Snakemake's scheduler arms a ``threading.Timer`` of the rate limiter's timespan on each round
    that has jobs ready; the timers are not daemon threads, so the interpreter waits for the last
    of them before it exits. The workflow profile sets a long timespan (see
    ``profiles/default/config.yaml``): without this, a finished run would sit idle for up to that
    long. Only timers armed by Snakemake's job scheduler are cancelled."""
    import threading

    for thread in threading.enumerate():
        function = getattr(thread, "function", None)
        if isinstance(thread, threading.Timer) and getattr(function, "__module__", "") == _SCHEDULER_MODULE:
            thread.cancel()


def cancel_rescheduling_timers_at_exit() -> None:
    """Also cancel them on the exit paths that run neither ``onsuccess`` nor ``onerror``: an error
    escaping Snakemake's scheduler (e.g. an input function raising after the slide-index
    checkpoint) or ``--no-hooks``. ``atexit`` is too late (the interpreter joins non-daemon threads
    before it runs atexit handlers); ``threading._register_atexit`` runs before that join. It is
    private, but what ``concurrent.futures`` itself relies on; where it is missing, the end hooks
    still cover every run that reaches them."""
    import threading

    register = getattr(threading, "_register_atexit", None)
    if register is not None:
        register(cancel_rescheduling_timers)


def reprint_summary_when_cached(workflow, path: str) -> None:
    """Print the summary at exit when a run found nothing to do (Snakemake calls ``onsuccess``
    only after running jobs, so a finished run's rerun printed nothing).

    Only when Snakemake itself logged "Nothing to be done" in a real (not dry) run of the main
    process (it returns right after, so neither ``onsuccess`` nor ``onerror`` runs): a run that
    fails before scheduling, ``--lint``, ``--report`` and cluster job processes stay silent."""
    import atexit
    import logging

    from snakemake.common import NOTHING_TO_BE_DONE_MSG
    from snakemake.logging import logger

    seen: list[bool] = []

    class _Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage() == NOTHING_TO_BE_DONE_MSG:
                seen.append(True)

    logger.addHandler(_Watch())

    def at_exit() -> None:
        if seen and workflow.is_main_process and not workflow.dryrun:
            print_summary(path)

    atexit.register(at_exit)


def _listed(paths: str | list[str] | None) -> list[str]:
    return [] if not paths else [paths] if isinstance(paths, str) else list(paths)


def _produced(path: str, produced: tuple[str, ...]) -> bool:
    """Whether ``path`` lies in a folder the workflow writes (its files follow their producing jobs)."""
    full = Path(path).resolve()
    return any(full == (root := Path(r).resolve()) or root in full.parents for r in produced)


def by_content(paths: str | list[str] | None, produced: tuple[str, ...]) -> list:
    """A rule's input files, those from outside the workflow marked ``ancient``: their modification
    time is no rerun trigger (a ``touch``, or a copy that keeps the content, reruns nothing --
    Snakemake checksums only files under 1 MB), their content digest is (:func:`content_digest`,
    passed as a parameter). Folders and the workflow's own outputs stay as they are."""
    from snakemake.io import ancient

    outside = set(_external_files(paths, produced))
    return [ancient(p) if p in outside else p for p in _listed(paths)]


def content_digest(paths: str | list[str] | None, produced: tuple[str, ...]) -> str:
    """SHA-256 of each input file from outside the workflow, as a rerun trigger (``params:``): new
    content reruns what reads it even under an old modification time (``cp -p``, ``rsync -a``,
    ``tar x``), so no result is ever made from inputs that no longer exist."""
    return " ".join(_file_digest(p) for p in _external_files(paths, produced))


def _external_files(paths: str | list[str] | None, produced: tuple[str, ...]) -> list[str]:
    """The files among ``paths`` that come from outside the workflow (folders and its own outputs excluded)."""
    return [p for p in _listed(paths) if os.path.isfile(p) and not _produced(p, produced)]


def _file_digest(path: str) -> str:
    st = os.stat(path)
    # ctime is set by the kernel on every write and cannot be carried over by a copy, so a cached
    # digest is never reused for new content
    return _digest(os.path.realpath(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


@functools.lru_cache(maxsize=4096)
def _digest(path: str, size: int, mtime_ns: int, ctime_ns: int, inode: int) -> str:
    from lego.io import sha256_file

    return sha256_file(path)
