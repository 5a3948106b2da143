"""A task added at run time (one registry entry + one backend) is served by the jobs API and the CLI unchanged.

The backend here is a stand-in for a new model: what is under test is the plumbing around it (kinds,
parameters, the runner, the stored result, the CLI's output), which must need no change for a new task.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest

from app.core.config import Settings, get_settings
from app.core.results import RunInfo
from app.core.tasks import InputKind, OutputKind, TaskSpec, register_task, unregister_task
from app.models.base import TaskRequest
from app.models.registry import register_backend, unregister_backend
from tests.api_support import api_settings, auth_header, png_bytes, running_app
from tests.jobs_support import wait_for

PNG = png_bytes((64, 48), "red")
TOKEN = "<MEAN_COLOUR>"


@dataclass(frozen=True)
class MeanColour:
    """A result type none of the edges knows: they read its `to_dict()` and `summary()`."""

    task: str
    image_wh: tuple[int, int]
    rgb: tuple[int, int, int]
    run: RunInfo | None = field(default=None, compare=False)
    kind: ClassVar[str] = "mean_colour"

    def to_dict(self) -> dict[str, Any]:
        body = {"kind": self.kind, "task": self.task, "image_wh": list(self.image_wh), "rgb": list(self.rgb)}
        return {**body, **(self.run.to_dict() if self.run else {})}

    def summary(self) -> str:
        return "mean colour " + ",".join(str(v) for v in self.rgb)


class MeanColourBackend:
    name, tasks, model_id, library = "mean_colour", frozenset({TOKEN}), "mean-colour-1", "pillow"

    def __init__(self, settings: Settings) -> None:
        self.loaded = False

    def load(self) -> None:
        self.loaded = True

    def run(self, requests: Sequence[TaskRequest]) -> list[MeanColour]:
        results = []
        for request in requests:
            red, green, blue = request.image.convert("RGB").resize((1, 1)).getpixel((0, 0))  # type: ignore[misc]
            results.append(MeanColour(request.spec.token, request.image_wh, (red, green, blue)))
        return results

    def info(self) -> dict[str, Any]:
        return {"model_id": self.model_id}


@pytest.fixture
def new_task() -> Iterator[TaskSpec]:
    spec = register_task(
        TaskSpec(
            TOKEN,
            "MEAN_COLOUR",
            "Mean colour",
            "The average colour.",
            InputKind.NONE,
            OutputKind.TEXT,
            backend="mean_colour",
        )
    )
    register_backend(MeanColourBackend)
    try:
        yield spec
    finally:
        unregister_backend(MeanColourBackend)
        unregister_task(spec.token)


def test_the_jobs_api_runs_a_task_registered_at_run_time(
    new_task: TaskSpec, tiny_settings: Settings, tmp_path: Path
) -> None:
    settings = api_settings(tiny_settings, data_dir=tmp_path, max_queue_size=8, preload=False)
    with running_app(settings) as (_, client):
        body = {"kind": "analyze", "task": "mean_colour", "images": ["data:image/png;base64," + _b64(PNG)]}
        created = client.post("/api/v1/jobs", headers=auth_header(), json=body)
        assert created.status_code == 202, created.text

        def finished() -> dict[str, Any] | None:
            view: dict[str, Any] = client.get(f"/api/v1/jobs/{created.json()['id']}", headers=auth_header()).json()
            return view if view["status"] in ("complete", "failed") else None

        done = wait_for(finished, 30, "the job")
        assert done["status"] == "complete", done
        [entry] = done["result"]["results"]
        assert done["result"]["task"] == TOKEN and entry["kind"] == "mean_colour" and entry["rgb"] == [255, 0, 0]
        assert entry["model"] == "mean-colour-1"  # stamped by the manager from the backend that ran
        unexpected = client.post("/api/v1/jobs", headers=auth_header(), json={**body, "text": "hi"})
        assert unexpected.status_code == 400 and unexpected.json()["error"]["code"] == "unexpected_text"


def test_the_cli_runs_a_task_registered_at_run_time(
    new_task: TaskSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.cli.main import main

    monkeypatch.chdir(tmp_path)
    image = tmp_path / "red.png"
    image.write_bytes(PNG)
    get_settings.cache_clear()
    try:
        assert main(["analyze", str(image), "--task", "MEAN_COLOUR", "--json", "-"]) == 0
        document = json.loads(capsys.readouterr().out)
        assert document["task"] == TOKEN and document["results"][0]["rgb"] == [255, 0, 0]
        assert main(["analyze", str(image), "--task", "mean_colour"]) == 0
        assert capsys.readouterr().out.splitlines()[1] == f"{image} 64x48: mean colour 255,0,0"
    finally:
        get_settings.cache_clear()


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()
