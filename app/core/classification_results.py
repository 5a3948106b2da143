"""Typed, JSON-serialisable results of ImageNet classification and zero-shot classification.

Every result carries the `RunInfo` of the model run that produced it (duration, model, library,
app version, repository), so an API response can say exactly what answered.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from app.core.results import AnyResult, RunInfo


@dataclass(frozen=True)
class Prediction:
    index: int  # the model's class index
    class_id: str  # WordNet synset id (`n02123045`) for ImageNet-1k models, else the model's label id
    name: str
    probability: float

    def to_dict(self) -> dict[str, Any]:
        return {"class": self.class_id, "name": self.name, "probability": round(self.probability, 6)}


@dataclass(frozen=True)
class ClassificationResult:
    predictions: tuple[Prediction, ...]
    image_wh: tuple[int, int]
    language: str
    run: RunInfo
    kind: ClassVar[str] = "classification"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "image_wh": list(self.image_wh),
            "language": self.language,
            "predictions": [p.to_dict() for p in self.predictions],
            **self.run.to_dict(),
        }

    def scores(self) -> list[tuple[str, float]]:
        """`(name, probability)` pairs, highest first (for charts and the seed `classification` shape)."""
        return [(p.name, p.probability) for p in self.predictions]

    def summary(self) -> str:
        if not self.predictions:
            return "No prediction."
        return ", ".join(f"{p.name} {p.probability:.1%}" for p in self.predictions)


@dataclass(frozen=True)
class ZeroShotResult:
    labels: tuple[str, ...]  # in the caller's order
    probabilities: tuple[float, ...]
    image_wh: tuple[int, int]
    multi_label: bool
    run: RunInfo
    categories: Mapping[str, float] | None = None
    templates: tuple[str, ...] = field(default=())
    kind: ClassVar[str] = "zero_shot"

    def __post_init__(self) -> None:
        if len(self.labels) != len(self.probabilities):
            raise ValueError("labels and probabilities must have the same length")

    @property
    def by_label(self) -> dict[str, float]:
        return dict(zip(self.labels, self.probabilities, strict=True))

    def scores(self) -> list[tuple[str, float]]:
        """`(label or category, probability)` pairs, highest first; categories when they were given."""
        source = self.categories if self.categories is not None else self.by_label
        return sorted(source.items(), key=lambda item: -item[1])

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": self.kind,
            "image_wh": list(self.image_wh),
            "multi_label": self.multi_label,
            "result": {label: round(p, 6) for label, p in self.by_label.items()},
        }
        if self.categories is not None:
            body["categories"] = {name: round(p, 6) for name, p in self.categories.items()}
        if self.templates:
            body["templates"] = list(self.templates)
        return {**body, **self.run.to_dict()}

    def summary(self) -> str:
        top = self.scores()[:3]
        return ", ".join(f"{name} {p:.1%}" for name, p in top) or "No labels."


def predictions_from_probabilities(
    ranked: Sequence[tuple[int, float]], class_ids: Sequence[str], names: Sequence[str]
) -> tuple[Prediction, ...]:
    return tuple(Prediction(i, class_ids[i], names[i], p) for i, p in ranked)


AnyClassification = ClassificationResult | ZeroShotResult
# Every result type a task can produce: Florence-2's kinds (app/core/results.py) and the classifiers'.
AnyTaskResult = AnyResult | AnyClassification
