"""The shipped ImageNet-1k label data: 1000 unique synsets in standard order, English and German names."""

from __future__ import annotations

import re

import pytest

from app.core.errors import InvalidInput
from app.core.imagenet import NUM_CLASSES, imagenet_labels


def test_1000_unique_synsets_in_standard_sorted_order() -> None:
    labels = imagenet_labels()
    assert len(labels.synsets) == NUM_CLASSES
    assert len(set(labels.synsets)) == NUM_CLASSES
    assert all(re.fullmatch(r"n\d{8}", synset) for synset in labels.synsets)
    # The ILSVRC-2012 class index is the position of the synset in sorted order.
    assert list(labels.synsets) == sorted(labels.synsets)


def test_english_and_german_name_for_every_class() -> None:
    labels = imagenet_labels()
    assert labels.languages == ("en", "de")
    for language in labels.languages:
        names = labels.names[language]
        assert len(names) == NUM_CLASSES
        assert all(name.strip() == name and name for name in names)


@pytest.mark.parametrize(
    ("index", "synset", "english", "german"),
    [
        (0, "n01440764", "tench", "Schleie"),
        (1, "n01443537", "goldfish", "Goldfisch"),
        (207, "n02099601", "Golden Retriever", "Golden Retriever"),
        (235, "n02106662", "German Shepherd Dog", "Deutscher Schäferhund"),
        (281, "n02123045", "tabby cat", "Getigerte Katze"),
        (291, "n02129165", "lion", "Löwe"),
        (409, "n02708093", "analog clock", "Analoguhr"),
        (817, "n04285008", "sports car", "Sportwagen"),
        (954, "n07753592", "banana", "Banane"),
        (999, "n15075141", "toilet paper", "Toilettenpapier"),
    ],
)
def test_known_classes(index: int, synset: str, english: str, german: str) -> None:
    labels = imagenet_labels()
    assert labels.synsets[index] == synset
    assert labels.name(index, "en") == english
    assert labels.name(index, "de") == german


def test_unknown_language_lists_the_available_ones() -> None:
    with pytest.raises(InvalidInput) as raised:
        imagenet_labels().check_language("fr")
    assert raised.value.code == "unknown_language"
    assert "en, de" in raised.value.message
    assert imagenet_labels().check_language(" DE ") == "de"


def test_label_file_is_package_data() -> None:
    import tomllib
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    assert "data/*" in pyproject["tool"]["setuptools"]["package-data"]["app"]
    assert (Path(__file__).parents[2] / "app" / "data" / "imagenet_classes.json").is_file()
