"""Images the chat shows: annotated results sized for a browser, and previews for the region picker.

All functions here are CPU work on possibly large images: call them in a thread.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

from PIL import Image

from app.core.results import AnyResult
from app.rendering.drawing import Annotator

DISPLAY_MAX_SIDE = 1600  # big enough to read labels, small enough to send over a websocket
PICKER_MAX_SIDE = 1024
THUMBNAIL_MAX_SIDE = 320  # a text answer shows which image it is about, not the whole image again
_PNG_MAX_PIXELS = 1_000_000  # above this a photo as PNG gets large; JPEG at high quality keeps labels sharp


@dataclass(frozen=True)
class Picture:
    content: bytes
    mime: str

    @property
    def extension(self) -> str:
        return "png" if self.mime == "image/png" else "jpg"


def _fit(image: Image.Image, max_side: int) -> Image.Image:
    if max(image.size) <= max_side:
        return image
    scale = max_side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


def encode_for_display(image: Image.Image, max_side: int = DISPLAY_MAX_SIDE) -> Picture:
    shown = _fit(image.convert("RGB"), max_side)
    buffer = io.BytesIO()
    if shown.width * shown.height <= _PNG_MAX_PIXELS:
        shown.save(buffer, format="PNG", optimize=False)
        return Picture(buffer.getvalue(), "image/png")
    shown.save(buffer, format="JPEG", quality=90)
    return Picture(buffer.getvalue(), "image/jpeg")


def annotated_picture(image: Image.Image, result: AnyResult, annotator: Annotator | None = None) -> Picture:
    """Draw at full resolution (line widths scale with the image), then shrink for display."""
    return encode_for_display((annotator or Annotator()).annotate(image, result))


def thumbnail(image: Image.Image) -> Picture:
    return encode_for_display(image, THUMBNAIL_MAX_SIDE)


def picker_data_url(image: Image.Image) -> str:
    """A small JPEG as a data URL: the picker element needs no extra route or file storage."""
    shown = _fit(image.convert("RGB"), PICKER_MAX_SIDE)
    buffer = io.BytesIO()
    shown.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
