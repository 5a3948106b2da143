"""Draw results on images: boxes with label tags, translucent polygons, OCR quads, asked regions.

In the style of roboflow/supervision: an `Annotator` is configured once and `annotate(image, result)`
returns a NEW image (the input is never modified). Line width and font size scale with the image so
labels stay legible from 64 px to 8000 px wide; colours are stable per label across runs and machines.
Imports PIL and domain types only.
"""

from __future__ import annotations

import io
import math
import textwrap
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from app.core.results import AnyResult, DetectionResult, OCRResult, SegmentationResult, TextResult

RGB = tuple[int, int, int]
Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
DEJAVU_SANS = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


def _hex(value: str) -> RGB:
    return (int(value[1:3], 16), int(value[3:5], 16), int(value[5:7], 16))


# Saturated colours that stand out on photos (Trubetskoy's distinct colours, pale ones removed).
# The order is part of the contract: a label keeps its colour across releases.
PALETTE: tuple[RGB, ...] = tuple(
    _hex(c)
    for c in (
        "#E6194B", "#3CB44B", "#FFE119", "#4363D8", "#F58231", "#911EB4", "#42D4F4", "#F032E6",
        "#BFEF45", "#469990", "#9A6324", "#800000", "#808000", "#000075", "#FABED4", "#DCBEFF",
    )
)  # fmt: skip
REGION_DASH_COLORS: tuple[RGB, RGB] = ((255, 255, 255), (0, 0, 0))  # visible on any background
_ELLIPSIS = "…"


def label_color(label: str, palette: Sequence[RGB] = PALETTE) -> RGB:
    """The colour of a label: CRC-32 of its text (Python's `hash` is randomised per process)."""
    return palette[zlib.crc32(label.strip().lower().encode("utf-8")) % len(palette)]


def class_colors(labels: Sequence[str], palette: Sequence[RGB] = PALETTE) -> dict[str, RGB]:
    """A colour per distinct label of one result: its own `label_color` unless an earlier class took it,
    then the next free palette entry, so no two classes of a picture share a colour (up to the palette's size).
    """
    colors: dict[str, RGB] = {}
    used: set[RGB] = set()
    for label in labels:
        key = label.strip().lower()
        if not key or key in colors:
            continue
        start = zlib.crc32(key.encode("utf-8")) % len(palette)
        free = [palette[(start + n) % len(palette)] for n in range(len(palette))]
        color = next((c for c in free if c not in used), free[0])
        colors[key] = color
        used.add(color)
    return colors


def label_text(number: int | None, label: str, score: float | None = None) -> str:
    """A drawn tag: `#2 car`, `#2 car 0.91` with a score, `#2` for an unlabelled box. The number is the
    instance's place in the reply's list and in the JSON (1-based), what "box 2" refers to."""
    parts = [f"#{number}"] if number is not None else []
    if label.strip():
        parts.append(label.strip())
    if score is not None:
        parts.append(f"{score:.2f}")
    return " ".join(parts)


def text_color_for(background: RGB) -> RGB:
    """Black or white, whichever reads better on `background` (perceived luminance)."""
    r, g, b = background
    return (0, 0, 0) if (0.299 * r + 0.587 * g + 0.114 * b) > 150 else (255, 255, 255)


@lru_cache(maxsize=64)
def load_font(size: int) -> Font:
    """DejaVu Sans when installed (Debian `fonts-dejavu-core`), else Pillow's scalable built-in font."""
    if DEJAVU_SANS.is_file():
        try:
            return ImageFont.truetype(str(DEJAVU_SANS), size)
        except OSError:
            pass
    return ImageFont.load_default(size=size)


def to_png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


Rect = tuple[int, int, int, int]  # inclusive pixel box


@dataclass(frozen=True)
class _Tag:
    text: str
    box: Rect  # the box the tag belongs to
    color: RGB
    font_size: int | None = None  # None: the image's font size
    outside: bool = False  # never inside its box (OCR: the tag would cover the text it found)


@dataclass(frozen=True)
class Annotator:
    """Drawing configuration; `annotate` is a pure function of (image, result).

    Sizes are relative to the longer image side so a picture shown at screen size looks the same
    whatever its resolution.
    """

    line_width_factor: float = 0.0025
    # Of the image WIDTH: a phone shows a picture ~320 CSS px wide whatever its size, and a tag must still
    # read at 11 px there (0.036 * 320 = 11.5).
    font_factor: float = 0.036
    min_font_px: int = 12
    max_stack: int = 6  # how far a tag moves away from its box to avoid covering another
    fill_opacity: float = 0.4
    show_scores: bool = True
    caption_strip: bool = False  # append the text of text results below the image (changes its size)
    max_label_chars: int = 60
    palette: tuple[RGB, ...] = PALETTE

    # -- scale ---------------------------------------------------------------------------------------------
    def line_width(self, image_wh: tuple[int, int]) -> int:
        return max(1, round(1 + self.line_width_factor * max(image_wh)))

    def font_size(self, image_wh: tuple[int, int]) -> int:
        scaled = math.ceil(self.font_factor * image_wh[0])
        # A very flat image (a text line, a panorama) caps the font so a tag still fits vertically.
        return max(self.min_font_px, min(scaled, min(image_wh) // 3))

    def color(self, label: str) -> RGB:
        return label_color(label, self.palette)

    # -- entry point -----------------------------------------------------------------------------------
    def annotate(self, image: Image.Image, result: AnyResult) -> Image.Image:
        """A new image with `result` drawn on it. RGBA input stays RGBA; any other mode becomes RGB."""
        # convert() always returns a new image, even to the same mode
        canvas = image.convert("RGBA") if image.mode in ("RGBA", "LA", "PA") else image.convert("RGB")
        tags: list[_Tag] = []
        obstacles: list[Rect] = []
        if isinstance(result, DetectionResult):
            tags = self._detections(canvas, result)
        elif isinstance(result, SegmentationResult):
            canvas, tags = self._segmentation(canvas, result)
        elif isinstance(result, OCRResult):
            tags = self._ocr(canvas, result)
            obstacles = [tag.box for tag in tags]
        elif result.region is not None and result.text:
            tags = [_Tag(result.text, self._box_pixels(result.region, canvas.size), self.color(result.text))]
        if result.region is not None:
            self._region(canvas, result.region)
        placed: list[Rect] = []
        for tag in tags:  # tags last so no line crosses a label; each avoids the ones before it
            if (rect := self._tag(canvas, tag, placed, obstacles)) is not None:
                placed.append(rect)
        if isinstance(result, TextResult) and self.caption_strip and result.text:
            canvas = self._with_caption(canvas, result.text)
        return canvas

    # -- result kinds: draw the shapes, return the tags --------------------------------------------------
    def _detections(self, canvas: Image.Image, result: DetectionResult) -> list[_Tag]:
        draw = ImageDraw.Draw(canvas)
        width = self.line_width(canvas.size)
        colors = class_colors(result.labels, self.palette)
        tags = []
        for i, (xyxy, label) in enumerate(zip(result.xyxy, result.labels, strict=True)):
            # Unlabelled boxes (region proposals) are coloured by position.
            color = colors[label.strip().lower()] if label.strip() else self.palette[i % len(self.palette)]
            score = result.scores[i] if self.show_scores and result.scores is not None else None
            box = self._box_pixels(xyxy, canvas.size)
            draw.rectangle(box, outline=color, width=min(width, _span(box)))
            tags.append(_Tag(label_text(i + 1, label, score), box, color))
        return tags

    def _segmentation(self, canvas: Image.Image, result: SegmentationResult) -> tuple[Image.Image, list[_Tag]]:
        if not result.polygons:
            return canvas, []
        by_class = class_colors(result.labels, self.palette)
        colors = [
            by_class[label.strip().lower()] if label.strip() else self.palette[i % len(self.palette)]
            for i, label in enumerate(result.labels)
        ]
        # Fills go on a transparent layer composited once: each pixel is a true blend of photo and colour.
        overlay = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
        fill = ImageDraw.Draw(overlay)
        alpha = round(255 * min(1.0, max(0.0, self.fill_opacity)))
        for parts, color in zip(result.polygons, colors, strict=True):
            for part in parts:
                fill.polygon(_points(part), fill=(*color, alpha))
        blended = Image.alpha_composite(canvas.convert("RGBA"), overlay)
        blended = blended if canvas.mode == "RGBA" else blended.convert("RGB")
        draw = ImageDraw.Draw(blended)
        width = self.line_width(canvas.size)
        tags = []
        for i, (parts, label, color) in enumerate(zip(result.polygons, result.labels, colors, strict=True)):
            for part in parts:
                points = _points(part)
                draw.line([*points, points[0]], fill=color, width=width, joint="curve")
            xyxy = result.instance_xyxy(i)
            if xyxy is not None:
                score = result.scores[i] if self.show_scores and result.scores is not None else None
                tags.append(_Tag(label_text(i + 1, label, score), self._box_pixels(xyxy, blended.size), color))
        return blended, tags

    def _ocr(self, canvas: Image.Image, result: OCRResult) -> list[_Tag]:
        draw = ImageDraw.Draw(canvas)
        width = self.line_width(canvas.size)
        base_font = self.font_size(canvas.size)
        tags = []
        for i, (quad, text) in enumerate(zip(result.quads, result.texts, strict=True)):
            color = self.palette[i % len(self.palette)]
            points = _points(quad)
            draw.line([*points, points[0]], fill=color, width=width, joint="curve")
            if text:
                xs, ys = quad[0::2], quad[1::2]
                box = self._box_pixels((min(xs), min(ys), max(xs), max(ys)), canvas.size)
                # The read text goes next to its line, never over any found text; at most the line's height
                # so a dense document stays readable.
                size = max(self.min_font_px, min(base_font, box[3] - box[1] + 1))
                tags.append(_Tag(text, box, color, font_size=size, outside=True))
        return tags

    def _region(self, canvas: Image.Image, region: Sequence[float]) -> None:
        """The region the user asked about: a black-and-white dashed frame just inside its edges."""
        draw = ImageDraw.Draw(canvas)
        x1, y1, x2, y2 = self._box_pixels(region, canvas.size)
        width = min(self.line_width(canvas.size), _span((x1, y1, x2, y2)))
        dash = max(4, 4 * width)
        for n, x in enumerate(range(x1, x2 + 1, dash)):
            color = REGION_DASH_COLORS[n % 2]
            end = min(x + dash - 1, x2)
            draw.rectangle((x, y1, end, y1 + width - 1), fill=color)
            draw.rectangle((x, y2 - width + 1, end, y2), fill=color)
        for n, y in enumerate(range(y1, y2 + 1, dash)):
            color = REGION_DASH_COLORS[n % 2]
            end = min(y + dash - 1, y2)
            draw.rectangle((x1, y, x1 + width - 1, end), fill=color)
            draw.rectangle((x2 - width + 1, y, x2, end), fill=color)

    # -- pieces ------------------------------------------------------------------------------------------
    @staticmethod
    def _box_pixels(xyxy: Sequence[float], image_wh: tuple[int, int]) -> tuple[int, int, int, int]:
        """Continuous `xyxy` → inclusive pixel box covering columns [x1, x2) and rows [y1, y2)."""
        width, height = image_wh
        x1 = min(max(0, math.floor(xyxy[0] + 0.5)), width - 1)
        y1 = min(max(0, math.floor(xyxy[1] + 0.5)), height - 1)
        x2 = min(max(x1, math.floor(xyxy[2] + 0.5) - 1), width - 1)
        y2 = min(max(y1, math.floor(xyxy[3] + 0.5) - 1), height - 1)
        return (x1, y1, x2, y2)

    def _tag(self, canvas: Image.Image, tag: _Tag, placed: Sequence[Rect], obstacles: Sequence[Rect]) -> Rect | None:
        """Draw a filled label tag where it covers no earlier tag and no obstacle; return where it went.

        First choice above the box's top-left corner, then inside it, below it, or at its right end; when
        all of those are taken the tag moves further away (stacked) with a leader line back to its box.
        """
        image_w = canvas.width
        box, color = tag.box, tag.color
        font = load_font(tag.font_size or self.font_size(canvas.size))
        pad = max(1, round(font.size * 0.25)) if isinstance(font, ImageFont.FreeTypeFont) else 2
        text = _fit(" ".join(tag.text.split()), font, image_w - 2 * pad, self.max_label_chars)
        ascent, descent = _metrics(font)
        tag_w = math.ceil(font.getlength(text)) + 2 * pad
        tag_h = ascent + descent + 2 * pad
        blocked = [*placed, *(o for o in obstacles if o != box or tag.outside)]
        # A tag that must stay off found text does not move away: its leader line would cross other text.
        steps = 0 if tag.outside else self.max_stack
        spot = free_spot(box, (tag_w, tag_h), canvas.size, blocked, not tag.outside, steps)
        if spot is None and tag.outside:
            return None  # no room that would not cover found text: the reply lists the text anyway
        (x, y), moved = spot or (_clamped_first(box, (tag_w, tag_h), canvas.size, not tag.outside), False)
        draw = ImageDraw.Draw(canvas)
        if moved:
            end = (box[0], box[1]) if y < box[1] else (box[0], box[3])
            start = (x, y + tag_h - 1) if y < box[1] else (x, y)
            draw.line([start, end], fill=color, width=max(1, self.line_width(canvas.size) // 2))
        draw.rectangle((x, y, x + tag_w - 1, y + tag_h - 1), fill=color)
        draw.text((x + pad, y + pad), text, font=font, fill=text_color_for(color))
        return (x, y, x + tag_w - 1, y + tag_h - 1)

    def _with_caption(self, canvas: Image.Image, text: str) -> Image.Image:
        """The image with `text` wrapped in a white strip below it."""
        width = canvas.width
        font = load_font(self.font_size(canvas.size))
        ascent, descent = _metrics(font)
        line_h = round((ascent + descent) * 1.2)
        pad = max(2, line_h // 3)
        average_char = max(1.0, font.getlength("abcdefghijklmnopqrstuvwxyz") / 26)
        columns = max(8, int((width - 2 * pad) / average_char))
        lines = textwrap.wrap(" ".join(text.split()), columns)[:40] or [""]
        strip_h = len(lines) * line_h + 2 * pad
        out = Image.new(canvas.mode, (width, canvas.height + strip_h), "white")
        out.paste(canvas, (0, 0))
        draw = ImageDraw.Draw(out)
        for n, line in enumerate(lines):
            line = _fit(line, font, width - 2 * pad, len(line))
            draw.text((pad, canvas.height + pad + n * line_h), line, font=font, fill="black")
        return out


def free_spot(
    box: Rect, tag_wh: tuple[int, int], image_wh: tuple[int, int], blocked: Sequence[Rect], inside: bool, steps: int
) -> tuple[tuple[int, int], bool] | None:
    """The top-left corner for a tag of `tag_wh` near `box` that overlaps nothing in `blocked` and stays in
    the image, and whether it had to move away from the box (then it gets a leader line); None if none is free.

    First choice above the box's left end, then inside its top (when `inside`), below it, and the same at
    its right end; each taken spot is retried up to `steps` tag heights further away.
    """
    (w, h), image_h = tag_wh, image_wh[1]
    for step in range(steps + 1):
        for x, y, direction in _bases(box, tag_wh, image_wh, inside):
            top = y + direction * step * h
            if top < 0 or top + h > image_h:
                continue
            rect = (x, top, x + w - 1, top + h - 1)
            if not any(_overlaps(rect, other) for other in blocked):
                return (x, top), step > 0
    return None


def _bases(box: Rect, tag_wh: tuple[int, int], image_wh: tuple[int, int], inside: bool) -> list[tuple[int, int, int]]:
    """Candidate (x, y, direction to move when taken) for a tag, in order of preference."""
    (w, h), image_w = tag_wh, image_wh[0]
    x1, y1, x2, y2 = box
    left, right = min(max(0, x1), max(0, image_w - w)), min(max(0, x2 - w + 1), max(0, image_w - w))
    bases = [(left, y1 - h, -1), *([(left, y1, 1)] if inside else []), (left, y2 + 1, 1)]
    return [*bases, (right, y1 - h, -1), (right, y2 + 1, 1)]


def _clamped_first(box: Rect, tag_wh: tuple[int, int], image_wh: tuple[int, int], inside: bool) -> tuple[int, int]:
    """Where a tag goes when every spot is taken: above the box, or inside its top when there is no room."""
    bases = _bases(box, tag_wh, image_wh, inside)
    x, y, _ = bases[0] if box[1] - tag_wh[1] >= 0 or not inside else bases[1]
    return x, min(max(0, y), max(0, image_wh[1] - tag_wh[1]))


def _overlaps(a: Rect, b: Rect) -> bool:
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


def _points(flat: Sequence[float]) -> list[tuple[float, float]]:
    return [(float(flat[i]), float(flat[i + 1])) for i in range(0, len(flat) - 1, 2)]


def _span(box: tuple[int, int, int, int]) -> int:
    """The most outline width a box can take (PIL rejects a width over half the box)."""
    return max(1, min(box[2] - box[0] + 1, box[3] - box[1] + 1) // 2)


def _metrics(font: Font) -> tuple[int, int]:
    if isinstance(font, ImageFont.FreeTypeFont):
        ascent, descent = font.getmetrics()
        return int(ascent), int(descent)
    _, top, _, bottom = font.getbbox("Ag")
    return int(bottom - top), 0


def _fit(text: str, font: Font, max_width: float, max_chars: int) -> str:
    """Shorten `text` with an ellipsis so it has at most `max_chars` and fits `max_width` pixels."""
    if len(text) > max_chars:
        text = text[: max(1, max_chars - 1)].rstrip() + _ELLIPSIS
    while len(text) > 1 and font.getlength(text) > max_width:
        text = text[:-2].rstrip() + _ELLIPSIS
    return text
