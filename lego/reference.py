"""The settings reference: every config key with its type, range, default, choices and
description, written as markdown from the completed schema (``lego settings``; docs/settings.md).

Why: the docs then point here instead of quoting a default or a range a second time."""

from __future__ import annotations

import json
from typing import Any

from lego.config import load_schema


def _type(node: dict[str, Any]) -> str:
    if "type" not in node and isinstance(node.get("oneOf"), list):  # a setting of several forms
        return " or ".join(_type(form) for form in node["oneOf"])
    kinds = node.get("type", "")
    text = " or ".join(kinds) if isinstance(kinds, list) else str(kinds)
    if isinstance(node.get("items"), dict) and node["items"].get("type"):
        text += f" of {node['items']['type']}"
    return text


def _limits(node: dict[str, Any]) -> str:
    """Range, choices and pattern in words (an array's from its items)."""
    node = node["items"] if isinstance(node.get("items"), dict) else node
    parts = []
    low = node.get("minimum", node.get("exclusiveMinimum"))
    high = node.get("maximum", node.get("exclusiveMaximum"))
    if low is not None or high is not None:
        left = "(" if "exclusiveMinimum" in node or low is None else "["
        right = ")" if "exclusiveMaximum" in node or high is None else "]"
        parts.append(f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}")
    if node.get("enum"):
        parts.append(", ".join(f"`{v}`" for v in node["enum"]))
    if node.get("pattern"):
        parts.append(f"matches `{node['pattern']}`")
    return "; ".join(parts)


def _rows(node: dict[str, Any], prefix: str) -> list[str]:
    rows = []
    for key, sub in (node.get("properties") or {}).items():
        if "$ref" in sub:  # a modality's block overrides, the grid: described once under their own name
            target = sub["$ref"].rsplit("/", 1)[-1]
            rows.append(f"| `{prefix}{key}` | see `{target}` below | | | |")
            continue
        default = json.dumps(sub["default"]) if "default" in sub else ""
        description = " ".join(str(sub.get("description", "")).split()).replace("|", "\\\\|")
        if sub.get("properties") and sub.get("type") == "object":
            rows += _rows(sub, f"{prefix}{key}.")
            continue
        rows.append(f"| `{prefix}{key}` | {_type(sub)} | {_limits(sub)} | {f'`{default}`' if default else ''} | {description} |")
    return rows


def _kind_sections(head: str) -> list[str]:
    """A section per modality kind with settings of its own (and the family's keys it refuses)."""
    from lego.modality_kinds import kinds

    out = []
    for name, kind in sorted(kinds().items()):
        own = {k: v for k, v in kind.settings.items() if v.get("not") != {}}
        refused = [k for k, v in kind.settings.items() if v.get("not") == {}]
        if not kind.settings:
            continue
        out += [f"## `{name}` modalities", "", f"The {kind.family}_modality settings, and these of its own.", ""]
        if own:
            out += [head, *_rows({"properties": own}, ""), ""]
        if refused:
            out += [f"Refused for this kind (an error, never ignored): {', '.join(f'`{k}`' for k in refused)}.", ""]
    return out


def settings_markdown() -> str:
    """The reference page: the config's sections, then the per-modality settings by family."""
    schema = load_schema()
    head = "| key | type | range or choices | default | what it does |\n| --- | --- | --- | --- | --- |"
    out = ["# Settings", "", "Every key of the config, generated from `config/schema.yaml` (with the names the code's registries",
           "fill in) by `lego settings > docs/settings.md`. A modality's settings depend on its kind's family.", ""]
    for key, sub in schema["properties"].items():
        out += [f"## `{key}`", "", " ".join(str(sub.get("description", "")).split()), "", head]
        out += _rows(sub, f"{key}.") if sub.get("properties") else _rows({"properties": {key: sub}}, "")
        out.append("")
    kinds = schema["properties"]["modalities"]["additionalProperties"]["properties"]["kind"]
    out[out.index("## `modalities`") + 5:out.index("## `modalities`") + 5] = [
        f"| `modalities.<name>.kind` | string | {_limits(kinds)} |  | The modality's kind (lego.modality_kinds): its "
        "family's settings below (table_modality or slide_modality) |"]
    for name in ("table_modality", "slide_modality", "block_overrides"):
        out += [f"## `{name}`", "", head, *_rows(schema["definitions"][name], ""), ""]
    out += _kind_sections(head)
    grid = schema["definitions"]["grid"]
    keys = ", ".join(f"`{k}`" for k in grid["oneOf"][0]["properties"])
    out += ["## `grid`", "", " ".join(grid["description"].split()), "", f"Keys: {keys}.", ""]
    return "\n".join(out)
