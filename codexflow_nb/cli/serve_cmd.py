"""``codex-flow serve``: the demo endpoint (Starlette + uvicorn) for ``--runtime codex``."""

from __future__ import annotations

import argparse
import ipaddress
import os
import shlex
import signal
import socket
import sys

from ..errors import ConfigError

PROVIDERS = ("echo", "openai", "anthropic", "ollama", "cli", "codex-cli", "claude-code")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the demo endpoint for --runtime codex",
                       description="Serve POST /run (JSON and SSE) for `codex-flow run --runtime "
                                   "codex`. Binds to 127.0.0.1 unless told otherwise.")
    net = p.add_argument_group("network")
    net.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    net.add_argument("--port", type=_port, default=8787, help="port (default 8787; 0 picks one)")
    net.add_argument("--token", default=None,
                     help="bearer token clients must send (default $CODEX_API_KEY; prefer the "
                          "variable, command lines are visible to other users)")
    net.add_argument("--insecure", action="store_true",
                     help="allow a non-loopback --host without a token")
    prov = p.add_argument_group("provider")
    prov.add_argument("--provider", choices=PROVIDERS, default="echo",
                      help="default provider for requests that name none (default echo)")
    prov.add_argument("--model", default=None, help="model for the default provider "
                      "(else $OPENAI_MODEL / $ANTHROPIC_MODEL / $OLLAMA_MODEL)")
    prov.add_argument("--agents-dir", help="agents folder (default: lookup order, see docs)")
    prov.add_argument("--cli-command", default=None,
                      help="command for the cli provider, e.g. \"llm -m mini\"; gets the prompt "
                           "on stdin (no shell) and only PATH, HOME, locale, proxy and "
                           "certificate variables: add more with --pass-env NAME (e.g. "
                           "OPENAI_API_KEY)")
    prov.add_argument("--cli-timeout-s", type=_positive_float, default=120.0,
                      help="cli provider time limit (default 120)")
    prov.add_argument("--cli-max-output-kb", type=_positive_float, default=256.0,
                      help="cli provider output cap (default 256)")
    agent = p.add_argument_group("coding agents (--provider codex-cli | claude-code)")
    agent.add_argument("--agent-bin", metavar="PATH", help="the agent CLI (default: "
                       "$CODEXFLOW_CODEX_BIN / $CODEXFLOW_CLAUDE_BIN, then PATH)")
    agent.add_argument("--agent-model", metavar="MODEL", help="model for every request")
    agent.add_argument("--codex-config", metavar="KEY=VALUE", action="append",
                       help="a Codex setting passed as `-c KEY=VALUE` (repeatable)")
    agent.add_argument("--permission-mode", help="Claude Code permission mode")
    agent.add_argument("--workspace", choices=["worktree", "copy"], default=None,
                       help="each request's workspace (default: worktree in a git repository)")
    agent.add_argument("--repo", default=".", help="the codebase (default .)")
    agent.add_argument("--base", default="HEAD", help="commit workspaces start from")
    agent.add_argument("--workspaces-dir", metavar="PATH", help="where workspaces go")
    agent.add_argument("--runs-dir", metavar="PATH",
                       help="keep each request's transcript and patch here (default: a temp dir)")
    agent.add_argument("--pass-env", metavar="NAME", action="append", default=[],
                       help="also pass this variable to the cli command or agent (repeatable; by "
                            "default only PATH, HOME, locale, proxy and the agent CLI's own "
                            "variables go through)")
    rehearse = p.add_argument_group("rehearsal")
    rehearse.add_argument("--latency-ms", type=_non_negative_float, default=0.0,
                          help="delay before each reply (default 0)")
    rehearse.add_argument("--fail-rate", type=_rate, default=0.0,
                          help="share of requests answered with HTTP 500 (0..1, default 0)")
    rehearse.add_argument("--fail-seed", type=int, default=None,
                          help="seed for --fail-rate, for a repeatable sequence of failures")
    rehearse.add_argument("--chunk-delay-ms", type=_non_negative_float, default=40.0,
                          help="echo provider: pause between streamed chunks (default 40)")
    limits = p.add_argument_group("limits (per connection; docs/RELIABILITY.md)")
    limits.add_argument("--max-connections", type=_positive_int, default=1000,
                        help="open connections; more are answered 503 and closed (default 1000)")
    limits.add_argument("--header-timeout-s", type=_positive_float, default=10.0,
                        help="time for a request head from a connection's first byte "
                             "(default 10)")
    limits.add_argument("--body-timeout-s", type=_positive_float, default=30.0,
                        help="time for a whole request body; 408 after it (default 30)")
    limits.add_argument("--send-timeout-s", type=_positive_float, default=30.0,
                        help="time a reply may wait on a client that does not read it "
                             "(default 30)")
    limits.add_argument("--max-body-kb", type=_positive_float, default=1024.0,
                        help="request body limit; 413 above it (default 1024)")
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.set_defaults(func=cmd_serve)


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("must be 0..65535")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def _rate(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_options(args: argparse.Namespace, token: str | None) -> list[str]:
    """Problems with the options, one line each (empty when the endpoint may start)."""
    problems = []
    if not is_loopback(args.host) and not token and not args.insecure:
        problems.append(f"--host {args.host} is reachable from other machines: set a token "
                        "(--token or $CODEX_API_KEY) or pass --insecure")
    if args.provider == "cli" and not args.cli_command:
        problems.append("--provider cli needs --cli-command")
    if args.cli_command is not None:
        try:
            if not shlex.split(args.cli_command):
                problems.append("--cli-command is empty")
        except ValueError as exc:
            problems.append(f"--cli-command cannot be parsed: {exc}")
    for name in args.pass_env:
        if not name or "=" in name or "\0" in name:
            problems.append(f"--pass-env {name!r}: give a variable name")
    needs = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}.get(args.provider)
    if needs and not os.environ.get(needs):
        problems.append(f"--provider {args.provider} needs ${needs} in the environment")
    return problems


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, so a busy port is a clear error rather than a server log line."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host}: cannot resolve: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    # proto must be IPPROTO_TCP: asyncio only sets TCP_NODELAY on such sockets, and without it
    # every small reply waits ~40 ms for a delayed ACK
    sock = socket.socket(family, kind, proto or socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


def cmd_serve(args: argparse.Namespace) -> int:
    token = args.token or os.environ.get("CODEX_API_KEY") or None
    problems = check_options(args, token)
    if problems:
        raise ConfigError(problems)
    try:
        import httptools  # noqa: F401  (the guarded protocol is httptools')
        import uvicorn

        from ..server.app import ServerLimits, create_app, server_config
    except ImportError as exc:
        raise ConfigError(f"codex-flow serve needs the serve extra ({exc.name} is missing): "
                          "pip install 'codexflow-nb[serve]'") from None
    from ..registry import load_registry

    registry = load_registry(args.agents_dir)
    agent_runtime = _agent_runtime(args)
    app = create_app(registry, provider=args.provider, token=token, latency_ms=args.latency_ms,
                     fail_rate=args.fail_rate, fail_seed=args.fail_seed,
                     chunk_delay_ms=args.chunk_delay_ms, model=args.model,
                     cli_command=shlex.split(args.cli_command) if args.cli_command else None,
                     cli_timeout_s=args.cli_timeout_s,
                     cli_max_output_bytes=int(args.cli_max_output_kb * 1024),
                     agent_runtime=agent_runtime, agent_runs_dir=args.runs_dir,
                     cli_pass_env=args.pass_env, max_body_bytes=int(args.max_body_kb * 1024),
                     limits=ServerLimits(header_timeout_s=args.header_timeout_s,
                                         body_timeout_s=args.body_timeout_s,
                                         send_timeout_s=args.send_timeout_s,
                                         max_connections=args.max_connections))
    sock = bind(args.host, args.port)
    port = sock.getsockname()[1]
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"codex-flow serve: http://{shown}:{port}  provider {args.provider}  "
          f"{len(registry)} agents  auth {'on' if token else 'OFF'}", flush=True)
    print(f"  try: codex-flow run --example --runtime codex --codex-url http://{shown}:{port} "
          "--stream --verbose", flush=True)
    config = server_config(app, log_level="info" if args.access_log else "warning",
                           access_log=args.access_log, timeout_graceful_shutdown=5)
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal: make both
    # end here as a clean stop
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        sock.close()
    print("codex-flow serve: stopped", file=sys.stderr)
    return 0


def _agent_runtime(args: argparse.Namespace) -> object | None:
    """The coding-agent runtime for ``--provider codex-cli|claude-code``, checked now (binary,
    version, repository) so that a problem stops the server before it listens."""
    if args.provider not in ("codex-cli", "claude-code"):
        return None
    from ..runtimes import make_runtime
    from ..runtimes.agent_cli import agent_env

    for name in args.pass_env:
        if not name or "=" in name:
            raise ConfigError(f"--pass-env {name!r}: give a variable name")
    runtime = make_runtime(args.provider, agent_bin=args.agent_bin, agent_model=args.agent_model,
                           codex_config=args.codex_config, permission_mode=args.permission_mode,
                           workspace=args.workspace, repo=args.repo, base=args.base,
                           workspaces_dir=args.workspaces_dir,
                           private=[args.runs_dir] if args.runs_dir else [],
                           env=agent_env(args.provider, args.pass_env))
    for warning in runtime.check():  # type: ignore[attr-defined]
        print(f"codex-flow serve: warning: {warning}", file=sys.stderr)
    return runtime


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
