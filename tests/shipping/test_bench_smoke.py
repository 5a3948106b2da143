"""The benchmark scripts stay runnable: each answers --help, and the two that have a tiny size run end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = (
    "checkpoints",
    "cpu_bench",
    "cpu_server",
    "diagnose",
    "http_overhead",
    "overload",
    "score_cost",
    "serving_bench",
)


def _run_bench(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_bench_script_answers_help(script: str) -> None:
    done = _run_bench(f"bench.{script}", "--help", timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage:")


def _rows(results: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in results.read_text().splitlines()]


@pytest.mark.slow
def test_serving_bench_runs_at_tiny_size(tmp_path: Path) -> None:
    done = _run_bench(
        "bench.serving_bench", "--size", "tiny", "--ckpt", str(tmp_path / "ckpt"), "--out", str(tmp_path / "out"),
        "--stages", "server", "--lengths", "20", "--concurrency", "1,2", "--cap-s", "0.5", "--budget-s", "60",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    served = [row for row in _rows(tmp_path / "out" / "results.jsonl") if row["stage"] == "server"]
    assert [row["concurrency"] for row in served] == [1, 2]
    assert all(float(str(row["images_per_s"])) > 0 for row in served)


@pytest.mark.slow
def test_http_overhead_bench_runs(tmp_path: Path) -> None:
    done = _run_bench("bench.http_overhead", "--requests", "3", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert row["stage"] == "http_overhead"
    assert row["requests"] == 3
    assert float(row["http_p50_ms"]) > 0
