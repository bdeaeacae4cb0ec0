"""Finding a coding-agent CLI and checking that its version is one we support."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

Version = tuple[int, int, int]


@dataclass(frozen=True)
class CliSpec:
    """What we know of one agent CLI: its program, package and the versions we support."""

    runtime: str
    program: str
    env_var: str
    package: str
    minimum: Version  # inclusive
    below: Version  # exclusive

    @property
    def supported(self) -> str:
        return f">={_dotted(self.minimum)},<{_dotted(self.below)}"

    @property
    def install(self) -> str:
        return f"npm install -g {self.package}@{_dotted(self.minimum)}"


CODEX = CliSpec("codex-cli", "codex", "CODEXFLOW_CODEX_BIN", "@openai/codex",
                (0, 169, 0), (1, 0, 0))
CLAUDE = CliSpec("claude-code", "claude", "CODEXFLOW_CLAUDE_BIN", "@anthropic-ai/claude-code",
                 (2, 1, 0), (3, 0, 0))
_VERSION = re.compile(r"(\d+)\.(\d+)\.(\d+)")


def _dotted(v: Version) -> str:
    return ".".join(str(p) for p in v)


def parse_version(text: str) -> Version | None:
    """The first ``X.Y.Z`` in a ``--version`` output (``codex-cli 0.169.0``,
    ``2.1.197 (Claude Code)``)."""
    match = _VERSION.search(text)
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


def find_binary(spec: CliSpec, explicit: str | os.PathLike[str] | None = None) -> tuple[str, str]:
    """``(path, version)`` of the CLI: ``explicit`` (``--agent-bin``), then ``$CODEXFLOW_*_BIN``,
    then PATH. Raises ConfigError (one line: found, supported, how to install)."""
    given = explicit or os.environ.get(spec.env_var)
    if given:
        path = shutil.which(str(given)) or (str(given) if Path(given).is_file() else None)
        where = f"{given} (from {'--agent-bin' if explicit else spec.env_var})"
    else:
        path = shutil.which(spec.program)
        where = f"{spec.program} on PATH"
    if path is None:
        raise ConfigError(f"--runtime {spec.runtime}: {where} not found; supported versions "
                          f"{spec.supported}; install it with `{spec.install}`")
    try:
        proc = subprocess.run([path, "--version"], capture_output=True, timeout=30,
                              stdin=subprocess.DEVNULL)
        output = (proc.stdout or proc.stderr).decode(errors="replace").strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"--runtime {spec.runtime}: {path} does not run "
                          f"({type(exc).__name__}); supported versions {spec.supported}; "
                          f"install it with `{spec.install}`") from None
    version = parse_version(output)
    if version is None or not spec.minimum <= version < spec.below:
        found = _dotted(version) if version else repr(output[:60] or "no version")
        raise ConfigError(f"--runtime {spec.runtime}: {path} is version {found}, supported "
                          f"{spec.supported}; install it with `{spec.install}`")
    return path, _dotted(version)
