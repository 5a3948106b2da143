"""compose.yaml: what docs/DEPLOY.md promises is in it. `.ci/run` also validates it with docker-compose."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def services() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return dict(document["services"])


def test_gpu_services_reserve_a_gpu_and_cpu_services_do_not() -> None:
    found = services()
    for name in ("app", "worker"):
        assert found[name]["profiles"] == ["gpu"]
        (device,) = found[name]["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    for name in ("app-cpu", "worker-cpu"):
        assert found[name]["profiles"] == ["cpu"] and "deploy" not in found[name]
        assert found[name]["build"]["args"]["TORCH_VARIANT"] == "cpu"


def test_workers_share_redis_and_the_model_cache() -> None:
    found = services()
    assert "--appendonly" in found["redis"]["command"] and found["redis"]["volumes"] == ["redis-data:/data"]
    for name in ("app", "worker", "app-cpu", "worker-cpu"):
        assert found[name]["environment"]["QUEUE_URL"].startswith("redis://redis:")
        assert "model-cache:/data/hf" in found[name]["volumes"]
    assert found["worker"]["command"] == ["python", "-m", "app", "worker"]


@pytest.mark.parametrize("profile", ["gpu", "cpu"])
def test_docker_compose_accepts_it(profile: str) -> None:
    if shutil.which("docker-compose") is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose is not installed (.ci/run installs it)")
        pytest.skip("docker-compose is not installed")
    result = subprocess.run(["docker-compose", "-f", str(ROOT / "compose.yaml"), "--profile", profile, "config", "-q"],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
