"""Snakemake's own scheduling under the workflow profile (profiles/default/config.yaml).

Snakemake's default rate limit (100 jobs per 1 s) re-runs the scheduler once a second for every
job that finished while others waited, so the rounds grow with the run: half a core of two on the
demo. The profile's longer timespan leaves one round per finished job; the Snakefile cancels the
timers that remain when the run ends, so the process does not wait for them.
"""

from __future__ import annotations

import re
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.workflow_runs import BIN, REPO

N_JOBS = 20


def _toy_workflow(workdir: Path) -> None:
    """Twenty short jobs on one core (so most of them wait), ending with the Snakefile's hook; the
    hook's output counts the scheduler's pending timers before and after it."""
    (workdir / "Snakefile").write_text(textwrap.dedent(f"""
        import sys, threading
        sys.path.insert(0, {str(REPO / "workflow")!r})
        from helpers import cancel_rescheduling_timers

        rule all:
            input: expand("out/{{i}}.txt", i=range({N_JOBS}))

        rule one:
            output: "out/{{i}}.txt"
            shell: "sleep 0.2; touch {{output}}"

        def pending():
            return [t for t in threading.enumerate() if isinstance(t, threading.Timer) and t.is_alive()]

        onsuccess:
            before = len(pending())
            cancel_rescheduling_timers()
            for timer in pending():
                timer.join(10)
            print(f"PENDING_TIMERS {{before}} {{len(pending())}}")
    """))


@pytest.fixture(scope="module")
def toy_log(tmp_path_factory) -> str:
    workdir = tmp_path_factory.mktemp("toy")
    _toy_workflow(workdir)
    cmd = [str(BIN / "snakemake"), "--cores", "1", "--verbose", "--workflow-profile", str(REPO / "profiles" / "default")]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def test_the_scheduler_runs_one_round_per_finished_job_under_the_workflow_profile(toy_log):
    rounds = toy_log.count("Resources before job selection")  # one line per round that had jobs waiting
    # Snakemake's default gives about 55 rounds here, and more the longer a run lasts.
    assert N_JOBS <= rounds <= N_JOBS + 3, f"{rounds} scheduling rounds for {N_JOBS} jobs"


def test_the_schedulers_timers_are_cancelled_when_a_run_ends(toy_log):
    before, after = (int(n) for n in toy_log.split("PENDING_TIMERS", 1)[1].split()[:2])
    assert before > 0, "the run left no scheduler timer pending: the test checks nothing"
    assert after == 0


def test_the_workflows_end_hooks_cancel_the_schedulers_timers():
    """The Snakefile's ``onsuccess`` and ``onerror`` blocks (top-level blocks, read as text: a
    Snakefile is not Python) both call the helper the toy run above tests."""
    blocks = re.split(r"\n(?=\S)", (REPO / "Snakefile").read_text())
    hooks = {b.split(":", 1)[0]: b for b in blocks if b.startswith(("onsuccess:", "onerror:"))}
    assert set(hooks) == {"onsuccess", "onerror"}
    assert all("cancel_rescheduling_timers()" in body for body in hooks.values())
