"""Adding a task is one registry entry plus a backend: a task registered here, at run time, with a backend and
a result type no module of the app knows, is found and run by every edge with no other change: the chat's
picker and flow, `GET /api/v1/tasks` and `/api/v1/analyze`, the jobs API and the CLI.

The backend is a stand-in for a new model: what is under test is the plumbing around it (registry lookups,
routing, input checks, the runner, stored and returned results, the chat's reply, the CLI's output).
"""

from __future__ import annotations

import base64
import io
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest
from PIL import Image

from app.core.config import Settings, get_settings
from app.core.results import RunInfo
from app.core.tasks import InputKind, OutputKind, TaskSpec, register_task, unregister_task
from app.models.base import TaskRequest
from app.models.registry import register_backend, unregister_backend
from app.services.container import Services
from tests.api_support import api_settings, auth_header, png_bytes, running_app
from tests.chat_support import download_json, save_upload, send
from tests.jobs_support import wait_for
from tests.stub_backend import StubBackend

os.environ.setdefault("CHAINLIT_APP_ROOT", str(Path(__file__).resolve().parents[1]))

import chainlit_app

PNG = png_bytes((64, 48), "red")
DATA_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()
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


class MeanColourBackend(StubBackend):
    name, tasks, model_id, library = "mean_colour", frozenset({TOKEN}), "mean-colour-1", "pillow"

    def run(self, requests: Sequence[TaskRequest]) -> list[MeanColour]:
        results = []
        for request in requests:
            red, green, blue = request.image.convert("RGB").resize((1, 1)).getpixel((0, 0))  # type: ignore[misc]
            results.append(MeanColour(request.spec.token, request.image_wh, (red, green, blue)))
        return results


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


def test_the_api_lists_and_runs_a_task_registered_at_run_time(
    new_task: TaskSpec, tiny_settings: Settings, tmp_path: Path
) -> None:
    settings = api_settings(tiny_settings, data_dir=tmp_path, max_queue_size=8, preload=False)
    with running_app(settings) as (_, client):
        tasks = client.get("/api/v1/tasks", headers=auth_header()).json()["tasks"]
        (listed,) = [task for task in tasks if task["token"] == TOKEN]
        assert (listed["short_name"], listed["input"], listed["backend"]) == ("MEAN_COLOUR", "none", "mean_colour")
        answer = client.post(
            "/api/v1/analyze", headers=auth_header(), json={"task": "mean-colour", "images": [DATA_URL]}
        )
        assert answer.status_code == 200, answer.text
        (entry,) = answer.json()["results"]
        assert (entry["kind"], entry["rgb"], entry["model"]) == ("mean_colour", [255, 0, 0], "mean-colour-1")


def test_the_jobs_api_runs_a_task_registered_at_run_time(
    new_task: TaskSpec, tiny_settings: Settings, tmp_path: Path
) -> None:
    settings = api_settings(tiny_settings, data_dir=tmp_path, max_queue_size=8, preload=False)
    with running_app(settings) as (_, client):
        body = {"kind": "analyze", "task": "mean_colour", "images": [DATA_URL]}
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


def test_the_chat_offers_and_runs_a_task_registered_at_run_time(
    new_task: TaskSpec, tiny_settings: Settings, tmp_path: Path
) -> None:
    (mode,) = chainlit_app.task_modes()
    option = next(option for option in mode.options if option.id == "MEAN_COLOUR")
    assert (option.name, option.description) == ("Mean colour", "The average colour.")
    upload = save_upload(Image.open(io.BytesIO(PNG)), tmp_path, "red.png")
    services = Services.build(tiny_settings)  # what the server builds: the registered backend is in it
    try:
        ui = send(services, "", [upload], "MEAN_COLOUR")
    finally:
        services.close()
    (reply,) = ui.replies
    assert reply.markdown.endswith("mean colour 255,0,0") and ui.steps[0].name == "Mean colour"
    body = download_json(reply, "red · mean colour.json")
    assert (body["model"], body["kind"], body["rgb"]) == ("mean-colour-1", "mean_colour", [255, 0, 0])
