import re
import subprocess
import sys
import tomllib

import pytest
import yaml

from lego.cli import build_parser
from tests.conftest import REPO


def pyproject_deps() -> set[str]:
    return set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"])


def env_requirements(path) -> list[str]:
    env = yaml.safe_load(path.read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return list(pip)


def test_conda_envs_name_the_same_packages_as_pyproject():
    deps = pyproject_deps()
    envs = sorted((REPO / "envs").glob("*.yaml"))
    assert {p.stem for p in envs} >= {"slides", "tabular", "workflow"}
    union = set()
    for env in envs:
        reqs = env_requirements(env)
        assert set(reqs) <= deps, f"{env.name} names requirements not in pyproject.toml: {set(reqs) - deps}"
        union |= set(reqs)
    assert union == deps, f"pyproject.toml requirements missing from every env: {deps - union}"


def test_every_rule_uses_an_existing_env():
    for smk in (REPO / "rules").glob("*.smk"):
        for env in re.findall(r'conda:\s*\n\s*"([^"]+)"', smk.read_text()):
            assert (REPO / "rules" / env).resolve().is_file(), f"{smk.name}: {env}"


@pytest.mark.parametrize("command", sorted(build_parser()._subparsers._group_actions[0].choices))
def test_every_subcommand_explains_itself(command):
    proc = subprocess.run([sys.executable, "-m", "lego.cli", command, "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "usage: lego" in proc.stdout
    assert len(proc.stdout.splitlines()) > 3


def test_cli_reports_bad_input_without_traceback(tmp_path):
    bad = tmp_path / "labels.csv"
    bad.write_text("case_id,survival_months,censorship\nP1,-3,0\n")
    proc = subprocess.run([sys.executable, "-m", "lego.cli", "ingest-labels", "--table", str(bad), "--out", str(tmp_path / "o.parquet")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "missing or negative for patient P1" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o.parquet").exists()
