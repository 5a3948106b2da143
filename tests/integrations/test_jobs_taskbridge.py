"""The TaskBridge drop-in worker against a small local server implementing the three TaskBridge routes."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from app import REPOSITORY, __version__
from app.core.classification_results import ClassificationResult
from app.core.config import Settings
from app.core.imagenet import imagenet_labels
from app.core.images import ImageLimits, load_image_bytes
from app.core.task_inputs import TaskInput
from app.core.tasks import CLASSIFY
from app.integrations.taskbridge import TaskBridgeClient, TaskBridgeWorker, service_classifier, task_options
from app.services.container import Services
from tests.api_support import LoopbackServer, QuietHandler, png_bytes
from tests.jobs_support import wait_for

PNG = png_bytes((64, 48), "red")


class FakeTaskBridge(LoopbackServer):
    """`POST api/tasks/take/`, `GET api/tasks/file/{id}`, `POST api/tasks/complete/{id}/`, as the real server."""

    def __init__(self) -> None:
        self.tasks: list[dict[str, Any]] = []
        self.files: dict[str, bytes] = {}
        self.results: dict[str, dict[str, Any]] = {}
        self.takers: list[dict[str, Any]] = []
        bridge = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                if self.path == "/api/tasks/take/":
                    request = self.read_json()
                    bridge.takers.append(request)
                    for task in bridge.tasks:
                        if task["status"] == "open" and task["type"] == request["type"]:
                            task["status"] = "inprogress"
                            self.send_body(200, json.dumps({"id": task["id"], "data": task["data"]}).encode())
                            return
                    self.send_body(404)
                elif match := re.fullmatch(r"/api/tasks/complete/([\w-]+)/", self.path):
                    bridge.results[match.group(1)] = self.read_json()
                    self.send_body(200)
                else:
                    self.send_body(404)

            def do_GET(self) -> None:
                match = re.fullmatch(r"/api/tasks/file/([\w-]+)", self.path)
                if match and match.group(1) in bridge.files:
                    self.send_body(200, bridge.files[match.group(1)], "application/octet-stream")
                else:
                    self.send_body(404)

        super().__init__(Handler)

    def add(self, task_id: str, data: dict[str, Any], file: bytes | None, kind: str = "classifyimage") -> None:
        self.tasks.append({"id": task_id, "type": kind, "data": data, "status": "open"})
        if file is not None:
            self.files[task_id] = file


@pytest.fixture(scope="module")
def services(classify_settings: Settings) -> Iterator[Services]:
    built = Services.build(classify_settings)
    yield built
    built.close()


def classified(services: Services, top_n: int, language: str) -> ClassificationResult:
    """What the analysis service answers for PNG, without the worker."""
    image = load_image_bytes(PNG, ImageLimits(10**8, 10**8))
    options = TaskInput(top_n=top_n, language=language)
    result = services.analysis.analyze([image], CLASSIFY, options=options)[0].result
    assert isinstance(result, ClassificationResult)
    return result


def test_worker_takes_classifies_and_completes_tasks(services: Services, classify_settings: Settings) -> None:
    bridge = FakeTaskBridge()
    bridge.add("t-good", {"numberofpredictions": 3, "targetlanguage": "de"}, PNG)
    bridge.add("t-other-type", {}, PNG, kind="transcribe")
    bridge.add("t-broken", {"numberofpredictions": "2", "targetlanguage": "en"}, PNG[:40])
    bridge.add("t-language", {"numberofpredictions": 2, "language": "xx"}, PNG)
    bridge.add("t-no-file", {"numberofpredictions": 2}, None)
    client = TaskBridgeClient(bridge.url(), "GPU-1", max_file_bytes=classify_settings.max_image_bytes)
    # Which model answered is read from the result, never from the settings the worker is given.
    elsewhere = classify_settings.model_copy(update={"classifier_model_id": "settings/not-the-model-that-ran"})
    worker = TaskBridgeWorker(client, service_classifier(services), elsewhere, poll_interval_s=0.05)
    thread = threading.Thread(target=worker.run, daemon=True)
    try:
        thread.start()
        wait_for(lambda: len(bridge.results) == 4, 60, "four completed tasks")
        worker.stop_event.set()
        thread.join(timeout=10)
        assert not thread.is_alive()
    finally:
        bridge.close()

    assert bridge.takers[0] == {"type": "classifyimage", "worker": "GPU-1"}
    assert "t-other-type" not in bridge.results
    good = bridge.results["t-good"]["result"]
    expected = classified(services, 3, "de")
    assert good["predictions"] == [p.to_dict() for p in expected.predictions]
    assert [set(p) for p in good["predictions"]] == [{"class", "name", "probability"}] * 3
    assert re.fullmatch(r"n\d{8}", good["predictions"][0]["class"])  # WordNet synset ids
    assert good["repository"] == REPOSITORY and good["version"] == __version__
    assert good["model"] == expected.run.model == classify_settings.classifier_model_id
    assert good["library"] == expected.run.library and good["library"].startswith("transformers-")
    assert isinstance(good["duration"], float) and good["duration"] >= 0

    for failed in ("t-broken", "t-language", "t-no-file"):
        result = bridge.results[failed]["result"]
        assert "predictions" not in result and result["error"], failed
        assert {"duration", "repository", "version", "library", "model"} <= set(result)
        assert result["model"] == expected.run.model  # the configured classifier, though it did not run
    assert "xx" in bridge.results["t-language"]["result"]["error"]
    assert worker.done == 4


def test_task_options() -> None:
    assert task_options({"id": "x", "data": {"numberofpredictions": "7", "targetlanguage": "DE"}}) == (7, "de")
    assert task_options({"id": "x", "data": {"language": "en"}}) == (5, "en")
    assert task_options({"id": "x"}) == (5, "en")
    assert task_options({"id": "x", "data": {"numberofpredictions": "lots"}}) == (5, "en")
    assert task_options({"id": "x", "data": {"numberofpredictions": 0}})[0] == 1


def test_keras_names_and_exact_floats_match_the_reference_worker(classify_settings: Settings) -> None:
    """IMAGENET_NAMES=keras + TASKBRIDGE_EXACT_FLOATS: taskworker-classifyimage's names and unrounded floats."""
    settings = classify_settings.model_copy(update={"imagenet_names": "keras", "taskbridge_exact_floats": True})
    built = Services.build(settings)
    bridge = FakeTaskBridge()
    bridge.add("t-en", {"numberofpredictions": "3", "targetlanguage": "en"}, PNG)
    bridge.add("t-de", {"numberofpredictions": 3, "targetlanguage": "de"}, PNG)
    client = TaskBridgeClient(bridge.url(), "GPU-1", max_file_bytes=settings.max_image_bytes)
    worker = TaskBridgeWorker(client, service_classifier(built, True), settings, poll_interval_s=0.05)
    try:
        assert worker.run_once() and worker.run_once()
        reference = classified(built, 3, "en")
    finally:
        bridge.close()
        built.close()
    english, german = bridge.results["t-en"]["result"], bridge.results["t-de"]["result"]
    # The tiny ResNet's top class is 281 (n02123045): the Keras index calls it `tabby`, the worker's
    # German list `Tabby-Katze`; our own lists say `tabby cat` and `Getigerte Katze`.
    assert english["predictions"][0]["class"] == "n02123045"
    assert english["predictions"][0]["name"] == "tabby" and german["predictions"][0]["name"] == "Tabby-Katze"
    assert isinstance(reference, ClassificationResult)
    probability = english["predictions"][0]["probability"]
    assert probability == pytest.approx(reference.predictions[0].probability, rel=1e-6)
    assert probability != round(probability, 6)  # unrounded, as the reference sends `float(prediction[2])`


def test_keras_name_set_covers_every_synset_in_order() -> None:
    default, keras = imagenet_labels(), imagenet_labels("keras")
    assert keras.synsets == default.synsets
    assert keras.languages == ("en", "de")
    assert (keras.name(2), keras.name(2, "de")) == ("great_white_shark", "Weisser Hai")
    assert (keras.name(595), keras.name(595, "de")) == ("harvester", "Erntemaschine")
    assert sum(a != b for a, b in zip(default.names["en"], keras.names["en"], strict=True)) == 609
