"""Two sample images the project draws itself (Pillow, no files in git) and the starters that use them.

A starter sends its fixed message; `ChatFlow` sees that message arrive with no upload and attaches the
sample, so a new user gets a real answer in one click.
"""

from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from app.chat.inputs import Upload
from app.rendering.drawing import load_font


@dataclass(frozen=True)
class SampleStarter:
    label: str
    message: str  # sent as typed: Auto mode routes it like any other message
    sample: str  # file name of the sample image it runs on


STARTERS: tuple[SampleStarter, ...] = (
    SampleStarter("Find the cars", "Find the cars in the sample street picture", "street.png"),
    SampleStarter("Read a sign", "Read the text in the sample sign picture", "sign.png"),
    SampleStarter("Describe a picture", "Describe the sample street picture in detail", "street.png"),
)
_BY_MESSAGE = {starter.message.casefold(): starter for starter in STARTERS}


def starter_upload(text: str) -> Upload | None:
    """The sample image a starter's message runs on, drawn on first use; None for any other message."""
    starter = _BY_MESSAGE.get(" ".join(text.split()).casefold())
    if starter is None:
        return None
    return Upload(name=starter.sample, path=_samples_dir() / starter.sample)


@functools.cache
def _samples_dir() -> Path:
    directory = Path(tempfile.mkdtemp(prefix="florence-vision-samples-"))
    draw_street().save(directory / "street.png")
    draw_sign().save(directory / "sign.png")
    return directory


def draw_street(size: tuple[int, int] = (800, 500)) -> Image.Image:
    """A flat-colour street: sky, a house, a tree, two cars on the road."""
    width, height = size
    image = Image.new("RGB", size, (150, 200, 240))
    draw = ImageDraw.Draw(image)
    horizon = int(height * 0.62)
    draw.rectangle((0, horizon, width, height), fill=(90, 90, 95))  # road
    draw.rectangle((0, horizon - 12, width, horizon), fill=(110, 170, 80))  # verge
    for x in range(20, width, 90):  # lane marks
        draw.rectangle((x, int(height * 0.82), x + 45, int(height * 0.82) + 6), fill=(240, 240, 240))
    draw.ellipse((640, 40, 720, 120), fill=(255, 220, 60))  # sun
    draw.rectangle((70, 150, 300, horizon - 12), fill=(200, 120, 80))  # house
    draw.polygon([(50, 150), (185, 60), (320, 150)], fill=(150, 60, 50))
    draw.rectangle((160, 210, 210, horizon - 12), fill=(90, 60, 40))
    draw.rectangle((95, 180, 140, 220), fill=(220, 240, 255))
    draw.rectangle((235, 180, 280, 220), fill=(220, 240, 255))
    draw.rectangle((420, 170, 440, horizon - 12), fill=(110, 75, 40))  # tree
    draw.ellipse((370, 80, 490, 200), fill=(50, 140, 60))
    for x, color in ((120, (200, 30, 40)), (500, (40, 80, 200))):  # cars
        top = int(height * 0.70)
        draw.rounded_rectangle((x, top, x + 200, top + 55), radius=12, fill=color)
        draw.polygon([(x + 40, top), (x + 70, top - 40), (x + 150, top - 40), (x + 175, top)], fill=color)
        draw.polygon([(x + 78, top - 33), (x + 108, top - 33), (x + 108, top - 3), (x + 55, top - 3)],
                     fill=(200, 230, 250))  # fmt: skip
        draw.polygon([(x + 116, top - 33), (x + 146, top - 33), (x + 165, top - 3), (x + 116, top - 3)],
                     fill=(200, 230, 250))  # fmt: skip
        for wheel in (x + 30, x + 140):
            draw.ellipse((wheel, top + 35, wheel + 42, top + 77), fill=(25, 25, 25))
    return image


def draw_sign(size: tuple[int, int] = (800, 450)) -> Image.Image:
    """A shop sign with three lines of large, known text on a wall."""
    image = Image.new("RGB", size, (185, 175, 160))
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle((80, 60, 720, 390), radius=24, fill=(20, 70, 60), outline=(230, 200, 120), width=8)
    lines = (("FLORENCE CAFE", 64), ("Open daily 8 - 18", 44), ("Fresh bread and coffee", 40))
    y = 105
    for text, font_size in lines:
        font = load_font(font_size)
        x = (size[0] - font.getlength(text)) / 2
        draw.text((x, y), text, font=font, fill=(250, 245, 230))
        y += int(font_size * 1.7)
    return image
