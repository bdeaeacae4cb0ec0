"""``codex-flow completion bash|zsh|fish``: the shell code that completes commands, options
and their choices (argcomplete)."""

from __future__ import annotations

import argparse

from ..errors import ConfigError

SHELLS = ("bash", "zsh", "fish")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "completion", help="print shell completion code (bash, zsh or fish)",
        description="Print the code that makes your shell complete codex-flow's commands and "
                    "options. bash: eval \"$(codex-flow completion bash)\" in ~/.bashrc; zsh: "
                    "the same in ~/.zshrc; fish: codex-flow completion fish > "
                    "~/.config/fish/completions/codex-flow.fish")
    p.add_argument("shell", choices=SHELLS)
    p.set_defaults(func=cmd_completion)


def cmd_completion(args: argparse.Namespace) -> int:
    try:
        import argcomplete
    except ImportError:
        raise ConfigError("completion needs argcomplete: pip install argcomplete") from None
    print(argcomplete.shellcode(["codex-flow"], shell=args.shell))
    return 0
