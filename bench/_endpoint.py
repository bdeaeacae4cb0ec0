"""Start the demo endpoint (`codex-flow serve`) in its own process for a benchmark."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def endpoint(latency_ms: float = 0.0, *extra: str) -> Iterator[str]:
    """Yield the base URL of a running `codex-flow serve` (echo provider) on a free port."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "codexflow_nb", "serve", "--port", str(port),
         "--latency-ms", str(latency_ms), "--chunk-delay-ms", "0", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=1) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"endpoint did not start: {proc.stderr.read().decode()[-500:]}")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


RAW_SERVER = r"""
import asyncio, sys
try:
    import uvloop
except ImportError:
    uvloop = None
port, latency = int(sys.argv[1]), float(sys.argv[2]) / 1000
BODY = b'{"summary": "ok", "output": {}}'
REPLY = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
         % len(BODY)) + BODY

async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length")), 0)
            await reader.readexactly(length)
            await asyncio.sleep(latency)
            writer.write(REPLY)
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    print("ready", flush=True)
    await server.serve_forever()

(uvloop.run if uvloop else asyncio.run)(main())
"""


@contextlib.contextmanager
def raw_endpoint(latency_ms: float) -> Iterator[str]:
    """Yield the URL of a minimal HTTP server (asyncio streams, uvloop when installed) that
    answers every request after ``latency_ms``: the floor for any client on this machine."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", RAW_SERVER, str(port), str(latency_ms)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()
