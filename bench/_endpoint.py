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
