"""The backend contract: every backend lists its tasks and runs `TaskRequest`s; the manager routes each task
to its backend and stamps every result with the run info of the model that answered."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
from PIL import Image

from app.core.config import Settings
from app.core.results import TextResult
from app.core.task_inputs import TaskInput, ZeroShotRequest
from app.core.tasks import CLASSIFY, ZERO_SHOT, InputKind, OutputKind, TaskSpec, all_tasks, get_task
from app.models.base import Backend, TaskRequest
from app.models.classifier import ClassifierBackend
from app.models.florence import FlorenceBackend
from app.models.manager import ModelManager
from app.models.rapidocr_backend import RapidOCRBackend
from app.models.registry import BackendRegistry, build_manager
from app.models.zero_shot import ZeroShotBackend
from tests.stub_backend import StubBackend

ECHO = TaskSpec("<ECHO>", "ECHO", "Echo", "The image size as text.", InputKind.NONE, OutputKind.TEXT, backend="echo")


class EchoBackend(StubBackend):
    """A backend outside the built-ins: serves ECHO (a task the registry does not hold here)."""

    name = "echo"
    tasks = frozenset({ECHO.token})
    model_id = "echo-1"
    library = "echo-lib-1.0"

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []

    def run(self, requests: Sequence[TaskRequest]) -> list[TextResult]:
        self.calls.append(len(requests))
        return [TextResult(r.spec.token, r.image_wh, text=f"{r.image_wh[0]}x{r.image_wh[1]}") for r in requests]


@pytest.fixture(scope="module")
def manager(classify_settings: Settings) -> Iterator[ModelManager]:
    built = build_manager(classify_settings, BackendRegistry.from_settings(classify_settings, extra=[EchoBackend()]))
    yield built
    built.shutdown()


def test_every_built_in_backend_follows_the_contract(classify_settings: Settings) -> None:
    backends = [FlorenceBackend(classify_settings), ClassifierBackend(classify_settings),
                ZeroShotBackend(classify_settings), RapidOCRBackend(classify_settings)]  # fmt: skip
    assert all(isinstance(backend, Backend) for backend in backends)
    served = set().union(*(backend.tasks for backend in backends))
    assert {spec.token for spec in all_tasks() if not spec.cascade} <= served


def test_each_task_is_routed_to_the_backend_its_entry_names(classify_settings: Settings) -> None:
    default = build_manager(classify_settings)
    rapid = build_manager(classify_settings.model_copy(update={"ocr_backend": "rapidocr"}))
    try:
        for spec in all_tasks():
            if not spec.cascade:
                assert default.backend_name(spec) == spec.backend
        # OCR_BACKEND=rapidocr puts rapidocr first: it takes the two OCR tasks, nothing else.
        assert rapid.backend_name("<OCR>") == rapid.backend_name("OCR_WITH_REGION") == "rapidocr"
        assert rapid.backend_name("<REGION_TO_OCR>") == "florence2" and default.primary == rapid.primary == "florence2"
    finally:
        default.shutdown()
        rapid.shutdown()


def test_one_call_runs_mixed_tasks_on_their_backends_and_stamps_who_answered(
    manager: ModelManager, classify_settings: Settings, photo: Image.Image
) -> None:
    labels = ZeroShotRequest.create(["a cat", "a car"])
    requests = [
        TaskRequest.create(photo, get_task("CAPTION")),
        TaskRequest.create(photo, CLASSIFY, options=TaskInput(top_n=2)),
        TaskRequest.create(photo, ECHO),
        TaskRequest.create(photo, ZERO_SHOT, options=TaskInput(labels=labels)),
    ]
    caption, classes, echo, scores = manager.run(requests)
    assert (caption.kind, classes.kind, echo.kind, scores.kind) == ("text", "classification", "text", "zero_shot")
    assert echo.text == "451x300" and len(classes.predictions) == 2 and scores.labels == ("a cat", "a car")
    assert caption.run is not None and caption.run.model == classify_settings.model_id
    assert caption.run.library.startswith("transformers-")
    assert classes.run.model == classify_settings.classifier_model_id
    assert scores.run.model == classify_settings.zero_shot_model_id
    assert echo.run is not None and (echo.run.model, echo.run.library) == ("echo-1", "echo-lib-1.0")
    assert all(result.run is not None and result.run.duration >= 0 for result in (caption, classes, echo, scores))


def test_the_async_path_routes_the_same_way(manager: ModelManager, photo: Image.Image) -> None:
    import asyncio

    echo = manager.get("echo")
    before = list(echo.calls)
    (result,) = asyncio.run(manager.run_async([TaskRequest.create(photo.resize((40, 30)), ECHO)]))
    assert isinstance(result, TextResult) and result.text == "40x30" and echo.calls == [*before, 1]
    assert result.run is not None and result.run.model == "echo-1"
