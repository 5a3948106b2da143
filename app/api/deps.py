"""FastAPI dependencies: the process services and the API's own state, read from `app.state`.

Dependencies are `async def` even when they never await: FastAPI runs a plain `def` dependency in
its thread pool, one thread hop per dependency per request (~2 ms of the analyze route's overhead
on 2 busy cores, measured by bench/http_overhead.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from app.core.config import Settings
from app.core.errors import ModelUnavailable
from app.services.container import Services

if TYPE_CHECKING:
    import threading

    from app.api.auth import AuthPolicy
    from app.api.metrics import ApiMetrics
    from app.services.fetch import UrlFetcher
    from app.services.pixel_budget import PixelBudget


@dataclass
class ApiState:
    """Built once by `install_api` and kept on `app.state.api`."""

    settings: Settings
    auth: AuthPolicy
    metrics: ApiMetrics
    fetcher: UrlFetcher
    current_services: Callable[[], Services | None]
    preload_thread: threading.Thread | None = None

    @property
    def pixels(self) -> PixelBudget:
        """The process's pixel budget, shared with the chat and the embedded job worker (`Services.pixels`)."""
        services = self.current_services()
        if services is None:  # only before the lifespan has run
            raise ModelUnavailable("The server is still starting.", code="starting")
        return services.pixels


async def get_api_state(request: Request) -> ApiState:
    state: ApiState = request.app.state.api
    return state


async def get_services(request: Request) -> Services:
    services: Services | None = getattr(request.app.state, "services", None)
    if services is None:  # only before the lifespan has run
        raise ModelUnavailable("The server is still starting.", code="starting")
    return services


ApiStateDep = Annotated[ApiState, Depends(get_api_state)]
ServicesDep = Annotated[Services, Depends(get_services)]
