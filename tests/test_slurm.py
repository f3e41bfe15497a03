"""The demo on a real one-node SLURM cluster through `snakemake --profile slurm`.

Opt-in (``LEGO_TEST_SLURM=1``; `.ci/run` sets it when it runs as root): it installs Debian's
slurm-wlm and munge, starts slurmctld/slurmd with one fake GPU (tests/slurm/cluster.sh), runs the
demo under SLURM, and stops the daemons by their PID files. Every step has a time limit.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pandas as pd
import pytest

from tests.workflow_runs import REPO, snakemake, write_config

CLUSTER = REPO / "tests" / "slurm" / "cluster.sh"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("LEGO_TEST_SLURM") != "1",
                       reason="set LEGO_TEST_SLURM=1 (as root on Debian/Ubuntu) to run the demo on a real one-node SLURM cluster"),
]


@pytest.fixture(scope="module")
def cluster():
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("starting a SLURM cluster needs root and apt-get")
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        pytest.skip("snakemake-executor-plugin-slurm is not installed (pip install -e '.[slurm]')")
    subprocess.run([str(CLUSTER), "start"], check=True, timeout=900)
    try:
        yield
    finally:
        subprocess.run([str(CLUSTER), "stop"], timeout=120)


def test_demo_under_slurm_equals_a_local_run(cluster, demo_run, tmp_path):
    work = tmp_path / "slurm_run"
    write_config(work)  # the same config and seed as the local demo_run
    # This cluster has no accounting daemon: poll with squeue (docs/cluster.md's site variation).
    proc = snakemake(work, "--profile", str(REPO / "slurm"), "--slurm-status-command", "squeue", timeout=2400)
    output = proc.stdout + proc.stderr

    submitted = re.findall(r"submitted with SLURM jobid (\d+) \(log: (\S+)\)", output)
    assert len(submitted) >= 20, output[-3000:]
    # The plugin deletes successful jobs' SLURM logs at the end; their paths name rule or group.
    assert all("/.snakemake/slurm_logs/" in log for _, log in submitted)
    assert any("/group_slide_" in log for _, log in submitted), "per-slide jobs ran as group jobs"

    # GPU rules were submitted with --gpus: SLURM set CUDA_VISIBLE_DEVICES in those jobs, and the
    # code, finding no usable CUDA device, said so and used the CPU.
    out = work / "results" / "demo"
    for rule in ("train_block", "fuse"):
        logs = list((out / "logs" / rule).rglob("*.log"))
        assert logs and all("was allocated to this job" in p.read_text() for p in logs), rule
    assert "was allocated" not in (out / "logs" / "merge" / "fold0.log").read_text(), "CPU rules get no GPU"

    local = demo_run / "results" / "demo"
    pd.testing.assert_frame_equal(pd.read_table(out / "summary" / "metrics.tsv"), pd.read_table(local / "summary" / "metrics.tsv"))
    for model in ("block-rna", "merge", "fuse"):
        a = pd.read_parquet(out / "eval" / model / "fold1" / "predictions.parquet")
        b = pd.read_parquet(local / "eval" / model / "fold1" / "predictions.parquet")
        pd.testing.assert_frame_equal(a, b)
