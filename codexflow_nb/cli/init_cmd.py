"""``codex-flow init``: scaffold a project folder."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from ..api import EXAMPLE_TASKS
from ..errors import ConfigError
from ..registry import BUNDLED_AGENTS

GITIGNORE_LINES = [".runs/", "data/logs/"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("init", help="create codex/agents, examples and data/logs in a folder")
    p.add_argument("dir", nargs="?", default=".", help="target folder (default: here)")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.set_defaults(func=cmd_init)


def cmd_init(args: argparse.Namespace) -> int:
    root = Path(args.dir)
    agents = root / "codex" / "agents"
    example = root / "examples" / "orchestrator-tasks.json"
    existing = [p for p in (agents, example) if p.exists()]
    if existing and not args.force:
        raise ConfigError([f"{p}: already exists (use --force to overwrite)" for p in existing])
    if agents.exists():
        shutil.rmtree(agents)
    shutil.copytree(BUNDLED_AGENTS.resolve(), agents)
    example.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(EXAMPLE_TASKS.resolve(), example)
    (root / "data" / "logs").mkdir(parents=True, exist_ok=True)
    gitignore = root / ".gitignore"
    lines = gitignore.read_text().splitlines() if gitignore.exists() else []
    missing = [line for line in GITIGNORE_LINES if line not in lines]
    if missing:
        with gitignore.open("a", encoding="utf-8") as fh:
            if lines and lines[-1] != "":
                fh.write("\n")
            fh.write("\n".join(missing) + "\n")
    print(f"created {agents} ({sum(1 for _ in agents.rglob('*.codex.yaml'))} agents), {example}, "
          f"{root / 'data' / 'logs'}; .gitignore ignores {', '.join(GITIGNORE_LINES)}")
    print(f"next: cd {root} && codex-flow run -f {example.relative_to(root)}")
    return 0
