"""Probability maths for classification and zero-shot scoring, in NumPy (no torch needed).

Zero-shot scoring follows CLIP: image and text embeddings are L2-normalised, their cosine
similarity is multiplied by the model's learned `logit_scale` (SigLIP also adds `logit_bias`).

- Mutually exclusive labels: softmax over the labels (sums to 1).
- Multi-label, SigLIP: the model was trained with a per-pair sigmoid loss, so `sigmoid(logit)`
  is a calibrated, independent probability per label.
- Multi-label, CLIP: CLIP only learned *relative* scores, so each label is scored against its
  negation ("a photo of something that is not a dog"): a two-way softmax between the two prompts,
  i.e. `sigmoid(logit_label - logit_negation)`. Each label's score depends on that label alone.
- Several prompt templates per label ("a photo of {}", "a drawing of {}") are averaged the way
  the CLIP paper ensembles prompts: normalise each embedding, take the mean, normalise again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]

DEFAULT_TEMPLATES: tuple[str, ...] = ("a photo of {}",)
RAW_LABEL_TEMPLATES: tuple[str, ...] = ("{}",)  # the label as given, as the seeds scored it
NEGATION_PHRASE = "something that is not {}"


def softmax(logits: ArrayLike, axis: int = -1) -> FloatArray:
    """Numerically stable softmax (the max is subtracted first, so large logits do not overflow)."""
    values = np.asarray(logits, dtype=np.float64)
    shifted = values - np.max(values, axis=axis, keepdims=True)
    exp = np.exp(shifted)
    result: FloatArray = exp / np.sum(exp, axis=axis, keepdims=True)
    return result


def sigmoid(logits: ArrayLike) -> FloatArray:
    values = np.asarray(logits, dtype=np.float64)
    exp_neg = np.exp(-np.abs(values))  # exp of a non-positive number never overflows
    result: FloatArray = np.where(values >= 0, 1.0 / (1.0 + exp_neg), exp_neg / (1.0 + exp_neg))
    return result


def top_n(probabilities: ArrayLike, n: int) -> list[tuple[int, float]]:
    """The `n` highest `(index, probability)` pairs, highest first; ties keep the lower index first."""
    values = np.asarray(probabilities, dtype=np.float64).ravel()
    count = max(0, min(int(n), values.size))
    # A stable sort on the negated values keeps equal scores in index order.
    order = np.argsort(-values, kind="stable")[:count]
    return [(int(i), float(values[i])) for i in order]


def l2_normalize(vectors: ArrayLike, axis: int = -1) -> FloatArray:
    values = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(values, axis=axis, keepdims=True)
    result: FloatArray = values / np.maximum(norms, 1e-12)
    return result


def average_template_embeddings(embeddings: ArrayLike) -> FloatArray:
    """`(labels, templates, dim)` text embeddings → one unit vector per label, shape `(labels, dim)`."""
    values = np.asarray(embeddings, dtype=np.float64)
    if values.ndim != 3:
        raise ValueError("expected an array of shape (labels, templates, dim)")
    return l2_normalize(l2_normalize(values).mean(axis=1))


def similarity_logits(
    image_embeddings: ArrayLike, text_embeddings: ArrayLike, logit_scale: float, logit_bias: float = 0.0
) -> FloatArray:
    """`(images, dim)` × `(labels, dim)` → `(images, labels)` logits: scale · cosine + bias."""
    images = l2_normalize(image_embeddings)
    texts = l2_normalize(text_embeddings)
    result: FloatArray = logit_scale * images @ texts.T + logit_bias
    return result


def exclusive_probabilities(logits: ArrayLike) -> FloatArray:
    """One label per image: softmax across labels (each row sums to 1)."""
    return softmax(logits, axis=-1)


def sigmoid_probabilities(logits: ArrayLike) -> FloatArray:
    """Independent per-label probabilities for models trained with a sigmoid loss (SigLIP)."""
    return sigmoid(logits)


def negation_probabilities(label_logits: ArrayLike, negation_logits: ArrayLike) -> FloatArray:
    """Independent per-label probabilities for CLIP: softmax over (label, negation) for each label."""
    return sigmoid(np.asarray(label_logits, dtype=np.float64) - np.asarray(negation_logits, dtype=np.float64))


def category_sums(label_probabilities: Mapping[str, float], categories: Mapping[str, str]) -> dict[str, float]:
    """Sum label probabilities per category; a label without a category counts as its own category.

    Categories keep the order in which they first appear in `label_probabilities`.
    """
    sums: dict[str, float] = {}
    for label, probability in label_probabilities.items():
        category = categories.get(label, label)
        sums[category] = sums.get(category, 0.0) + float(probability)
    return sums


def expand_templates(labels: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Prompts in label-major order: `labels[0]` with every template, then `labels[1]`, ..."""
    return [template.format(label) for label in labels for template in templates]


def negated(label: str) -> str:
    return NEGATION_PHRASE.format(label)


def category_max(label_probabilities: Mapping[str, float], categories: Mapping[str, str]) -> dict[str, float]:
    """Multi-label categories: the most confident phrasing of each category.

    Independent scores do not add up to a probability, and phrasings of one category are strongly
    correlated, so the maximum is used rather than a sum or a noisy-OR.
    """
    best: dict[str, float] = {}
    for label, probability in label_probabilities.items():
        category = categories.get(label, label)
        best[category] = max(best.get(category, 0.0), float(probability))
    return best
