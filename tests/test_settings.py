"""Each setting is written once (config/schema.yaml): the command line, the config and the code
that uses a setting accept and refuse the same values and start from the same default."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest
from jsonschema import Draft7Validator

from lego.cli import COMMANDS
from lego.cli.declare import Option, argparse_kwargs, flag
from lego.config import load_schema
from lego.settings import schema_node, section, setting
from tests.conftest import REPO


def bound_options() -> list[tuple[str, str, Option]]:
    """(command, flag, option) of every option that takes a config setting."""
    out = [(name, flag(opt), o) for name, cls in COMMANDS.items() for opt, o in cls.options().items() if o.setting]
    out += [(name, flag(key), Option(setting=s.path)) for name, cls in COMMANDS.items() for sec in cls.sections.values()
            for key, s in section(sec.path).items()]
    return out


def probes(path: str) -> list:
    """Values around a setting's limits and choices: each on both sides of what the schema allows."""
    s = setting(path)
    item = s.item if s.kind is list and s.item is not None else s
    values: list = []
    for bound in (item.minimum, item.maximum, item.exclusive_minimum, item.exclusive_maximum):
        if bound is not None:
            step = 1 if item.kind is int else 1e-6
            values += [bound - step, bound, bound + step]
    values += list(item.choices or []) + (["not-a-choice"] if item.choices else [])
    if item.pattern:
        values += ["ABCD", "ab1"]
    return values or ["text"]


def cli_accepts(option: Option, value) -> bool:
    kwargs = argparse_kwargs(option)
    try:
        parsed = kwargs.get("type", str)(str(value))
    except (argparse.ArgumentTypeError, ValueError):
        return False
    return parsed in kwargs["choices"] if kwargs.get("choices") else True


def config_accepts(path: str, value) -> bool:
    node = schema_node(path, load_schema())
    item = node["items"] if node.get("type") == "array" or "array" in (node.get("type") or []) else node
    return Draft7Validator(item).is_valid(value)


@pytest.mark.parametrize("command, option_flag, option", bound_options(), ids=lambda v: v if isinstance(v, str) else "")
def test_the_command_line_accepts_and_refuses_what_the_config_does(command, option_flag, option):
    if argparse_kwargs(option).get("action"):  # a bare flag: true or false, nothing to refuse
        return
    for value in probes(option.setting):
        assert cli_accepts(option, value) == config_accepts(option.setting, value), (command, option_flag, value)


@pytest.mark.parametrize("command, option_flag, option", bound_options(), ids=lambda v: v if isinstance(v, str) else "")
def test_an_options_default_is_the_config_default(command, option_flag, option):
    """Unless the option says why it differs (``default=None``: not given, the code decides, e.g.
    torch's own thread count or n_folds from the seeds)."""
    s = setting(option.setting)
    default = argparse_kwargs(option)["default"]
    if option.default is None or not s.has_default:
        return
    expected = bool(s.default) if s.kind is bool else s.default
    assert default == expected, (command, option_flag)


def test_no_setting_default_or_name_is_copied_into_the_code():
    """.ci/single_source.py finds choice lists, defaults, flags and model names written twice, and
    config/README.md words that name no setting (it once said `random` for `random_split`)."""
    proc = subprocess.run([sys.executable, str(REPO / ".ci" / "single_source.py")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_settings_classes_follow_their_schema_section():
    """The tissue and patch settings are dataclasses made from their sections: every key a field,
    typed and defaulted as the schema says."""
    import dataclasses

    from lego.slides.params import PatchParams, TissueParams

    for cls, path in ((TissueParams, "tissue"), (PatchParams, "patches")):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        assert list(fields) == list(section(path))
        assert all(getattr(cls(), k) == s.default for k, s in section(path).items())


def test_the_code_refuses_what_the_schema_refuses():
    """BlockConfig, TrainConfig and EvalOptions check their values against the same ranges."""
    from lego.errors import ConfigError
    from lego.evaluation.scoring import EvalOptions
    from lego.models.block import BlockConfig
    from lego.train import TrainConfig

    with pytest.raises(ValueError, match=r"encoder_width=9000 is outside \[8, 4096\]"):
        BlockConfig(in_dim=3, n_outputs=4, encoder_width=9000)
    with pytest.raises(ValueError, match=r"dropout=1 is outside \[0, 1\)"):
        BlockConfig(in_dim=3, n_outputs=4, dropout=1)
    with pytest.raises(ConfigError, match=r"training setting epochs=0 is outside \[1, 10000\]"):
        TrainConfig(epochs=0)
    with pytest.raises(ConfigError, match=r"evaluation setting n_boot=5 is outside \[10, inf\)"):
        EvalOptions(n_boot=5)
    assert TrainConfig().epochs == setting("model.train.epochs").default


SCHEMA_KEYWORDS = {"$schema", "description", "type", "additionalProperties", "required", "properties", "default", "enum",
                   "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "items", "minItems", "maxItems",
                   "uniqueItems", "pattern", "propertyNames", "minProperties", "if", "then", "else", "allOf", "oneOf",
                   "anyOf", "$ref", "definitions", "const"}


def test_the_schema_uses_only_json_schema_keywords():
    """A comma in an unquoted YAML description once split it into a stray key (the help lost its
    unit): every key of a schema node is a JSON-schema keyword, or a setting's name."""
    from lego.settings import raw_schema

    stray = []

    def walk(node, path: str, names: bool = False) -> None:
        if isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{path}[{i}]")
        elif isinstance(node, dict):
            for key, value in node.items():
                if not names and key not in SCHEMA_KEYWORDS:
                    stray.append(f"{path}/{key}")
                walk(value, f"{path}/{key}", names=not names and key in ("properties", "definitions"))

    walk(raw_schema(), "")
    assert stray == []


def test_the_settings_reference_is_the_schema_written_out():
    """docs/settings.md is generated (`lego settings > docs/settings.md`): it lists every setting of
    the completed schema, so the docs link to it instead of quoting a default a second time."""
    from lego.reference import settings_markdown

    assert (REPO / "docs" / "settings.md").read_text() == settings_markdown() + "\n", \
        "docs/settings.md is stale: run `lego settings > docs/settings.md`"
