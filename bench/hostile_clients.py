"""Hostile clients against `codex-flow serve`: 200 connections that each send one endless header
line, trickle a request head, or trickle a request body. Reported: /health latency and the
server's peak RSS during each attack, as ratios against a baseline measured in the same run
with no attack, and how long the server let each hostile connection live.

All traffic goes to 127.0.0.1. The full run uses the default limits (head 10 s, body 30 s) and
takes about 70 s; --short sets both timeouts to 2 s and takes about 20 s. The last line is the
verdict: /health p95 under attack within 100 ms and its max within 1 s (before the limits, one
endless header made it time out at 2 s), peak RSS within baseline + 50 MB (before: +200-300 MB),
and no hostile connection alive longer than its timeout + 2 s (before: for good).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator

from _common import header, parser, table, verdict

CONNECTIONS = 200
HEALTH_P95_BOUND_S = 0.100
HEALTH_MAX_BOUND_S = 1.0
RSS_BOUND_KB = 50_000
SLACK_S = 2.0

#: The attacker: one process, CONNECTIONS asyncio connections doing MODE for WINDOW seconds,
#: each reconnecting when the server hangs up; prints what happened as one JSON line.
ATTACKER = r"""
import asyncio, json, sys, time
port, mode, n, window = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
lifetimes, still_open, opened = [], [], 0

async def one():
    global opened
    end = time.monotonic() + window
    while time.monotonic() < end:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        opened += 1
        born = time.monotonic()
        if mode == "endless-header":
            head = b"GET /health HTTP/1.1\r\nhost: x\r\nx-endless: "
        elif mode == "trickled-head":
            head = b"GET /health HTTP/1.1\r\nhost: x\r\n"
        else:
            head = (b"POST /run HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                    b"content-length: 100000\r\n\r\n{")
        closed = asyncio.ensure_future(reader.read())  # b"" (or an error) when the server closes
        dropped = False
        try:
            writer.write(head)
            while time.monotonic() < end and not closed.done():
                if mode == "endless-header":
                    writer.write(b"a" * 65536)
                    await writer.drain()
                else:
                    writer.write(b"x" if mode == "trickled-head" else b" ")
                    await asyncio.wait([closed], timeout=1.0)
        except OSError:
            dropped = True
        if dropped or closed.done():
            lifetimes.append(time.monotonic() - born)
        else:
            still_open.append(time.monotonic() - born)
        closed.cancel()
        writer.close()

async def main():
    await asyncio.gather(*(one() for _ in range(n)))

print("ready", flush=True)
asyncio.run(main())
print(json.dumps({"opened": opened, "dropped": len(lifetimes),
                  "max_life": max(lifetimes, default=0.0),
                  "open_at_end": len(still_open), "oldest_open": max(still_open, default=0.0)}))
"""


@contextlib.contextmanager
def server(*extra: str) -> Iterator[tuple[int, int]]:
    """`codex-flow serve --port 0 EXTRA`: yields (port, pid)."""
    proc = subprocess.Popen([sys.executable, "-m", "codexflow_nb", "serve", "--port", "0", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        if not banner.startswith("codex-flow serve: http://"):
            raise RuntimeError(f"serve did not start: {proc.stderr.read() if proc.stderr else ''}")
        port = int(banner.split()[2].rsplit(":", 1)[1])
        health(port, timeout=10)
        yield port, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def health(port: int, timeout: float = 2.0) -> float:
    """Seconds for GET /health on a fresh connection (``timeout`` when it fails)."""
    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/health")
        reply = conn.getresponse()
        reply.read()
        ok = reply.status == 200
    except OSError:
        ok = False
    finally:
        conn.close()
    return time.perf_counter() - start if ok else timeout


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("VmRSS:")).split()[1])


def sample(port: int, pid: int, seconds: float) -> tuple[list[float], int]:
    """/health latencies every 50 ms for ``seconds``, and the server's peak RSS."""
    latencies, peak = [], 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        latencies.append(health(port))
        peak = max(peak, rss_kb(pid))
        time.sleep(0.05)
    return latencies, peak


def attack(port: int, pid: int, mode: str, window: float) -> tuple[list[float], int, dict]:
    proc = subprocess.Popen([sys.executable, "-c", ATTACKER, str(port), mode, str(CONNECTIONS),
                             str(window)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    time.sleep(0.5)  # let the connections open
    latencies, peak = sample(port, pid, window - 0.5)
    out, _ = proc.communicate(timeout=window + 60)
    return latencies, peak, json.loads(out.strip().splitlines()[-1])


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def p95(xs: list[float]) -> float:
    return sorted(xs)[max(0, round(0.95 * len(xs)) - 1)]


def main() -> None:
    args = parser(__doc__ or "").parse_args()
    head_s, body_s = (2.0, 2.0) if args.short else (10.0, 30.0)
    header("hostile clients")
    extra = ["--header-timeout-s", str(head_s), "--body-timeout-s", str(body_s)]
    attacks = [("endless-header", 3.0 if args.short else 8.0, head_s),
               ("trickled-head", head_s + 3.0, head_s),
               ("trickled-body", body_s + 3.0, body_s)]
    rows, problems = [], []
    with server(*extra) as (port, pid):
        base_lat, base_rss = sample(port, pid, 2.0 if args.short else 5.0)
        base_p50, base_p95 = statistics.median(base_lat), p95(base_lat)
        rows.append(["none (baseline)", ms(base_p50), ms(base_p95), ms(max(base_lat)), "1.0x",
                     "1.0x", f"{base_rss / 1024:.0f}", "1.00x", "-", "-"])
        for mode, window, limit in attacks:
            lat, peak, report = attack(port, pid, mode, window)
            p50, high, top = statistics.median(lat), p95(lat), max(lat)
            oldest = max(report["max_life"], report["oldest_open"] if report["oldest_open"] >
                         limit + SLACK_S else 0.0)
            rows.append([mode, ms(p50), ms(high), ms(top), f"{p50 / base_p50:.1f}x",
                         f"{high / base_p95:.1f}x", f"{peak / 1024:.0f}",
                         f"{peak / base_rss:.2f}x",
                         f"{report['dropped']}/{report['opened']}", f"{oldest:.1f}"])
            if high > HEALTH_P95_BOUND_S or top > HEALTH_MAX_BOUND_S:
                problems.append(f"{mode}: /health p95 {ms(high)} ms, max {ms(top)} ms")
            if peak - base_rss > RSS_BOUND_KB:
                problems.append(f"{mode}: RSS +{(peak - base_rss) / 1024:.0f} MB")
            if mode != "endless-header" and oldest > limit + SLACK_S:
                problems.append(f"{mode}: a connection lived {oldest:.1f} s (limit {limit:g} s)")
            if report["dropped"] == 0:
                problems.append(f"{mode}: no hostile connection was dropped")
    print(table(rows, ["attack (200 connections)", "/health p50 ms", "p95 ms", "max ms",
                       "p50 ratio", "p95 ratio", "peak RSS MB", "RSS ratio", "dropped/opened",
                       "longest life s"]))
    print(f"\n# limits: head {head_s:g} s, body {body_s:g} s, 16 KiB and 100 "
          f"fields per head; {os.cpu_count()} cores shared by server, attacker and prober")
    verdict("hostile_clients", not problems,
            f"/health p95 <= {HEALTH_P95_BOUND_S * 1000:.0f} ms and max <= "
            f"{HEALTH_MAX_BOUND_S * 1000:.0f} ms, RSS <= baseline + {RSS_BOUND_KB // 1000} MB, "
            f"connections <= timeout + {SLACK_S:g} s: "
            + ("all within bounds" if not problems else "; ".join(problems)), short=args.short)


if __name__ == "__main__":
    main()
