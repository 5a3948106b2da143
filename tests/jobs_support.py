"""Helpers for the job tests: a real redis-server, polling with deadlines, worker subprocesses."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")
REDIS_PORTS = range(6390, 6400)
REPO = Path(__file__).resolve().parent.parent


def wait_for(check: Callable[[], T | None], timeout_s: float, what: str, interval_s: float = 0.05) -> T:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


def free_port(candidates: range) -> int:
    for port in candidates:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {candidates}")


def require_redis_server() -> str:
    """The redis-server binary; skipped when missing (a failure under CI, which installs it)."""
    binary = shutil.which("redis-server")
    if binary is None:
        message = "redis-server is not installed (apt-get install redis-server); Redis-mode tests need a real one"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return binary


@contextmanager
def redis_server() -> Iterator[str]:
    """A throw-away redis-server on a free port in 6390-6399 (no persistence); yields its URL."""
    import redis

    binary = require_redis_server()
    port = free_port(REDIS_PORTS)
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    try:
        wait_for(answers, 10, "redis-server to answer PING")
        yield url
    finally:
        client.close()
        process.terminate()
        process.wait(timeout=10)


def start_worker(name: str, env: dict[str, str], log_dir: Path, *args: str) -> subprocess.Popen[bytes]:
    """`python -m app worker --worker NAME` with `env` on top of the test environment; output to a file."""
    log = (log_dir / f"{name}.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "app", "worker", "--worker", name, *args],
        cwd=REPO,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def stop_process(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout_s: float = 60) -> int:
    if process.poll() is None:
        process.send_signal(sig)
    try:
        return process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise


def worker_env(settings: Any, **extra: str) -> dict[str, str]:
    """Environment for a worker subprocess running the same tiny checkpoint as `settings`."""
    return {
        "MODEL_ID": str(settings.model_id),
        "NUM_BEAMS": str(settings.num_beams),
        "WARMUP": "false",
        "PRELOAD": "false",
        "LOG_LEVEL": "INFO",
        "RATE_LIMIT": "",
        **extra,
    }
