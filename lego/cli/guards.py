"""What every command checks before it runs, and how an error becomes one line.

An output that would overwrite an input -- the same file, or a file of the name the command writes
in its output folder (a merge written into a block's folder, an ensemble's metrics over a block's,
labels replaced by a slide table) -- or two outputs on one path are refused before any work.
"""

from __future__ import annotations

import json
from pathlib import Path

from lego.cli.declare import Command, flag
from lego.errors import InputError, LegoError
from lego.evaluation.names import METRICS_FILE, PREDICTIONS_FILE
from lego.models import model_kinds

MODEL_FILES = frozenset(model_kinds.MODEL_FILES)
EVAL_FILES = frozenset({METRICS_FILE, PREDICTIONS_FILE})


def refuse_output_over_input(cmd: Command) -> None:
    """Refuse an output path that would overwrite an input, or two outputs on one path."""
    opts = cmd.options()
    values = {name: getattr(cmd, name) for name in opts}
    outputs = [(n, v) for n, value in values.items() if opts[n].output
               for v in (value if isinstance(value, list) else [value]) if isinstance(v, str) and v]
    inputs: dict[Path, str] = {}
    for name, value in values.items():
        if opts[name].output:
            continue
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, str) and v:
                path = _existing(v) or ("=" in v and _existing(v.split("=", 1)[1]))  # NAME=PATH arguments
                if path:
                    inputs.setdefault(path, name)
    seen: dict[Path, str] = {}
    for name, out in outputs:
        target = Path(out).resolve()
        for p, in_name in inputs.items():
            clash = _overwritten(p, target, cmd.writes)
            if clash is not None:
                raise InputError(f"{flag(name)} {out} would overwrite {clash.name} ({flag(in_name)} {p}); "
                                 "choose another output path")
        if target in seen:
            raise InputError(f"{flag(name)} and {flag(seen[target])} are the same path ({out}); give each output its own")
        seen[target] = name


def _overwritten(inp: Path, target: Path, written: frozenset) -> Path | None:
    """The input file an output at ``target`` would overwrite: the input itself (a file written over),
    a file the command writes in its folder, or such a file inside an input folder that is the output."""
    if inp == target and inp.is_file():
        return inp
    for name in sorted(written):
        if inp == target / name:
            return inp
        if inp == target and (inp / name).is_file():
            return inp / name
    return None


def _existing(value: str) -> Path | None:
    """The resolved path an argument names, if it exists (JSON and other values name none)."""
    try:
        return Path(value).resolve() if Path(value).exists() else None
    except (OSError, ValueError):  # too long for a file name, or a NUL byte
        return None


def user_error(exc: Exception) -> str | None:
    """The one-line message for an error caused by the user's input; None for a bug (traceback)."""
    if isinstance(exc, LegoError):
        return str(exc)
    if isinstance(exc, json.JSONDecodeError):  # --spec, --config-json, --modalities ... are JSON
        return f"an argument is not valid JSON ({exc}); check the quoting"
    if isinstance(exc, OSError):  # unreadable or unwritable paths: the path and the reason
        return _os_error(exc)
    if type(exc).__module__.startswith("pyarrow"):  # a damaged or non-parquet file where parquet is expected
        return f"cannot read a parquet input ({' '.join(str(exc).split())[:300]}); re-run the step that wrote it"
    return None


def _os_error(exc: OSError) -> str:
    """One line for a file-system error, naming the path and what to check."""
    where = exc.filename or ""
    reason = exc.strerror or " ".join(str(exc).split())
    hint = {PermissionError: "check the folder's permissions", FileNotFoundError: "check the path, or run the step that makes it"}
    fix = next((h for t, h in hint.items() if isinstance(exc, t)), "check the file and the disk")
    return f"{where + ': ' if where else ''}{reason}; {fix}"
