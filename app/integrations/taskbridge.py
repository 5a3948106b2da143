"""Drop-in `classifyimage` worker for a TaskBridge server (github.com/hilderonny/taskbridge).

The protocol, as the TaskBridge server and its reference worker (taskworker-classifyimage) speak it:
  POST {url}/api/tasks/take/           {"type": "classifyimage", "worker": NAME}
                                       → 200 {"id", "data": {"numberofpredictions", "targetlanguage"}}
                                         or 404 when no task is open
  GET  {url}/api/tasks/file/{id}       → the image bytes
  POST {url}/api/tasks/complete/{id}/  {"result": {"predictions": [{"class", "name", "probability"}],
                                         "duration", "repository", "version", "library", "model"}}
A failed task is completed too, with `result.error` (a message) instead of predictions, so the
TaskBridge never keeps a task "in progress" for a worker that gave up on it.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Protocol

import httpx

from app import REPOSITORY, __version__
from app.core.classification_results import ClassificationResult
from app.core.config import Settings
from app.core.errors import AppError, InvalidImage, PayloadTooLarge
from app.core.images import ImageLimits, LoadedImage, load_image_bytes
from app.core.task_inputs import MAX_TOP_N, TaskInput
from app.core.tasks import CLASSIFY
from app.services.analysis import AnalysisService
from app.services.container import Services

log = logging.getLogger(__name__)
TASK_TYPE = "classifyimage"
DEFAULT_PREDICTIONS = 5
COMPLETE_ATTEMPTS = 3

# ([{"class", "name", "probability"}, ...] best first, {"library", "model"} that produced them)
ClassifierAnswer = tuple[list[dict[str, Any]], dict[str, str]]


class Classifier(Protocol):
    def __call__(self, image: LoadedImage, count: int, language: str) -> ClassifierAnswer: ...

    @property
    def model(self) -> str:
        """The model configured to answer: named in a task that failed before any model ran."""
        ...


class TaskBridgeError(Exception):
    """The TaskBridge server could not be reached or answered something unexpected."""


@dataclass
class TaskBridgeClient:
    base_url: str  # the server root, e.g. http://taskbridge:42000/
    worker: str
    max_file_bytes: int
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        root = self.base_url if self.base_url.endswith("/") else self.base_url + "/"
        self.api = root + "api/"
        self.http = httpx.Client(timeout=self.timeout_s, follow_redirects=True)

    def take(self) -> dict[str, Any] | None:
        try:
            response = self.http.post(self.api + "tasks/take/", json={"type": TASK_TYPE, "worker": self.worker})
        except httpx.HTTPError as exc:
            raise TaskBridgeError(f"cannot reach {self.api}: {type(exc).__name__}") from None
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise TaskBridgeError(f"take answered HTTP {response.status_code}")
        try:
            task = response.json()
        except ValueError:
            raise TaskBridgeError("take answered something that is not JSON") from None
        if not isinstance(task, dict) or not isinstance(task.get("id"), str) or not task["id"]:
            raise TaskBridgeError("take answered a task without an id")
        return task

    def file(self, task_id: str) -> bytes:
        """The task's image, read under the image byte cap."""
        try:
            with self.http.stream("GET", self.api + f"tasks/file/{task_id}") as response:
                if response.status_code != 200:
                    raise InvalidImage(f"The task's file could not be fetched (HTTP {response.status_code}).",
                                       code="task_file_missing")  # fmt: skip
                chunks, total = [], 0
                for chunk in response.iter_bytes():
                    total += len(chunk)
                    if total > self.max_file_bytes:
                        raise PayloadTooLarge(f"The task's file is over the {self.max_file_bytes:,}-byte limit.",
                                              code="image_too_large")  # fmt: skip
                    chunks.append(chunk)
        except httpx.HTTPError as exc:
            raise TaskBridgeError(f"cannot fetch the file of task {task_id}: {type(exc).__name__}") from None
        return b"".join(chunks)

    def complete(self, task_id: str, result: dict[str, Any]) -> None:
        last = ""
        for attempt in range(1, COMPLETE_ATTEMPTS + 1):
            try:
                response = self.http.post(self.api + f"tasks/complete/{task_id}/", json={"result": result})
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            else:
                if response.status_code < 300:
                    return
                last = f"HTTP {response.status_code}"
                if response.status_code == 404:
                    break  # the task was removed meanwhile
            if attempt < COMPLETE_ATTEMPTS:
                time.sleep(attempt)
        raise TaskBridgeError(f"could not report task {task_id} as complete ({last})")

    def close(self) -> None:
        self.http.close()


def task_options(task: dict[str, Any]) -> tuple[int, str]:
    """`numberofpredictions` and language from the task's data (`targetlanguage`, or `language`)."""
    data = task.get("data") if isinstance(task.get("data"), dict) else {}
    assert isinstance(data, dict)
    try:
        count = int(data.get("numberofpredictions", DEFAULT_PREDICTIONS))
    except (TypeError, ValueError):
        count = DEFAULT_PREDICTIONS
    language = data.get("targetlanguage") or data.get("language") or "en"
    return max(1, min(count, MAX_TOP_N)), str(language).strip().lower()


class TaskBridgeWorker:
    def __init__(
        self, client: TaskBridgeClient, classify: Classifier, settings: Settings, poll_interval_s: float = 3.0
    ) -> None:
        self.client = client
        self.classify = classify
        self.limits = ImageLimits(settings.max_image_bytes, settings.max_image_pixels)
        self.exact_floats = settings.taskbridge_exact_floats
        self.poll_interval_s = poll_interval_s
        self.stop_event = threading.Event()
        self.done = 0

    def metadata(self, started: float, run: dict[str, str] | None = None) -> dict[str, Any]:
        """`duration` covers the whole task (download included), like the reference worker's."""
        duration = time.perf_counter() - started
        return {
            "duration": duration if self.exact_floats else round(duration, 3),
            "repository": REPOSITORY,
            "version": __version__,
            "library": (run or {}).get("library") or _library(),
            "model": (run or {}).get("model") or self.classify.model,
        }

    def process(self, task: dict[str, Any]) -> dict[str, Any]:
        """The `result` object for one taken task (predictions, or `error`)."""
        started = time.perf_counter()
        task_id = task["id"]
        count, language = task_options(task)
        run: dict[str, str] | None = None
        try:
            image = load_image_bytes(self.client.file(task_id), self.limits, name=f"task {task_id}")
            predictions, run = self.classify(image, count, language)
            body: dict[str, Any] = {"predictions": predictions}
        except AppError as exc:
            body = {"error": exc.message}
        except TaskBridgeError as exc:
            body = {"error": str(exc)}
        except Exception as exc:
            log.exception("task %s failed", task_id)
            body = {"error": f"classification failed: {type(exc).__name__}"}
        return {**body, **self.metadata(started, run)}

    def run_once(self) -> bool:
        """Take and finish one task; False when none was open."""
        task = self.client.take()
        if task is None:
            return False
        task_id = task["id"]
        log.info("task %s taken (%s predictions, language %s)", task_id, *task_options(task))
        result = self.process(task)
        self.client.complete(task_id, result)
        self.done += 1
        outcome = f"error: {result['error']}" if "error" in result else f"{len(result['predictions'])} predictions"
        log.info("task %s complete in %.2f s: %s (%d done)", task_id, result["duration"], outcome, self.done)
        return True

    def run(self) -> int:
        """Poll until SIGTERM/SIGINT; a signal lets the task in hand finish first."""
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda *_: self._request_stop())
        log.info("TaskBridge worker %s polling %s for %s tasks", self.client.worker, self.client.api, TASK_TYPE)
        while not self.stop_event.is_set():
            try:
                worked = self.run_once()
            except TaskBridgeError as exc:
                log.warning("TaskBridge: %s; retrying in %.0f s", exc, self.poll_interval_s)
                worked = False
            if not worked:
                self.stop_event.wait(self.poll_interval_s)
        self.client.close()
        log.info("TaskBridge worker %s stopped after %d task(s)", self.client.worker, self.done)
        return 0

    def _request_stop(self) -> None:
        if not self.stop_event.is_set():
            log.info("stopping after the current task")
        self.stop_event.set()


def _library() -> str:
    try:
        return f"transformers-{version('transformers')}"
    except PackageNotFoundError:
        return "transformers"


@dataclass(frozen=True)
class ServiceClassifier:
    """The CLASSIFY task (ImageNet, names in the task's language) through the analysis service;
    `exact_floats`: the model's probabilities unrounded, as the reference worker sends them."""

    analysis: AnalysisService
    exact_floats: bool = False

    @property
    def model(self) -> str:
        manager = self.analysis.manager
        try:
            return str(manager.slot(manager.backend_name(CLASSIFY)).backend.model_id)
        except AppError:  # no classifier configured: every task says so in its `error`
            return ""

    def __call__(self, image: LoadedImage, count: int, language: str) -> ClassifierAnswer:
        spec, checked = self.analysis.check_input(CLASSIFY, TaskInput(top_n=count, language=language))
        outcome = self.analysis.analyze([image], spec, options=checked)[0]
        if not isinstance(outcome.result, ClassificationResult):
            raise outcome.error or AppError("The classifier gave no result.", code="inference_failed")
        result = outcome.result
        predictions = [p.to_dict() for p in result.predictions]
        if self.exact_floats:
            for entry, prediction in zip(predictions, result.predictions, strict=True):
                entry["probability"] = float(prediction.probability)
        # Which model answered is the result's own run info.
        return predictions, {"library": result.run.library, "model": result.run.model}


def service_classifier(services: Services, exact_floats: bool = False) -> ServiceClassifier:
    return ServiceClassifier(services.analysis, exact_floats)


def run_taskbridge(settings: Settings, url: str, worker: str | None, poll_interval_s: float = 3.0) -> int:
    """`python -m app worker --taskbridge URL --worker NAME`: poll until SIGTERM/SIGINT."""
    import socket

    services = Services.build(settings)
    try:
        client = TaskBridgeClient(url, worker or socket.gethostname(), max_file_bytes=settings.max_image_bytes)
        worker_loop = TaskBridgeWorker(
            client, service_classifier(services, settings.taskbridge_exact_floats), settings, poll_interval_s
        )
        log.info("TaskBridge worker %s: loading the classifier", client.worker)
        services.manager.get(services.manager.backend_name(CLASSIFY))
        return worker_loop.run()
    finally:
        services.close()
