"""The one place that turns failures into `{"error": {"code", "message"}}` with the right status.

Validation errors are summarised from their location and pydantic's message only: the input is
never echoed (a 1 MB field must not come back as a 1 MB error), and every piece is length-capped.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import AppError

log = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 500
_MAX_LOC_PART_CHARS = 40
_MAX_REPORTED_ERRORS = 5
_CODE_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    503: "unavailable",
}


class ErrorBody(BaseModel):
    code: str
    message: str
    retry_after: float | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


def error_json(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message[:MAX_MESSAGE_CHARS]}}, status, headers=headers)


async def call_or_refuse(app: ASGIApp, scope: Scope, receive: Receive, send: Send, refusable: type[AppError]) -> None:
    """Run `app`; a `refusable` error raised (by a wrapped `receive`) before the response started is answered
    in the documented shape with its own status. The connection closes: the rest of the body was never read."""
    started = False

    async def tracking_send(message: Message) -> None:
        nonlocal started
        started = started or message["type"] == "http.response.start"
        await send(message)

    try:
        await app(scope, receive, tracking_send)
    except refusable as error:
        if started:
            raise
        refusal = error_json(error.http_status, error.code, error.message, headers={"Connection": "close"})
        await refusal(scope, receive, send)


def error_headers(exc: AppError) -> dict[str, str]:
    headers: dict[str, str] = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    if exc.http_status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if exc.http_status == 408:  # the body was not read to its end: the connection cannot carry another request
        headers["Connection"] = "close"
    return headers


def app_error_response(exc: AppError, extra: dict[str, Any] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": exc.to_dict(), **(extra or {})}
    return JSONResponse(body, exc.http_status, headers=error_headers(exc))


def describe_validation_errors(errors: Any) -> str:
    """`images.0.url: Field required; region.1: Input should be a finite number` (no input values)."""
    parts = []
    for error in list(errors)[:_MAX_REPORTED_ERRORS]:
        loc = ".".join(str(p)[:_MAX_LOC_PART_CHARS] for p in error.get("loc", ()) if p != "body")
        message = str(error.get("msg", "invalid"))[:200]
        parts.append(f"{loc}: {message}" if loc else message)
    more = len(list(errors)) - _MAX_REPORTED_ERRORS
    if more > 0:
        parts.append(f"(+{more} more)")
    return "; ".join(parts)[:MAX_MESSAGE_CHARS] or "The request is not valid."


async def _on_app_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    if exc.http_status == 500:
        log.error("%s %s failed: %s", request.method, request.url.path, exc.message)
    return app_error_response(exc)


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return error_json(400, "invalid_json", "The request body is not valid JSON.")
    return error_json(422, "validation_error", describe_validation_errors(errors))


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    message = exc.detail if isinstance(exc.detail, str) and exc.detail else phrase
    return error_json(status, _CODE_BY_STATUS.get(status, f"http_{status}"), message, headers=exc.headers)


async def _on_disconnect(request: Request, exc: Exception) -> JSONResponse:
    # An aborted upload is the client's choice, not a server fault; nobody reads this answer. (Its own
    # handler: the catch-all `Exception` handler runs in Starlette's error middleware, which re-raises.)
    log.debug("%s %s: the client disconnected", request.method, request.url.path[:200])
    return error_json(400, "client_disconnected", "The client closed the connection before the request was read.")


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("%s %s: unhandled %s", request.method, request.url.path, type(exc).__name__, exc_info=exc)
    return error_json(500, "internal_error", "Internal server error; the details are in the server log.")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _on_app_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(ClientDisconnect, _on_disconnect)
    app.add_exception_handler(Exception, _on_unexpected)


# OpenAPI: every error status the API uses, all with the same body.
def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorResponse, "description": HTTPStatus(status).phrase} for status in statuses}
