"""Every setting's type, range, default, choices and description, read from the config schema.

This is the schema as written. Names that the registries own (modality kinds, model kinds, block
encoders, baselines) are filled in by :func:`lego.config.load_schema`; read those there.

``config/schema.yaml`` writes each of these facts once. The command line's flags
(:mod:`lego.cli`), the settings dataclasses (tissue, patches), ``BlockConfig``, ``TrainConfig``
and ``EvalOptions`` read them from here instead of keeping copies that drift. Light at import
(PyYAML only): the CLI builds its parser from this module in environments without torch.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# config/schema.yaml, reached through lego/schema.yaml (a link in the repository, the file itself in
# a built wheel): the command line works from an installed package too.
SCHEMA_PATH = Path(__file__).resolve().parent / "schema.yaml"
_TYPES = {"integer": int, "number": float, "string": str, "boolean": bool, "array": list, "object": dict}


@functools.cache
def _raw_schema() -> dict[str, Any]:
    # libyaml's loader when PyYAML has it: every `lego` job reads the schema at start (8x faster).
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(SCHEMA_PATH) as fh:
        return yaml.load(fh, Loader=loader)  # noqa: S506 (a safe loader)


def raw_schema() -> dict[str, Any]:
    """The schema as written (a copy: callers may complete it), without the registries' names."""
    return copy.deepcopy(_raw_schema())


def schema_node(path: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """The schema entry of a dotted config key, e.g. ``patches.patch_px``; a first part naming a
    ``definitions`` entry (``table_modality.include``) starts there."""
    node = schema or _raw_schema()
    parts = path.split(".")
    if parts[0] in node.get("definitions", {}):
        node, parts = node["definitions"][parts[0]], parts[1:]
    for part in parts:
        try:
            node = node["properties"][part]
        except KeyError:
            raise KeyError(f"config/schema.yaml has no setting {path!r}") from None
    return node


@dataclass(frozen=True)
class Setting:
    """One config setting as the schema states it."""

    path: str
    kind: type
    default: Any = dataclasses.MISSING
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: float | None = None
    exclusive_maximum: float | None = None
    choices: tuple | None = None
    nullable: bool = False
    description: str = ""
    item: Setting | None = None  # an array's items
    pattern: str | None = None
    min_items: int | None = None
    max_items: int | None = None

    @property
    def has_default(self) -> bool:
        return self.default is not dataclasses.MISSING

    def bounds(self) -> str:
        """The range in words, e.g. ``[16, 32768]`` or ``(0, 1)``."""
        low = self.minimum if self.exclusive_minimum is None else self.exclusive_minimum
        high = self.maximum if self.exclusive_maximum is None else self.exclusive_maximum
        left = "(" if self.exclusive_minimum is not None or low is None else "["
        right = ")" if self.exclusive_maximum is not None or high is None else "]"
        show = (lambda v: f"{v:g}") if self.kind is float else str
        return f"{left}{'-inf' if low is None else show(low)}, {'inf' if high is None else show(high)}{right}"

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not valid for this setting (None: it is)."""
        if value is None:
            return None if self.nullable else "must be given (not null)"
        if self.choices is not None and any(isinstance(c, bool) for c in self.choices):  # e.g. [auto, true, false]
            same = any(type(value) is type(c) and value == c for c in self.choices)
            return None if same else f"must be one of {', '.join(str(c).lower() for c in self.choices)}"
        if self.kind is list:
            if not isinstance(value, (list, tuple)):
                return "must be a list"
            if not (self.min_items or 0) <= len(value) <= (self.max_items or len(value)):
                return f"must hold {self.min_items}{'' if self.min_items == self.max_items else ' or more'} values"
            return next((p for p in (self.item.problem(v) for v in value) if p), None) if self.item else None
        if self.kind in (int, float):
            number = isinstance(value, (int, float)) if self.kind is float else isinstance(value, int)
            if not number or isinstance(value, bool) or (self.kind is float and not math.isfinite(value)):
                return f"must be {'an integer' if self.kind is int else 'a number'}"
            if not self.in_range(value):
                return f"is outside {self.bounds()}"
        elif not isinstance(value, self.kind):
            return f"must be a {self.kind.__name__}"
        elif self.pattern is not None and not re.search(self.pattern, value):
            return f"does not match {self.pattern}"
        if self.choices is not None and value not in self.choices:
            return f"must be one of {', '.join(map(str, self.choices))}"
        return None

    def in_range(self, value: float) -> bool:
        checks = ((self.minimum, lambda lo: value >= lo), (self.maximum, lambda hi: value <= hi),
                  (self.exclusive_minimum, lambda lo: value > lo), (self.exclusive_maximum, lambda hi: value < hi))
        return all(limit is None or ok(limit) for limit, ok in checks)


def _from_node(path: str, node: dict[str, Any]) -> Setting:
    types = node.get("type", "string")
    types = [types] if isinstance(types, str) else list(types)
    nullable = "null" in types
    main = next((t for t in types if t != "null"), "string")
    item = _from_node(path + "[]", node["items"]) if main == "array" and "items" in node else None
    choices = node.get("enum")
    return Setting(
        path=path, kind=_TYPES[main], default=copy.deepcopy(node["default"]) if "default" in node else dataclasses.MISSING,
        minimum=node.get("minimum"), maximum=node.get("maximum"), exclusive_minimum=node.get("exclusiveMinimum"),
        exclusive_maximum=node.get("exclusiveMaximum"), choices=tuple(choices) if choices else None,
        nullable=nullable, description=" ".join(str(node.get("description", "")).split()), item=item,
        pattern=node.get("pattern"), min_items=node.get("minItems"), max_items=node.get("maxItems"),
    )


@functools.cache
def setting(path: str) -> Setting:
    """The setting at a dotted config key (see :func:`schema_node`)."""
    return _from_node(path, schema_node(path))


def default(path: str) -> Any:
    """The schema's default of a setting (a fresh copy: lists are never shared), of the setting's
    type (YAML reads ``overlap: 0`` as an integer where the setting is a number)."""
    found = setting(path)
    if not found.has_default:
        raise KeyError(f"config/schema.yaml gives {path!r} no default")
    return _typed(found, copy.deepcopy(found.default))


def _typed(s: Setting, value: Any) -> Any:
    if isinstance(value, list) and s.item is not None:
        return [_typed(s.item, v) for v in value]
    if s.kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def section(path: str) -> dict[str, Setting]:
    """Every setting of a config section, by key, in the schema's order."""
    return {key: setting(f"{path}.{key}") for key in schema_node(path)["properties"]}


def check(path: str, values: dict[str, Any]) -> tuple[str, str] | None:
    """The first (key, problem) of ``values`` against the section at ``path`` (keys it does not
    have are not checked here)."""
    settings = section(path)
    for key, value in values.items():
        problem = settings[key].problem(value) if key in settings else None
        if problem:
            return key, problem
    return None


def require(path: str, values: dict[str, Any], what: str, error: type[Exception] = ValueError) -> None:
    """Raise ``error`` naming the first of ``values`` the section at ``path`` refuses, e.g.
    ``training setting epochs=0 is outside [1, 10000]``."""
    bad = check(path, values)
    if bad:
        raise error(f"{what} {bad[0]}={values[bad[0]]!r} {bad[1]}")


def settings_class(name: str, path: str, module: str, doc: str) -> type:
    """A dataclass with one field per setting of a config section: type and default from the
    schema. Why: the section's keys, types and defaults are then written once (in the schema),
    and the CLI's flags and the config cannot disagree with the code that uses them."""
    fields = []
    for key, s in section(path).items():
        kind = s.kind | None if s.nullable else s.kind
        value = default(s.path)
        spec = (dataclasses.field(default_factory=functools.partial(default, s.path)) if isinstance(value, (list, dict))
                else dataclasses.field(default=value))
        fields.append((key, kind, spec))
    cls = dataclasses.make_dataclass(name, fields)
    cls.__module__ = module
    cls.__doc__ = f"{doc} Fields, types and defaults: config/schema.yaml, section {path}."
    return cls
