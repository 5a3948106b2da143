"""Safe image intake shared by the CLI, chat and API: decode, validate, normalise to RGB."""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from app.core.errors import InvalidImage, PayloadTooLarge, UnsupportedMediaType

# Formats a user may upload; decoding with this explicit list keeps exotic decoders away.
# (Multi-picture JPEGs, "MPO", open through the JPEG decoder.)
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
# Pillow registers some decoders (MPO) only on a full init; without it `formats=[...]` raises KeyError.
Image.init()
ALLOWED_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int
    max_pixels: int


@dataclass(frozen=True)
class LoadedImage:
    image: Image.Image  # RGB, EXIF orientation applied, first frame
    source_format: str
    name: str

    @property
    def image_wh(self) -> tuple[int, int]:
        return self.image.size


def load_image_bytes(data: bytes, limits: ImageLimits, name: str = "image") -> LoadedImage:
    """Decode untrusted bytes. Every failure becomes an `AppError` with a code, never a crash."""
    if len(data) > limits.max_bytes:
        raise PayloadTooLarge(
            f"{name}: {len(data):,} bytes is over the {limits.max_bytes:,}-byte limit per image.",
            code="image_too_large",
        )
    if not data:
        raise InvalidImage(f"{name}: the file is empty.", code="empty_image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            opened = Image.open(io.BytesIO(data), formats=_decoder_formats())
            source_format = opened.format or "unknown"
            width, height = opened.size
            # Header dimensions are checked before any pixel is decoded.
            if width <= 0 or height <= 0:
                raise InvalidImage(f"{name}: the image has no pixels.", code="invalid_image")
            if width * height > limits.max_pixels:
                raise PayloadTooLarge(
                    f"{name}: {width}x{height} pixels is over the {limits.max_pixels:,}-pixel limit.",
                    code="too_many_pixels",
                )
            opened.seek(0)  # first frame of animations
            opened.load()
            ImageOps.exif_transpose(opened, in_place=True)  # this image is ours: no 144 MB copy of 36 MP
            rgb = to_rgb(opened)
    except (InvalidImage, PayloadTooLarge):
        raise
    except Image.UnidentifiedImageError:
        damaged = _signature_format(data)
        if damaged is not None:
            raise InvalidImage(
                f"{name}: the image could not be decoded (a damaged {damaged} file).", code="corrupt_image"
            ) from None
        raise UnsupportedMediaType(
            f"{name}: not a supported image (allowed: {', '.join(f.lower() for f in ALLOWED_FORMATS)}).",
            code="unsupported_image_format",
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise PayloadTooLarge(
            f"{name}: the image decodes to too many pixels (the limit is {limits.max_pixels:,}).",
            code="too_many_pixels",
        ) from None
    except Exception as exc:  # noqa: BLE001 - malformed files raise anything (TypeError, OSError, ...)
        raise InvalidImage(
            f"{name}: the image could not be decoded ({type(exc).__name__}).", code="corrupt_image"
        ) from None
    return LoadedImage(image=rgb, source_format=source_format, name=name)


# File signatures of the allowed formats: a file that starts like one but does not decode is damaged,
# not of an unsupported kind.
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"BM", "BMP"),
)


def _signature_format(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((fmt for signature, fmt in _SIGNATURES if data.startswith(signature)), None)


def _decoder_formats() -> list[str]:
    """The allowed formats this Pillow can decode: a name it does not register makes `open` raise KeyError."""
    Image.init()
    return [fmt for fmt in ALLOWED_FORMATS if fmt in Image.OPEN]


def declared_pixels(source: bytes | Path, limits: ImageLimits) -> int:
    """Pixels an image will decode to, read from its header only (for the memory budget, before decoding).

    An unreadable header, or an image over the per-image limits, counts 0: the decoder refuses it on
    its own, image by image."""
    with contextlib.suppress(Exception):
        if isinstance(source, Path) and source.stat().st_size > limits.max_bytes:
            return 0
        opened_from = io.BytesIO(source) if isinstance(source, bytes) else source
        with Image.open(opened_from, formats=ALLOWED_FORMATS) as opened:
            pixels = int(opened.size[0]) * int(opened.size[1])
            return pixels if pixels <= limits.max_pixels else 0
    return 0


def load_image_path(path: Path, limits: ImageLimits) -> LoadedImage:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidImage(f"{path}: cannot read the file ({exc.strerror}).", code="unreadable_file") from None
    return load_image_bytes(data, limits, name=path.name)


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB with any transparency composited on white (the model was trained on opaque images).

    An RGB image is returned as it is, not copied: nothing downstream draws on it, and a copy of a 36 MP
    image is 144 MB (Pillow keeps RGB at 4 bytes per pixel)."""
    if image.mode == "RGB":
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode == "I" or image.mode.startswith("I;16"):
        # 16-bit greyscale: scale to 8 bits instead of clipping everything to white. `point` only
        # works on "I" (not on "I;16B", which 16-bit TIFFs decode to), hence the conversion first.
        return image.convert("I").point(lambda v: v / 256).convert("L").convert("RGB")
    return image.convert("RGB")
