"""Snakemake's own scheduling under the workflow profile (profiles/default/config.yaml).

Snakemake's default rate limit (100 jobs per 1 s) re-runs the scheduler once a second for every
job that finished while others waited, so the rounds grow with the run: half a core of two on the
demo. Under the profile's 30 s they grow 30 times more slowly; the Snakefile cancels the timers
that remain when the run ends (in its end hooks, and at interpreter exit for the paths that run
neither), so the process does not wait for them.
"""

from __future__ import annotations

import re
import subprocess
import textwrap
import time
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
def toy_log(tmp_path_factory) -> tuple[str, float]:
    workdir = tmp_path_factory.mktemp("toy")
    _toy_workflow(workdir)
    start = time.monotonic()
    proc = _snakemake(workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr, time.monotonic() - start


def _snakemake(workdir: Path) -> subprocess.CompletedProcess:
    cmd = [str(BIN / "snakemake"), "--cores", "1", "--verbose", "--workflow-profile", str(REPO / "profiles" / "default")]
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=300)


def test_the_schedulers_rounds_grow_thirty_times_more_slowly_under_the_workflow_profile(toy_log):
    log, seconds = toy_log
    rounds = log.count("Resources before job selection")  # one line per round that had jobs ready
    # Each finished job starts one round and, while jobs wait, one more per timespan: N * (1 + t / 30)
    # under the profile; Snakemake's default (1 s) gave 57 rounds here in 9 s.
    assert N_JOBS <= rounds <= N_JOBS * (1 + seconds / 30) + 3, f"{rounds} scheduling rounds for {N_JOBS} jobs in {seconds:.0f} s"


def test_the_schedulers_timers_are_cancelled_when_a_run_ends(toy_log):
    log, _ = toy_log
    before, after = (int(n) for n in log.split("PENDING_TIMERS", 1)[1].split()[:2])
    assert before > 0, "the run left no scheduler timer pending: the test checks nothing"
    assert after == 0


def test_a_run_stopped_by_an_error_outside_the_hooks_leaves_no_timer_to_wait_for(tmp_path):
    """An input function raising after a checkpoint escapes Snakemake's scheduler: neither
    ``onsuccess`` nor ``onerror`` runs. Probes registered around the helper's exit callback count
    the scheduler's pending timers just before it runs and just after."""
    (tmp_path / "Snakefile").write_text(textwrap.dedent(f"""
        import sys, threading
        sys.path.insert(0, {str(REPO / "workflow")!r})
        from helpers import cancel_rescheduling_timers_at_exit

        def pending():
            return sum(isinstance(t, threading.Timer) and not t.finished.is_set() for t in threading.enumerate())

        # threading runs these callbacks in reverse order of registration
        threading._register_atexit(lambda: print("PENDING_AFTER", pending(), flush=True))
        cancel_rescheduling_timers_at_exit()
        threading._register_atexit(lambda: print("PENDING_BEFORE", pending(), flush=True))

        def after_index(wildcards):
            checkpoints.index.get()
            raise ValueError("bad slide table")

        rule all:
            input: after_index, expand("out/{{i}}.txt", i=range(3))

        checkpoint index:
            output: "index.txt"
            shell: "sleep 0.5; touch {{output}}"

        rule one:
            output: "out/{{i}}.txt"
            shell: "sleep 0.5; touch {{output}}"
    """))
    proc = _snakemake(tmp_path)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "bad slide table" in log, log[-3000:]
    before = int(log.split("PENDING_BEFORE", 1)[1].split()[0])
    after = int(log.split("PENDING_AFTER", 1)[1].split()[0])
    assert before > 0, "the run left no scheduler timer pending: the test checks nothing"
    assert after == 0


def test_the_workflows_end_hooks_cancel_the_schedulers_timers():
    """The Snakefile's ``onsuccess`` and ``onerror`` blocks (top-level blocks, read as text: a
    Snakefile is not Python) both call the helper the toy run above tests, and the rules register
    it for interpreter exit."""
    blocks = re.split(r"\n(?=\S)", (REPO / "Snakefile").read_text())
    hooks = {b.split(":", 1)[0]: b for b in blocks if b.startswith(("onsuccess:", "onerror:"))}
    assert set(hooks) == {"onsuccess", "onerror"}
    assert all("cancel_rescheduling_timers()" in body for body in hooks.values())
    assert re.search(r"^cancel_rescheduling_timers_at_exit\(\)$", (REPO / "rules" / "common.smk").read_text(), re.M)
