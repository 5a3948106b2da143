"""Zero-shot classification embeddings from a CLIP or SigLIP checkpoint (`AutoModel` + `AutoProcessor`).

The backend only produces unit-length embeddings and the model's learned `logit_scale` (and, for
SigLIP, `logit_bias`); turning them into probabilities is `app.core.classify_math`. Text embeddings are
cached per (label, templates): the same label set costs one text forward pass per process.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from app.core import classify_math as cm
from app.core.classification_results import ZeroShotResult
from app.core.classify_math import average_template_embeddings, expand_templates, l2_normalize
from app.core.config import Settings
from app.core.errors import ModelUnavailable
from app.core.results import RunInfo
from app.core.task_inputs import ZeroShotRequest
from app.core.tasks import ZERO_SHOT
from app.models.base import TaskRequest
from app.models.hf_loading import TransformersBackend, rgb_chunks, timed

log = logging.getLogger(__name__)

DEFAULT_ZERO_SHOT = "openai/clip-vit-base-patch32"
SIGMOID_MODEL_TYPES = frozenset({"siglip", "siglip2"})
_IMAGE_CHUNK = 16
_TEXT_CHUNK = 256
_CACHE_ENTRIES = 4096  # (label, templates) pairs; a few MB of float32 vectors at most


def _pooled(output: Any) -> Any:
    """transformers 5 returns a model output from `get_*_features`; older versions a tensor."""
    return output if hasattr(output, "shape") else output.pooler_output


class ZeroShotBackend(TransformersBackend):
    name = "zero_shot"
    tasks = frozenset({ZERO_SHOT.token})
    model_setting = "ZERO_SHOT_MODEL_ID"
    example_model_id = DEFAULT_ZERO_SHOT

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, settings.zero_shot_model_id)
        self.model_type = ""
        self.sigmoid = False  # SigLIP: trained with a per-pair sigmoid loss
        self.logit_scale = 1.0
        self.logit_bias = 0.0
        self._text_length: int | None = None
        self._cache: OrderedDict[tuple[str, tuple[str, ...]], np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()

    def load(self) -> None:
        from transformers import AutoModel, AutoProcessor

        model, seconds = self._load_pretrained(AutoProcessor, AutoModel)
        self.model_type = str(getattr(model.config, "model_type", ""))
        self.sigmoid = self.model_type in SIGMOID_MODEL_TYPES
        self.logit_scale = float(model.logit_scale.detach().float().exp())
        bias = getattr(model, "logit_bias", None)
        self.logit_bias = float(bias.detach().float()) if self.sigmoid and bias is not None else 0.0
        if self.sigmoid:
            # SigLIP pools the last position, so prompts are padded to the length it was trained with.
            self._text_length = int(model.config.text_config.max_position_embeddings)
        self.clear_cache()
        log.info(
            "loaded zero-shot %s (%s, %s) on %s in %.1fs",
            self.model_id, self.model_type, "sigmoid" if self.sigmoid else "softmax", self.device, seconds,
        )  # fmt: skip

    def _check_model(self, model: Any) -> None:
        if not (hasattr(model, "get_image_features") and hasattr(model, "get_text_features")):
            raise ModelUnavailable(
                f"ZERO_SHOT_MODEL_ID={self.model_id!r} is a {type(model).__name__}, not an image-text model "
                "such as CLIP or SigLIP.",
                code="model_load_failed",
            )

    # -- embeddings (call on the inference thread) -------------------------------------------------------
    def image_embeddings(self, images: Sequence[Image.Image]) -> np.ndarray:
        """`(len(images), dim)` unit vectors; many images go through one forward pass (chunks of 16)."""
        import torch

        rows = []
        with torch.inference_mode():
            for chunk in rgb_chunks(images, _IMAGE_CHUNK):
                inputs = self._processor(images=chunk, return_tensors="pt")
                tensors = {k: v.to(self.device) for k, v in inputs.items()}
                tensors["pixel_values"] = tensors["pixel_values"].to(self._dtype)
                features = _pooled(self._model.get_image_features(**tensors))
                rows.append(features.float().cpu().numpy())
        return l2_normalize(np.concatenate(rows, axis=0))

    def text_embeddings(self, prompts: Sequence[str]) -> np.ndarray:
        """`(len(prompts), dim)` unit vectors, uncached."""
        import torch

        tokenizer = self._processor.tokenizer
        if self._text_length is not None:
            padding: dict[str, Any] = {"padding": "max_length", "max_length": self._text_length}
        else:
            padding = {"padding": True}
        rows = []
        with torch.inference_mode():
            for start in range(0, len(prompts), _TEXT_CHUNK):
                batch = list(prompts[start : start + _TEXT_CHUNK])
                encoded = tokenizer(batch, truncation=True, return_tensors="pt", **padding)
                tensors = {k: v.to(self.device) for k, v in encoded.items() if k in ("input_ids", "attention_mask")}
                features = _pooled(self._model.get_text_features(**tensors))
                rows.append(features.float().cpu().numpy())
        return l2_normalize(np.concatenate(rows, axis=0))

    def label_embeddings(self, labels: Sequence[str], templates: Sequence[str]) -> np.ndarray:
        """`(len(labels), dim)`: each label's template prompts averaged (cached per label and templates)."""
        key_templates = tuple(templates)
        found: dict[str, np.ndarray] = {}
        with self._cache_lock:
            for label in dict.fromkeys(labels):
                cached = self._cache.get((label, key_templates))
                if cached is not None:
                    self._cache.move_to_end((label, key_templates))
                    found[label] = cached
        missing = [label for label in dict.fromkeys(labels) if label not in found]
        if missing:
            prompts = expand_templates(missing, key_templates)
            embedded = self.text_embeddings(prompts).reshape(len(missing), len(key_templates), -1)
            averaged = average_template_embeddings(embedded)
            with self._cache_lock:
                for label, vector in zip(missing, averaged, strict=True):
                    found[label] = vector
                    self._cache[(label, key_templates)] = vector
                while len(self._cache) > _CACHE_ENTRIES:
                    self._cache.popitem(last=False)
        return np.stack([found[label] for label in labels])

    def run(self, requests: Sequence[TaskRequest]) -> list[ZeroShotResult]:
        """Requests that share a label set are scored in one pass; each gets its labels' probabilities."""
        results: dict[int, ZeroShotResult] = {}
        for labels, indices in _by_label_set(requests):
            images = [requests[i].image for i in indices]
            probabilities, seconds = timed(lambda: self.probabilities(images, labels))  # noqa: B023 - called now
            run = RunInfo(duration=seconds, model=self.model_id, library=self.library)
            for index, row in zip(indices, probabilities, strict=True):
                results[index] = zero_shot_result(labels, row, requests[index].image_wh, run)
        return [results[i] for i in range(len(requests))]

    def probabilities(self, images: Sequence[Image.Image], request: ZeroShotRequest) -> np.ndarray:
        """`(images, labels)` probabilities: softmax, SigLIP sigmoid, or CLIP label-vs-negation."""
        image_vectors = self.image_embeddings(images)
        label_vectors = self.label_embeddings(request.labels, request.templates)
        logits = cm.similarity_logits(image_vectors, label_vectors, self.logit_scale, self.logit_bias)
        if not request.multi_label:
            return cm.exclusive_probabilities(logits)
        if self.sigmoid:
            return cm.sigmoid_probabilities(logits)
        negations = [cm.negated(label) for label in request.labels]
        negation_vectors = self.label_embeddings(negations, request.templates)
        negation_logits = cm.similarity_logits(image_vectors, negation_vectors, self.logit_scale)
        return cm.negation_probabilities(logits, negation_logits)

    def clear_cache(self) -> None:
        with self._cache_lock:
            self._cache.clear()

    @property
    def cache_size(self) -> int:
        return len(self._cache)

    def info(self) -> dict[str, Any]:
        body = super().info()
        if self.loaded:
            body["model_type"] = self.model_type
            body["scoring"] = "sigmoid" if self.sigmoid else "softmax"
            body["cached_labels"] = self.cache_size
        return body


def _by_label_set(requests: Sequence[TaskRequest]) -> list[tuple[ZeroShotRequest, list[int]]]:
    groups: list[tuple[ZeroShotRequest, list[int]]] = []
    for index, request in enumerate(requests):
        labels = request.options.labels
        if labels is None:
            raise ModelUnavailable("A zero-shot request came without labels.", code="missing_labels")
        for known, indices in groups:
            if known == labels:
                indices.append(index)
                break
        else:
            groups.append((labels, [index]))
    return groups


def zero_shot_result(
    request: ZeroShotRequest, row: np.ndarray, image_wh: tuple[int, int], run: RunInfo
) -> ZeroShotResult:
    """One image's scores, summed (or, multi-label, maxed) per category when categories were given."""
    by_label = dict(zip(request.labels, (float(p) for p in row), strict=True))
    categories = None
    if request.categories is not None:
        combine = cm.category_max if request.multi_label else cm.category_sums
        categories = combine(by_label, request.categories)
    return ZeroShotResult(
        labels=request.labels,
        probabilities=tuple(by_label.values()),
        image_wh=image_wh,
        multi_label=request.multi_label,
        run=run,
        categories=categories,
        templates=request.templates,
    )
