"""`python -m app analyze DIR --task OD --jsonl out.jsonl [--annotate out/]`: a folder, resumable.

Walks DIR (recursively, image extensions only, in sorted order) with a progress bar on stderr and
appends one JSON line per image to the JSONL file as soon as it is done, so an interrupted run
loses at most the image in hand. Running the same command again skips every image already in the
file. Unreadable files get an `error` line and a logged reason; the run goes on. For detection and
segmentation tasks a COCO dataset of the whole folder is (re)written next to the JSONL at the end.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from app.core.config import Settings
from app.core.errors import AppError, InvalidInput, ModelUnavailable
from app.core.images import ALLOWED_EXTENSIONS, ImageLimits, load_image_path
from app.core.results import AnyResult, DetectionResult, SegmentationResult
from app.core.task_inputs import TaskInput
from app.core.tasks import OutputKind, TaskSpec
from app.services.analysis import AnalysisService

log = logging.getLogger(__name__)
COCO_KINDS = (OutputKind.BOXES, OutputKind.POLYGONS, OutputKind.MIXED)
EXIT_OK, EXIT_PARTIAL, EXIT_NOTHING = 0, 1, 2


@dataclass(frozen=True)
class FolderJob:
    root: Path
    spec: TaskSpec
    task_input: TaskInput  # checked for `spec` (app/cli/task_args.py)
    jsonl: Path
    annotate_dir: Path | None = None

    @property
    def coco_path(self) -> Path | None:
        if self.spec.output_kind not in COCO_KINDS:
            return None
        return self.jsonl.with_name(self.jsonl.stem + ".coco.json")


@dataclass
class FolderReport:
    total: int = 0
    skipped: int = 0  # already in the JSONL
    done: int = 0
    failed: int = 0

    def exit_code(self) -> int:
        if self.failed and not self.done:
            return EXIT_NOTHING
        return EXIT_PARTIAL if self.failed else EXIT_OK


def find_images(root: Path) -> list[Path]:
    """Image files under `root` by extension (case-insensitive), hidden folders skipped, sorted."""
    found = []
    for path in root.rglob("*"):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if path.suffix.lower() in ALLOWED_EXTENSIONS and path.is_file():
            found.append(path)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def read_done(jsonl: Path) -> set[str]:
    """Images already answered in `jsonl`; a torn last line (killed mid-write) is cut off."""
    if not jsonl.exists():
        return set()
    raw = jsonl.read_bytes()
    if raw and not raw.endswith(b"\n"):
        keep = raw.rfind(b"\n") + 1
        with jsonl.open("r+b") as handle:
            handle.truncate(keep)
        log.warning("%s: dropped an incomplete last line (the previous run was interrupted)", jsonl)
        raw = raw[:keep]
    done = set()
    for line in raw.decode("utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("image"), str):
            done.add(entry["image"])
    return done


def run_folder(job: FolderJob, settings: Settings, analysis: AnalysisService | None = None,
               progress: TextIO | None = None) -> FolderReport:  # fmt: skip
    """Analyse every image not yet in the JSONL; returns counts (the caller maps them to an exit code)."""
    if not job.root.is_dir():
        raise InvalidInput(f"{job.root} is not a folder.", code="not_a_folder")
    images = find_images(job.root)
    done = read_done(job.jsonl)
    todo = [p for p in images if p.relative_to(job.root).as_posix() not in done]
    report = FolderReport(total=len(images), skipped=len(images) - len(todo))
    if report.skipped:
        log.info("resuming: %d of %d images are already in %s", report.skipped, len(images), job.jsonl)
    if job.annotate_dir is not None:
        job.annotate_dir.mkdir(parents=True, exist_ok=True)
    job.jsonl.parent.mkdir(parents=True, exist_ok=True)
    owned = analysis is None
    service = analysis or _build_service(settings)
    limits = ImageLimits(settings.max_image_bytes, settings.max_image_pixels)
    bar = tqdm(total=len(todo), file=progress or sys.stderr, unit="img", desc=job.spec.short_name, dynamic_ncols=True)
    try:
        with job.jsonl.open("a", encoding="utf-8") as out, logging_redirect_tqdm():
            for path in todo:
                entry = _analyse_one(job, service, path, limits)
                out.write(json.dumps(entry, ensure_ascii=False) + "\n")
                out.flush()
                if "error" in entry:
                    report.failed += 1
                else:
                    report.done += 1
                bar.update(1)
                bar.set_postfix(failed=report.failed, refresh=False)
    finally:
        bar.close()
        if owned:
            service.manager.shutdown()
    if job.coco_path is not None:
        write_coco(job.jsonl, job.coco_path)
    return report


def _build_service(settings: Settings) -> AnalysisService:
    return AnalysisService.from_settings(settings)


def _analyse_one(job: FolderJob, service: AnalysisService, path: Path, limits: ImageLimits) -> dict[str, Any]:
    relative = path.relative_to(job.root).as_posix()
    try:
        loaded = load_image_path(path, limits)
        outcome = service.analyze([loaded], job.spec, options=job.task_input)[0]
        if outcome.result is None:
            raise outcome.error or AppError("No result.")
    except ModelUnavailable:
        raise  # every other image would fail the same way: stop with the one reason
    except AppError as exc:
        log.warning("skipped %s: %s", relative, exc.message)
        return {"image": relative, "error": exc.to_dict()}
    entry: dict[str, Any] = {"image": relative, **outcome.result.to_dict()}
    if isinstance(outcome.result, DetectionResult | SegmentationResult):
        entry["coco"] = outcome.result.to_coco(image_id=1, file_name=relative)
    if job.annotate_dir is not None and isinstance(outcome.result, AnyResult):
        _annotate(job, loaded.image, outcome.result, relative)
    return entry


def _annotate(job: FolderJob, image: Any, result: AnyResult, relative: str) -> None:
    from app.rendering.drawing import Annotator

    assert job.annotate_dir is not None
    target = job.annotate_dir / Path(relative).parent / f"{Path(relative).stem}.{job.spec.short_name.lower()}.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    Annotator(caption_strip=True).annotate(image, result).save(target, format="PNG")


def iter_entries(jsonl: Path) -> Iterator[dict[str, Any]]:
    with jsonl.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                yield entry


def merge_coco(fragments: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per-image COCO fragments → one dataset: image and annotation ids renumbered, categories by name."""
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    categories: dict[str, int] = {}
    for fragment in fragments:
        image_id = len(images) + 1
        images.extend({**image, "id": image_id} for image in fragment.get("images", [])[:1])
        names = {c["id"]: c["name"] for c in fragment.get("categories", [])}
        for ann in fragment.get("annotations", []):
            name = names.get(ann.get("category_id"), "region")
            category_id = categories.setdefault(name, len(categories) + 1)
            annotations.append({**ann, "id": len(annotations) + 1, "image_id": image_id, "category_id": category_id})
    return {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": cid, "name": name} for name, cid in categories.items()],
    }


def write_coco(jsonl: Path, target: Path) -> None:
    """The whole folder's COCO dataset, rebuilt from every JSONL line (earlier runs included)."""
    latest: dict[str, dict[str, Any]] = {}
    for entry in iter_entries(jsonl):
        if isinstance(entry.get("coco"), dict):
            latest[str(entry.get("image"))] = entry["coco"]
    dataset = merge_coco([latest[name] for name in sorted(latest)])
    temporary = target.with_name(target.name + ".tmp")
    temporary.write_text(json.dumps(dataset, ensure_ascii=False) + "\n", encoding="utf-8")
    temporary.replace(target)
    log.info("wrote %s (%d images, %d annotations)", target, len(dataset["images"]), len(dataset["annotations"]))
