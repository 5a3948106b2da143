"""Which backend serves which task: Florence-2, the ImageNet classifier, zero-shot CLIP/SigLIP, rapidocr.

Each backend says which tasks it serves (`tasks`); the registry lists the backends in priority
order and routes a task to the first one that serves it. `OCR_BACKEND=rapidocr` puts rapidocr
ahead of Florence-2, so `<OCR>` and `<OCR_WITH_REGION>` go to it and need no Florence-2 model.
The model manager gets the list and loads each backend lazily in its own slot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app.core.config import Settings
from app.core.errors import UnknownTask
from app.core.tasks import TASKS

if TYPE_CHECKING:
    from app.models.manager import ModelManager

FLORENCE = "florence2"
FLORENCE_TASKS = frozenset(spec.token for spec in TASKS)


def tasks_of(backend: Any) -> frozenset[str]:
    """The tasks a backend declares; Florence-2 serves every task of the catalogue."""
    declared = getattr(backend, "tasks", None)
    if declared is not None:
        return frozenset(declared)
    return FLORENCE_TASKS if getattr(backend, "name", "") == FLORENCE else frozenset()


@dataclass(frozen=True)
class BackendRegistry:
    backends: tuple[Any, ...]  # objects following `app.models.manager.Backend`, in priority order

    @classmethod
    def from_settings(cls, settings: Settings) -> BackendRegistry:
        from app.models.classifier import ClassifierBackend
        from app.models.florence import FlorenceBackend
        from app.models.rapidocr_backend import RapidOCRBackend
        from app.models.zero_shot import ZeroShotBackend

        ordered: list[Any] = []
        if settings.ocr_backend == "rapidocr":
            ordered.append(RapidOCRBackend(settings))
        ordered += [FlorenceBackend(settings), ClassifierBackend(settings), ZeroShotBackend(settings)]
        return cls(tuple(ordered))

    @property
    def names(self) -> list[str]:
        return [backend.name for backend in self.backends]

    def routes(self) -> dict[str, str]:
        """Task → name of the backend that serves it."""
        table: dict[str, str] = {}
        for backend in self.backends:
            for task in sorted(tasks_of(backend)):
                table.setdefault(task, backend.name)
        return table

    def backend_for(self, task: str) -> str:
        name = self.routes().get(task)
        if name is None:
            raise UnknownTask(f"No configured backend serves {task[:80]!r}.")
        return name


def build_manager(settings: Settings, registry: BackendRegistry | None = None) -> ModelManager:
    """A model manager holding every registered backend (each loads on first use)."""
    from app.models.manager import ModelManager

    chosen = registry or BackendRegistry.from_settings(settings)
    return ModelManager(settings, backends=list(chosen.backends))
