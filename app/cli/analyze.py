"""`python -m app analyze`: run one task on image files, print or write results and annotated PNGs.

stdout carries results only (a summary, or JSON with `--json -`); logs and the one-line error go to
stderr. Exit codes: 0 all images analysed, 1 some images failed (the rest are still written),
2 nothing could be analysed (bad arguments, no readable image, model unavailable).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from app.cli.task_args import checked_task
from app.core.classification_results import AnyTaskResult
from app.core.config import Settings
from app.core.errors import AppError
from app.core.geometry import XYXY
from app.core.images import ImageLimits, LoadedImage, load_image_path
from app.core.results import AnyResult, DetectionResult, SegmentationResult
from app.core.task_inputs import TaskInput
from app.core.tasks import TaskSpec
from app.rendering.drawing import Annotator, label_text

if TYPE_CHECKING:
    from app.services.analysis import AnalysisService

EXIT_OK, EXIT_PARTIAL = 0, 1


class OutputError(AppError):
    """A result file or folder could not be written."""

    code = "output_failed"


@dataclass(frozen=True)
class Outcome:
    """One input file, in command-line order: its result or the error that stopped it."""

    path: Path
    result: AnyTaskResult | None = None  # any result type: the CLI reads its `summary()` and `to_dict()`
    error: AppError | None = None
    image_wh: tuple[int, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.result is not None:
            return {"image": str(self.path), **self.result.to_dict()}
        assert self.error is not None
        return {"image": str(self.path), "error": self.error.to_dict()}


def run_analyze(args: argparse.Namespace, settings: Settings, stdout: TextIO | None = None) -> int:
    from app.services.analysis import AnalysisService

    _report_errors_once(settings)
    service = AnalysisService.from_settings(settings)  # models load on first use, not here
    try:
        return _run(args, settings, service, stdout or sys.stdout)
    finally:
        service.manager.shutdown()


def _run(args: argparse.Namespace, settings: Settings, service: AnalysisService, out: TextIO) -> int:
    # Fail on a missing or unexpected input (text, region, labels) before reading images or loading the model.
    spec, task_input = checked_task(args, service)
    paths = [Path(p) for p in args.images]
    annotate_dir = Path(args.annotate_dir) if args.annotate_dir else None
    if annotate_dir is not None:
        _make_dir(annotate_dir)

    loaded, outcomes = _load_images(paths, ImageLimits(settings.max_image_bytes, settings.max_image_pixels))
    if loaded:
        images_only = [image for _, image in loaded]
        analysed = _analyze(service, images_only, spec, task_input)
        for (index, image), (result, error) in zip(loaded, analysed, strict=True):
            outcomes[index] = Outcome(paths[index], result=result, error=error, image_wh=image.image_wh)

    final = [o for o in outcomes if o is not None]
    failed = [o for o in final if o.error is not None]
    if len(failed) == len(final):
        raise _nothing_analysed(failed)

    written: dict[int, list[Path]] = {}
    if annotate_dir is not None:
        images = dict(loaded)
        stems = _unique_stems(paths)
        for index, outcome in enumerate(final):
            if isinstance(outcome.result, AnyResult):  # a result that can be drawn on its image
                written[index] = _write_annotations(annotate_dir, stems[index], spec, images[index], outcome.result)
    if args.json_out is not None:
        document = {"task": spec.token, "results": [o.to_dict() for o in final]}
        if args.json_out == "-":
            out.write(json.dumps(document, ensure_ascii=False, indent=2) + "\n")
        else:
            _write_text(Path(args.json_out), json.dumps(document, ensure_ascii=False, indent=2) + "\n")
    if args.json_out != "-":
        _print_summary(out, spec, final, written, args.json_out)
    if failed:
        print(f"error: {len(failed)} of {len(final)} images failed; the others were analysed.", file=sys.stderr)
        return EXIT_PARTIAL
    return EXIT_OK


class _BelowError(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


def _report_errors_once(settings: Settings) -> None:
    """Errors reach the user as the one `error:` line; their log records (with tracebacks) would
    repeat it, so they are dropped from the console unless LOG_LEVEL=DEBUG."""
    if settings.log_level == "DEBUG":
        return
    for handler in logging.getLogger().handlers:
        handler.addFilter(_BelowError())


def _load_images(
    paths: Sequence[Path], limits: ImageLimits
) -> tuple[list[tuple[int, LoadedImage]], list[Outcome | None]]:
    loaded: list[tuple[int, LoadedImage]] = []
    outcomes: list[Outcome | None] = [None] * len(paths)
    for index, path in enumerate(paths):
        try:
            loaded.append((index, load_image_path(path, limits)))
        except AppError as exc:
            outcomes[index] = Outcome(path, error=exc)
    return loaded, outcomes


def _analyze(
    service: AnalysisService, images: Sequence[LoadedImage], spec: TaskSpec, task_input: TaskInput
) -> list[tuple[AnyTaskResult | None, AppError | None]]:
    """One batch for every readable image; a per-image error (region outside it) stays per image."""
    outcomes = service.analyze(images, spec, options=task_input)
    return [(o.result, o.error) for o in outcomes]


def _nothing_analysed(failed: Sequence[Outcome]) -> AppError:
    first = failed[0].error
    assert first is not None
    if len(failed) == 1:
        return first
    return type(first)(f"None of the {len(failed)} images could be analysed; first: {first.message}", code=first.code)


def _unique_stems(paths: Sequence[Path]) -> list[str]:
    """File stems for output names; repeats (a/cat.png, b/cat.png) get -2, -3, ..."""
    seen: dict[str, int] = {}
    stems = []
    for path in paths:
        stem = path.stem or "image"
        seen[stem] = seen.get(stem, 0) + 1
        stems.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return stems


def _write_annotations(
    directory: Path, stem: str, spec: TaskSpec, loaded: LoadedImage, result: AnyResult
) -> list[Path]:
    short = spec.short_name.lower()
    png = directory / f"{stem}.{short}.png"
    annotated = Annotator(caption_strip=True).annotate(loaded.image, result)
    try:
        annotated.save(png, format="PNG")
    except OSError as exc:
        raise OutputError(f"Cannot write {png}: {exc.strerror or exc}.") from None
    written = [png]
    if isinstance(result, DetectionResult | SegmentationResult):
        coco = directory / f"{stem}.{short}.coco.json"
        _write_text(coco, json.dumps(result.to_coco(file_name=loaded.name), ensure_ascii=False, indent=2) + "\n")
        written.append(coco)
    return written


def _make_dir(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"Cannot create the folder {directory}: {exc.strerror or exc}.") from None


def _write_text(path: Path, content: str) -> None:
    try:
        path.write_text(content, encoding="utf-8")
    except OSError as exc:
        raise OutputError(f"Cannot write {path}: {exc.strerror or exc}.") from None


def _print_summary(
    out: TextIO, spec: TaskSpec, outcomes: Sequence[Outcome], written: dict[int, list[Path]], json_out: str | None
) -> None:
    out.write(f"{spec.name} ({spec.token}) on {len(outcomes)} image(s)\n")
    for index, outcome in enumerate(outcomes):
        if outcome.result is not None:
            size = f" {outcome.image_wh[0]}x{outcome.image_wh[1]}" if outcome.image_wh else ""
            out.write(f"{outcome.path}{size}: {outcome.result.summary()}\n")
            out.writelines(f"  {line}\n" for line in _instance_lines(outcome.result))
        elif outcome.error is not None:
            out.write(f"{outcome.path}: FAILED: {outcome.error.message}\n")
        for path in written.get(index, []):
            out.write(f"  wrote {path}\n")
    if json_out is not None:
        out.write(f"wrote {json_out}\n")
    failed = sum(1 for o in outcomes if o.error is not None)
    if failed:
        out.write(f"{failed} of {len(outcomes)} images failed.\n")


def _instance_lines(result: AnyTaskResult) -> list[str]:
    """`#2 car 0.91 (12, 30, 200, 180)` per instance: the numbers and scores drawn on the annotated image."""
    if isinstance(result, DetectionResult):
        boxes: list[XYXY | None] = list(result.xyxy)
    elif isinstance(result, SegmentationResult):
        boxes = [result.instance_xyxy(i) for i in range(len(result))]
    else:
        return []
    lines = []
    for i, (label, box) in enumerate(zip(result.labels, boxes, strict=True)):
        tag = label_text(i + 1, label, result.scores[i] if result.scores is not None else None)
        lines.append(tag + (" (" + ", ".join(f"{v:.0f}" for v in box) + ")" if box is not None else ""))
    return lines
