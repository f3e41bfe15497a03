"""Declaring a command once: a dataclass whose fields are its options, next to the code it runs.

Each option is a field made by :func:`opt`. An option bound to a config setting (``setting=
"patches.patch_px"``) takes its type, range, choices, default and help from the schema
(:mod:`lego.settings`), so the command line accepts and refuses what the config does; an option of
the command line alone states its own. argparse is built from the declarations with its public API
only; help texts show each default.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from lego.settings import Setting, section, setting


class _Unset:
    def __repr__(self) -> str:
        return "<the setting's default>"


UNSET = _Unset()  # an option's default: the setting's (None without one)


@dataclass(frozen=True)
class Option:
    """How one command-line option parses (see :func:`opt`)."""

    help: str = ""
    setting: str | None = None
    required: bool = False
    default: Any = UNSET
    many: bool = False  # a list of values (nargs + when required, * otherwise)
    count: int | None = None  # exactly this many values
    kind: type | None = None  # int, float, str, bool (a bare flag); default: the setting's, else str
    choices: tuple | Callable[[], tuple] | None = None  # a callable: read from a registry when the parser is built
    low: float | None = None  # an inclusive range, for options that are no config setting
    high: float | None = None
    json: bool = False  # inline JSON text, checked when parsed
    output: bool = False  # a path the command writes (checked against its inputs)
    metavar: str | None = None


def opt(help: str = "", **kwargs: Any) -> Any:
    """A command field declaring an option (keywords: :class:`Option`'s)."""
    return dataclasses.field(default=None, metadata={"option": Option(help=help, **kwargs)})


@dataclass(frozen=True)
class Section:
    """Every setting of a config section as flags, gathered into ``cls(**values)`` for the command."""

    path: str
    cls: type


class Command:
    """Base of every command: its ``command_name``, ``summary``, the config ``sections`` it takes as
    flags, the fixed file names it writes into its ``--out-dir`` (``writes``), and :meth:`run`."""

    command_name: ClassVar[str]
    summary: ClassVar[str]
    sections: ClassVar[dict[str, Section]] = {}
    writes: ClassVar[frozenset[str]] = frozenset()

    def run(self) -> None:
        raise NotImplementedError

    @classmethod
    def options(cls) -> dict[str, Option]:
        return {f.name: f.metadata["option"] for f in dataclasses.fields(cls) if "option" in f.metadata}

    @classmethod
    def from_namespace(cls, ns: argparse.Namespace) -> Command:
        command = cls(**{name: getattr(ns, name) for name in cls.options()})
        # The sections' objects, by attribute name (e.g. values["tissue"]: a TissueParams).
        command.values = {attr: sec.cls(**{k: getattr(ns, k) for k in section(sec.path)})
                          for attr, sec in cls.sections.items()}
        return command


COMMANDS: dict[str, type[Command]] = {}


def command(name: str, help: str, *, sections: dict[str, Section] | None = None,
            writes: frozenset[str] = frozenset()) -> Callable[[type], type]:
    """Register a command class (a dataclass) under ``name``."""

    def wrap(cls: type) -> type:
        cls = dataclass(cls)
        cls.command_name, cls.summary, cls.sections, cls.writes = name, help, sections or {}, writes
        if name in COMMANDS:
            raise ValueError(f"command {name!r} is declared twice")
        COMMANDS[name] = cls
        return cls

    return wrap


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_options(parser: argparse.ArgumentParser, cls: type[Command]) -> None:
    """One argparse option per declared field and per setting of the command's sections."""
    for name, option in cls.options().items():
        parser.add_argument(flag(name), **argparse_kwargs(option))
    for sec in cls.sections.values():
        for key, s in section(sec.path).items():
            parser.add_argument(flag(key), **argparse_kwargs(Option(setting=s.path)))


def argparse_kwargs(option: Option) -> dict[str, Any]:
    """The add_argument keywords of a declared option."""
    s = setting(option.setting) if option.setting else None
    bound = option.low if option.low is not None else option.high
    kind = option.kind or (s.kind if s and s.kind is not list else (s.item.kind if s and s.item else None))
    kind = kind or (type(bound) if bound is not None else str)
    default = option.default if option.default is not UNSET else (s.default if s and s.has_default else None)
    help_ = option.help or (s.description if s else "")
    if kind is bool:
        if default:  # the rules turn a config value into flags and leave out False: a true default could not be turned off
            raise ValueError(f"option for {option.setting or help_!r}: a boolean option must default to false")
        return {"action": "store_true", "default": False, "help": help_}
    kwargs: dict[str, Any] = {"type": _parser(option, s, kind), "default": default, "required": option.required,
                              "help": _shown(help_, default)}
    choices = option.choices() if callable(option.choices) else option.choices or (_item(s).choices if s else None)
    if choices:
        kwargs["choices"] = list(choices)
    if option.many or (s is not None and s.kind is list):
        fixed = s.min_items if s is not None and s.min_items is not None and s.min_items == s.max_items else None
        kwargs["nargs"] = option.count or fixed or ("+" if option.required else "*")
    if option.metavar:
        kwargs["metavar"] = option.metavar
    return kwargs


def _item(s: Setting) -> Setting:
    return s.item if s.kind is list and s.item is not None else s


def _shown(help_: str, default: Any) -> str:
    shown = default is not None and default is not False and default != []
    return f"{help_} (default: %(default)s)" if shown else help_


def _parser(option: Option, s: Setting | None, kind: type) -> Callable[[str], Any]:
    """The ``type`` function of an option: number ranges and patterns as the schema states them."""
    if option.json:
        return _json_text
    target = _item(s) if s else None
    if target is None and option.low is None and option.high is None:
        return kind

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a{'n integer' if kind is int else ' number'}") from None
        problem = target.problem(value) if target else None
        if problem is None and not _within(value, option.low, option.high):
            low, high = ("-inf" if option.low is None else option.low), ("inf" if option.high is None else option.high)
            problem = f"is outside [{low}, {high}]"
        if problem:
            raise argparse.ArgumentTypeError(f"{value} {problem}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def _within(value: Any, low: float | None, high: float | None) -> bool:
    return (low is None or value >= low) and (high is None or value <= high)


def _json_text(text: str) -> str:
    """An inline-JSON option, checked when parsed so the error names the option (the text is kept)."""
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        hint = "; give the JSON itself, not a file path" if not text.lstrip().startswith(("{", "[")) else ""
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc.msg} at character {exc.pos}){hint}; check the quoting") from None
    return text


def named_paths(items: list[str] | None) -> dict[str, str]:
    """``NAME=PATH`` arguments as a mapping; a name given twice is refused (the last would silently win)."""
    from lego.errors import LegoError

    out: dict[str, str] = {}
    for item in items or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise LegoError(f"expected NAME=PATH, got {item!r}")
        if name in out:  # the last one would silently win: a block fed another modality's file
            raise LegoError(f"{name!r} is given twice ({out[name]} and {path}); give each name once")
        out[name] = path
    return out


def fold_folders(model_dirs: list[str], out_dirs: list[str]) -> list[tuple[str, str]]:
    """(model folder, output folder) pairs of a command that handles every fold of a model in one
    process (torch loads once); the two lists must pair up one to one, in the same order."""
    from lego.errors import InputError

    if len(model_dirs) != len(out_dirs):
        raise InputError(f"--model-dir gives {len(model_dirs)} folder(s) and --out-dir {len(out_dirs)}; "
                         "give one output folder per model folder, in the same order")
    return list(zip(model_dirs, out_dirs, strict=True))
