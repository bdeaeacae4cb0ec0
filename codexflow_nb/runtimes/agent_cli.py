"""The ``codex-cli`` and ``claude-code`` runtimes: a real coding agent per task, each in its own
workspace, its JSON event stream turned into events as it arrives.

Per task: create the workspace (:mod:`codexflow_nb.workspaces`), start the CLI with the prompt
on stdin (:mod:`.process`), read its lines through the adapter (:mod:`.adapters`) into
``task_chunk`` (agent messages) and ``task_step`` (commands, file changes, tools, warnings)
events, keep the raw lines in ``.runs/<alias>/<taskId>/transcript.jsonl`` as they come, then
collect the change as ``changes.patch``. The engine sees none of this: it gets a Reply or a
RuntimeFailure.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from ..errors import ConfigError
from ..prompts import agent_prompt, first_line
from ..runstore import atomic_write_json
from ..workspaces import Workspace, WorkspaceError, Workspaces
from .adapters import ADAPTERS, Adapter, Turn, claude_tools
from .base import ChunkCallback, Reply, RuntimeCall, RuntimeFailure
from .binaries import find_binary
from .process import OutputTooLong, in_thread, run_lines

AGENT_RUNTIMES = tuple(ADAPTERS)
#: stderr kept per task in ``stderr.log`` (the rest is dropped).
STDERR_FILE_LIMIT = 1024 * 1024
#: Lines that are not JSON events reported as warnings per task, at most.
MAX_WARNINGS = 20
#: Settings of the agent card's ``runtime`` section each CLI reads (besides ``model``).
SECTIONS = {"codex-cli": "codex_cli", "claude-code": "claude_code"}
#: Codex's sandbox when neither the card, the flags nor the user's Codex config chooses one:
#: commands may write in the workspace only (enforced by Codex; works as root in a container).
DEFAULT_CODEX_SANDBOX = "workspace-write"
#: Claude Code's tools when the card names none.
CLAUDE_DEFAULT_TOOLS = ["Bash", "Read", "Edit", "Write", "Grep", "Glob"]
#: Variables an agent started by the demo endpoint gets (plus ``pass_env``).
ENV_ALLOW = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TERM", "TMPDIR",
             "TZ", "SHELL", "SSL_CERT_FILE", "SSL_CERT_DIR", "HTTPS_PROXY", "HTTP_PROXY",
             "NO_PROXY", "https_proxy", "http_proxy", "no_proxy", "NODE_EXTRA_CA_CERTS")
ENV_AGENT = {"codex-cli": ("CODEX_HOME", "OPENAI_API_KEY", "CODEX_API_KEY", "OPENAI_BASE_URL"),
             "claude-code": ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN",
                             "ANTHROPIC_MODEL", "CLAUDE_CONFIG_DIR",
                             "CLAUDE_CODE_USE_BEDROCK", "CLAUDE_CODE_USE_VERTEX",
                             "DISABLE_TELEMETRY", "DISABLE_AUTOUPDATER",
                             "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC")}


def agent_env(runtime: str, pass_env: Sequence[str] = ()) -> dict[str, str]:
    """An explicit environment for an agent process: the allow-list, the CLI's own variables
    and ``pass_env`` (never the whole environment of a server)."""
    names = (*ENV_ALLOW, *ENV_AGENT.get(runtime, ()), *pass_env)
    return {n: os.environ[n] for n in names if n in os.environ}


class AgentCliRuntime:
    """Runs tasks with a coding-agent CLI. ``check()`` (called before a run writes anything)
    finds the binary, checks its version and prepares the workspaces."""

    default_retries = 0

    def __init__(self, name: str, *, binary: str | None = None, model: str | None = None,
                 config_args: Sequence[str] = (), permission_mode: str | None = None,
                 allowed_tools: Sequence[str] | None = None,
                 workspaces: Workspaces | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        if name not in ADAPTERS:
            raise ConfigError(f"unknown agent runtime {name!r}: choose {', '.join(ADAPTERS)}")
        self.name = name
        self.adapter: Adapter = ADAPTERS[name]
        self._explicit_bin = binary
        self.binary: str | None = None
        self.version: str | None = None
        self.model = model
        self.config_args = list(config_args)
        self.permission_mode = permission_mode
        self.allowed_tools = list(allowed_tools) if allowed_tools is not None else None
        self.workspaces = workspaces
        self.env = dict(env) if env is not None else None

    def check(self) -> list[str]:
        """Find the binary, check its version, prepare the workspaces; returns warnings."""
        if self.binary is None:
            self.binary, self.version = find_binary(self.adapter.spec, self._explicit_bin)
        return self.workspaces.prepare() if self.workspaces is not None else []

    async def open(self, max_connections: int) -> None:
        if self.binary is None:
            self.check()

    async def close(self) -> None:
        return None

    def settings(self, agent: Mapping[str, Any]) -> dict[str, Any]:
        """The CLI settings for one task: the card's ``runtime`` section (alias overrides
        merged in), then this runtime's flags."""
        runtime = agent.get("runtime") or {}
        section = runtime.get(SECTIONS[self.name]) or {}
        settings: dict[str, Any] = {"model": runtime.get("model"), **section}
        if self.model:
            settings["model"] = self.model
        if self.name == "codex-cli":
            settings["config_args"] = self.config_args
            chosen = (settings.get("sandbox") or settings.get("profile")
                      or any(str(a).startswith("sandbox_mode") for a in self.config_args)
                      or "sandbox_mode" in (settings.get("config") or {})
                      or "sandbox_mode" in self._codex_settings())
            if not chosen:  # Codex's own default (read-only) would stop every edit
                settings["sandbox"] = DEFAULT_CODEX_SANDBOX
            return settings

        tools = ((agent.get("capabilities") or {}).get("detail") or {}).get("tools") or {}
        if self.allowed_tools is not None:
            settings["allowed_tools"] = self.allowed_tools
        elif "allowed_tools" not in section:
            settings["allowed_tools"] = claude_tools(tools.get("allowed")) or CLAUDE_DEFAULT_TOOLS
        if "disallowed_tools" not in section:
            settings["disallowed_tools"] = claude_tools(tools.get("restricted"))
        if self.permission_mode:
            settings["permission_mode"] = self.permission_mode
        return settings

    async def _workspace(self, call: RuntimeCall) -> Workspace | None:
        if self.workspaces is None:
            return None
        after = [self.workspaces.existing(call.run_id, alias, task_id)
                 for alias, task_id in call.deps]
        try:
            return await self.workspaces.create(call.run_id, call.alias, call.task_id, after)
        except WorkspaceError as exc:
            raise RuntimeFailure(str(exc), type="WorkspaceError") from None

    async def run(self, call: RuntimeCall, on_chunk: ChunkCallback | None = None) -> Reply:
        emit = call.emit
        ws = await self._workspace(call)
        task_dir = Path(call.task_dir) if call.task_dir else None
        if ws is not None and emit is not None:
            emit("task_workspace", workspace=ws.describe())
        workdir = str(ws.path) if ws is not None else os.getcwd()
        settings = self.settings(call.agent)
        assert self.binary is not None
        argv = self.adapter.command(self.binary, settings, workdir,
                                    ws is not None and ws.kind == "worktree")
        turn = Turn(on_chunk=on_chunk,
                    on_step=(lambda step: emit("task_step", **step)) if emit else None)
        transcript, stderr_log = await in_thread(
            "io", _task_files, task_dir, ws.describe() if ws is not None else None)
        env = dict(self.env if self.env is not None else os.environ)
        env.update(CODEXFLOW_RUN_ID=call.run_id, CODEXFLOW_TASK_ID=call.task_id,
                   CODEXFLOW_ALIAS=call.alias, CODEXFLOW_AGENT_ID=call.agent_id)
        bad_lines = 0

        def on_line(line: bytes) -> None:
            nonlocal bad_lines
            transcript.write(line)
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError:
                event = None
            if isinstance(event, dict):
                self.adapter.feed(event, turn)
            elif line.strip() and bad_lines < MAX_WARNINGS:
                bad_lines += 1
                turn.warn("not a JSON event: " + line.decode(errors="replace").strip()[:200])

        prompt = agent_prompt(call.agent, call.task, call.context).encode()
        try:
            finished = await run_lines(argv, cwd=workdir, env=env, stdin=prompt,
                                       on_line=on_line, on_stderr=stderr_log.write)
        except OutputTooLong as exc:
            finished = None
            turn.error = turn.error or f"{self.name}: {exc}"
        except OSError as exc:
            raise RuntimeFailure(f"{self.name} cannot start: {exc.strerror or exc}",
                                 type="AgentStartError") from None
        finally:
            transcript.close()
            stderr_log.close()
        changes = None
        if ws is not None:
            try:
                changes = await ws.collect(task_dir / "changes.patch" if task_dir else None)
            except WorkspaceError as exc:
                turn.warn(f"changes not collected: {exc}")
        extra: dict[str, Any] = {"agentCli": f"{self.name} {self.version}", "steps": turn.steps}
        if ws is not None:
            extra["workspace"] = {k: v for k, v in ws.describe().items()
                                  if k in ("kind", "path", "branch", "start")}
        if changes is not None:
            extra["changes"] = changes
        model = turn.model or settings.get("model") or self._configured_model()
        if model:
            extra["model"] = model
        if turn.warnings:
            extra["warnings"] = len(turn.warnings)
        failure = self._failure(turn, finished)
        if failure is not None:
            message, retryable = failure
            if turn.usage:
                extra["usage"] = turn.usage
            raise RuntimeFailure(message, type="AgentFailed", retryable=retryable,
                                 annotations=extra)
        final = turn.final or ""
        return Reply(summary=first_line(final) or f"{self.name} finished", usage=turn.usage,
                     output={"message": final, "changes": changes, "steps": turn.steps},
                     model=extra.get("model"), annotations=extra)

    def _configured_model(self) -> str | None:
        """Codex's own default model, for the cost table."""
        value = self._codex_settings().get("model") if self.name == "codex-cli" else None
        return value if isinstance(value, str) else None

    def _codex_settings(self) -> dict[str, Any]:
        """``model`` and ``sandbox_mode`` of ``$CODEX_HOME/config.toml`` (nothing else of that
        file is read: no credential ever is)."""
        if not hasattr(self, "_codex_cfg"):
            import tomllib

            env = self.env if self.env is not None else os.environ
            home = env.get("CODEX_HOME") or os.path.join(env.get("HOME", "~"), ".codex")
            try:
                with open(os.path.join(os.path.expanduser(home), "config.toml"), "rb") as fh:
                    doc = tomllib.load(fh)
            except (OSError, ValueError):
                doc = {}
            self._codex_cfg = {k: doc[k] for k in ("model", "sandbox_mode") if k in doc}
        return self._codex_cfg

    def _failure(self, turn: Turn, finished: Any) -> tuple[str, bool] | None:
        """``(message, retryable)`` when the turn failed; the agent's own words first."""
        if turn.error:
            return turn.error[:2000], False
        if finished is not None and finished.returncode != 0:
            detail = finished.stderr.strip().splitlines()
            why = detail[-1][:500] if detail else "no message"
            return f"{self.name} exited with status {finished.returncode}: {why}", False
        if not turn.finished or turn.final is None:
            return f"{self.name}: the event stream ended without a final message", True
        return None


def _task_files(task_dir: Path | None,
                workspace: dict[str, Any] | None) -> tuple[_Appender, _Appender]:
    """The task folder's ``workspace.json`` (cleanup removes the workspace with the task's
    folder) and its appenders: ``transcript.jsonl`` and ``stderr.log``."""
    if task_dir is not None and workspace is not None:
        task_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(task_dir / "workspace.json", workspace)
    return (_Appender(task_dir / "transcript.jsonl" if task_dir else None),
            _Appender(task_dir / "stderr.log" if task_dir else None, STDERR_FILE_LIMIT))


class _Appender:
    """Appends bytes to a file as they come (a crash keeps what came); ``None``: drops them."""

    def __init__(self, path: Path | None, limit: int | None = None) -> None:
        self._fd: int | None = None
        self._left = limit
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, data: bytes) -> None:
        if self._fd is None:
            return
        if self._left is not None:
            data = data[:max(0, self._left)]
            self._left -= len(data)
        if data:
            os.write(self._fd, data)

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


class RuntimeByAlias:
    """One runtime per engine name: an alias picks its own with ``runtime.engine`` in its
    overrides (or agent card); the others use the run's runtime. The engine sees one runtime."""

    def __init__(self, default: Any, others: Mapping[str, Any]) -> None:
        self.default = default
        self.others = dict(others)
        self.name = default.name
        self.default_retries = default.default_retries

    def pick(self, agent: Mapping[str, Any]) -> Any:
        engine = (agent.get("runtime") or {}).get("engine")
        return self.others.get(engine, self.default) if engine else self.default

    async def open(self, max_connections: int) -> None:
        for rt in (self.default, *self.others.values()):
            await rt.open(max_connections)

    async def close(self) -> None:
        for rt in (self.default, *self.others.values()):
            await rt.close()

    async def run(self, call: RuntimeCall, on_chunk: ChunkCallback | None = None) -> Reply:
        return await self.pick(call.agent).run(call, on_chunk)


def engines_of(resolved: Mapping[str, Any]) -> dict[str, str]:
    """``{alias: engine}`` for the aliases whose definition names ``runtime.engine``."""
    out = {}
    for alias, r in resolved.items():
        engine = (r.effective.get("runtime") or {}).get("engine")
        if engine is not None:
            out[alias] = engine
    return out


StepCallback = Callable[[dict[str, Any]], None]
