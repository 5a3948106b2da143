"""Prometheus metrics: HTTP requests and analyze latency per task and status, queue depth, model state.

Each app has its own `CollectorRegistry` (no process-global state: tests build many apps). Queue
depth and model state are read from the services at scrape time by a custom collector.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.models.manager import ModelState
from app.services.container import Services

ANALYZE_PATH = "/api/v1/analyze"
TRACKED_PATHS = frozenset({ANALYZE_PATH, "/api/v1/tasks", "/api/v1/models", "/healthz", "/readyz", "/metrics"})
TASK_STATE_KEY = "metrics_task"  # set in request.state by the analyze route once the task is known
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)


class _ServicesCollector(Collector):
    def __init__(self, services: Callable[[], Services | None]) -> None:
        self._services = services

    def collect(self) -> Iterator[Metric]:
        services = self._services()
        if services is None:
            return
        manager = services.manager
        yield GaugeMetricFamily("florence_queue_depth", "Model work queued or running", value=manager.queue_depth)
        yield GaugeMetricFamily(
            "florence_queue_capacity", "Queue size before requests get 503 busy", value=manager.settings.max_queue_size
        )
        state = GaugeMetricFamily(
            "florence_model_state", "1 for the current state of each model", labels=["model", "state"]
        )
        load = GaugeMetricFamily("florence_model_load_seconds", "How long the last load took", labels=["model"])
        for status in manager.status():
            for candidate in ModelState:
                state.add_metric([status["name"], candidate.value], 1.0 if status["state"] == candidate.value else 0.0)
            if "load_seconds" in status:
                load.add_metric([status["name"]], float(status["load_seconds"]))
        yield state
        yield load


class ApiMetrics:
    def __init__(self, services: Callable[[], Services | None]) -> None:
        self.registry = CollectorRegistry()
        self.http_requests = Counter(
            "florence_http_requests", "HTTP requests to the API", ["route", "method", "status"], registry=self.registry
        )
        self.analyze_requests = Counter(
            "florence_analyze_requests", "Analyze requests", ["task", "status"], registry=self.registry
        )
        self.analyze_seconds = Histogram(
            "florence_analyze_duration_seconds",
            "Analyze request latency",
            ["task", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.analyze_images = Counter(
            "florence_analyze_images", "Images analysed, by outcome", ["task", "outcome"], registry=self.registry
        )
        ProcessCollector(registry=self.registry)
        self.registry.register(_ServicesCollector(services))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def observe(self, path: str, method: str, status: int, seconds: float, task: str | None) -> None:
        route = path if path in TRACKED_PATHS else "other"
        self.http_requests.labels(route, method, str(status)).inc()
        if path == ANALYZE_PATH and method == "POST":
            label = task or "none"
            self.analyze_requests.labels(label, str(status)).inc()
            self.analyze_seconds.labels(label, str(status)).observe(seconds)


class MetricsMiddleware:
    """Counts every request under `/api/` and the probe paths, with its final status and latency."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path.startswith("/api/") or path in TRACKED_PATHS):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception that escapes every handler ends as a 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            state: Any = scope.get("state") or {}
            task = state.get(TASK_STATE_KEY) if isinstance(state, dict) else None
            self.metrics.observe(path, scope.get("method", ""), status, time.perf_counter() - started, task)
