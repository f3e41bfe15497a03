"""The test suite on this machine: wall time and the counts pytest reports.

Run by hand:  .venv/bin/python bench/bench_tests.py [pytest arguments]
Writes bench/results/test_suite.json (the README's "under 10 minutes" is checked against it).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def counts(summary: str) -> dict[str, int]:
    """``498 passed, 12 skipped in 7:32`` -> {"passed": 498, "skipped": 12}."""
    return {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", summary)}


def main() -> None:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *sys.argv[1:]]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - t0
    last = (proc.stdout.strip().splitlines() or [""])[-1]
    result = {"command": " ".join(["python", *cmd[1:]]), "exit_code": proc.returncode, "wall_s": round(wall, 1),
              "counts": counts(last), "summary": last}
    write_result("test_suite", result)
    print("\n".join(proc.stdout.splitlines()[-60:]))  # failures, --durations and the summary


if __name__ == "__main__":
    main()
