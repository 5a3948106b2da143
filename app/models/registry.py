"""Which backend serves which task: Florence-2, the ImageNet classifier, zero-shot CLIP/SigLIP, rapidocr.

Each backend says which tasks it serves (`tasks`); the registry lists the backends in priority
order and `route_table` sends a task to the first one that serves it (the model manager routes by
it). `OCR_BACKEND=rapidocr` puts rapidocr ahead of Florence-2, so `<OCR>` and `<OCR_WITH_REGION>` go
to it and need no Florence-2 model. The manager loads each backend lazily in its own slot.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.core.config import Settings

if TYPE_CHECKING:
    from app.models.base import Backend
    from app.models.manager import ModelManager


BackendFactory = Callable[[Settings], "Backend"]
_EXTRA_BACKENDS: list[BackendFactory] = []


def register_backend(factory: BackendFactory) -> None:
    """Add a backend beside the built-in ones (after them: built-ins keep their tasks). `factory(settings)`
    builds it wherever services are built (server, CLI, workers); it serves the tasks it lists in `tasks`."""
    _EXTRA_BACKENDS.append(factory)


def unregister_backend(factory: BackendFactory) -> None:
    _EXTRA_BACKENDS.remove(factory)


def route_table(backends: Sequence[Backend]) -> dict[str, str]:
    """Task token → name of the backend that serves it: the first backend, in priority order, listing it."""
    table: dict[str, str] = {}
    for backend in backends:
        for task in sorted(backend.tasks):
            table.setdefault(task, backend.name)
    return table


@dataclass(frozen=True)
class BackendRegistry:
    backends: tuple[Backend, ...]  # in priority order

    @classmethod
    def from_settings(cls, settings: Settings, extra: Sequence[Backend] = ()) -> BackendRegistry:
        """The built-in backends for `settings`, then `extra` ones (a task added outside the built-ins)."""
        from app.models.classifier import ClassifierBackend
        from app.models.florence import FlorenceBackend
        from app.models.rapidocr_backend import RapidOCRBackend
        from app.models.zero_shot import ZeroShotBackend

        ordered: list[Backend] = []
        if settings.ocr_backend == "rapidocr":
            ordered.append(RapidOCRBackend(settings))
        ordered += [FlorenceBackend(settings), ClassifierBackend(settings), ZeroShotBackend(settings)]
        ordered += [factory(settings) for factory in _EXTRA_BACKENDS] + list(extra)
        return cls(tuple(ordered))

    @property
    def names(self) -> list[str]:
        return [backend.name for backend in self.backends]


def build_manager(settings: Settings, registry: BackendRegistry | None = None) -> ModelManager:
    """A model manager holding every registered backend (each loads on first use)."""
    from app.models.manager import ModelManager

    chosen = registry or BackendRegistry.from_settings(settings)
    return ModelManager(settings, backends=list(chosen.backends))
