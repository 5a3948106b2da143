"""One ASGI app on PORT: the HTTP API plus Chainlit mounted at `/`, sharing one set of services."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from app import __version__
from app.api import api_router, install_api
from app.api.docs import offline_docs_app
from app.chat.integration import chat_lifespan, mount_chat
from app.core.config import Settings
from app.jobs.store import check_sqlite_job_store
from app.jobs.worker import jobs_lifespan
from app.services.container import Services, set_services
from app.serving.http_limits import RequestLimitsMiddleware, uvicorn_config

log = logging.getLogger(__name__)


def create_app(settings: Settings, services: Services | None = None) -> FastAPI:
    """Build the server. Tests pass their own `services` (e.g. a tiny model) to skip loading defaults."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        built = services or Services.build(settings)
        app.state.services = built
        set_services(built)
        try:
            # Chainlit's start-up/shutdown hooks (a mounted app skips them); the job queue and its worker.
            async with chat_lifespan(), jobs_lifespan(app, built):
                yield
        finally:
            set_services(None)
            built.close()

    app = offline_docs_app(title="Florence-2 Vision", version=__version__, lifespan=lifespan)  # /docs offline
    app.include_router(api_router)
    install_api(app, settings)  # auth, errors, body limit, CORS, metrics, model preload
    mount_chat(app, settings)  # last: the chat at `/` catches every path not routed above
    app.add_middleware(
        RequestLimitsMiddleware,
        max_headers=settings.http_max_headers,
        max_header_bytes=settings.http_max_header_bytes,
        body_timeout_s=settings.http_body_timeout_s,
    )
    if settings.forwarded_allow_ips.strip():
        # Outermost: the client address every layer sees (rate limits, logs) comes from a trusted proxy only.
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.forwarded_allow_ips)
    return app


def serve(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    """Run the server with uvicorn (blocking)."""
    import uvicorn

    # Before torch loads: OpenMP threads that spin-wait between operations starve the event loop and the
    # decoding threads; under concurrent load that cut goodput to a few percent (docs/RELIABILITY.md).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if not settings.queue_url:
        check_sqlite_job_store(settings)  # a damaged store stops here with what to do, before anything listens
    uvicorn.Server(uvicorn_config(create_app(settings), settings, host or settings.host, port or settings.port)).run()
