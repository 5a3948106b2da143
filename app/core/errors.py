"""A small error hierarchy, mapped once to HTTP statuses (API) and chat messages (UI)."""

from __future__ import annotations

from typing import Any


class AppError(Exception):
    """Base of every error a user may see. `message` is safe to show; no stack traces."""

    code: str = "internal_error"
    http_status: int = 500

    def __init__(self, message: str, *, code: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.retry_after = retry_after

    def to_dict(self, with_status: bool = False) -> dict[str, object]:
        body: dict[str, object] = {"code": self.code, "message": self.message}
        if self.retry_after is not None:
            body["retry_after"] = round(self.retry_after, 1)
        if with_status:  # where the error is not the response's own (one image of many, a stored job)
            body["status"] = self.http_status
        return body


def error_entry(name: str, error: AppError) -> dict[str, Any]:
    """One failed image of a per-image answer (API routes and jobs): `{"name", "error": {..., "status"}}`."""
    return {"name": name, "error": error.to_dict(with_status=True)}


class InvalidInput(AppError):
    code = "invalid_input"
    http_status = 400


class UnknownTask(InvalidInput):
    code = "unknown_task"


class InvalidImage(InvalidInput):
    code = "invalid_image"


class PayloadTooLarge(AppError):
    code = "payload_too_large"
    http_status = 413


class UnsupportedMediaType(AppError):
    code = "unsupported_media_type"
    http_status = 415


class Unauthorized(AppError):
    code = "unauthorized"
    http_status = 401


class Forbidden(AppError):
    code = "forbidden"
    http_status = 403


class NotFound(AppError):
    code = "not_found"
    http_status = 404


class Conflict(AppError):
    code = "conflict"
    http_status = 409


class RateLimited(AppError):
    code = "rate_limited"
    http_status = 429


class Unavailable(AppError):
    """Something the request needs cannot serve it right now (503); subclasses say what."""

    code = "unavailable"
    http_status = 503


class Busy(Unavailable):
    code = "busy"


class ModelUnavailable(Unavailable):
    code = "model_unavailable"


class ConfigError(AppError):
    """A settings mistake (an environment variable or `.env` value): the message names the setting and the
    fix. `serve` and `worker` check the settings first (`app.serving.startup_checks.check_settings`), so it stops
    the process at start with one line; no request ever meets one."""

    code = "invalid_setting"
    http_status = 500


class InferenceError(AppError):
    code = "inference_failed"
    http_status = 500
