import re
import subprocess
import sys

import pytest
import tomllib
import yaml

from lego.cli import COMMANDS, build_parser
from lego.cli.declare import argparse_kwargs, flag
from lego.modality_kinds import kinds
from tests.conftest import REPO

kinds()  # the modality kinds declare their own preparation commands (prepare-timeseries, prepare-images)

# Extras a rule environment needs: the slides env runs make_demo and may embed with efficientnet_lite0.
RULE_EXTRAS = ("demo", "efficientnet")


def pyproject_deps() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return set(project["dependencies"]).union(*(project["optional-dependencies"][e] for e in RULE_EXTRAS))


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


def test_the_slurm_executor_comes_with_the_pipeline():
    """Issue 27 class 19: `--profile slurm` without the plugin ends a page of usage with "invalid
    choice: 'slurm'" before our code runs, so the plugin is a core dependency, not an extra."""
    import importlib.util

    core = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.startswith("snakemake-executor-plugin-slurm") for d in core)
    assert importlib.util.find_spec("snakemake_executor_plugin_slurm") is not None


def test_every_rule_uses_an_existing_env():
    for smk in (REPO / "rules").glob("*.smk"):
        for env in re.findall(r'conda:\s*\n\s*"([^"]+)"', smk.read_text()):
            assert (REPO / "rules" / env).resolve().is_file(), f"{smk.name}: {env}"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_subcommand_explains_itself(command):
    proc = subprocess.run([sys.executable, "-m", "lego.cli", command, "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "usage: lego" in proc.stdout
    assert len(proc.stdout.splitlines()) > 3


def test_every_option_has_help():
    from lego.cli.declare import Option
    from lego.settings import section

    missing = [(name, opt) for name, cls in COMMANDS.items() for opt, o in cls.options().items()
               if not argparse_kwargs(o)["help"].split("(default")[0].strip()]
    missing += [(name, key) for name, cls in COMMANDS.items() for sec in cls.sections.values()
                for key, s in section(sec.path).items() if not argparse_kwargs(Option(setting=s.path))["help"]]
    assert missing == []


def test_cli_reports_bad_input_without_traceback(tmp_path):
    bad = tmp_path / "labels.csv"
    bad.write_text("case_id,survival_months,censorship\nP1,-3,0\n")
    proc = subprocess.run([sys.executable, "-m", "lego.cli", "ingest-labels", "--table", str(bad), "--out", str(tmp_path / "o.parquet")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "missing, negative or infinite for patient P1" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o.parquet").exists()


# Import name -> distribution, for the packages some environments leave out.
OPTIONAL_IMPORTS = {"cv2": "opencv-python-headless", "openslide": "openslide-python", "skimage": "scikit-image",
                    "tifffile": "tifffile", "imagecodecs": "imagecodecs", "torch": "torch", "sksurv": "scikit-survival",
                    "matplotlib": "matplotlib", "h5py": "h5py", "safetensors": "safetensors", "timm": "timm",
                    "torchvision": "torchvision"}
BLOCKER = """
import contextlib, io, json, sys, importlib.abc
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split('.')[0] in {blocked!r}:
            raise ImportError('not in this environment: ' + name)
sys.meta_path.insert(0, Blocker())
from lego.cli import main
results = {{}}
for argv in {runs!r}:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except BaseException as exc:  # an import error or a traceback would land here
            code = repr(exc)
    results[argv[0]] = [code, err.getvalue()[-1500:]]
print(json.dumps(results))
"""


def rule_commands() -> list[tuple[str, str]]:
    """(environment, lego subcommand) of every rule that runs one."""
    out = set()
    for smk in (REPO / "rules").glob("*.smk"):
        for block in re.split(r"\n(?=(?:checkpoint|rule) )", smk.read_text()):
            env = re.search(r'conda:\s*\n\s*"\.\./envs/([a-z]+)\.yaml"', block)
            for cmd in re.findall(r"\blego ([a-z][a-z-]+)", block):
                if env:
                    out.add((env.group(1), cmd))
    return sorted(out)


def dummy_args(command: str, tmp_path) -> list[str]:
    """Every required option of ``command`` with a value that passes argparse (files that do not exist)."""
    argv = [command]
    for name, option in COMMANDS[command].options().items():
        if not option.required:
            continue
        kwargs = argparse_kwargs(option)
        value = kwargs["choices"][0] if kwargs.get("choices") else (
            "0" if getattr(kwargs.get("type"), "__name__", "") == "int" else f"m={tmp_path}/{command}/missing")
        value = "{}" if option.json else value  # inline JSON, checked when parsed
        argv += [flag(name), str(value)]
    return argv


@pytest.mark.parametrize("env", sorted({env for env, _ in rule_commands()}))
def test_each_rule_command_imports_with_only_its_environments_packages(env, tmp_path):
    """Under --software-deployment-method conda a rule sees only its env's packages: its command
    must get past its imports (and then fail on the missing inputs with one line, exit 2)."""
    import json

    present = {re.split(r"[<>=!~ \\[]", r)[0].lower() for r in env_requirements(REPO / "envs" / f"{env}.yaml")}
    blocked = sorted(name for name, dist in OPTIONAL_IMPORTS.items() if dist not in present)
    runs = [dummy_args(cmd, tmp_path) for e, cmd in rule_commands() if e == env]
    proc = subprocess.run([sys.executable, "-c", BLOCKER.format(blocked=blocked, runs=runs)], capture_output=True,
                          text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for command, (code, err) in json.loads(proc.stdout.splitlines()[-1]).items():
        assert "not in this environment" not in err and "not in this environment" not in str(code), (env, command, err)
        assert code in (0, 2) and "Traceback" not in err, (env, command, code, err)  # 0: it made something of nothing


def test_version_and_build_requirements():
    import lego

    proc = subprocess.run([sys.executable, "-m", "lego.cli", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == f"lego {lego.__version__}"
    # license = "MIT" (a PEP 639 expression) needs setuptools >= 77 to build (offline --no-build-isolation installs).
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]
    assert "setuptools>=77" in requires


def test_slide_setting_flags_take_the_fields_types_and_defaults():
    """The segment/extract flags are built from lego.slides.params: a float field given as an
    integer default (seg_downsample = 32) still takes 16.5, an integer field refuses 2.5."""
    from lego.slides.params import PatchParams, TissueParams

    parser = build_parser()

    def command(argv):
        args = parser.parse_args(argv)
        return COMMANDS[args.command].from_namespace(args)

    seg = command(["segment", "--slide", "s", "--out-tissue", "t", "--out-png", "p", "--seg-downsample", "16.5",
                   "--min-tissue-area-um2", "2.5e4"]).values["tissue"]
    assert seg.seg_downsample == 16.5 and seg.min_tissue_area_um2 == 25000.0 and seg.method == TissueParams.method
    assert isinstance(seg, TissueParams)
    ext = command(["extract", "--slide", "s", "--tissue", "t", "--out", "o"]).values["patches"]
    assert ext == PatchParams()
    with pytest.raises(SystemExit):
        parser.parse_args(["segment", "--slide", "s", "--out-tissue", "t", "--out-png", "p", "--median-blur", "2.5"])


def test_help_and_version_need_none_of_the_numeric_packages():
    """An offline install is checked with ``lego --help`` and PyYAML alone (.ci/run): the modality
    kinds, which import numpy, pandas and torch, are then named as not listed rather than raised; a
    kind's command word gives one line, not a traceback."""
    import json

    runs = [["--help"], ["--version"], ["segment", "--help"], ["prepare-images", "--help"]]
    blocked = ["numpy", "pandas", "torch"]
    proc = subprocess.run([sys.executable, "-c", BLOCKER.format(blocked=blocked, runs=runs)], capture_output=True,
                          text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout.splitlines()[-1])
    assert results["--help"][0] == "SystemExit(0)" and results["--version"][0] == "SystemExit(0)"
    assert results["segment"][0] == "SystemExit(0)"
    code, err = results["prepare-images"]
    assert code == 2 and "'prepare-images' is no command of this installation" in err and "numpy" in err
    assert "Traceback" not in err


def test_the_many_small_jobs_start_without_the_packages_they_do_not_use(demo_slides, tmp_path):
    """Job start-up is most of a small job's time, and the demo runs ~120 of each per-slide job:
    patch extraction reads its tissue table without pandas, and choosing a block's candidate or a
    fold's MM-Lego variant never loads torch (each import costs 0.4-1.3 s per job). Run with those
    packages blocked, so an import that creeps back fails here."""
    import json

    from lego.cli import main

    slide = str(demo_slides[0])
    tissue = tmp_path / "tissue.parquet"
    assert main(["segment", "--slide", slide, "--out-tissue", str(tissue), "--out-png", str(tmp_path / "t.png")]) == 0
    for i, score in enumerate([0.6, 0.7]):
        c = tmp_path / f"c{i}"
        c.mkdir()
        (c / "model.safetensors").write_bytes(bytes([i]))
        (c / "config.json").write_text('{"modality": "a", "fold": 0, "task": "survival"}')
        (c / "history.json").write_text(json.dumps({"val_score": score, "best_val_loss": 1.0}))
    runs = {"pandas": ["extract", "--slide", slide, "--tissue", str(tissue), "--out", str(tmp_path / "p.h5")],
            "torch": ["select-block", "--candidates", str(tmp_path / "c0"), str(tmp_path / "c1"), "--out-dir",
                      str(tmp_path / "chosen")]}
    for blocked, argv in runs.items():
        proc = subprocess.run([sys.executable, "-c", BLOCKER.format(blocked=[blocked], runs=[argv])],
                              capture_output=True, text=True, cwd=REPO)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert json.loads(proc.stdout.splitlines()[-1])[argv[0]][0] == 0, (blocked, proc.stdout[-2000:])
    assert (tmp_path / "p.h5").is_file() and (tmp_path / "chosen" / "model.safetensors").read_bytes() == bytes([1])
