"""OCR with rapidocr 3.x: PP-OCR detection + recognition models shipped inside the pip package, run by
onnxruntime on CPU (no download). Serves `<OCR>` and `<OCR_WITH_REGION>` with Florence-2's result types.

Measured on rendered text (tests/models/test_rapidocr.py): the detector is run with its side limit at
2000 px (`limit_type=max`) so ordinary images are never shrunk before detection, and images whose
long side is under 960 px (crops, thumbnails, screenshots of a line) are upscaled up to 2x first,
because PP-OCR's detector misses text much below ~10-20 px high.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import numpy as np
from PIL import Image

from app.core.config import Settings
from app.core.errors import InferenceError, ModelUnavailable
from app.core.results import AnyResult, OCRResult, TextResult
from app.models.base import TaskRequest

log = logging.getLogger(__name__)

OCR_TASKS = frozenset({"<OCR>", "<OCR_WITH_REGION>"})
SMALL_IMAGE_SIDE = 960
MAX_UPSCALE = 2.0
DETECTOR_SIDE_LIMIT = 2000
_ENGINE_PARAMS = {
    "Global.log_level": "error",  # "no text found" is a normal answer, not a warning
    "Global.max_side_len": DETECTOR_SIDE_LIMIT,
    "Det.limit_type": "max",
    "Det.limit_side_len": DETECTOR_SIDE_LIMIT,
}


@dataclass(frozen=True)
class TextLine:
    quad: tuple[float, ...]  # 8 numbers, clockwise from top-left, in original-image pixels
    text: str
    score: float

    @property
    def y_span(self) -> tuple[float, float]:
        ys = self.quad[1::2]
        return min(ys), max(ys)


def upscale_factor(image_wh: tuple[int, int]) -> float:
    """How much to enlarge an image before detection (1.0 = not at all)."""
    long_side = max(image_wh)
    if long_side >= SMALL_IMAGE_SIDE or long_side <= 0:
        return 1.0
    return min(MAX_UPSCALE, SMALL_IMAGE_SIDE / long_side)


def join_lines(lines: Sequence[TextLine]) -> str:
    """Reading-order text: boxes whose vertical centres lie within one another's span share a line."""
    rows: list[list[TextLine]] = []
    for line in sorted(lines, key=lambda item: (sum(item.y_span) / 2, item.quad[0])):
        centre = sum(line.y_span) / 2
        if rows:
            top, bottom = rows[-1][0].y_span
            if top <= centre <= bottom:
                rows[-1].append(line)
                continue
        rows.append([line])
    return "\n".join(" ".join(item.text for item in sorted(row, key=lambda i: i.quad[0])) for row in rows)


class RapidOCRBackend:
    name = "rapidocr"
    model_id = "rapidocr"
    tasks = OCR_TASKS

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.version = ""
        self._engine: Any = None

    def load(self) -> None:
        started = time.perf_counter()
        try:
            from rapidocr import RapidOCR

            engine = RapidOCR(params=dict(_ENGINE_PARAMS))
        except Exception as exc:
            raise ModelUnavailable(
                f"OCR_BACKEND=rapidocr but rapidocr could not start: {type(exc).__name__}: {str(exc)[:300]}. "
                "Install it with `pip install 'rapidocr>=3,<4' onnxruntime`.",
                code="model_load_failed",
            ) from exc
        self._engine = engine
        self.version = metadata.version("rapidocr")
        log.info("loaded rapidocr %s in %.1fs", self.version, time.perf_counter() - started)

    @property
    def loaded(self) -> bool:
        return self._engine is not None

    @property
    def library(self) -> str:
        return f"rapidocr-{self.version}" if self.version else "rapidocr"

    def read(self, image: Image.Image) -> list[TextLine]:
        """Every text line rapidocr finds, with quads in the original image's pixels."""
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        scale = upscale_factor(rgb.size)
        if scale > 1.0:
            size = (round(rgb.width * scale), round(rgb.height * scale))
            rgb = rgb.resize(size, Image.Resampling.BICUBIC)
        try:
            output = self._engine(np.asarray(rgb))
        except Exception as exc:
            raise InferenceError(f"OCR failed: {type(exc).__name__}: {str(exc)[:200]}") from exc
        if output.boxes is None or output.txts is None:
            return []
        lines = []
        for box, text, score in zip(output.boxes, output.txts, output.scores, strict=True):
            points = np.asarray(box, dtype=np.float64).reshape(4, 2) / scale
            quad = tuple(round(float(v), 2) for v in points.ravel())
            if str(text).strip():
                lines.append(TextLine(quad=quad, text=str(text).strip(), score=float(score)))
        return lines

    def run(self, requests: Sequence[TaskRequest]) -> list[AnyResult]:
        """Same contract as `FlorenceBackend.run`: one typed result per request, in order."""
        results: list[AnyResult] = []
        for request in requests:
            task = request.spec.token
            if task not in self.tasks:
                raise InferenceError(f"rapidocr does not serve {task}.", code="unsupported_task")
            lines = self.read(request.image)
            if task == "<OCR>":
                results.append(TextResult(task, request.image_wh, text=join_lines(lines)))
            else:
                results.append(
                    OCRResult.from_quads(
                        task,
                        request.image_wh,
                        [line.quad for line in lines],
                        [line.text for line in lines],
                        scores=[line.score for line in lines],
                    )
                )
        return results

    def info(self) -> dict[str, Any]:
        body: dict[str, Any] = {"engine": "rapidocr", "device": "cpu", "tasks": sorted(self.tasks)}
        if self.version:
            body["version"] = self.version
        return body
