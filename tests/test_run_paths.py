"""Paths that become Snakemake outputs have one spelling, and a path Snakemake cannot take is
refused with the key and the fix (issue 27, classes 2 and 18)."""

from __future__ import annotations

import copy
import os

import pytest
import yaml

from lego.config import validate_config
from lego.errors import ConfigError
from lego.plan import Plan
from tests.conftest import REPO


def demo_config() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


@pytest.mark.parametrize("spelling", ["results", "./results", "results/", "./results//", "{cwd}/results", "{cwd}/./results/"])
def test_every_spelling_of_the_results_folder_gives_the_same_output_paths(spelling, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = demo_config()
    cfg["results_dir"] = spelling.format(cwd=os.getcwd())
    plan = Plan(validate_config(cfg))
    assert plan.out == "results/demo" and plan.demo_dir == "results/demo_input"


def test_a_results_folder_outside_the_working_folder_stays_absolute(tmp_path, monkeypatch):
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    cfg = demo_config()
    cfg["results_dir"] = f"{tmp_path}/elsewhere/"
    assert validate_config(cfg)["results_dir"] == f"{tmp_path}/elsewhere"


@pytest.mark.parametrize("key, value", [
    (("results_dir",), "results/{run}"),
    (("cohort", "labels", "path"), "data/labels_{v2}.csv"),
    (("slides", "dir"), "slides}"),
])
def test_a_brace_in_a_path_names_the_key_and_the_fix(key, value):
    cfg = demo_config()
    holder = cfg
    for k in key[:-1]:
        holder = holder.setdefault(k, {})
    holder[key[-1]] = value
    with pytest.raises(ConfigError) as err:
        validate_config(copy.deepcopy(cfg))
    assert f"config key '{'.'.join(key)}'" in str(err.value) and "wildcard" in str(err.value) and "rename" in str(err.value)


def test_a_brace_in_a_regex_is_not_a_path():
    cfg = demo_config()
    cfg["slides"]["patient_id"] = {"regex": "^(.{12})"}
    validate_config(cfg)


def test_every_configured_path_has_one_spelling(tmp_path, monkeypatch):
    """A table under results_dir spelt './results/...' must be the file make_demo writes as 'results/...'."""
    monkeypatch.chdir(tmp_path)
    cfg = demo_config()
    cfg["results_dir"] = "./results/"
    cfg["cohort"]["labels"]["path"] = f"{tmp_path}/results/./demo_input/clinical.csv"
    cfg = validate_config(cfg)
    assert cfg["cohort"]["labels"]["path"] == "results/demo_input/clinical.csv" and cfg["results_dir"] == "results"


def test_every_file_a_model_kind_reads_is_a_path_key():
    from lego.config import PATH_KEYS
    from lego.models.model_kinds import model_kinds

    files = {f for kind in model_kinds().values() for f in kind.files}
    assert files and files <= PATH_KEYS
