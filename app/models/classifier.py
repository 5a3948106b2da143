"""ImageNet classification through transformers `AutoModelForImageClassification`.

Any image-classification checkpoint loads (`CLASSIFIER_MODEL_ID`, default `microsoft/resnet-50`).
A 1000-class checkpoint is taken to be in the standard ImageNet-1k order, so its outputs map to the
shipped WordNet synsets and English/German names; other checkpoints keep their own `id2label`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from app.config import Settings
from app.imagenet import NUM_CLASSES
from app.models.florence import resolve_device_dtype
from app.models.hf_loading import load_checkpoint, transformers_library

log = logging.getLogger(__name__)

CLASSIFY_TASK = "CLASSIFY"
DEFAULT_CLASSIFIER = "microsoft/resnet-50"
_CHUNK = 16  # images per forward pass: bounds peak memory for large requests


def is_imagenet_1k(id2label: Mapping[int, str]) -> bool:
    """1000 outputs in ImageNet order: label 0 is the tench, or the checkpoint left labels unnamed."""
    if len(id2label) != NUM_CLASSES:
        return False
    first = str(id2label.get(0, "")).strip().lower()
    return first.startswith("tench") or first in {"", "0", "label_0"}


class ClassifierBackend:
    name = "classifier"
    tasks = frozenset({CLASSIFY_TASK})

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.model_id = settings.classifier_model_id
        self.device = "cpu"
        self.dtype_name = "float32"
        self.library = transformers_library()
        self.id2label: dict[int, str] = {}
        self.imagenet = False
        self._model: Any = None
        self._processor: Any = None
        self._dtype: Any = None

    def load(self) -> None:
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        device, dtype = resolve_device_dtype(self.settings)
        started = time.perf_counter()

        def load(source: str, local_only: bool) -> tuple[Any, Any]:
            processor = AutoImageProcessor.from_pretrained(source, local_files_only=local_only)
            model = AutoModelForImageClassification.from_pretrained(source, local_files_only=local_only, dtype=dtype)
            return processor, model

        processor, model = load_checkpoint(
            self.settings, self.model_id, "CLASSIFIER_MODEL_ID", DEFAULT_CLASSIFIER, load
        )
        model.to(device).eval()
        self._model, self._processor, self._dtype = model, processor, dtype
        self.device, self.dtype_name = device, str(dtype).removeprefix("torch.")
        self.id2label = {int(k): str(v) for k, v in (model.config.id2label or {}).items()}
        self.imagenet = is_imagenet_1k(self.id2label)
        log.info(
            "loaded classifier %s (%d classes%s) on %s in %.1fs",
            self.model_id, len(self.id2label), ", ImageNet-1k order" if self.imagenet else "", device,
            time.perf_counter() - started,
        )  # fmt: skip

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def logits(self, images: Sequence[Image.Image]) -> np.ndarray:
        """`(len(images), num_classes)` float64 logits; images go through in chunks of 16."""
        import torch

        rows = []
        with torch.inference_mode():
            for start in range(0, len(images), _CHUNK):
                chunk = [im if im.mode == "RGB" else im.convert("RGB") for im in images[start : start + _CHUNK]]
                inputs = self._processor(images=chunk, return_tensors="pt")
                pixel_values = inputs["pixel_values"].to(self.device, self._dtype)
                rows.append(self._model(pixel_values=pixel_values).logits.float().cpu().numpy())
        return np.concatenate(rows, axis=0).astype(np.float64)

    def info(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model_id": self.model_id,
            "device": self.device,
            "dtype": self.dtype_name,
            "tasks": sorted(self.tasks),
        }
        if self.id2label:
            body["num_classes"] = len(self.id2label)
            body["imagenet_1k"] = self.imagenet
        return body
