"""The server's FastAPI app, with interactive docs that load nothing from another host.

`/docs` (Swagger UI) uses the JS and CSS that `fastapi-offline` installs, served under `/docs-assets`.
There is no ReDoc page: its bundle always fetches a logo from a CDN. `/redoc` sends readers to
`/docs` (without the route, the Chainlit app mounted at `/` would answer with its own CDN page).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse
from fastapi_offline import FastAPIOffline

ASSETS_URL = "/docs-assets"


def offline_docs_app(**fastapi_options: Any) -> FastAPI:
    """`FastAPI(**fastapi_options)` whose `/docs` works offline."""
    app = FastAPIOffline(redoc_url=None, static_url=ASSETS_URL, **fastapi_options)

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> RedirectResponse:
        return RedirectResponse(f"{request.scope.get('root_path', '')}/docs")

    return app
