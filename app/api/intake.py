"""Read an analyze request (JSON or multipart) and turn each image input into a decoded image.

Request-level problems (bad JSON, missing task, no images, too many) fail the whole request;
problems with one image (bad base64, a refused URL, a corrupt file) become that image's error
and the others go on. Every image's bytes go through `app.core.images.load_image_bytes`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData, UploadFile

from app.api.v1.schemas import AnalyzeForm, AnalyzeRequest, ImageBase64, ImageInput, ImageURL
from app.core.config import Settings
from app.core.errors import AppError, InvalidImage, InvalidInput, PayloadTooLarge, UnsupportedMediaType
from app.core.geometry import parse_region
from app.core.images import ImageLimits, LoadedImage, declared_pixels, load_image_bytes
from app.core.task_inputs import TaskFields
from app.services.fetch import UrlFetcher
from app.services.pixel_budget import PixelBudget

ModelT = TypeVar("ModelT", bound=BaseModel)
T = TypeVar("T")
_MAX_NAME_CHARS = 100
MAX_JSON_DEPTH = 32  # real bodies nest 3-4 levels
JSON_ONLY = "Send the request as application/json (or multipart/form-data where files are accepted)."
_DECODE_CONCURRENCY = 2  # decoding is CPU work; a batch of 16 should not start 16 threads at once


@dataclass(frozen=True)
class ImageSource:
    """One image input: bytes, a URL to fetch, or the error found while reading it."""

    name: str
    data: bytes | None = None
    url: str | None = None
    error: AppError | None = None


@dataclass(frozen=True)
class AnalyzeInput:
    task: str
    fields: TaskFields  # what the task reads besides the images; its input kind decides what they mean
    annotate: bool
    sources: list[ImageSource]


async def read_analyze_input(request: Request, settings: Settings) -> AnalyzeInput:
    if is_multipart(request):
        return await _read_multipart(request, settings)
    require_json(request, "Send the request as application/json or multipart/form-data.")
    return await _read_json(request, settings)


# -- request-level helpers, shared by every route that reads its body by hand ----------------------------
def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def is_multipart(request: Request) -> bool:
    return _media_type(request) == "multipart/form-data"


def require_json(request: Request, message: str) -> None:
    media_type = _media_type(request)
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise UnsupportedMediaType(message, code="unsupported_content_type")


def parse_body(model: type[ModelT], data: bytes | dict[str, Any]) -> ModelT:
    """Validate raw JSON (bytes) or already-parsed fields; errors never echo the input."""
    try:
        if isinstance(data, bytes):
            return model.model_validate_json(data)
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_input=False, include_url=False)) from None


def parse_json_object(data: bytes) -> dict[str, Any]:
    """A JSON object, or `invalid_json` (400): not JSON, not an object, or nested past `MAX_JSON_DEPTH`.

    Python's parser raises RecursionError (not ValueError) near 1000 levels, and a body just under that
    would overflow later, when the fingerprint re-serialises it; the depth is checked here once.
    """
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidInput("The request body is not valid JSON.", code="invalid_json") from None
    if not isinstance(body, dict):
        raise InvalidInput("The request body must be a JSON object.", code="invalid_json")
    if json_depth(body) > MAX_JSON_DEPTH:
        raise InvalidInput(f"The request body nests deeper than {MAX_JSON_DEPTH} levels.", code="invalid_json")
    return body


def json_depth(value: Any) -> int:
    """How deeply lists and objects nest in `value` (iterative: safe on any depth the parser returns)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def form_fields(form: FormData, files_field: str) -> dict[str, str]:
    """The text fields of a multipart form, without its file field."""
    return {key: value for key, value in form.multi_items() if key != files_field and isinstance(value, str)}


async def read_uploads(form: FormData, settings: Settings, field: str) -> list[ImageSource]:
    """Read inside the form's context (it closes the spooled files); the body size is capped upstream."""
    uploads = form.getlist(field)
    if not uploads:
        raise RequestValidationError([{"type": "missing", "loc": ("body", field), "msg": "Field required"}])
    check_image_count(len(uploads), settings)
    return [await source_from_upload(upload, index, settings) for index, upload in enumerate(uploads)]


def check_image_count(count: int, settings: Settings) -> None:
    if count > settings.max_images_per_request:
        raise PayloadTooLarge(
            f"{count} images is over the limit of {settings.max_images_per_request} per request.",
            code="too_many_images",
        )


async def _read_json(request: Request, settings: Settings) -> AnalyzeInput:
    payload = parse_body(AnalyzeRequest, await request.body())
    check_image_count(len(payload.images), settings)
    sources = [source_from_json(item, index, settings) for index, item in enumerate(payload.images)]
    return AnalyzeInput(payload.task, fields_from_request(payload), payload.annotate, sources)


def fields_from_request(payload: AnalyzeRequest) -> TaskFields:
    """The task fields of an analyze body (`/api/v1/analyze`, analyze jobs)."""
    return TaskFields(
        text=payload.text,
        region=payload.region,
        labels=payload.labels,
        categories=payload.categories,
        multi_label=payload.multi_label,
        templates=payload.templates,
        top_n=payload.top_n,
        language=payload.language,
        min_score=payload.min_score,
    )


async def _read_multipart(request: Request, settings: Settings) -> AnalyzeInput:
    # Files spool to disk past 1 MB; the body size is already capped by BodySizeLimitMiddleware.
    async with request.form(max_fields=20) as form:
        params = parse_body(AnalyzeForm, form_fields(form, "files"))
        sources = await read_uploads(form, settings, "files")
    fields = TaskFields(
        params.text,
        parse_region(params.region) if params.region else None,
        [part for part in params.labels.split(",") if part.strip()] if params.labels is not None else None,
        multi_label=params.multi_label,
        top_n=params.top_n,
        language=params.language,
        min_score=params.min_score,
    )
    return AnalyzeInput(params.task, fields, params.annotate, sources)


def source_from_json(item: ImageInput | str, index: int, settings: Settings, bare_urls: bool = False) -> ImageSource:
    """`{"url"}`, `{"base64"}`, or a string: a data URL, bare base64 or, with `bare_urls`, an http(s) URL."""
    name = f"images[{index}]"
    if isinstance(item, ImageURL):
        return ImageSource(name, url=item.url)
    if isinstance(item, ImageBase64):
        try:
            return ImageSource(name, data=decode_base64(item.base64, settings.max_image_bytes, name))
        except AppError as exc:
            return ImageSource(name, error=exc)
    return source_from_text(name, item, settings, bare_urls)


def source_from_text(name: str, text: str, settings: Settings, bare_urls: bool = False) -> ImageSource:
    """A data URL or bare base64 (or, with `bare_urls`, an http(s) URL); a decoding error stays with the image."""
    stripped = text.strip()
    if bare_urls and stripped.startswith(("http://", "https://")):
        return ImageSource(name, url=stripped)
    try:
        if stripped[:5].lower() == "data:":
            return ImageSource(name, data=decode_data_url(stripped, settings.max_image_bytes, name))
        return ImageSource(name, data=decode_base64(stripped, settings.max_image_bytes, name))
    except AppError as exc:
        return ImageSource(name, error=exc)


async def source_from_upload(upload: UploadFile | str, index: int, settings: Settings) -> ImageSource:
    if not isinstance(upload, UploadFile):
        name = f"files[{index}]"
        return ImageSource(name, error=InvalidImage(f"{name}: expected a file upload, got a text field."))
    name = (upload.filename or f"files[{index}]")[:_MAX_NAME_CHARS]
    if upload.size is not None and upload.size > settings.max_image_bytes:
        return ImageSource(name, error=_image_too_large(name, upload.size, settings.max_image_bytes))
    return ImageSource(name, data=await upload.read())


def decode_base64(text: str, max_bytes: int, name: str) -> bytes:
    """Standard or URL-safe base64, with or without padding and line breaks."""
    compact = "".join(text.split())
    estimated = len(compact) * 3 // 4
    if estimated > max_bytes:
        raise _image_too_large(name, estimated, max_bytes)
    compact += "=" * (-len(compact) % 4)
    altchars = b"-_" if ("-" in compact or "_" in compact) else None
    try:
        return base64.b64decode(compact, altchars=altchars, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidImage(f"{name}: not valid base64.", code="invalid_base64") from None


def decode_data_url(text: str, max_bytes: int, name: str) -> bytes:
    header, comma, payload = text.partition(",")
    if not comma or not header.lower().endswith(";base64"):
        raise InvalidImage(
            f"{name}: only base64 data URLs are accepted (data:image/png;base64,...).", code="invalid_data_url"
        )
    return decode_base64(payload, max_bytes, name)


def _image_too_large(name: str, size: int, max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"{name}: {size:,} bytes is over the {max_bytes:,}-byte limit per image.", code="image_too_large"
    )


async def fetch_sources(sources: Sequence[ImageSource], fetcher: UrlFetcher) -> list[bytes | AppError]:
    """Each source's bytes (URLs fetched concurrently), or the error found while reading it."""

    async def fetch(source: ImageSource) -> bytes | AppError:
        if source.error is not None:
            return source.error
        if source.data is not None:
            return source.data
        try:
            return await fetcher.fetch(source.url or "")
        except AppError as exc:
            return exc

    return list(await asyncio.gather(*(fetch(source) for source in sources)))


def header_pixels(raw: Sequence[bytes | AppError], limits: ImageLimits) -> int:
    """Pixels the images will decode to, from their headers only (`app.core.images.declared_pixels`)."""
    return sum(declared_pixels(data, limits) for data in raw if isinstance(data, bytes))


async def decode_sources(
    sources: Sequence[ImageSource], raw: Sequence[bytes | AppError], limits: ImageLimits
) -> list[LoadedImage | AppError]:
    """Decode fetched bytes (in input order); one failure never stops the others."""
    return await _decode_each(sources, raw, limits, lambda data, image: image)


async def checked_bytes(
    sources: Sequence[ImageSource], fetcher: UrlFetcher, limits: ImageLimits, budget: PixelBudget
) -> list[bytes | AppError]:
    """Every image's bytes, decoded only to check them (under the pixel budget), for later work."""
    raw = await fetch_sources(sources, fetcher)
    pixels = header_pixels(raw, limits)
    budget.check_request(pixels)
    async with budget.hold(pixels):
        return await _decode_each(sources, raw, limits, lambda data, image: data)


async def _decode_each(
    sources: Sequence[ImageSource],
    raw: Sequence[bytes | AppError],
    limits: ImageLimits,
    keep: Callable[[bytes, LoadedImage], T],
) -> list[T | AppError]:
    gate = asyncio.Semaphore(_DECODE_CONCURRENCY)

    async def decode(source: ImageSource, data: bytes | AppError) -> T | AppError:
        if isinstance(data, AppError):
            return data
        try:
            async with gate:
                return keep(data, await asyncio.to_thread(load_image_bytes, data, limits, source.name))
        except AppError as exc:
            return exc

    return list(await asyncio.gather(*(decode(source, data) for source, data in zip(sources, raw, strict=True))))
