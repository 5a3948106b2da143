"""ImageNet classification through transformers `AutoModelForImageClassification`.

Any image-classification checkpoint loads (`CLASSIFIER_MODEL_ID`, default `microsoft/resnet-50`).
A 1000-class checkpoint is taken to be in the standard ImageNet-1k order, so its outputs map to the
shipped WordNet synsets and English/German names; other checkpoints keep their own `id2label`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from app.core import classify_math as cm
from app.core.classification_results import ClassificationResult, predictions_from_probabilities
from app.core.config import Settings
from app.core.errors import InvalidInput
from app.core.imagenet import NUM_CLASSES, ImageNetLabels, imagenet_labels
from app.core.results import RunInfo
from app.core.tasks import CLASSIFY
from app.models.base import TaskRequest
from app.models.hf_loading import TransformersBackend, rgb_chunks, timed

log = logging.getLogger(__name__)

DEFAULT_CLASSIFIER = "microsoft/resnet-50"
_CHUNK = 16  # images per forward pass: bounds peak memory for large requests


def is_imagenet_1k(id2label: Mapping[int, str]) -> bool:
    """1000 outputs in ImageNet order: label 0 is the tench, or the checkpoint left labels unnamed."""
    if len(id2label) != NUM_CLASSES:
        return False
    first = str(id2label.get(0, "")).strip().lower()
    return first.startswith("tench") or first in {"", "0", "label_0"}


class ClassifierBackend(TransformersBackend):
    name = "classifier"
    tasks = frozenset({CLASSIFY.token})
    model_setting = "CLASSIFIER_MODEL_ID"
    example_model_id = DEFAULT_CLASSIFIER

    def __init__(self, settings: Settings, labels: ImageNetLabels | None = None) -> None:
        super().__init__(settings, settings.classifier_model_id)
        self.labels = labels or imagenet_labels(settings.imagenet_names)
        self.id2label: dict[int, str] = {}
        self.imagenet = False

    def load(self) -> None:
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        model, seconds = self._load_pretrained(AutoImageProcessor, AutoModelForImageClassification)
        self.id2label = {int(k): str(v) for k, v in (model.config.id2label or {}).items()}
        self.imagenet = is_imagenet_1k(self.id2label)
        log.info(
            "loaded classifier %s (%d classes%s) on %s in %.1fs",
            self.model_id, len(self.id2label), ", ImageNet-1k order" if self.imagenet else "", self.device, seconds,
        )  # fmt: skip

    def logits(self, images: Sequence[Image.Image]) -> np.ndarray:
        """`(len(images), num_classes)` float64 logits; images go through in chunks of 16."""
        import torch

        rows = []
        with torch.inference_mode():
            for chunk in rgb_chunks(images, _CHUNK):
                inputs = self._processor(images=chunk, return_tensors="pt")
                pixel_values = inputs["pixel_values"].to(self.device, self._dtype)
                rows.append(self._model(pixel_values=pixel_values).logits.float().cpu().numpy())
        return np.concatenate(rows, axis=0).astype(np.float64)

    def run(self, requests: Sequence[TaskRequest]) -> list[ClassificationResult]:
        """Every image in one pass (chunks of 16); each request ranks with its own `top_n` and language."""
        if not requests:
            return []
        logits, seconds = timed(lambda: self.logits([request.image for request in requests]))
        run = RunInfo(duration=seconds, model=self.model_id, library=self.library)
        results = []
        for request, row in zip(requests, cm.softmax(logits, axis=-1), strict=True):
            language = request.options.language
            class_ids, names = self.label_table(language)
            predictions = predictions_from_probabilities(cm.top_n(row, request.options.top_n), class_ids, names)
            results.append(ClassificationResult(predictions, request.image_wh, language, run))
        return results

    def label_table(self, language: str) -> tuple[Sequence[str], Sequence[str]]:
        """Class ids and display names: WordNet synsets for ImageNet-1k models, else the model's own labels."""
        if self.imagenet:
            return self.labels.synsets, self.labels.names[language]
        if language != "en":
            raise InvalidInput(
                f"The classifier {self.model_id!r} is not an ImageNet-1k model; its labels exist in English "
                "only (available: en).",
                code="unknown_language",
            )
        count = len(self.id2label)
        return [str(i) for i in range(count)], [self.id2label.get(i, str(i)) for i in range(count)]

    def info(self) -> dict[str, Any]:
        body = super().info()
        if self.id2label:
            body["num_classes"] = len(self.id2label)
            body["imagenet_1k"] = self.imagenet
        return body
