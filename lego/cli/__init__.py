"""lego: one sub-command per pipeline stage of the MM-Lego workflow.

The Snakemake rules call these, and users can run any stage by hand on one slide or one table,
e.g. ``lego segment --slide S.svs --out-tissue t.parquet --out-png t.png``. Bad input exits with
status 2 and a one-line message naming the file and the fix (no traceback); ``--debug`` shows it.

Each command is a dataclass declared next to the code it runs (:mod:`lego.cli.declare`); options
bound to a config setting take its type, range, choices and default from the config schema.
"""

from __future__ import annotations

import argparse
import logging
import sys

import lego
from lego.cli import cohort_commands, evaluation_commands, model_commands, report_commands, slide_commands  # noqa: F401
from lego.cli.declare import COMMANDS, Command, add_options
from lego.cli.guards import refuse_output_over_input, user_error
from lego.errors import InputError

__all__ = ["COMMANDS", "build_parser", "main"]


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``lego`` parser: one sub-command per declared command, in the modules' order (``only``:
    just that command's options, the others listed -- a job's start need not build 31 parsers)."""
    missing = _declare_kind_commands(required=False) if only is None else None  # listing every command
    epilog = (f"The modality kinds' commands (prepare-...) are not listed: they need {missing}, which is not "
              "installed (pip install the full package).") if missing else None
    parser = argparse.ArgumentParser(prog="lego", description=__doc__.split("\n")[0], epilog=epilog)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--version", action="version", version=f"%(prog)s {lego.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, cls in COMMANDS.items():
        command = sub.add_parser(name, help=cls.summary, description=cls.summary)
        if only is None or name == only:
            add_options(command, cls)
    return parser


def _declare_kind_commands(required: bool) -> str | None:
    """Import the modality kinds, which declare their own preparation commands in their modules.
    They import numpy, pandas and torch, which ``lego --help`` and ``--version`` must not need (an
    offline install is checked with PyYAML alone): when listing, a missing package is returned, to
    be named under the list, rather than raised."""
    try:
        from lego.modality_kinds import kinds

        kinds()
    except ImportError as exc:
        if required:
            raise
        return exc.name or str(exc)
    return None


def _command_word(argv: list[str]) -> str | None:
    """The sub-command the arguments name (None: none, or --help/--version before it). A word that is
    no command of the CLI's own modules may be a modality kind's (its preparation command, declared
    in its module): the kinds are imported then, and only then -- most jobs need none of them."""
    words = [a for a in argv if not a.startswith("-")]
    if words and words[0] not in COMMANDS:
        _declare_kind_commands(required=True)
    return words[0] if words and words[0] in COMMANDS and argv.index(words[0]) <= argv.count("--debug") else None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        only = _command_word(argv)
    except ImportError as exc:  # a word that may be a modality kind's command, whose kind cannot load
        word = next(a for a in argv if not a.startswith("-"))
        print(f"lego: error: {word!r} is no command of this installation; the modality kinds' commands need "
              f"{exc.name or exc}, which is not installed (pip install the full package)", file=sys.stderr)
        return 2
    args = build_parser(only).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("numexpr").setLevel(logging.WARNING)
    try:
        cmd: Command = COMMANDS[args.command].from_namespace(args)
        if isinstance(getattr(cmd, "name", None), str) and not cmd.name.strip():
            raise InputError("--name is empty; name the model (it becomes a row of the summary)")
        refuse_output_over_input(cmd)
        cmd.run()
    except Exception as exc:
        message = user_error(exc)
        if message is None or args.debug:
            raise
        print(f"lego {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 0
