"""Chat requests draw from the process's decoded-pixel budget (`Services.pixels`), as API requests do.

A message's images are counted from their headers before anything is decoded: the new uploads when it
brings some, else the session's images (decoded again from Chainlit's files for the request). Over
`MAX_REQUEST_PIXELS` the message is refused with the limit; otherwise the pixels are held while the
request runs and the chat waits its turn (then `busy`) when other requests hold the in-flight budget.
The refusals are `AppError`s, so the chat shows them as its usual friendly messages.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from app.chat.inputs import Upload
from app.chat.session import ChatSession
from app.core.config import Settings
from app.core.images import ImageLimits, declared_pixels
from app.services.pixel_budget import PixelBudget


def request_pixels(session: ChatSession, uploads: Sequence[Upload], settings: Settings) -> int:
    """Pixels the request will decode (blocking: new uploads' headers are read from disk)."""
    if uploads:
        limits = ImageLimits(max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels)
        return sum(declared_pixels(upload.path, limits) for upload in uploads if upload.path is not None)
    return sum(image.image_wh[0] * image.image_wh[1] for image in session.images)


@asynccontextmanager
async def within_pixel_budget(
    budget: PixelBudget, session: ChatSession, uploads: Sequence[Upload], settings: Settings
) -> AsyncIterator[None]:
    pixels = await asyncio.to_thread(request_pixels, session, uploads, settings)
    budget.check_request(pixels)
    async with budget.hold(pixels):
        yield
