"""Probability maths of classification and zero-shot scoring, exact on known logits (NumPy only)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.core import classify_math as cm


def test_softmax_matches_the_definition_and_sums_to_one() -> None:
    logits = [2.0, 1.0, 0.0]
    expected = [math.exp(v) / (math.e**2 + math.e + 1) for v in logits]
    assert cm.softmax(logits).tolist() == pytest.approx(expected, abs=1e-15)
    assert cm.softmax(logits).sum() == pytest.approx(1.0, abs=1e-15)


def test_softmax_is_stable_for_huge_logits_and_works_per_row() -> None:
    probabilities = cm.softmax([[1000.0, 1000.0], [0.0, math.log(3.0)]])
    np.testing.assert_allclose(probabilities, [[0.5, 0.5], [0.25, 0.75]], rtol=0, atol=1e-15)


def test_sigmoid_is_exact_and_does_not_overflow() -> None:
    assert cm.sigmoid([0.0, math.log(3.0), -math.log(3.0)]).tolist() == pytest.approx([0.5, 0.75, 0.25], abs=1e-15)
    assert cm.sigmoid([1000.0, -1000.0]).tolist() == [1.0, 0.0]


def test_top_n_orders_by_probability_and_keeps_ties_in_index_order() -> None:
    probabilities = [0.1, 0.3, 0.05, 0.3, 0.25]
    assert cm.top_n(probabilities, 3) == [(1, 0.3), (3, 0.3), (4, 0.25)]
    assert cm.top_n(probabilities, 99) == [(1, 0.3), (3, 0.3), (4, 0.25), (0, 0.1), (2, 0.05)]
    assert cm.top_n(probabilities, 0) == []


@given(st.lists(st.floats(-50, 50), min_size=1, max_size=30), st.integers(1, 40))
def test_top_n_is_a_sorted_prefix_of_all_probabilities(logits: list[float], n: int) -> None:
    probabilities = cm.softmax(logits)
    ranked = cm.top_n(probabilities, n)
    assert len(ranked) == min(n, len(logits))
    values = [p for _, p in ranked]
    assert values == sorted(values, reverse=True)
    assert values[0] == probabilities.max()


def test_category_sums_add_phrasings_and_keep_uncategorised_labels() -> None:
    scores = {
        "a thumbnail of a casual gaming stream": 0.5,
        "a thumbnail showing violent content from a video game": 0.25,
        "a cooking show": 0.25,
    }
    categories = {
        "a thumbnail of a casual gaming stream": "gaming",
        "a thumbnail showing violent content from a video game": "gaming",
    }
    assert cm.category_sums(scores, categories) == {"gaming": 0.75, "a cooking show": 0.25}


def test_category_max_takes_the_most_confident_phrasing() -> None:
    scores = {"cat": 0.9, "kitten": 0.7, "dog": 0.2}
    assert cm.category_max(scores, {"cat": "feline", "kitten": "feline"}) == {"feline": 0.9, "dog": 0.2}


def test_similarity_logits_scale_cosines_and_add_bias() -> None:
    images = np.array([[3.0, 0.0], [0.0, 2.0]])  # normalised inside: [1, 0] and [0, 1]
    texts = np.array([[1.0, 1.0], [0.0, 5.0]])  # [1/√2, 1/√2] and [0, 1]
    logits = cm.similarity_logits(images, texts, logit_scale=100.0, logit_bias=-10.0)
    inv = 1 / math.sqrt(2)
    np.testing.assert_allclose(logits, [[100 * inv - 10, -10.0], [100 * inv - 10, 90.0]], rtol=0, atol=1e-12)


def test_exclusive_and_multi_label_probabilities() -> None:
    logits = np.array([[math.log(3.0), 0.0]])
    np.testing.assert_allclose(cm.exclusive_probabilities(logits), [[0.75, 0.25]], rtol=0, atol=1e-15)
    # SigLIP: each label on its own.
    np.testing.assert_allclose(cm.sigmoid_probabilities(logits), [[0.75, 0.5]], rtol=0, atol=1e-15)


def test_clip_negation_scores_each_label_against_its_negation_only() -> None:
    label_logits = np.array([[math.log(3.0), 2.0]])
    negation_logits = np.array([[0.0, 2.0]])
    # softmax over (label, negation) for each label: 3/(3+1) and 1/(1+1)
    np.testing.assert_allclose(cm.negation_probabilities(label_logits, negation_logits), [[0.75, 0.5]], atol=1e-15)
    # independence: changing the second label's scores leaves the first label's probability alone
    changed = cm.negation_probabilities(np.array([[math.log(3.0), 9.0]]), np.array([[0.0, -4.0]]))
    assert changed[0, 0] == pytest.approx(0.75, abs=1e-15)
    assert cm.negated("a dog") == "something that is not a dog"


def test_template_averaging_normalises_then_averages_then_normalises() -> None:
    embeddings = np.array([[[2.0, 0.0], [0.0, 10.0]], [[1.0, 1.0], [3.0, 3.0]]])  # (labels=2, templates=2, dim=2)
    averaged = cm.average_template_embeddings(embeddings)
    inv = 1 / math.sqrt(2)
    # label 0: mean of [1, 0] and [0, 1] → [½, ½] → unit; label 1: both templates agree → unchanged direction
    np.testing.assert_allclose(averaged, [[inv, inv], [inv, inv]], rtol=0, atol=1e-15)
    with pytest.raises(ValueError):
        cm.average_template_embeddings(np.zeros((2, 3)))


def test_expand_templates_is_label_major() -> None:
    assert cm.expand_templates(["cat", "dog"], ["a photo of {}", "a drawing of {}"]) == [
        "a photo of cat",
        "a drawing of cat",
        "a photo of dog",
        "a drawing of dog",
    ]
