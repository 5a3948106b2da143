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

    for route in known:
        if not route.path.startswith("/api/"):
            _add_method_fallback(fallback, route)
    return fallback


def _add_method_fallback(fallback: APIRouter, route: APIRoute) -> None:
    """405 in the error shape for the other methods on `/healthz`-like paths outside /api (the chat's
    catch-all would answer them in its own shape)."""
    allowed = set(route.methods or ()) | ({"HEAD"} if "GET" in (route.methods or ()) else set())
    others = [method for method in _ALL_METHODS if method not in allowed]

    async def method_not_allowed() -> Response:
        return error_json(
            405, "method_not_allowed", "Method Not Allowed", headers={"Allow": ", ".join(sorted(allowed))}
        )

    fallback.add_api_route(route.path, method_not_allowed, methods=others, include_in_schema=False)
