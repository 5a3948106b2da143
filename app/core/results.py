"""Typed, JSON-serialisable results: one type per kind of output.

Built through named constructors (`from_florence`, ...) so every backend produces the same
shapes. Coordinates are pixels on the original image, `xyxy` boxes, flat `[x0, y0, x1, y1, ...]`
polygons and 8-number OCR quads.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from app import REPOSITORY, __version__
from app.core.geometry import XYXY, normalize_xyxy, polygon_area, polygon_bbox
from app.core.tasks import OutputKind, TaskSpec

# Region tasks answer with the region echoed back ("car<loc_53><loc_334><loc_933><loc_775>") and
# batched outputs are right-padded: neither belongs in the text a user reads.
_TEXT_NOISE_RE = re.compile(r"<loc_\d+>|<pad>")


def _num(value: float) -> float | int:
    """Integers stay integers in JSON; other values keep two decimals."""
    rounded = round(float(value), 2)
    return int(rounded) if rounded.is_integer() else rounded


@dataclass(frozen=True)
class RunInfo:
    """Which model answered and how long its run took; every result carries one (set by the model manager)."""

    duration: float  # seconds of model work for the batch this image was part of
    model: str
    library: str  # e.g. "transformers-5.23.0"
    version: str = __version__
    repository: str = REPOSITORY

    def to_dict(self) -> dict[str, Any]:
        return {
            "duration": round(self.duration, 4),
            "repository": self.repository,
            "version": self.version,
            "library": self.library,
            "model": self.model,
        }


@dataclass(frozen=True)
class _Result:
    task: str
    image_wh: tuple[int, int]
    region: XYXY | None = field(default=None, kw_only=True)
    run: RunInfo | None = field(default=None, kw_only=True, compare=False)  # which model answered, how fast
    kind: ClassVar[str] = "result"

    def _base(self) -> dict[str, Any]:
        body: dict[str, Any] = {"kind": self.kind, "task": self.task, "image_wh": list(self.image_wh)}
        if self.region is not None:
            body["region"] = [_num(v) for v in self.region]
        return body

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def summary(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class TextResult(_Result):
    text: str = ""
    kind: ClassVar[str] = "text"

    def to_dict(self) -> dict[str, Any]:
        return {**self._base(), "text": self.text}

    def summary(self) -> str:
        return self.text or "(no text)"


@dataclass(frozen=True)
class DetectionResult(_Result):
    xyxy: tuple[XYXY, ...] = ()
    labels: tuple[str, ...] = ()
    scores: tuple[float, ...] | None = None
    caption: str | None = None  # caption + grounding: the caption whose phrases the boxes ground
    kind: ClassVar[str] = "detections"

    def __post_init__(self) -> None:
        if len(self.xyxy) != len(self.labels) or (self.scores is not None and len(self.scores) != len(self.xyxy)):
            raise ValueError("xyxy, labels and scores must have the same length")

    @classmethod
    def from_boxes(
        cls,
        task: str,
        image_wh: tuple[int, int],
        boxes: Sequence[Sequence[float]],
        labels: Sequence[str] | None = None,
        scores: Sequence[float] | None = None,
        region: XYXY | None = None,
    ) -> DetectionResult:
        names = list(labels) if labels is not None else [""] * len(boxes)
        return cls(
            task,
            image_wh,
            xyxy=tuple(normalize_xyxy(b) for b in boxes),
            labels=tuple(str(n).strip() for n in names),
            scores=tuple(float(s) for s in scores) if scores is not None else None,
            region=region,
        )

    def __len__(self) -> int:
        return len(self.xyxy)

    def label_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for label in self.labels:
            counts[label or "region"] = counts.get(label or "region", 0) + 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        detections = []
        for i, (box, label) in enumerate(zip(self.xyxy, self.labels, strict=True)):
            item: dict[str, Any] = {"id": i + 1, "label": label, "xyxy": [_num(v) for v in box]}
            if self.scores is not None:
                item["score"] = round(self.scores[i], 4)
            detections.append(item)
        caption = {"caption": self.caption} if self.caption is not None else {}
        return {**self._base(), **caption, "detections": detections}

    def summary(self) -> str:
        found = "Nothing found."
        if self.xyxy:
            parts = [f"{label} ×{n}" if n > 1 else label for label, n in self.label_counts().items()]
            found = f"{len(self.xyxy)} found: " + ", ".join(parts)
        return f"{self.caption}\n{found}" if self.caption else found

    def to_coco(self, image_id: int = 1, file_name: str = "image.png") -> dict[str, Any]:
        categories = _categories(self.labels)
        annotations = []
        for i, (box, label) in enumerate(zip(self.xyxy, self.labels, strict=True)):
            x1, y1, x2, y2 = box
            ann: dict[str, Any] = {
                "id": i + 1,
                "image_id": image_id,
                "category_id": categories[label or "region"],
                "bbox": [_num(x1), _num(y1), _num(x2 - x1), _num(y2 - y1)],
                "area": _num((x2 - x1) * (y2 - y1)),
                "iscrowd": 0,
            }
            if self.scores is not None:
                ann["score"] = round(self.scores[i], 4)
            annotations.append(ann)
        return _coco(image_id, file_name, self.image_wh, categories, annotations)


@dataclass(frozen=True)
class SegmentationResult(_Result):
    # polygons[i] is the list of flat polygons of instance i (an instance may have several parts)
    polygons: tuple[tuple[tuple[float, ...], ...], ...] = ()
    labels: tuple[str, ...] = ()
    scores: tuple[float, ...] | None = None
    kind: ClassVar[str] = "segmentation"

    def __post_init__(self) -> None:
        if len(self.polygons) != len(self.labels) or (
            self.scores is not None and len(self.scores) != len(self.polygons)
        ):
            raise ValueError("polygons, labels and scores must have the same length")

    @classmethod
    def from_polygons(
        cls,
        task: str,
        image_wh: tuple[int, int],
        polygons: Sequence[Sequence[Sequence[float]]],
        labels: Sequence[str] | None = None,
        region: XYXY | None = None,
        scores: Sequence[float] | None = None,
    ) -> SegmentationResult:
        names = list(labels) if labels is not None else [""] * len(polygons)
        # A polygon needs three points: a shorter part (a truncated generation) has no area to draw and
        # is left out. Its instance stays, in the parser's order, but without any other part it has no
        # box and is not counted as a mask.
        cleaned = tuple(tuple(tuple(float(v) for v in part) for part in inst if len(part) >= 6) for inst in polygons)
        return cls(
            task,
            image_wh,
            polygons=cleaned,
            labels=tuple(str(n).strip() for n in names),
            scores=tuple(float(s) for s in scores) if scores is not None else None,
            region=region,
        )

    def __len__(self) -> int:
        return len(self.polygons)

    @property
    def mask_count(self) -> int:
        """Instances with at least one drawable polygon."""
        return sum(1 for parts in self.polygons if parts)

    def instance_xyxy(self, index: int) -> XYXY | None:
        points = [v for part in self.polygons[index] for v in part]
        return polygon_bbox(points) if points else None

    def to_dict(self) -> dict[str, Any]:
        instances = []
        for i, (parts, label) in enumerate(zip(self.polygons, self.labels, strict=True)):
            box = self.instance_xyxy(i)
            item: dict[str, Any] = {
                "id": i + 1,
                "label": label,
                "polygons": [[_num(v) for v in part] for part in parts],
                "xyxy": [_num(v) for v in box] if box else None,
            }
            if self.scores is not None:
                item["score"] = round(self.scores[i], 4)
            instances.append(item)
        return {**self._base(), "instances": instances}

    def summary(self) -> str:
        if not self.mask_count:
            return "No mask found."
        drawn = zip(self.polygons, self.labels, strict=True)
        labels = ", ".join(sorted({label or "region" for parts, label in drawn if parts}))
        return f"{self.mask_count} mask(s): {labels}"

    def to_coco(self, image_id: int = 1, file_name: str = "image.png") -> dict[str, Any]:
        categories = _categories(self.labels)
        annotations = []
        for i, (parts, label) in enumerate(zip(self.polygons, self.labels, strict=True)):
            box = self.instance_xyxy(i)
            if box is None:
                continue
            x1, y1, x2, y2 = box
            annotations.append(
                {
                    "id": i + 1,
                    "image_id": image_id,
                    "category_id": categories[label or "region"],
                    "segmentation": [[_num(v) for v in part] for part in parts],
                    "bbox": [_num(x1), _num(y1), _num(x2 - x1), _num(y2 - y1)],
                    "area": _num(sum(polygon_area(part) for part in parts)),
                    "iscrowd": 0,
                    **({"score": round(self.scores[i], 4)} if self.scores is not None else {}),
                }
            )
        return _coco(image_id, file_name, self.image_wh, categories, annotations)


@dataclass(frozen=True)
class OCRResult(_Result):
    quads: tuple[tuple[float, ...], ...] = ()  # 8 numbers each: x1,y1 .. x4,y4 clockwise from top-left
    texts: tuple[str, ...] = ()
    scores: tuple[float, ...] | None = None
    kind: ClassVar[str] = "ocr"

    def __post_init__(self) -> None:
        if len(self.quads) != len(self.texts) or any(len(q) != 8 for q in self.quads):
            raise ValueError("each OCR region needs an 8-number quad and a text")

    @classmethod
    def from_quads(
        cls,
        task: str,
        image_wh: tuple[int, int],
        quads: Sequence[Sequence[float]],
        texts: Sequence[str],
        scores: Sequence[float] | None = None,
    ) -> OCRResult:
        return cls(
            task,
            image_wh,
            quads=tuple(tuple(float(v) for v in q) for q in quads),
            texts=tuple(str(t).strip() for t in texts),
            scores=tuple(float(s) for s in scores) if scores is not None else None,
        )

    @property
    def full_text(self) -> str:
        return "\n".join(t for t in self.texts if t)

    def to_dict(self) -> dict[str, Any]:
        regions = []
        for i, (quad, text) in enumerate(zip(self.quads, self.texts, strict=True)):
            item: dict[str, Any] = {"id": i + 1, "text": text, "quad": [_num(v) for v in quad]}
            if self.scores is not None:
                item["score"] = round(self.scores[i], 4)
            regions.append(item)
        return {**self._base(), "text": self.full_text, "regions": regions}

    def summary(self) -> str:
        return self.full_text or "No text found."


AnyResult = TextResult | DetectionResult | SegmentationResult | OCRResult


def _categories(labels: Sequence[str]) -> dict[str, int]:
    categories: dict[str, int] = {}
    for label in labels:
        categories.setdefault(label or "region", len(categories) + 1)
    return categories


def _coco(
    image_id: int, file_name: str, image_wh: tuple[int, int], categories: Mapping[str, int], annotations: list[Any]
) -> dict[str, Any]:
    return {
        "images": [{"id": image_id, "file_name": file_name, "width": image_wh[0], "height": image_wh[1]}],
        "categories": [{"id": cid, "name": name} for name, cid in categories.items()],
        "annotations": annotations,
    }


def keep_min_score(result: AnyResult, min_score: float | None) -> AnyResult:
    """The result without the instances scored below `min_score`; a result without scores is unchanged."""
    if min_score is None or isinstance(result, TextResult) or result.scores is None:
        return result
    keep = [i for i, score in enumerate(result.scores) if score >= min_score]
    scores = tuple(result.scores[i] for i in keep)
    if isinstance(result, DetectionResult):
        xyxy = tuple(result.xyxy[i] for i in keep)
        return replace(result, xyxy=xyxy, labels=tuple(result.labels[i] for i in keep), scores=scores)
    if isinstance(result, SegmentationResult):
        polygons = tuple(result.polygons[i] for i in keep)
        return replace(result, polygons=polygons, labels=tuple(result.labels[i] for i in keep), scores=scores)
    return replace(
        result, quads=tuple(result.quads[i] for i in keep), texts=tuple(result.texts[i] for i in keep), scores=scores
    )


def count_instances(parsed: Any) -> int:
    """How many boxes/polygons/regions `post_process_generation(...)[task]` holds, in its own order."""
    if not isinstance(parsed, Mapping):
        return 0
    if "quad_boxes" in parsed:
        return len(parsed["quad_boxes"])
    return len(parsed.get("bboxes", [])) + len(parsed.get("polygons", []))


def result_from_florence(
    spec: TaskSpec,
    parsed: Any,
    image_wh: tuple[int, int],
    region: XYXY | None = None,
    scores: Sequence[float] | None = None,
) -> AnyResult:
    """Named constructor from `processor.post_process_generation(...)[task]` for any task.

    `scores` holds one confidence per instance in the parser's order (`florence_scores.instance_scores`).
    """
    task = spec.token
    if spec.output_kind is OutputKind.TEXT:
        text = parsed if isinstance(parsed, str) else str(parsed)
        return TextResult(task, image_wh, text=_TEXT_NOISE_RE.sub("", text).strip(), region=region)
    if spec.output_kind is OutputKind.BOXES:
        return DetectionResult.from_boxes(
            task, image_wh, parsed.get("bboxes", []), parsed.get("labels"), scores, region=region
        )
    if spec.output_kind is OutputKind.POLYGONS:
        return SegmentationResult.from_polygons(
            task, image_wh, parsed.get("polygons", []), parsed.get("labels"), region=region, scores=scores
        )
    if spec.output_kind is OutputKind.OCR:
        return OCRResult.from_quads(task, image_wh, parsed.get("quad_boxes", []), parsed.get("labels", []), scores)
    return _open_vocabulary_result(spec, parsed, image_wh, region, scores)


def _open_vocabulary_result(
    spec: TaskSpec, parsed: Any, image_wh: tuple[int, int], region: XYXY | None, scores: Sequence[float] | None
) -> AnyResult:
    # Boxes under `bboxes_labels`, polygons under `polygons_labels`; the parser yields one kind per answer,
    # so the scores (in its order) are the boxes' first, then the polygons'.
    task = spec.token
    boxes = list(parsed.get("bboxes", []))
    labels = list(parsed.get("bboxes_labels", []))
    polygons = list(parsed.get("polygons", []))
    polygon_labels = list(parsed.get("polygons_labels", []))
    box_scores = list(scores[: len(boxes)]) if scores is not None else None
    polygon_scores = list(scores[len(boxes) :]) if scores is not None else None
    if polygons and not boxes:
        return SegmentationResult.from_polygons(
            task, image_wh, polygons, polygon_labels, region=region, scores=polygon_scores
        )
    for i, (parts, label) in enumerate(zip(polygons, polygon_labels, strict=False)):
        points = [v for part in parts for v in part]
        if len(points) >= 4:
            boxes.append(polygon_bbox(points))
            labels.append(label)
            if box_scores is not None and polygon_scores is not None:
                box_scores.append(polygon_scores[i])
    return DetectionResult.from_boxes(task, image_wh, boxes, labels, box_scores, region=region)
