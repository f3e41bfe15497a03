"""Finds facts written twice: a config setting's choices, default or range, or a registry's names,
copied into the code instead of read from where they are defined.

Run by CI (and by tests/test_settings.py). It reads config/schema.yaml and the Python code
under lego/, workflow/ and rules/ and reports, one line each:

* a list, tuple or set literal holding two or more of a setting's choices (``("stack", "weave")``)
  or of a registry's names (block encoders, modality kinds, model kinds, classical baselines),
  outside the one place that defines them;
* a parameter or field default equal to a setting's default, where the parameter is named like
  the setting (``patch_px: int = 256``, ``def merge(..., method="harmonic")``);
* a command-line flag spelt as a string (``"--patch-px"``): flags are made from the declarations;
* a backquoted word in config/README.md that is neither a config key, a choice of one, nor a
  file of the repository (the README once said ``random`` where the schema says ``random_split``).

Exit status 1 when anything is found.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TRIVIAL = (None, True, False, 0, 1, "", [], {})
# Where each registry's names are defined (a literal there is the definition, not a copy). The
# block encoders coxnet and rsf wrap the classical models of the same names, on purpose.
DEFINITIONS = {"lego/models/encoders.py": ("block encoders", "classical baselines")}


def settings(schema: dict, prefix: str = "") -> dict[str, dict]:
    """Every setting of the (completed) schema by dotted key, definitions included."""
    out = {}
    for key, node in (schema.get("properties") or {}).items():
        path = f"{prefix}{key}"
        out[path] = node
        out.update(settings(node, path + "."))
    for key, node in (schema.get("definitions") or {}).items():
        out.update(settings(node, f"{key}."))
    return out


def name_sets() -> dict[str, set[str]]:
    """Sets of names that must be written once: each setting's choices and each registry's names."""
    from lego.evaluation.classical import CLASSICAL
    from lego.modality_kinds import kinds
    from lego.models.encoders import ENCODERS
    from lego.models.model_kinds import model_kinds
    from lego.settings import raw_schema

    written = settings(raw_schema())  # the choices the schema writes (those filled from a registry are the registry's)
    sets = {f"choices of {k}": set(map(str, n["enum"])) for k, n in written.items() if len(n.get("enum") or []) >= 2}
    items = {f"choices of {k}[]": set(map(str, n["items"]["enum"])) for k, n in written.items()
             if isinstance(n.get("items"), dict) and len(n["items"].get("enum") or []) >= 2}
    sets.update(items)
    sets.update({"block encoders": set(ENCODERS), "modality kinds": set(kinds()), "model kinds": set(model_kinds()),
                 "classical baselines": set(CLASSICAL)})
    return {k: v for k, v in sets.items() if len(v) >= 2}


def literal_copies(tree: ast.AST, path: str, sets: dict[str, set[str]], lines: list[str]) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            continue
        if "single-source:" in lines[node.lineno - 1]:  # a subset chosen on purpose, said so on its line
            continue
        words = {e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
        for what, names in sets.items():
            if len(words & names) >= 2 and what not in DEFINITIONS.get(path, ()):
                found.append(f"{path}:{node.lineno}: {sorted(words & names)} copies the {what}")
                break
    return found


def default_copies(tree: ast.AST, path: str, defaults: dict[str, list]) -> list[str]:
    """Parameters and annotated fields named like a setting whose default literal equals the setting's."""
    found = []
    for node in ast.walk(tree):
        pairs = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args.args + node.args.kwonlyargs
            values = [None] * (len(node.args.args) - len(node.args.defaults)) + node.args.defaults + node.args.kw_defaults
            pairs = [(a.arg, v) for a, v in zip(args, values) if v is not None]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            pairs = [(node.target.id, node.value)]
        for name, value in pairs:
            try:
                literal = ast.literal_eval(value)
            except ValueError:
                continue
            if name in defaults and literal not in TRIVIAL and any(literal == d for d in defaults[name]):
                found.append(f"{path}:{value.lineno}: {name} = {literal!r} repeats the schema's default")
    return found


def flag_strings(tree: ast.AST, path: str, keys: set[str]) -> list[str]:
    return [f"{path}:{n.lineno}: flag {n.value!r} spelt by hand (declare the option instead)" for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value.startswith("--")
            and n.value[2:].replace("-", "_") in keys]


def rule_names(smk: Path, names: set[str]) -> list[str]:
    """Model-kind names spelt in a rule file (rules read them from the plan and the registry)."""
    found = []
    for lineno, line in enumerate(smk.read_text().splitlines(), 1):
        for word in re.findall(r"(?<!\[)[\"']([A-Za-z][\w-]*)[\"']", line):  # config["model"]["merge"] is a key
            if word in names or word.startswith("block-"):
                found.append(f"{smk.relative_to(REPO)}:{lineno}: model name {word!r} spelt in a rule")
    return found


def readme_words(readme: Path, schema_settings: dict[str, dict]) -> list[str]:
    """Backquoted words of config/README.md that name no key, choice or file."""
    known = {k.split(".")[-1] for k in schema_settings} | {str(v) for n in schema_settings.values() for v in n.get("enum") or []}
    known |= {str(v) for n in schema_settings.values() if isinstance(n.get("items"), dict) for v in n["items"].get("enum") or []}
    found = []
    for lineno, line in enumerate(readme.read_text().splitlines(), 1):
        for word in re.findall(r"`([^`]+)`", line):
            token = word.split(":")[0].strip()
            is_file = (REPO / "config" / token).exists() or (REPO / token).exists() or "/" in token or "." in token
            if re.fullmatch(r"[a-z_]+", token) and token not in known and not is_file:
                found.append(f"{readme.relative_to(REPO)}:{lineno}: `{word}` is no config key or choice of the schema")
    return found


def main() -> int:
    from lego.config import load_schema

    schema_settings = settings(load_schema())
    defaults: dict[str, list] = {}
    for key, node in schema_settings.items():
        if "default" in node:
            defaults.setdefault(key.split(".")[-1], []).append(node["default"])
    sets, keys = name_sets(), {k.split(".")[-1] for k in schema_settings}
    problems = []
    for file in sorted([*(REPO / "lego").rglob("*.py"), *(REPO / "workflow").rglob("*.py")]):
        path = str(file.relative_to(REPO))
        tree = ast.parse(file.read_text())
        problems += literal_copies(tree, path, sets, file.read_text().splitlines()) + default_copies(tree, path, defaults) + flag_strings(tree, path, keys)
    from lego.models.model_kinds import model_kinds

    for smk in sorted([*(REPO / "rules").glob("*.smk"), REPO / "Snakefile"]):
        problems += rule_names(smk, set(model_kinds()) | {"tuned_merge", "lego", "ensemble"})
    problems += readme_words(REPO / "config" / "README.md", schema_settings)
    print("\n".join(problems) or "single source: no setting or registry name is written twice")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
