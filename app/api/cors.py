"""CORS for the API only, from an allowlist (`CORS_ORIGINS`); the chat keeps its own rules."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.errors import error_json
from app.core.config import Settings
from app.core.errors import ConfigError

API_PREFIX = "/api/"


class ApiCORSMiddleware:
    """Starlette's CORS middleware applied to `/api/*` requests; other paths pass untouched."""

    def __init__(self, app: ASGIApp, origins: list[str], allow_credentials: bool) -> None:
        self.app = app
        self.cors = CORSMiddleware(
            app,
            allow_origins=origins,
            allow_credentials=allow_credentials,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
            expose_headers=["Retry-After"],
            max_age=600,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope.get("path", "").startswith(API_PREFIX):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if scope["method"] == "OPTIONS" and "origin" in headers and "access-control-request-method" in headers:
            response = self.cors.preflight_response(request_headers=headers)
            if response.status_code >= 400:
                # Starlette refuses in plain text ("Disallowed CORS origin"); answer in the API's error shape.
                reason = bytes(response.body).decode("utf-8", "replace")
                refusal = error_json(response.status_code, "cors_refused", f"{reason}.")
                for name in ("vary",):
                    if name in response.headers:
                        refusal.headers[name] = response.headers[name]
                response = refusal
            await response(scope, receive, send)
            return
        await self.cors(scope, receive, send)


def parse_origins(text: str) -> list[str]:
    return [origin.strip().rstrip("/") for origin in text.split(",") if origin.strip()]


def cors_origins(settings: Settings) -> list[str]:
    """The allowed origins (`CORS_ORIGINS`), or `ConfigError` for a combination that would trust every site."""
    origins = parse_origins(settings.cors_origins)
    if "*" in origins and settings.cors_allow_credentials:
        # Starlette would reflect any origin with credentials: every site could act as the user.
        raise ConfigError("CORS_ORIGINS=* cannot be combined with CORS_ALLOW_CREDENTIALS=true; list the origins.")
    return origins


def install_cors(app: FastAPI, settings: Settings) -> None:
    origins = cors_origins(settings)
    if not origins:
        return  # no Access-Control-* headers at all: browsers on other origins are refused
    app.add_middleware(ApiCORSMiddleware, origins=origins, allow_credentials=settings.cors_allow_credentials)
