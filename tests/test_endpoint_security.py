"""The demo endpoint's safety rules, the parts ``test_server.py`` leaves open: where
``codex-flow serve`` listens, how the token is compared, limits and validation on the streaming
route, no request text in any error reply, and the ``cli`` provider taking its command only from
configuration (task text on stdin only; time and output capped, the process killed)."""

from __future__ import annotations

import contextlib
import gc
import hmac
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from servers import ServerThread

from codexflow_nb.registry import Registry
from codexflow_nb.server import create_app

TOKEN = "sec-token-5n2q"
PROBE = "ZZprobe7731ZZ"
GOOD = {"agentId": "reviewer", "alias": "rev", "task": "Review the retry policy"}


# -- where serve listens -------------------------------------------------------------------------
def listening(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp{,6}) of sockets listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as f:
            for line in f.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, hex_port = local.split(":")
                if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                    found.add(address)
    return found


def serve_env(**extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("CODEX_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY")}
    return {**clean, **extra}


@contextlib.contextmanager
def serving(*args: str, env: dict[str, str] | None = None) -> Iterator[tuple[str, int]]:
    """``codex-flow serve --port 0 ARGS``; yields its banner line and port."""
    proc = subprocess.Popen([sys.executable, "-m", "codexflow_nb", "serve", "--port", "0", *args],
                            env=env or serve_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        assert banner.startswith("codex-flow serve: http://"), (banner, proc.stderr and
                                                                  proc.stderr.read())
        port = int(banner.split()[2].rsplit(":", 1)[1])
        # serving, not just bound: a SIGINT before uvicorn's handlers are in place is an
        # interrupted start (exit 130), which is not what these tests are about
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).status_code == 200
        yield banner, port
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0 and "Traceback" not in err, err


def test_serve_listens_on_loopback_by_default() -> None:
    with serving() as (banner, port):
        assert banner.startswith(f"codex-flow serve: http://127.0.0.1:{port} ")
        assert "auth OFF" in banner
        assert listening(port) == {"0100007F"}  # 127.0.0.1, nothing else


def test_serve_insecure_opens_all_interfaces_without_a_token() -> None:
    with serving("--host", "0.0.0.0", "--insecure") as (banner, port):
        assert "auth OFF" in banner
        assert listening(port) == {"00000000"}
        reply = httpx.post(f"http://127.0.0.1:{port}/run", json=GOOD, timeout=10)
        assert reply.status_code == 200  # --insecure really means: no token asked


@pytest.mark.parametrize(("args", "env"), [
    (["--host", "0.0.0.0", "--token", ""], {}),
    (["--host", "0.0.0.0"], {"CODEX_API_KEY": ""}),
    (["--host", "::"], {}),
    (["--host", "192.0.2.7"], {}),
    (["--host", "example.invalid"], {}),
])
def test_serve_refuses_other_interfaces_without_a_token(args: list[str],
                                                         env: dict[str, str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "codexflow_nb", "serve", "--port", "0", *args],
                          capture_output=True, text=True, timeout=60, env=serve_env(**env))
    assert proc.returncode == 2 and proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert f"--host {args[1]} is reachable from other machines: set a token" in line
    assert "--insecure" in line and "Traceback" not in proc.stderr


# -- the token -------------------------------------------------------------------------------------
def test_the_token_is_compared_in_constant_time(registry: Registry,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Every /run request goes through ``hmac.compare_digest`` with the whole header."""
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    presented: list[tuple[bytes | None, int]] = [
        (None, 401), (b"Bearer " + TOKEN[:-1].encode(), 401), (b"Bearer " + TOKEN.encode() + b"0", 401),
        (b"bearer " + TOKEN.encode(), 401), (b"Bearer " + "\u00e9".encode("latin-1"), 401),
        (b"Bearer " + TOKEN.encode(), 200)]
    with ServerThread(create_app(registry, token=TOKEN)) as s, httpx.Client(base_url=s.url) as c:
        for header, status in presented:
            headers = {"authorization": header} if header is not None else {}
            assert c.post("/run", json=GOOD, headers=headers).status_code == status, header
        assert c.get("/health").status_code == 200  # open, and compares nothing
    expected = f"Bearer {TOKEN}".encode()
    assert [b for _, b in calls] == [expected] * len(presented)
    assert [a for a, _ in calls][:4] == [h or b"" for h, _ in presented][:4]
    assert calls[4][0] == "Bearer \u00e9".encode()  # a latin-1 header is compared, not a 500


def test_auth_comes_before_the_body_is_read(registry: Registry) -> None:
    with ServerThread(create_app(registry, token=TOKEN, max_body_bytes=1000)) as s:
        reply = httpx.post(f"{s.url}/run", content=b"x" * 5_000_000, timeout=30)
    assert reply.status_code == 401


# -- limits and validation on the streaming route -------------------------------------------------
@pytest.fixture(scope="module")
def open_url(registry: Registry) -> Iterator[str]:
    with ServerThread(create_app(registry, max_body_bytes=10_000)) as s:
        yield s.url


@pytest.mark.parametrize(("body", "status", "type_"), [
    (json.dumps({**GOOD, "task": "x" * 10_001}).encode(), 413, "PayloadTooLarge"),
    (json.dumps({**GOOD, "alias": 7}).encode(), 422, "ValidationError"),
    (b"{", 422, "ValidationError"),
    (json.dumps({**GOOD, "agentId": "nobody"}).encode(), 404, "UnknownAgent"),
])
def test_stream_route_checks_before_streaming(open_url: str, body: bytes, status: int,
                                              type_: str) -> None:
    reply = httpx.post(f"{open_url}/run?stream=1", content=body, timeout=10)
    assert reply.status_code == status
    assert reply.headers["content-type"] == "application/json"  # an error, not an SSE stream
    assert reply.json()["error"]["type"] == type_


@pytest.mark.parametrize("alias", ["rev\u0000iewer", "rev\udcff", "line\nbreak"])
def test_unprintable_names_are_a_422_not_a_500(open_url: str, alias: str) -> None:
    reply = httpx.post(f"{open_url}/run", content=json.dumps({**GOOD, "alias": alias}), timeout=10)
    assert reply.status_code == 422
    assert reply.json()["error"]["message"] == "alias: must hold printable characters only"


# -- nothing the client sent comes back in an error ------------------------------------------------
def _requests() -> list[tuple[str, str, dict[str, Any]]]:
    task = {**GOOD, "task": PROBE}
    return [
        ("GET", f"/{PROBE}?q={PROBE}", {}),
        ("GET", f"/run?{PROBE}={PROBE}", {}),
        ("POST", "/run", {"headers": {"authorization": f"Bearer {PROBE}"}, "json": task}),
        ("POST", "/run", {"content": json.dumps({**task, "pad": "x" * 20_000})}),
        ("POST", "/run", {"content": f'{{"{PROBE}": "{PROBE}"'}),
        ("POST", "/run", {"json": {PROBE: PROBE}}),
        ("POST", "/run", {"json": {**task, "agentId": PROBE}}),
        ("POST", "/run?stream=1", {"json": {**task, "agentId": f"{PROBE}/{PROBE}"}}),
        ("POST", "/run", {"json": {**task, "provider": PROBE}}),
        ("POST", "/run", {"json": {**task, "context": PROBE}}),
        ("POST", "/run", {"json": {**task, "provider": "openai"}}),  # not configured: 400
        ("POST", "/run", {"headers": {"content-type": PROBE, "x-probe": PROBE},
                          "content": PROBE}),
        # a NUL byte (for the cli command's environment) and a lone surrogate in the alias:
        # both end as a 500 "internal error" today (422 would be better); neither is quoted
        ("POST", "/run", {"json": {**task, "alias": f"{PROBE}\u0000", "provider": "cli"}}),
        ("POST", "/run", {"content": json.dumps({**task, "alias": f"{PROBE}\udcff"})}),
    ]


@pytest.mark.parametrize(("method", "path", "kw"), _requests(),
                         ids=[f"{i}-{m}-{p.split('?')[0][:12]}" for i, (m, p, _) in
                              enumerate(_requests())])
def test_error_replies_never_reflect_the_request(registry: Registry, method: str, path: str,
                                                 kw: dict[str, Any]) -> None:
    app = create_app(registry, token=TOKEN, max_body_bytes=10_000, env={},
                     cli_command=[sys.executable, "-c", "import sys; sys.stdin.read()"])
    headers = {"authorization": f"Bearer {TOKEN}", **kw.pop("headers", {})}
    with ServerThread(app) as s:
        reply = httpx.request(method, s.url + path, headers=headers, timeout=10, **kw)
    assert reply.status_code >= 400
    assert PROBE not in reply.text and PROBE not in str(reply.headers).replace(
        "x-probe", ""), (reply.status_code, reply.text)


def test_cli_failures_do_not_quote_what_the_command_printed(registry: Registry) -> None:
    """A command that echoes its prompt (the task) to stderr and fails: the reply says only
    that it failed, on the JSON route and in the SSE error event."""
    script = "import sys; sys.stderr.write(sys.stdin.read()); sys.exit(5)"
    app = create_app(registry, provider="cli", cli_command=[sys.executable, "-c", script])
    with ServerThread(app) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        plain = c.post("/run", json={**GOOD, "task": PROBE})
        streamed = c.post("/run?stream=1", json={**GOOD, "task": PROBE})
    assert plain.status_code == 424
    assert plain.json()["error"]["message"] == "cli command exited with status 5"
    assert streamed.status_code == 424  # failed before any output: an HTTP error, no stream
    assert PROBE not in plain.text and PROBE not in streamed.text


# -- the cli provider ------------------------------------------------------------------------------
REPORT = ("import json, os, sys; data = sys.stdin.read(); "
          "print(json.dumps({'argv': sys.argv[1:], 'stdin': data, "
          "'env': {k: v for k, v in os.environ.items() if k.startswith('CODEXFLOW_')}}))")


def test_cli_command_comes_from_configuration_only(registry: Registry, workdir: Path) -> None:
    configured = [sys.executable, "-c", REPORT, "--fixed", "arg"]
    body = {**GOOD, "task": f"{PROBE} $(touch pwned); `touch pwned2`", "provider": "cli",
            "command": ["touch", "pwned3"], "cli_command": "touch pwned4", "args": ["--evil"],
            "argv": ["x"], "shell": True}
    with ServerThread(create_app(registry, provider="echo", cli_command=configured)) as s:
        reply = httpx.post(f"{s.url}/run", json=body, timeout=30)
    assert reply.status_code == 200
    seen = json.loads(reply.json()["output"]["text"])
    assert seen["argv"] == ["--fixed", "arg"]  # exactly the configured arguments
    assert seen["stdin"].rstrip().endswith(body["task"])  # the task arrives on stdin ...
    assert PROBE not in json.dumps(seen["argv"]) + json.dumps(seen["env"])  # ... and only there
    assert seen["env"] == {"CODEXFLOW_AGENT_ID": "reviewer", "CODEXFLOW_ALIAS": "rev"}
    assert not any((workdir / f"pwned{n}").exists() for n in ("", "2", "3", "4"))


def test_an_unconfigured_cli_provider_runs_nothing(registry: Registry, workdir: Path) -> None:
    body = {**GOOD, "provider": "cli", "command": ["touch", "pwned"], "cli_command": "touch pwned"}
    with ServerThread(create_app(registry)) as s:
        reply = httpx.post(f"{s.url}/run", json=body, timeout=10)
    assert reply.status_code == 400
    assert reply.json()["error"]["message"].startswith("provider 'cli' is not configured")
    assert not (workdir / "pwned").exists()


#: Output without end. With a cap well above the pipe reader's 128 KiB pause threshold, the
#: command is killed while unread output is still buffered: the reply must still come.
FLOOD = "[sys.stdout.write('x' * 4096) for _ in iter(int, 1)]"


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize(("script", "kw", "status", "stream"), [
    ("time.sleep(30)", {"cli_timeout_s": 0.5}, 504, False),
    ("print('partial', flush=True); time.sleep(30)", {"cli_timeout_s": 0.5}, 504, True),
    (FLOOD, {"cli_max_output_bytes": 500_000}, 424, False),
    (FLOOD, {"cli_max_output_bytes": 500_000}, 424, True),
], ids=["timeout-json", "timeout-sse", "output-cap-json", "output-cap-sse"])
def test_cli_limits_kill_the_command(registry: Registry, tmp_path: Path, script: str,
                                     kw: dict[str, Any], status: int, stream: bool) -> None:
    pid_file = tmp_path / "pid"
    code = (f"import os, sys, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); "
            f"sys.stdin.read(); {script}")
    app = create_app(registry, provider="cli", cli_command=[sys.executable, "-c", code], **kw)
    with ServerThread(app) as s:
        try:
            reply = httpx.post(f"{s.url}/run{'?stream=1' if stream else ''}", json=GOOD,
                               timeout=15)
        except httpx.ReadTimeout:
            reply = None
        pid = int(pid_file.read_text())
        deadline = time.monotonic() + 10  # killed and reaped, not left running
        while not gone(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    # a transport left behind by a hung handler must be collected here, not while pytest
    # parses sources for its report (CPython 3.11.7 then fails with a SystemError)
    gc.collect()
    assert gone(pid)
    assert reply is not None, "no reply within 15 s: the endpoint hung after the limit struck"
    if stream:  # the command printed first, so the stream had started: an error event ends it
        assert reply.status_code == 200
        last = json.loads(reply.text.strip().split("\n\n")[-1][len("data: "):])
        assert last["event"] == "error" and last["status"] == status
    else:
        assert reply.status_code == status


def test_serve_cli_options_reach_the_provider(tmp_path: Path) -> None:
    """``--cli-command`` is split like a shell would but never run by one; ``--cli-timeout-s``
    and ``--cli-max-output-kb`` cap it."""
    script = ("import sys, time, json; t = sys.stdin.read(); "
              "time.sleep(30) if 'SLEEP' in t else print('y' * 3000 if 'FLOOD' in t "
              "else json.dumps(sys.argv[1:]))")
    command = f"{sys.executable} -c \"{script}\" ; touch {tmp_path / 'pwned'}"
    with serving("--provider", "cli", "--cli-command", command, "--cli-timeout-s", "0.5",
                 "--cli-max-output-kb", "1") as (_, port), \
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
        ok = c.post("/run", json=GOOD)
        slow = c.post("/run", json={**GOOD, "task": "SLEEP"})
        flood = c.post("/run", json={**GOOD, "task": "FLOOD"})
    assert ok.status_code == 200
    assert json.loads(ok.json()["output"]["text"]) == [";", "touch", str(tmp_path / "pwned")]
    assert not (tmp_path / "pwned").exists()
    assert slow.status_code == 504
    assert slow.json()["error"]["message"] == "cli command timed out after 0.5 s"
    assert flood.status_code == 424
    assert flood.json()["error"]["message"] == "cli command output exceeded 1024 bytes"
