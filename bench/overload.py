"""Goodput under overload: successful answers per second as closed-loop clients without backoff grow.

Starts `python -m app serve` with the tiny checkpoint on 127.0.0.1 (loopback only), then for each
concurrency runs that many clients, each sending POST /api/v1/analyze (one small PNG, CAPTION) again
as soon as its previous answer arrives, for `--seconds` or `--max-requests` in all, whichever comes
first. Prints, per concurrency: answers/s with 200, 503 `busy` per second, other statuses, p50/p95
latency of the 200s, goodput relative to the best concurrency, and the cores the load generator
itself used.

    python -m bench.overload --concurrency 1,4,16,64 --seconds 8

On a machine with few cores the clients compete with the server for them; `--client-cpus 1
--server-cpus 0` pins each to its own cores (Linux), which isolates the two somewhat. The server's
settings come from the environment as usual (e.g. `BUSY_HOLD_S=0` for refusals without a hold).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
from PIL import Image

from bench.measure import ROOT
from tests.tiny_models import build_tiny_florence


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def png_b64() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), "red").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


async def run_level(url: str, clients: int, seconds: float, max_requests: int) -> dict[str, float]:
    body = {"task": "CAPTION", "images": [{"base64": png_b64()}]}
    statuses: Counter[int | str] = Counter()
    latencies: list[float] = []
    sent = 0
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def one_client() -> None:
            nonlocal sent
            while time.monotonic() < deadline and sent < max_requests:
                sent += 1
                started = time.monotonic()
                try:
                    response = await client.post(url, json=body)
                    statuses[response.status_code] += 1
                    if response.status_code == 200:
                        latencies.append(time.monotonic() - started)
                except httpx.HTTPError as exc:
                    statuses[type(exc).__name__] += 1

        started, cpu_started = time.monotonic(), time.process_time()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        elapsed = time.monotonic() - started
        client_cpu = (time.process_time() - cpu_started) / elapsed
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else float("nan")

    other = sum(count for status, count in statuses.items() if status not in (200, 503))
    return {
        "clients": clients,
        "ok_per_s": statuses[200] / elapsed,
        "busy_per_s": statuses[503] / elapsed,
        "other": other,
        "p50_ms": pct(0.5),
        "p95_ms": pct(0.95),
        "requests": sum(statuses.values()),
        "client_cpu": client_cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", default="1,2,4,8,16,32,64")
    parser.add_argument("--seconds", type=float, default=8.0, help="per concurrency level")
    parser.add_argument("--max-requests", type=int, default=5000, help="per concurrency level")
    parser.add_argument("--max-queue-size", type=int, default=32)
    parser.add_argument("--client-cpus", default="", help="pin the load generator to these CPUs, e.g. 1")
    parser.add_argument("--server-cpus", default="", help="pin the server to these CPUs, e.g. 0")
    args = parser.parse_args()
    levels = [int(x) for x in args.concurrency.split(",")]
    client_cpus, server_cpus = _cpus(args.client_cpus), _cpus(args.server_cpus)

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = build_tiny_florence(Path(tmp) / "tiny")
        port = free_port()
        env = {
            **os.environ,
            "MODEL_ID": str(checkpoint),
            "WARMUP": "false",
            "AUTH_DISABLED": "true",
            "RATE_LIMIT": "",
            "NUM_BEAMS": "1",
            "MAX_NEW_TOKENS": "8",
            "MAX_QUEUE_SIZE": str(args.max_queue_size),
            "DATA_DIR": str(Path(tmp) / "data"),
            "LOG_LEVEL": "ERROR",
        }
        pin = ["taskset", "-c", ",".join(map(str, sorted(server_cpus)))] if server_cpus else []
        server = subprocess.Popen(
            [*pin, sys.executable, "-m", "app", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        if client_cpus:
            os.sched_setaffinity(0, client_cpus)
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the server did not become ready")
                time.sleep(0.2)
            url = f"http://127.0.0.1:{port}/api/v1/analyze"
            asyncio.run(run_level(url, 2, 2.0, 200))  # warm-up, not reported
            rows = [asyncio.run(run_level(url, n, args.seconds, args.max_requests)) for n in levels]
        finally:
            server.terminate()
            server.wait(timeout=30)

    best = max(row["ok_per_s"] for row in rows) or 1.0
    # client cpu: cores the load generator itself used (it competes with the server unless pinned apart).
    header = f"{'clients':>7} {'200/s':>8} {'503/s':>8} {'other':>6} {'p50 ms':>8} {'p95 ms':>8} {'goodput':>8}"
    print(f"{header} {'client cpu':>10}")
    for row in rows:
        print(
            f"{row['clients']:>7.0f} {row['ok_per_s']:>8.1f} {row['busy_per_s']:>8.1f} {row['other']:>6.0f} "
            f"{row['p50_ms']:>8.1f} {row['p95_ms']:>8.1f} {row['ok_per_s'] / best:>8.0%} {row['client_cpu']:>10.2f}"
        )


def _cpus(spec: str) -> set[int]:
    return {int(cpu) for cpu in spec.split(",") if cpu.strip()}


if __name__ == "__main__":
    main()
