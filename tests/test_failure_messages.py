"""What a failed run prints names the real reason (issue 27, class 17)."""

from __future__ import annotations

import os
import sys
import time
from datetime import datetime

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "workflow"))
from helpers import failed_job_messages  # noqa: E402


def _snakemake_log(folder, job_log) -> str:
    name = datetime.now().strftime("%Y-%m-%dT%H%M%S.%f") + ".snakemake.log"
    path = folder / name
    path.write_text(f"Error in rule train_block:\n    jobid: 3\n    log: {job_log} (check log file(s) for error details)\n")
    return str(path)


def test_a_job_that_never_started_does_not_show_an_earlier_runs_log_as_its_reason(tmp_path):
    job_log = tmp_path / "train_block.log"
    job_log.write_text("lego train-block: wrote results/demo/blocks/rna/fold0\n")  # the previous, successful run
    old = time.time() - 3600
    os.utime(job_log, (old, old))
    log = _snakemake_log(tmp_path, job_log)
    [message] = failed_job_messages(log)
    assert "never started" in message and "wrote results" not in message and log in message


def test_a_job_that_failed_in_this_run_shows_its_own_error(tmp_path):
    log = _snakemake_log(tmp_path, tmp_path / "train_block.log")
    time.sleep(0.01)
    (tmp_path / "train_block.log").write_text("lego train-block: error: rna.csv: line 2 has more fields\n")
    [message] = failed_job_messages(log)
    assert "line 2 has more fields" in message
