"""The 1000 ImageNet-1k classes: WordNet synset ids and display names per language (package data)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from app.core.errors import InvalidInput

NUM_CLASSES = 1000
DATA_FILE = "imagenet_classes.json"
# IMAGENET_NAMES=keras: the names TaskBridge's reference worker sends (same synsets, same order).
NAME_FILES = {"keras": "imagenet_names_keras.json"}


@dataclass(frozen=True)
class ImageNetLabels:
    """Class index `i` (the model's output `i`) → `synsets[i]` and `names[language][i]`."""

    synsets: tuple[str, ...]
    names: dict[str, tuple[str, ...]]

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(self.names)

    def check_language(self, language: str) -> str:
        """The normalised language code, or `InvalidInput` listing the available ones."""
        code = language.strip().lower()
        if code not in self.names:
            available = ", ".join(self.languages)
            raise InvalidInput(f"Unknown language {language[:20]!r}; available: {available}.", code="unknown_language")
        return code

    def name(self, index: int, language: str = "en") -> str:
        return self.names[language][index]


def _parse(document: dict[str, Any]) -> ImageNetLabels:
    synsets = tuple(str(s) for s in document["synsets"])
    names = {str(lang): tuple(str(n) for n in values) for lang, values in document["names"].items()}
    if len(synsets) != NUM_CLASSES or any(len(values) != NUM_CLASSES for values in names.values()):
        raise ValueError(f"{DATA_FILE} must list {NUM_CLASSES} synsets and {NUM_CLASSES} names per language")
    return ImageNetLabels(synsets=synsets, names=names)


def _read(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(resources.files("app").joinpath("data", name).read_text(encoding="utf-8"))
    return document


@lru_cache(maxsize=4)
def imagenet_labels(names: str = "default") -> ImageNetLabels:
    """Read once from `app/data/` (shipped inside the package); `names` picks the set of display names."""
    document = _read(DATA_FILE)
    if names in NAME_FILES:
        document = {**document, "names": {**document["names"], **_read(NAME_FILES[names])["names"]}}
    elif names != "default":
        raise ValueError(f"Unknown ImageNet name set {names!r}; use default or {', '.join(NAME_FILES)}.")
    return _parse(document)
