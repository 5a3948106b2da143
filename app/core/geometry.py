"""Pixel boxes ↔ Florence-2 location tokens, and box clean-up. Pure Python, no torch.

Florence-2 quantises each axis into 1000 bins: pixel x on an image `w` wide falls in bin
`floor(x / (w / 1000))`, computed in exactly that form, as Microsoft's processor and the native
one do (exact integer arithmetic would pick a different bin in about 600 of 2 million cases).
The native post-processor de-quantises bin `b` to `int((b + 0.5) * w / 1000)`: the bin centre
truncated to a whole pixel, so up to 1 px toward the origin from the centre. A box → tokens →
parsed box round trip therefore lands within one bin.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from app.core.errors import InvalidInput

NUM_BINS = 1000
XYXY = tuple[float, float, float, float]
_NUMBER_RE = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)")
_SEPARATOR_RE = re.compile(r"\s*,\s*|\s+")
_MAX_REGION_CHARS = 200  # also bounds the regex work on hostile input


def parse_region(text: str) -> XYXY:
    """Parse `x1,y1,x2,y2` (commas or spaces, optional brackets) into a float box."""
    body = text.strip()
    if len(body) > _MAX_REGION_CHARS:
        raise InvalidInput("A region is four pixel numbers: x1,y1,x2,y2.", code="invalid_region")
    parts = _SEPARATOR_RE.split(body.removeprefix("[").removesuffix("]").strip())
    if len(parts) != 4 or not all(_NUMBER_RE.fullmatch(part) for part in parts):
        raise InvalidInput("A region is four pixel numbers: x1,y1,x2,y2.", code="invalid_region")
    x1, y1, x2, y2 = (float(part) for part in parts)  # at most 200 digits: always finite
    return (x1, y1, x2, y2)


def clip_box(xyxy: Sequence[float], image_wh: tuple[int, int]) -> XYXY:
    """Order the corners and clip to the image; reject boxes that are not finite or fall outside."""
    if len(xyxy) != 4:
        raise InvalidInput("A region needs exactly four numbers x1,y1,x2,y2.", code="invalid_region")
    if not all(isinstance(v, int | float) and math.isfinite(v) for v in xyxy):
        raise InvalidInput("Region coordinates must be finite numbers.", code="invalid_region")
    width, height = image_wh
    x1, x2 = sorted((float(xyxy[0]), float(xyxy[2])))
    y1, y2 = sorted((float(xyxy[1]), float(xyxy[3])))
    cx1, cy1 = max(0.0, x1), max(0.0, y1)
    cx2, cy2 = min(float(width), x2), min(float(height), y2)
    if cx2 - cx1 < 1 or cy2 - cy1 < 1:
        raise InvalidInput(
            f"Region ({x1:g},{y1:g},{x2:g},{y2:g}) does not overlap the {width}x{height} image by at least one pixel.",
            code="region_outside_image",
        )
    return (cx1, cy1, cx2, cy2)


def quantize(value: float, size: int) -> int:
    """Pixel coordinate → bin index, exactly as the processor's `quantize` (floor, clamped)."""
    return min(NUM_BINS - 1, max(0, math.floor(value / (size / NUM_BINS))))


def dequantize(bin_index: int, size: int) -> float:
    """Bin index → the bin centre in pixels (the native parser then truncates it to an int; see above)."""
    return (bin_index + 0.5) * size / NUM_BINS


def box_to_loc_bins(xyxy: Sequence[float], image_wh: tuple[int, int]) -> tuple[int, int, int, int]:
    width, height = image_wh
    x1, y1, x2, y2 = clip_box(xyxy, image_wh)
    return (quantize(x1, width), quantize(y1, height), quantize(x2, width), quantize(y2, height))


def box_to_loc_tokens(xyxy: Sequence[float], image_wh: tuple[int, int]) -> str:
    """Pixel box on an image of `image_wh` → `<loc_x1><loc_y1><loc_x2><loc_y2>`."""
    return "".join(f"<loc_{b}>" for b in box_to_loc_bins(xyxy, image_wh))


def normalize_xyxy(xyxy: Sequence[float]) -> XYXY:
    """Order corners so x1 <= x2 and y1 <= y2 (a model may emit them swapped)."""
    x1, x2 = sorted((float(xyxy[0]), float(xyxy[2])))
    y1, y2 = sorted((float(xyxy[1]), float(xyxy[3])))
    return (x1, y1, x2, y2)


def polygon_bbox(points: Sequence[float]) -> XYXY:
    xs, ys = points[0::2], points[1::2]
    return (float(min(xs)), float(min(ys)), float(max(xs)), float(max(ys)))


def polygon_area(points: Sequence[float]) -> float:
    """Shoelace area of a flat [x0, y0, x1, y1, ...] polygon."""
    xs, ys = points[0::2], points[1::2]
    n = len(xs)
    twice = sum(xs[i] * ys[(i + 1) % n] - xs[(i + 1) % n] * ys[i] for i in range(n))
    return abs(twice) / 2.0
