"""What a chat message carries: uploaded images (validated by decoding) and a region reference."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from app.core.config import Settings
from app.core.errors import AppError, InvalidImage, InvalidInput, PayloadTooLarge
from app.core.geometry import XYXY, parse_region
from app.core.images import ImageLimits, LoadedImage, load_image_bytes
from app.core.results import DetectionResult, SegmentationResult


@dataclass(frozen=True)
class Upload:
    """A file the chat received: a name for messages and the path the server stored it at."""

    name: str
    path: Path | None


@dataclass(frozen=True)
class UploadCheck:
    accepted: list[tuple[Upload, LoadedImage]]
    errors: list[AppError]


def load_uploads(uploads: Sequence[Upload], settings: Settings) -> UploadCheck:
    """Decode every upload (blocking: call it in a thread). Bad files become errors; good ones are kept.

    The browser enforces its own count and size limits, but a client can skip them, and the declared
    content type is never trusted: only a successful decode makes an image.
    """
    limit = settings.max_images_per_request
    if len(uploads) > limit:
        raise InvalidInput(
            f"You sent {len(uploads)} files; at most {limit} images fit in one message.", code="too_many_images"
        )
    limits = ImageLimits(max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels)
    accepted: list[tuple[Upload, LoadedImage]] = []
    errors: list[AppError] = []
    for upload in uploads:
        try:
            accepted.append((upload, load_upload(upload, limits)))
        except AppError as exc:
            errors.append(exc)
    return UploadCheck(accepted, errors)


def load_upload(upload: Upload, limits: ImageLimits) -> LoadedImage:
    """Decode one stored upload (blocking), refusing an oversized file before reading it."""
    name = upload.name or "image"
    if upload.path is None:
        raise InvalidImage(f"{name}: the upload did not arrive; try again.", code="missing_upload")
    try:
        size = upload.path.stat().st_size
        if size > limits.max_bytes:  # refuse before reading a huge file into memory
            raise PayloadTooLarge(
                f"{name}: {size:,} bytes is over the {limits.max_bytes:,}-byte limit per image.",
                code="image_too_large",
            )
        data = upload.path.read_bytes()
    except OSError:
        raise InvalidImage(
            f"{name}: the uploaded file could not be read; upload it again.", code="unreadable_upload"
        ) from None
    return load_image_bytes(data, limits, name=name)


_BOX_REF_RE = re.compile(r"(?:\bbox\s*#?|#)\s*(\d{1,4})\b", re.IGNORECASE)
_NUM = r"(-?(?:\d+(?:\.\d*)?|\.\d+))"
_EMBEDDED_XYXY_RE = re.compile(rf"{_NUM}\s*,\s*{_NUM}\s*,\s*{_NUM}\s*,\s*{_NUM}")


def find_box_reference(text: str) -> int | None:
    """`box 2`, `Box #2` or `#2` anywhere in the text → 2."""
    match = _BOX_REF_RE.search(text)
    return int(match.group(1)) if match else None


def find_coordinates(text: str) -> XYXY | None:
    """`x1,y1,x2,y2` as the whole message (commas or spaces), or comma-separated inside a sentence."""
    try:
        return parse_region(text)
    except InvalidInput:
        pass
    match = _EMBEDDED_XYXY_RE.search(text)
    if match is None:
        return None
    values = tuple(float(v) for v in match.groups())
    if not all(math.isfinite(v) for v in values):
        raise InvalidInput("Region coordinates must be finite numbers.", code="invalid_region")
    return (values[0], values[1], values[2], values[3])


def regions_from_text(
    text: str, image_count: int, detections: Mapping[int, DetectionResult | SegmentationResult]
) -> list[XYXY | AppError] | None:
    """The region for each image from a message, or None when the message names no region.

    Typed coordinates apply to every image (each clips them to its own size); `box N` means box N of
    the latest reply with numbered boxes (detection or segmentation) on that same image.
    """
    coordinates = find_coordinates(text)
    if coordinates is not None:
        if all(0 <= v <= 1 for v in coordinates) and not all(v.is_integer() for v in coordinates):
            shown = ",".join(f"{v:g}" for v in coordinates)
            raise InvalidInput(
                f"`{shown}` looks like fractions of the image size, but regions are in pixels: x1,y1,x2,y2 "
                "from the top-left corner, e.g. `40,30,400,290`. Or drag a box on the picture instead.",
                code="normalized_region",
            )
        return [coordinates] * image_count
    number = find_box_reference(text)
    if number is None:
        return None
    if not detections:
        raise InvalidInput(
            f"There is no earlier detection reply to take box {number} from. Run Object detection first, "
            "or type the region as x1,y1,x2,y2.",
            code="no_detections",
        )
    regions: list[XYXY | AppError] = []
    for index in range(image_count):
        result = detections.get(index)
        boxes = numbered_boxes(result) if result is not None else []
        box = boxes[number - 1] if 1 <= number <= len(boxes) else None
        if box is None:
            regions.append(
                InvalidInput(
                    f"The last reply with boxes has {len(boxes)} on this image, so there is no box {number}.",
                    code="no_such_box",
                )
            )
        else:
            regions.append(box)
    return regions


def numbered_boxes(result: DetectionResult | SegmentationResult) -> list[XYXY | None]:
    """The boxes in the order they are numbered (#1 first); a segment without a polygon has none."""
    if isinstance(result, DetectionResult):
        return list(result.xyxy)
    return [result.instance_xyxy(i) for i in range(len(result))]


def region_from_payload(payload: Mapping[str, object], image_count: int) -> tuple[int, XYXY]:
    """Validate what the region picker element sends: `{"image_index": i, "xyxy": [x1, y1, x2, y2]}`."""
    index = payload.get("image_index")
    xyxy = payload.get("xyxy")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < image_count:
        raise InvalidInput("The picked box refers to an image that is no longer in this chat.", code="invalid_region")
    if not isinstance(xyxy, list | tuple) or len(xyxy) != 4:
        raise InvalidInput("The picked box needs four numbers x1,y1,x2,y2.", code="invalid_region")
    values: list[float] = []
    for value in xyxy:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise InvalidInput("The picked box needs four finite numbers.", code="invalid_region")
        values.append(float(value))
    return index, (values[0], values[1], values[2], values[3])


_LABEL_SEPARATOR_RE = re.compile(r"[,\n]")


def labels_from_text(text: str) -> tuple[list[str], dict[str, str] | None]:
    """Zero-shot labels from a message: `cat, dog, red car`, one per line also works.

    `category: label` puts a label into a category (the category's probability is the sum of its
    labels'), e.g. `gaming: a casual gaming stream, gaming: a violent video game, news: a news report`.
    Labels without a category count as their own. Limits (count, length) are the service's.
    """
    labels: list[str] = []
    categories: dict[str, str] = {}
    for item in _LABEL_SEPARATOR_RE.split(text):
        category, colon, label = item.partition(":")
        if not colon:
            category, label = "", category
        category, label = " ".join(category.split()), " ".join(label.split())
        if not label:
            if category:
                raise InvalidInput(f"`{category[:40]}:` needs a label after the colon.", code="missing_labels")
            continue
        if colon and not category:
            raise InvalidInput(f"`:{label[:40]}` needs a category before the colon.", code="invalid_category")
        if category:
            if categories.get(label, category) != category:
                raise InvalidInput(f"The label {label[:40]!r} is in two categories.", code="invalid_category")
            categories[label] = category
        labels.append(label)
    return labels, categories or None
