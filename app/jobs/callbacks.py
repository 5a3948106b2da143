"""Deliver a finished job to its `callback_url`, under the same SSRF rules as image URLs.

The URL is checked when the job is submitted (a bad one is refused at once) and again, with a
fresh DNS answer pinned for the connection, when the job finishes: the address may have changed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx

from app.core.errors import AppError, InvalidInput
from app.services.fetch import FetchPolicy, UrlFetcher

log = logging.getLogger(__name__)
MAX_CALLBACK_URL_CHARS = 2048
DELIVERY_ATTEMPTS = 3
_RETRY_DELAYS_S = (1.0, 3.0)


def _as_callback_error(exc: AppError) -> AppError:
    """The fetcher speaks of "the image URL"; the user sent a callback URL."""
    return type(exc)(
        exc.message.replace("The image URL", "The callback_url").replace("image URL", "callback_url"), code=exc.code
    )


class CallbackPoster(UrlFetcher):
    """POSTs JSON to a checked, address-pinned URL; redirects are not followed (a callback answers)."""

    def __init__(self, policy: FetchPolicy) -> None:
        super().__init__(policy)

    async def check(self, url: str) -> None:
        """Refuse a URL that is malformed or resolves to a non-public address (submit time)."""
        if len(url) > MAX_CALLBACK_URL_CHARS:
            raise InvalidInput(f"The callback_url is over {MAX_CALLBACK_URL_CHARS} characters.", code="invalid_url")
        try:
            await self._pin(self._check_url(url))
        except AppError as exc:
            raise _as_callback_error(exc) from None

    async def post_json(self, url: str, body: dict[str, Any]) -> int:
        """One delivery attempt; returns the HTTP status or raises `AppError`."""
        try:
            pinned = await self._pin(self._check_url(url))
        except AppError as exc:
            raise _as_callback_error(exc) from None
        headers = {**pinned.headers, "Accept": "*/*", "Content-Type": "application/json"}
        timeout = httpx.Timeout(self.policy.timeout_s)
        try:
            async with httpx.AsyncClient(trust_env=False, follow_redirects=False, timeout=timeout) as client:
                response = await client.post(pinned.url, json=body, headers=headers, extensions=pinned.extensions)
        except httpx.HTTPError as exc:
            message = f"The callback_url could not be reached ({type(exc).__name__})."
            raise AppError(message, code="callback_failed") from None
        return response.status_code

    def deliver(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        """Up to three attempts with short pauses; the report is stored on the job."""
        detail = ""
        for attempt in range(1, DELIVERY_ATTEMPTS + 1):
            try:
                status = asyncio.run(self.post_json(url, body))
            except AppError as exc:
                detail = exc.message
                if exc.code in ("url_forbidden", "invalid_url", "url_scheme_not_allowed"):
                    break  # will not get better by retrying
            else:
                if 200 <= status < 300:
                    return {"status": "delivered", "attempts": attempt, "http_status": status}
                detail = f"The callback_url answered HTTP {status}."
                if 400 <= status < 500 and status not in (408, 429):
                    break
            if attempt < DELIVERY_ATTEMPTS:
                time.sleep(_RETRY_DELAYS_S[attempt - 1])
        log.warning("callback for job %s failed: %s", body.get("id"), detail)
        return {"status": "failed", "attempts": attempt, "detail": detail}
