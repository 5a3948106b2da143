"""JSON 404/405 for unknown `/api/*` requests (the chat mounted at `/` would otherwise answer them)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute
from starlette.routing import Match

from app.api.errors import error_json

_ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


def build_fallback(*routers: APIRouter) -> APIRouter:
    """A catch-all under /api, included last: 405 with `Allow` for a known path, else 404."""
    known = [route for router in routers for route in router.routes if isinstance(route, APIRoute)]
    fallback = APIRouter()

    @fallback.api_route("/api/{path:path}", methods=_ALL_METHODS, include_in_schema=False)
    async def api_not_found(request: Request, path: str) -> Response:
        allowed: set[str] = set()
        for route in known:
            match, _ = route.matches({**request.scope, "method": "__none__"})
            if match is Match.PARTIAL:
                allowed |= route.methods or set()
        if allowed:
            return error_json(
                405, "method_not_allowed", "Method Not Allowed", headers={"Allow": ", ".join(sorted(allowed))}
            )
        return error_json(404, "not_found", f"No API endpoint at /api/{path[:100]}.")

    return fallback
