"""``codex-flow``: a thin shell over the Python API. One module per command."""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from ..errors import CodexFlowError, ConfigError
from . import agents_cmd, init_cmd, run_cmd
from .output import whole_stdout

#: Command modules; each has ``add_parser(subparsers)`` that sets ``func`` on its parser.
COMMANDS = [run_cmd, init_cmd, agents_cmd]


def _optional_commands() -> list[object]:
    import importlib

    found = []
    for name in ("serve_cmd", "report_cmd", "cleanup_cmd", "export_cmd", "changes_cmd",
                 "completion_cmd", "route_cmd"):
        try:
            found.append(importlib.import_module(f".{name}", __name__))
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
    return found


class Parser(argparse.ArgumentParser):
    """argparse with our error style: a bad value is one line; an unknown option shows the
    command's usage and the closest options (``--exmaple``: did you mean ``--example``?)."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments:"):
            self.print_usage(sys.stderr)
            known = [o for action in self._actions for o in action.option_strings]
            for token in message.split(":", 1)[1].split():
                if token.startswith("-"):
                    close = difflib.get_close_matches(token.split("=")[0], known, n=2)
                    if close:
                        message += f" (did you mean {' or '.join(close)}?)"
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = Parser(
        prog="codex-flow", description="Run many AI agents in parallel.")
    parser.add_argument("--version", action="version", version=f"codex-flow {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in [*COMMANDS, *_optional_commands()]:
        module.add_parser(sub)  # type: ignore[attr-defined]
    parser.set_defaults(_commands=sub.choices)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    if "_ARGCOMPLETE" in os.environ:  # a shell asking for completions (codex-flow completion)
        import argcomplete

        argcomplete.autocomplete(parser)
    args, extra = parser.parse_known_args(argv)
    if extra:  # reported by the command's own parser: its usage and the closest options
        args._commands[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        with whole_stdout():
            return int(args.func(args) or 0)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"codex-flow: error: {problem}", file=sys.stderr)
        return 2
    except CodexFlowError as exc:
        print(f"codex-flow: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("codex-flow: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `codex-flow run -v | head`: stop printing quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:  # a file or folder no check above named: one line, never a traceback
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"codex-flow: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
