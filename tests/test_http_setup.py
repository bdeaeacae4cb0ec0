"""Your own HTTP setup for the codex runtime: proxies from the environment (HTTPS_PROXY,
HTTP_PROXY, NO_PROXY, lower-case too; --no-proxy-env), a private CA (--ca-bundle,
SSL_CERT_FILE), and the user's own client (an httpx.AsyncClient or an aiohttp.ClientSession,
passed as http_client=) with the same reply handling as our session.

Everything runs on 127.0.0.1: a real forward proxy (proxy.py, from PyPI) in its own process,
the demo endpoint over plain HTTP and over TLS with a certificate from a test CA made here
(trustme), and a misbehaving endpoint for the error mapping.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
import trustme
import uvicorn
from servers import ServerThread, closed_port, misbehaving_app

from codexflow_nb.api import prepare_run, run_async
from codexflow_nb.errors import ConfigError
from codexflow_nb.httpclient import env_proxy
from codexflow_nb.registry import Registry
from codexflow_nb.runtimes import make_runtime
from codexflow_nb.runtimes.codex import CodexRuntime
from codexflow_nb.server import create_app

ONE = {"reviewer": ["Review engine.py for races"]}
TWO = {"reviewer": ["Review engine.py for races", "Review the task-map parser"]}
TOKEN = "sk-test-http-setup-Zq81"
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy or CA variable from the machine leaks into a test."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    for name in ("SSL_CERT_FILE", "CODEX_URL", "CODEX_API_KEY"):
        monkeypatch.delenv(name, raising=False)


# -- servers --------------------------------------------------------------------------------
class TLSServerThread(ServerThread):
    """:class:`ServerThread` serving HTTPS with ``cert`` (a PEM with the key and the chain)."""

    def __init__(self, app: Any, cert: Path) -> None:
        super().__init__(app)
        config = uvicorn.Config(app, log_level="warning", access_log=False,
                                timeout_graceful_shutdown=1, lifespan="auto",
                                ssl_certfile=str(cert), ssl_keyfile=str(cert))
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._sock]},
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"


class ForwardProxy:
    """proxy.py in its own process on a free 127.0.0.1 port; its access log says what went
    through it (``POST 127.0.0.1:PORT/run`` for plain HTTP, ``CONNECT 127.0.0.1:PORT`` for a
    TLS tunnel)."""

    def __init__(self, folder: Path) -> None:
        self.log = folder / "proxy.log"
        port_file = folder / "proxy.port"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "proxy", "--hostname", "127.0.0.1", "--port", "0",
             "--port-file", str(port_file), "--num-workers", "1", "--num-acceptors", "1",
             "--log-file", str(self.log), "--log-level", "INFO"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("proxy.py did not start")
            time.sleep(0.05)
        self.port = int(port_file.read_text().split()[0])
        self.url = f"http://127.0.0.1:{self.port}"
        self._sentinels = 0

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def mark(self) -> int:
        return len(self.text())

    def wait_for(self, pattern: str, since: int, count: int = 1, timeout: float = 10.0) -> int:
        """How many access-log lines since ``since`` match ``pattern``, once there are ``count``
        (the proxy logs a request when it is done, a tunnel when it closes)."""
        deadline = time.monotonic() + timeout
        while True:
            found = len(re.findall(pattern, self.text()[since:]))
            if found >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def settled(self, via: str) -> None:
        """Send one request through the proxy and wait until it is logged: whatever went
        through the proxy before it has been logged too (its connections are closed)."""
        self._sentinels += 1
        name = f"sentinel-{self._sentinels}"
        since = self.mark()

        async def probe() -> None:
            async with aiohttp.ClientSession() as session, \
                    session.get(f"{via}/{name}", proxy=self.url) as response:
                await response.read()

        asyncio.run(probe())
        assert self.wait_for(name, since), "the proxy did not log the sentinel request"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:  # pragma: no cover
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def certs(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("certs")
    server = ca.issue_cert("127.0.0.1", "localhost")
    paths = {"ca": folder / "ca.pem", "server": folder / "server.pem",
             "not_pem": folder / "notes.txt"}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    server.private_key_and_cert_chain_pem.write_to_path(str(paths["server"]))
    paths["not_pem"].write_text("this is not a certificate\n")
    return paths


@pytest.fixture(scope="module")
def echo_url(registry: Registry) -> Iterator[str]:
    with ServerThread(create_app(registry)) as server:
        yield server.url


@pytest.fixture(scope="module")
def tls_url(registry: Registry, certs: dict[str, Path]) -> Iterator[str]:
    with TLSServerThread(create_app(registry, chunk_delay_ms=1), certs["server"]) as server:
        yield server.url


@pytest.fixture(scope="module")
def auth_url(registry: Registry) -> Iterator[str]:
    with ServerThread(create_app(registry, token=TOKEN)) as server:
        yield server.url


@pytest.fixture(scope="module")
def bad_url() -> Iterator[str]:
    with ServerThread(misbehaving_app()) as server:
        yield server.url


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ForwardProxy]:
    forward = ForwardProxy(tmp_path_factory.mktemp("proxy"))
    try:
        yield forward
    finally:
        forward.close()


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def proxied_runs(url: str) -> str:
    """The access-log pattern of a request for ``url`` through the proxy."""
    port = port_of(url)
    return (rf"CONNECT 127\.0\.0\.1:{port}\b" if url.startswith("https")
            else rf"POST 127\.0\.0\.1:{port}/run")


def client_ctx(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


def run(tasks: dict[str, list[str]], url: str, **options: Any) -> Any:
    options.setdefault("backoff_base_ms", 5)
    return asyncio.run(run_async(tasks, runtime="codex", url=url, log_file=None, runs_dir=None,
                                 **options))


def failure(result: Any) -> dict[str, Any]:
    (task,) = result.tasks
    assert not task.ok
    return {**task.error, "attempts": task.attempts, "status": task.status}


# -- the proxy variables, read as curl and httpx read them ----------------------------------
@pytest.mark.parametrize("lower", [False, True])
def test_env_proxy_follows_the_usual_rules(monkeypatch: pytest.MonkeyPatch, lower: bool) -> None:
    def setenv(name: str, value: str) -> None:
        monkeypatch.setenv(name.lower() if lower else name, value)

    assert env_proxy("http://api.example.com") is None
    setenv("HTTP_PROXY", "http://plain:3128")
    setenv("HTTPS_PROXY", "http://tls:3129")
    assert env_proxy("http://api.example.com/v1").url == "http://plain:3128"
    assert env_proxy("https://api.example.com/v1").url == "http://tls:3129"
    setenv("NO_PROXY", "localhost,.internal.example,api.example.com:8443, 10.1.2.3")
    assert env_proxy("http://localhost:8787") is None
    assert env_proxy("https://models.internal.example") is None  # a domain suffix
    assert env_proxy("https://api.example.com:8443") is None  # host:port
    assert env_proxy("https://api.example.com").url == "http://tls:3129"  # another port
    assert env_proxy("http://10.1.2.3:8787") is None
    setenv("NO_PROXY", "*")
    assert env_proxy("https://api.example.com") is None


def test_env_proxy_details(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALL_PROXY", "proxy.corp:8080")  # no scheme: http, as curl reads it
    assert env_proxy("https://api.example.com").url == "http://proxy.corp:8080"
    monkeypatch.setenv("HTTPS_PROXY", "http://UPPER:1")
    monkeypatch.setenv("https_proxy", "http://lower:2")  # lower-case wins
    assert env_proxy("https://api.example.com").url == "http://lower:2"
    monkeypatch.setenv("https_proxy", "http://me:p%40ss@proxy.corp:3128")
    proxy = env_proxy("https://api.example.com")
    assert proxy.url == "http://proxy.corp:3128"  # credentials never in a message
    assert proxy.headers == {"Proxy-Authorization": "Basic bWU6cEBzcw=="}  # me:p@ss
    monkeypatch.setenv("https_proxy", "socks5://me:secret@proxy.corp:1080")
    with pytest.raises(ConfigError, match="not an http:// or https:// proxy") as info:
        env_proxy("https://api.example.com")
    assert "secret" not in str(info.value) and "--no-proxy-env" in str(info.value)


# -- our own session through a real proxy -----------------------------------------------------
@pytest.mark.parametrize("lower", [False, True])
def test_http_proxy_carries_the_requests(monkeypatch: pytest.MonkeyPatch, proxy: ForwardProxy,
                                         echo_url: str, lower: bool) -> None:
    monkeypatch.setenv("http_proxy" if lower else "HTTP_PROXY", proxy.url)
    since = proxy.mark()
    result = run(TWO, echo_url)
    assert result.ok, result.summary()
    assert proxy.wait_for(proxied_runs(echo_url), since, 2) == 2  # one logged POST per task


@pytest.mark.parametrize("stream", [False, True])
def test_https_proxy_tunnels_to_a_tls_endpoint(monkeypatch: pytest.MonkeyPatch,
                                               proxy: ForwardProxy, tls_url: str,
                                               certs: dict[str, Path], stream: bool) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{closed_port()}")  # not for https
    since = proxy.mark()
    result = run(TWO, tls_url, ca_bundle=str(certs["ca"]), stream=stream)
    assert result.ok, result.summary()
    assert proxy.wait_for(proxied_runs(tls_url), since) >= 1
    if stream:
        assert all(t.output for t in result.tasks)


@pytest.mark.parametrize("lower", [False, True])
def test_no_proxy_bypasses_the_proxy(monkeypatch: pytest.MonkeyPatch, proxy: ForwardProxy,
                                     echo_url: str, lower: bool) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("no_proxy" if lower else "NO_PROXY", "example.com,127.0.0.1")
    since = proxy.mark()
    assert run(TWO, echo_url).ok
    proxy.settled(echo_url)
    assert re.findall(proxied_runs(echo_url), proxy.text()[since:]) == []


def test_proxy_env_false_ignores_the_variables(monkeypatch: pytest.MonkeyPatch,
                                              proxy: ForwardProxy, echo_url: str) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    since = proxy.mark()
    assert run(TWO, echo_url, proxy_env=False).ok
    proxy.settled(echo_url)
    assert re.findall(proxied_runs(echo_url), proxy.text()[since:]) == []


def test_an_unreachable_proxy_says_so(monkeypatch: pytest.MonkeyPatch, echo_url: str) -> None:
    dead = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("HTTP_PROXY", dead)
    error = failure(run(ONE, echo_url, retries=0))
    assert error["type"] == "ConnectionError"
    assert error["message"] == f"cannot reach {echo_url} via proxy {dead} (connection refused)"


# -- certificates -------------------------------------------------------------------------------
@pytest.mark.parametrize("stream", [False, True])
def test_an_untrusted_certificate_fails_clearly_without_retry(tls_url: str, stream: bool) -> None:
    error = failure(run(ONE, tls_url, retries=3, stream=stream))
    assert error["type"] == "CertificateError" and error["attempts"] == 1
    assert error["message"] == (
        f"TLS certificate of {tls_url} not trusted (unable to get local issuer certificate): "
        "pass --ca-bundle PATH or set SSL_CERT_FILE (Python: ca_bundle=)")


def test_the_ca_bundle_makes_it_pass(tls_url: str, certs: dict[str, Path]) -> None:
    result = run(TWO, tls_url, ca_bundle=str(certs["ca"]))
    assert result.ok, result.summary()
    assert [t.attempts for t in result.tasks] == [1, 1]


def test_ssl_cert_file_makes_it_pass(monkeypatch: pytest.MonkeyPatch, tls_url: str,
                                     certs: dict[str, Path]) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certs["ca"]))
    assert run(ONE, tls_url).ok


@pytest.mark.parametrize(("which", "problem"), [
    ("missing", "no such file"),
    ("not_pem", "not a PEM file of CA certificates"),
    ("folder", "is a directory"),
])
def test_a_bad_ca_bundle_is_a_config_error(certs: dict[str, Path], which: str,
                                           problem: str) -> None:
    path = {"missing": certs["ca"].parent / "missing.pem", "folder": certs["ca"].parent}.get(
        which, certs.get(which))
    with pytest.raises(ConfigError) as info:
        CodexRuntime("https://127.0.0.1:8443", ca_bundle=str(path))
    assert str(info.value) == f"--ca-bundle {path}: " + str(info.value).split(": ", 1)[1]
    assert problem in str(info.value) and "\n" not in str(info.value)


def test_ssl_cert_file_is_checked_for_https_only(monkeypatch: pytest.MonkeyPatch,
                                                 certs: dict[str, Path]) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certs["not_pem"]))
    CodexRuntime("http://127.0.0.1:8787")  # plain http: the variable is not ours to judge
    with pytest.raises(ConfigError, match=r"^\$SSL_CERT_FILE .*notes\.txt: not a PEM file"):
        CodexRuntime("https://127.0.0.1:8443")
    CodexRuntime("https://127.0.0.1:8443", ca_bundle=str(certs["ca"]))  # the flag wins


# -- the CLI ----------------------------------------------------------------------------------
def cli(workdir: Path, *args: str, env: dict[str, str] | None = None,
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "codexflow_nb", "run", "-f", "tasks.json",
                           "--runtime", "codex", "--retries", "0", *args],
                          capture_output=True, text=True, timeout=120, cwd=workdir,
                          env={**os.environ, **(env or {})})


@pytest.fixture
def cli_dir(workdir: Path) -> Path:
    (workdir / "tasks.json").write_text(json.dumps(TWO))
    return workdir


def test_cli_honours_the_proxy_variables_and_no_proxy_env(cli_dir: Path, proxy: ForwardProxy,
                                                          echo_url: str) -> None:
    since = proxy.mark()
    proc = cli(cli_dir, "--codex-url", echo_url, env={"HTTP_PROXY": proxy.url})
    assert proc.returncode == 0, proc.stderr
    assert proxy.wait_for(proxied_runs(echo_url), since, 2) == 2
    since = proxy.mark()
    proc = cli(cli_dir, "--codex-url", echo_url, "--no-proxy-env", env={"HTTP_PROXY": proxy.url})
    assert proc.returncode == 0, proc.stderr
    proxy.settled(echo_url)
    assert re.findall(proxied_runs(echo_url), proxy.text()[since:]) == []


def test_cli_ca_bundle(cli_dir: Path, tls_url: str, certs: dict[str, Path]) -> None:
    proc = cli(cli_dir, "--codex-url", tls_url)
    assert proc.returncode == 1
    assert "TLS certificate of" in proc.stdout + proc.stderr
    proc = cli(cli_dir, "--codex-url", tls_url, "--ca-bundle", str(certs["ca"]))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = cli(cli_dir, "--codex-url", tls_url, env={"SSL_CERT_FILE": str(certs["ca"])})
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(("args", "env", "expected"), [
    (("--ca-bundle", "missing.pem"), {}, "--ca-bundle missing.pem: no such file"),
    (("--ca-bundle", "tasks.json"), {}, "--ca-bundle tasks.json: not a PEM file of CA certificates"),
    ((), {"SSL_CERT_FILE": "gone.pem"}, "$SSL_CERT_FILE gone.pem: no such file"),
    ((), {"HTTPS_PROXY": "socks5://127.0.0.1:1080"}, "is not an http:// or https:// proxy"),
])
def test_cli_bad_certificate_or_proxy_setup_is_one_line_exit_2(
        cli_dir: Path, args: tuple[str, ...], env: dict[str, str], expected: str) -> None:
    proc = cli(cli_dir, "--codex-url", "https://127.0.0.1:8443", *args, env=env)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], proc.stderr
    assert not (cli_dir / ".runs").exists()


# -- the user's own client ------------------------------------------------------------------------
def test_an_httpx_client_with_proxy_and_verify(proxy: ForwardProxy, tls_url: str,
                                               certs: dict[str, Path]) -> None:
    async def main() -> Any:
        async with httpx.AsyncClient(proxy=proxy.url, verify=client_ctx(certs["ca"]),
                                     trust_env=False) as client:
            result = await run_async(TWO, runtime="codex", url=tls_url, http_client=client,
                                     stream=True)
            assert not client.is_closed  # ours to use, not to close
            response = await client.get(f"{tls_url}/health")  # still usable
            return result, response.status_code

    since = proxy.mark()
    result, status = asyncio.run(main())
    assert result.ok, result.summary()
    assert all(t.output for t in result.tasks) and status in (200, 404)
    assert proxy.wait_for(proxied_runs(tls_url), since) >= 1


def test_an_httpx_client_that_does_not_trust_the_ca(tls_url: str) -> None:
    async def main() -> Any:
        async with httpx.AsyncClient(trust_env=False) as client:
            return await run_async(ONE, runtime="codex", url=tls_url, http_client=client,
                                   retries=2)

    error = failure(asyncio.run(main()))
    assert error["type"] == "CertificateError" and error["attempts"] == 1
    assert error["message"] == (f"TLS certificate of {tls_url} not trusted (unable to get local "
                                "issuer certificate): configure the certificates of your httpx "
                                "client")


def test_an_aiohttp_session_with_proxy_and_ssl(proxy: ForwardProxy, tls_url: str,
                                               certs: dict[str, Path]) -> None:
    async def main() -> Any:
        connector = aiohttp.TCPConnector(ssl=client_ctx(certs["ca"]))
        async with aiohttp.ClientSession(connector=connector, proxy=proxy.url,
                                         raise_for_status=True) as session:
            result = await run_async(TWO, runtime="codex", url=tls_url, http_client=session)
            assert not session.closed
            return result

    since = proxy.mark()
    result = asyncio.run(main())
    assert result.ok, result.summary()
    assert proxy.wait_for(proxied_runs(tls_url), since) >= 1


def test_an_aiohttp_session_with_trust_env_reads_the_proxy_itself(
        monkeypatch: pytest.MonkeyPatch, proxy: ForwardProxy, echo_url: str) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)

    async def main() -> Any:
        async with aiohttp.ClientSession(trust_env=True) as session:
            return await run_async(TWO, runtime="codex", url=echo_url, http_client=session)

    since = proxy.mark()
    assert asyncio.run(main()).ok
    assert proxy.wait_for(proxied_runs(echo_url), since, 2) == 2


def test_a_session_from_another_loop_is_refused(echo_url: str) -> None:
    async def make() -> aiohttp.ClientSession:
        return aiohttp.ClientSession()

    session = asyncio.run(make())
    try:
        with pytest.raises(ConfigError, match="belongs to another event loop"):
            run(ONE, echo_url, http_client=session)
    finally:
        session._connector = None  # its loop is gone: nothing to close


@pytest.mark.parametrize("kind", ["httpx", "aiohttp"])
def test_the_api_key_or_the_clients_own_auth(auth_url: str, kind: str) -> None:
    async def main(headers: dict[str, str], api_key: str | None) -> Any:
        client: Any = (httpx.AsyncClient(headers=headers) if kind == "httpx"
                       else aiohttp.ClientSession(headers=headers))
        try:
            return await run_async(ONE, runtime="codex", url=auth_url, http_client=client,
                                   api_key=api_key)
        finally:
            await (client.aclose() if kind == "httpx" else client.close())

    assert asyncio.run(main({}, TOKEN)).ok  # our bearer token on their client
    own = {"Authorization": f"Bearer {TOKEN}"}
    assert asyncio.run(main(own, "sk-other-key")).ok  # their header wins, no clash
    assert failure(asyncio.run(main({}, None)))["message"].startswith("HTTP 401")


def test_bad_http_clients_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="not httpx.Client \\(a synchronous client\\)"):
        CodexRuntime("http://127.0.0.1:1", http_client=httpx.Client())
    with pytest.raises(ConfigError, match="must be an aiohttp.ClientSession or an httpx"):
        CodexRuntime("http://127.0.0.1:1", http_client="http://proxy")
    closed = httpx.AsyncClient()
    asyncio.run(closed.aclose())
    with pytest.raises(ConfigError, match="is closed"):
        CodexRuntime("http://127.0.0.1:1", http_client=closed)
    with pytest.raises(ConfigError, match="configure certificates and proxies on the http_client"):
        CodexRuntime("https://127.0.0.1:1", http_client=httpx.AsyncClient(), ca_bundle="ca.pem")
    runtime = make_runtime("codex", url="http://127.0.0.1:1", http_client=httpx.AsyncClient(),
                           proxy_env=True, ca_bundle=None)
    assert runtime.http_client is not None


# -- one reply handling, whatever the client ------------------------------------------------------
CLIENTS = ["ours", "aiohttp", "httpx"]


def run_with(kind: str, tasks: dict[str, list[str]], url: str, **options: Any) -> Any:
    """A run through our session or a plain client of ``kind`` made for it."""
    async def main() -> Any:
        client: Any = None
        if kind == "httpx":
            client = httpx.AsyncClient(trust_env=False)
        elif kind == "aiohttp":
            client = aiohttp.ClientSession()
        try:
            return await run_async(tasks, runtime="codex", url=url, log_file=None, runs_dir=None,
                                   backoff_base_ms=5, **({"http_client": client} if client else {}),
                                   **options)
        finally:
            if client is not None:
                await (client.aclose() if kind == "httpx" else client.close())

    return asyncio.run(main())


def outcome(result: Any) -> list[tuple[Any, ...]]:
    return [(t.status, t.attempts, (t.error or {}).get("type"), (t.error or {}).get("message"),
             (t.error or {}).get("status"), t.summary) for t in result.tasks]


@pytest.mark.parametrize(("case", "fault", "options"), [
    ("json", None, {}),
    ("sse", None, {"stream": True}),
    ("reply cap", None, {"max_reply_bytes": 40}),
    ("event cap", None, {"stream": True, "max_event_bytes": 30}),
    ("404", "notfound", {"retries": 2}),
    ("500 then ok", "flaky", {}),
    ("not JSON", "malformed", {}),
    ("bad shape", "badshape", {}),
    ("stream cut", "cut", {"stream": True, "retries": 0}),
    ("stream error", "streamerror", {"stream": True}),
    ("slow", "slow", {"timeout_ms": 300}),
    ("slow stream", "slow", {"timeout_ms": 300, "stream": True}),
    ("refused", "refused", {"retries": 1}),
])
def test_every_client_reads_replies_the_same(echo_url: str, bad_url: str, case: str,
                                             fault: str | None, options: dict[str, Any]) -> None:
    if fault == "refused":
        url = f"http://127.0.0.1:{closed_port()}"
    else:
        url = f"{bad_url}/{fault}" if fault else echo_url
    results = {}
    for kind in CLIENTS:
        if fault == "flaky":  # it fails each task's first attempt: a fresh one per client
            with ServerThread(misbehaving_app()) as fresh:
                results[kind] = outcome(run_with(kind, ONE, f"{fresh.url}/flaky", **options))
        else:
            results[kind] = outcome(run_with(kind, ONE, url, **options))
    assert results["aiohttp"] == results["ours"], case
    assert results["httpx"] == results["ours"], case
    if case in ("reply cap", "event cap"):
        assert results["ours"][0][2] == "ReplyTooLarge"
    if case == "refused":
        assert results["ours"][0][3] == f"cannot reach {url} (connection refused)"


# -- the dashboard --------------------------------------------------------------------------------
def test_the_dashboard_passes_http_client_through(proxy: ForwardProxy, echo_url: str) -> None:
    pytest.importorskip("ipywidgets")
    from codexflow_nb.widgets.dashboard import dashboard

    async def main() -> Any:
        async with httpx.AsyncClient(proxy=proxy.url, trust_env=False) as client:
            dash = dashboard(TWO, runtime="codex", url=echo_url, http_client=client,
                             log_file=None, runs_dir=None)
            try:
                prepared = dash.panel.prepare()
                assert prepared.engine.runtime.http_client is client
                return await prepared.execute()
            finally:
                dash.close()

    since = proxy.mark()
    result = asyncio.run(main())
    assert result.ok, result.summary()
    assert proxy.wait_for(proxied_runs(echo_url), since, 2) == 2


def test_prepare_run_accepts_the_options(echo_url: str, certs: dict[str, Path]) -> None:
    prepared = prepare_run(ONE, runtime="codex", url=echo_url, proxy_env=False,
                           ca_bundle=str(certs["ca"]), log_file=None, runs_dir=None)
    assert prepared.engine.runtime.proxy is None
