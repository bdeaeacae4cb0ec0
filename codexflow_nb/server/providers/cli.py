"""The ``cli`` provider: runs the command configured at start-up (``--cli-command``), never one
taken from a request. The prompt goes to its stdin; its stdout is the reply, streamed as it
comes. Run time and output size are capped; the process is killed when either is exceeded
or the client goes away. Its environment is explicit (:func:`cli_env`), never the server's
whole one: a key the server holds reaches the command only when named by ``--pass-env``."""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Mapping, Sequence

from .base import AgentRequest, ProviderError, ProviderReply, system_prompt, user_prompt

log = logging.getLogger("codexflow_nb.server")
READ_SIZE = 4096
STDERR_KEEP = 2048
#: The server's variables a cli command gets (plus ``--pass-env``): what finding programs,
#: locale, temp files, proxies and certificates need. No keys: OPENAI_API_KEY, CODEX_API_KEY
#: (the endpoint's own token) and the like go through only when named.
ENV_ALLOW = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE",
             "LC_MESSAGES", "TERM", "TMPDIR", "TZ", "SHELL", "SSL_CERT_FILE", "SSL_CERT_DIR",
             "REQUESTS_CA_BUNDLE", "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "https_proxy",
             "http_proxy", "no_proxy")


def cli_env(pass_env: Sequence[str] = (), source: Mapping[str, str] | None = None
            ) -> dict[str, str]:
    """The variables of ``ENV_ALLOW`` and ``pass_env`` that ``source`` (default
    ``os.environ``) holds."""
    source = os.environ if source is None else source
    return {n: source[n] for n in (*ENV_ALLOW, *pass_env) if n in source}


class CliProvider:
    """``command`` is an argv list (no shell). No vendor, so no usage is reported. ``env`` is
    the command's environment (default :func:`cli_env`), to which each run adds
    ``CODEXFLOW_AGENT_ID`` and ``CODEXFLOW_ALIAS``."""

    name = "cli"

    def __init__(self, command: Sequence[str] | None, *, timeout_s: float = 120.0,
                 max_output_bytes: int = 256 * 1024,
                 env: Mapping[str, str] | None = None) -> None:
        if not command:
            raise ProviderError(400, "provider 'cli' is not configured on this endpoint: "
                                     "start it with --cli-command")
        if timeout_s <= 0 or max_output_bytes <= 0:
            raise ValueError("timeout_s and max_output_bytes must be positive")
        self.command = list(command)
        self.timeout_s = timeout_s
        self.max_output_bytes = max_output_bytes
        self.env = dict(cli_env() if env is None else env)

    async def complete(self, request: AgentRequest) -> ProviderReply:
        parts = [piece async for piece in self._run(request)]
        return ProviderReply(text="".join(parts), model=f"cli:{os.path.basename(self.command[0])}")

    async def stream(self, request: AgentRequest) -> AsyncIterator[str | ProviderReply]:
        parts: list[str] = []
        async for piece in self._run(request):
            parts.append(piece)
            yield piece
        yield ProviderReply(text="".join(parts), model=f"cli:{os.path.basename(self.command[0])}")

    async def _run(self, request: AgentRequest) -> AsyncIterator[str]:
        prompt = (system_prompt(request.agent) + "\n\n" + user_prompt(request)).encode()
        env = {**self.env, "CODEXFLOW_AGENT_ID": request.agent.id,
               "CODEXFLOW_ALIAS": request.alias}
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=env)
        except OSError as exc:
            raise ProviderError(424, f"cli command {self.command[0]!r} cannot start: "
                                     f"{exc.strerror or type(exc).__name__}") from None
        assert proc.stdin and proc.stdout and proc.stderr
        feeder = asyncio.create_task(_feed(proc.stdin, prompt))
        errors = asyncio.create_task(_tail(proc.stderr))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        total = 0
        try:
            while True:
                try:
                    data = await asyncio.wait_for(proc.stdout.read(READ_SIZE),
                                                  max(0.0, deadline - loop.time()))
                except TimeoutError:
                    raise ProviderError(504, f"cli command timed out after {self.timeout_s:g} s") from None
                if not data:
                    break
                total += len(data)
                if total > self.max_output_bytes:
                    raise ProviderError(424, "cli command output exceeded "
                                             f"{self.max_output_bytes} bytes")
                text = decoder.decode(data)
                if text:
                    yield text
            tail = decoder.decode(b"", final=True)
            if tail:
                yield tail
            try:
                code = await asyncio.wait_for(proc.wait(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise ProviderError(504, f"cli command timed out after {self.timeout_s:g} s") from None
            if code != 0:
                stderr = await errors
                log.warning("cli command exited with %s; stderr: %s", code,
                            stderr.decode("utf-8", "replace").strip())
                raise ProviderError(424, f"cli command exited with status {code}")
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                # Drain stdout: a reader paused on a full buffer never sees EOF, and wait()
                # waits for the pipe to close. Bounded, in case a child keeps it open.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(_drain(proc.stdout), 5.0)
                await proc.wait()
            feeder.cancel()
            errors.cancel()
            await asyncio.gather(feeder, errors, return_exceptions=True)


async def _feed(stdin: asyncio.StreamWriter, data: bytes) -> None:
    """Write the prompt and close stdin; a command that stops reading early is fine."""
    try:
        stdin.write(data)
        await stdin.drain()
        stdin.close()
        await stdin.wait_closed()
    except (BrokenPipeError, ConnectionResetError):
        pass


async def _tail(stream: asyncio.StreamReader) -> bytes:
    """Drain stderr (so the command never blocks on it), keeping the last bytes for the log."""
    kept = b""
    while chunk := await stream.read(READ_SIZE):
        kept = (kept + chunk)[-STDERR_KEEP:]
    return kept


async def _drain(stream: asyncio.StreamReader | None) -> None:
    while stream is not None and await stream.read(READ_SIZE):
        pass
