"""`install_api(app, settings)`: everything the API adds to the server besides its routes."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from app.api.auth import AuthPolicy
from app.api.body_limit import BodySizeLimitMiddleware
from app.api.cors import install_cors
from app.api.deps import ApiState
from app.api.early_busy import EarlyBusyMiddleware
from app.api.errors import install_error_handlers
from app.api.metrics import ApiMetrics, MetricsMiddleware
from app.core.config import Settings
from app.core.errors import AppError
from app.models.manager import ModelManager
from app.services.container import Services
from app.services.fetch import FetchPolicy, UrlFetcher

log = logging.getLogger(__name__)


def install_api(app: FastAPI, settings: Settings) -> ApiState:
    """Auth policy, error handlers, body limit, CORS, metrics and model preload.

    Raises `ConfigError` (with the setting to fix) when the API settings are inconsistent, so a
    misconfigured server fails at start instead of serving with a surprise.
    """

    def current_services() -> Services | None:
        return getattr(app.state, "services", None)

    state = ApiState(
        settings=settings,
        auth=AuthPolicy.from_settings(settings),
        metrics=ApiMetrics(current_services),
        fetcher=UrlFetcher(FetchPolicy.from_settings(settings)),
        current_services=current_services,
    )
    app.state.api = state
    install_error_handlers(app)
    # add_middleware wraps what is there: the last added runs first (metrics → early busy → CORS → body limit → app).
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_request_bytes)
    install_cors(app, settings)
    app.add_middleware(EarlyBusyMiddleware, settings=settings)  # before any body is read
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    if settings.preload:
        _preload_after_startup(app, state)
    return state


def _preload_after_startup(app: FastAPI, state: ApiState) -> None:
    """Start loading the model in the background once the lifespan has built the services."""
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app_: Any) -> AsyncIterator[Any]:
        async with inner(app_) as lifespan_state:
            services = getattr(app.state, "services", None)
            if services is not None:
                state.preload_thread = threading.Thread(
                    target=_load_quietly, args=(services.manager,), name="model-preload", daemon=True
                )
                state.preload_thread.start()
            yield lifespan_state

    app.router.lifespan_context = lifespan


def _load_quietly(manager: ModelManager) -> None:
    # A failure is logged by the manager and kept as state FAILED: /readyz reports it, a request retries.
    with contextlib.suppress(AppError):
        manager.get()
